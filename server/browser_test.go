package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// chromium finds a headless browser. CI sets ORCHARD_TEST_BROWSER=required,
// so there a missing browser fails the test instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("ORCHARD_TEST_BROWSER") == "required" {
		t.Fatal("no Chromium found; install it (apt-get install chromium)")
	}
	t.Skip("no Chromium found; set ORCHARD_TEST_BROWSER=required to make this fail")
	return ""
}

// The Playground works offline: a real browser loads it from the binary,
// runs a query with an API key and shows the answer.
func TestPlaygroundInBrowser(t *testing.T) {
	exe := chromium(t)
	s := startServer(t, nil)
	key := s.key()
	s.createCustomer(key, "Browser Co")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	page := s.URL + "/playground?query=" + url.QueryEscape("{ customers { totalCount } }") + "#key=" + key
	err := chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS(".graphiql-execute-button")),
		chromedp.Click(chromedp.CSS(".graphiql-execute-button")),
	)
	if err != nil {
		t.Fatalf("driving the Playground: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Poll[string](
		`(() => { const r = document.querySelector('.result-window'); return r && r.innerText.includes('totalCount') ? r.innerText : null })()`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("no answer shown: %v", err)
	}
	if !strings.Contains(shown, `"totalCount": 1`) {
		t.Fatalf("the Playground shows %q", shown)
	}
	if strings.Contains(s.Log.String(), key) {
		t.Fatal("the key reached the server log")
	}

	// The Playground's subscriptions go over the websocket with the key in
	// connection_init: run one, then confirm a token that expires in 5 days.
	sub := s.URL + "/playground?query=" + url.QueryEscape("subscription { tokenExpiryWarnings { level daysUntilExpiry token { locationName } } }") + "#key=" + key
	if err := chromedp.Do(ctx,
		chromedp.Navigate(sub),
		chromedp.WaitVisible(chromedp.CSS(".graphiql-execute-button")),
		chromedp.Click(chromedp.CSS(".graphiql-execute-button")),
		chromedp.Sleep(500*time.Millisecond),
	); err != nil {
		t.Fatalf("starting the subscription: %v", err)
	}
	cust := s.createCustomer(key, "Subscribed")
	exp := time.Now().Add(5*24*time.Hour + time.Hour)
	f := appletest.TokenFile("Sub", exp, "browser-sub")
	s.Fake.AddLocation(f, &appletest.Location{UID: "browser-sub", Name: "Browser HQ", ExpiresAt: exp})
	var up uploadResult
	s.upload(key, cust, f).decode(t, &up)
	if r := s.action(key, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		t.Fatal(r.Raw)
	}
	shown, err = chromedp.Run(ctx, chromedp.Poll[string](
		`(() => { const r = document.querySelector('.result-window'); return r && r.innerText.includes('WARNING') ? r.innerText : null })()`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("the warning did not appear in the Playground: %v", err)
	}
	if !strings.Contains(shown, "Browser HQ") {
		t.Fatalf("the Playground shows %q", shown)
	}
}
