package appsandbooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	_ "github.com/orchard-msp/orchard/modules/apple/appsandbooks"
	"github.com/orchard-msp/orchard/modules/fault"
)

func newClient(t testing.TB, fake *appletest.Server, extra string) apple.Client {
	t.Helper()
	cfg := `{"baseURL":"` + fake.BaseURL() + `","minBackoff":"5ms","maxBackoff":"50ms","retryBudget":"2s","timeout":"2s"` + extra + `}`
	c, err := modules.Load[apple.Client](context.Background(), "apple.appsandbooks", json.RawMessage(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func setup(t testing.TB) (*appletest.Server, []byte, *appletest.Location) {
	t.Helper()
	fake := appletest.New()
	t.Cleanup(fake.Close)
	token := appletest.TokenFile("Contoso", time.Now().AddDate(1, 0, 0), "secret-1")
	loc := &appletest.Location{UID: "2049025000431439", Name: "Contoso HQ", Country: "DE", ExpiresAt: time.Date(2030, 11, 8, 22, 33, 22, 0, time.UTC)}
	fake.AddLocation(token, loc)
	return fake, token, loc
}

func TestClientConfig(t *testing.T) {
	fake, token, _ := setup(t)
	c := newClient(t, fake, "")
	cfg, err := c.ClientConfig(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LocationUID != "2049025000431439" || cfg.LocationName != "Contoso HQ" || cfg.CountryCode != "DE" || cfg.MDMInfo != nil {
		t.Fatalf("config = %+v", cfg)
	}
	if !cfg.TokenExpiresAt.Equal(time.Date(2030, 11, 8, 22, 33, 22, 0, time.UTC)) {
		t.Fatalf("expiry = %v", cfg.TokenExpiresAt)
	}
}

func TestSetMDMInfo(t *testing.T) {
	fake, token, loc := setup(t)
	c := newClient(t, fake, "")
	t.Run("OK", func(t *testing.T) {
		cfg, err := c.SetMDMInfo(context.Background(), token, apple.MDMInfo{ID: "ours", Name: "Orchard", Metadata: "msp.example"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MDMInfo == nil || cfg.MDMInfo.ID != "ours" || loc.MDM.Metadata != "msp.example" {
			t.Fatalf("mdmInfo not stored: %+v", cfg.MDMInfo)
		}
	})
	t.Run("ErrIncomplete", func(t *testing.T) {
		_, err := c.SetMDMInfo(context.Background(), token, apple.MDMInfo{ID: "ours", Name: "Orchard"})
		var ae *apple.Error
		if !errors.As(err, &ae) || ae.Number != 9723 {
			t.Fatalf("got %v, want Apple's 9723", err)
		}
	})
}

func TestTokenErrorsAreNotRetried(t *testing.T) {
	for _, tc := range []struct {
		number int
		code   fault.Code
	}{
		{9621, fault.TokenExpired},
		{9622, fault.TokenInvalid},
		{9625, fault.TokenRevoked},
		{9722, fault.TokenInvalid},
		{9601, fault.TokenInvalid},
	} {
		t.Run(strconv.Itoa(tc.number), func(t *testing.T) {
			fake, token, loc := setup(t)
			loc.ErrorNumber = tc.number
			c := newClient(t, fake, "")
			_, err := c.ClientConfig(context.Background(), token)
			if got := fault.CodeOf(err); got != tc.code {
				t.Fatalf("code = %s (%v), want %s", got, err, tc.code)
			}
			if n := fake.Count("GET /mdm/v2/client/config"); n != 1 {
				t.Fatalf("%d requests, want 1 (never retried)", n)
			}
		})
	}
}

// Apple answers an unknown token with HTTP 200 and an error body.
func TestUnknownTokenWith200(t *testing.T) {
	fake, _, _ := setup(t)
	c := newClient(t, fake, "")
	_, err := c.ClientConfig(context.Background(), []byte("not-a-known-token"))
	if fault.CodeOf(err) != fault.TokenInvalid {
		t.Fatalf("got %v, want TOKEN_INVALID", err)
	}
}

func TestRetries(t *testing.T) {
	t.Run("RateLimitHonoursRetryAfter", func(t *testing.T) {
		fake, token, _ := setup(t)
		fake.Fail(appletest.Failure{Status: 429, ErrorNumber: 9646, RetryAfter: "1"}, appletest.Failure{Status: 429, ErrorNumber: 9646})
		c := newClient(t, fake, "")
		start := time.Now()
		if _, err := c.ClientConfig(context.Background(), token); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("retried after %v, before Retry-After's 1s", el)
		}
		if n := fake.Count("GET /mdm/v2/client/config"); n != 3 {
			t.Fatalf("%d requests, want 3", n)
		}
	})
	t.Run("RateLimitedPastBudget", func(t *testing.T) {
		fake, token, _ := setup(t)
		for range 100 {
			fake.Fail(appletest.Failure{Status: 200, ErrorNumber: 9646}) // 9646 wrapped in HTTP 200
		}
		c := newClient(t, fake, `,"retryBudget":"300ms"`)
		_, err := c.ClientConfig(context.Background(), token)
		if fault.CodeOf(err) != fault.AppleRateLimited {
			t.Fatalf("got %v, want APPLE_RATE_LIMITED", err)
		}
	})
	t.Run("ServerErrorsPastBudget", func(t *testing.T) {
		fake, token, _ := setup(t)
		for range 100 {
			fake.Fail(appletest.Failure{Status: 500})
		}
		c := newClient(t, fake, `,"retryBudget":"300ms"`)
		_, err := c.ClientConfig(context.Background(), token)
		if fault.CodeOf(err) != fault.AppleUnavailable {
			t.Fatalf("got %v, want APPLE_UNAVAILABLE", err)
		}
		if n := fake.Count("GET /mdm/v2/client/config"); n < 2 {
			t.Fatalf("%d requests: 500s were not retried", n)
		}
	})
	t.Run("TransientThenOK", func(t *testing.T) {
		fake, token, _ := setup(t)
		fake.Fail(appletest.Failure{Status: 503, ErrorNumber: 9729}, appletest.Failure{Status: 500, ErrorNumber: 9603}, appletest.Failure{Status: 502})
		c := newClient(t, fake, "")
		if _, err := c.ClientConfig(context.Background(), token); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NetworkDown", func(t *testing.T) {
		fake, token, _ := setup(t)
		c := newClient(t, fake, `,"retryBudget":"200ms"`)
		fake.Close()
		_, err := c.ClientConfig(context.Background(), token)
		if fault.CodeOf(err) != fault.AppleUnavailable {
			t.Fatalf("got %v, want APPLE_UNAVAILABLE", err)
		}
		if strings.Contains(err.Error(), string(token)) {
			t.Fatal("error carries the token")
		}
	})
	t.Run("ContextCancels", func(t *testing.T) {
		fake, token, _ := setup(t)
		fake.Latency = 2 * time.Second
		c := newClient(t, fake, "")
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.ClientConfig(ctx, token)
		if err == nil || time.Since(start) > time.Second {
			t.Fatalf("got %v after %v; want an error soon after the context ends", err, time.Since(start))
		}
	})
}

// An asset page's request meets Apple's error bodies as every other does:
// a 9646 wrapped in HTTP 200 is retried, a token error is not.
func TestAssetsErrorBodies(t *testing.T) {
	t.Run("RateLimitedWith200", func(t *testing.T) {
		fake, token, loc := setup(t)
		loc.Assets = appletest.MakeAssets(250)
		fake.Fail(appletest.Failure{Status: 200, ErrorNumber: 9646})
		c := newClient(t, fake, "")
		got, err := c.Assets(context.Background(), token)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Assets) != 250 {
			t.Fatalf("%d assets, want 250: the error body was read as a page", len(got.Assets))
		}
		if n := fake.Count("GET /mdm/v2/assets"); n != 4 {
			t.Fatalf("%d requests, want 4 (page 0 twice, then pages 1 and 2)", n)
		}
	})
	t.Run("TokenExpired", func(t *testing.T) {
		fake, token, loc := setup(t)
		loc.ErrorNumber = 9621
		c := newClient(t, fake, "")
		_, err := c.Assets(context.Background(), token)
		if got := fault.CodeOf(err); got != fault.TokenExpired {
			t.Fatalf("code = %s (%v), want TOKEN_EXPIRED", got, err)
		}
		if n := fake.Count("GET /mdm/v2/assets"); n != 1 {
			t.Fatalf("%d requests, want 1 (never retried)", n)
		}
	})
}

func TestAssetsAllPages(t *testing.T) {
	fake, token, loc := setup(t)
	loc.Assets = appletest.MakeAssets(1234)
	loc.Assets[0].TotalCount = 2147483647 // an unlimited free app
	loc.Assets[1].ProductType, loc.Assets[1].PricingParam, loc.Assets[1].SupportedPlatforms = "Book", "PLUS", []string{}
	fake.PageSize = 100
	fake.Latency = 10 * time.Millisecond
	c := newClient(t, fake, "")
	// Two fetches at once: the pages are read into shared buffers, and
	// neither fetch may see the other's bytes.
	var wg sync.WaitGroup
	results := make([]*apple.Assets, 2)
	errs := make([]error, 2)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = c.Assets(context.Background(), token) })
	}
	wg.Wait()
	for i, got := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if len(got.Assets) != 1234 || got.Pages != 13 {
			t.Fatalf("got %d assets in %d pages, want 1234 in 13", len(got.Assets), got.Pages)
		}
		for j, a := range got.Assets {
			w := loc.Assets[j]
			if a.AdamID != w.AdamID || a.PricingParam != w.PricingParam || a.ProductType != w.ProductType ||
				a.TotalCount != w.TotalCount || a.AssignedCount != w.AssignedCount || a.AvailableCount != w.AvailableCount ||
				a.RetiredCount != w.RetiredCount || strings.Join(a.SupportedPlatforms, ",") != strings.Join(w.SupportedPlatforms, ",") {
				t.Fatalf("asset %d is %+v, Apple's is %+v", j, a, w)
			}
		}
	}
	if m := fake.MaxInFlight(); m > 5 || m < 2 {
		t.Fatalf("max %d requests in flight for the two fetches, want 2..5 (parallel, within Apple's limit for the token)", m)
	}
}

func TestAssetsRestartOnVersionChange(t *testing.T) {
	fake, token, loc := setup(t)
	loc.Assets = appletest.MakeAssets(500)
	fake.ChangeVersionOnPage = 3
	c := newClient(t, fake, "")
	got, err := c.Assets(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Assets) != 500 {
		t.Fatalf("got %d assets", len(got.Assets))
	}
	if n := fake.Count("GET /mdm/v2/assets"); n != 10 {
		t.Fatalf("%d page requests, want 10 (5 pages read twice)", n)
	}
}

func TestMetadata(t *testing.T) {
	fake, token, loc := setup(t)
	loc.Names = map[string]string{"1": "One", "2": "Two"}
	c := newClient(t, fake, "")
	got, err := c.Metadata(context.Background(), token, "de", "volumestore", []string{"1", "2", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["1"].Name != "One" || got["2"].BundleID != "com.example.2" || !strings.Contains(got["1"].IconURL, "512x512") {
		t.Fatalf("metadata = %+v", got)
	}
}

// A token's page count from the last fetch lets the next fetch ask for
// every page at once; a location that shrank meanwhile still reads right,
// and the pages asked for past its new end are at most one window's worth.
func TestAssetsGuessAhead(t *testing.T) {
	fake, token, loc := setup(t)
	fake.PageSize = 100
	loc.Assets = appletest.MakeAssets(2000)
	c := newClient(t, fake, "")
	pages := func() int { return fake.Count("GET /mdm/v2/assets") }
	if got, err := c.Assets(context.Background(), token); err != nil || len(got.Assets) != 2000 {
		t.Fatalf("first fetch: %v", err)
	}
	before := pages()
	if got, err := c.Assets(context.Background(), token); err != nil || len(got.Assets) != 2000 || got.Pages != 20 {
		t.Fatalf("second fetch: %v", err)
	}
	if n := pages() - before; n != 20 {
		t.Fatalf("second fetch asked for %d pages, want the 20 there are", n)
	}
	if m := fake.MaxInFlight(); m > 5 {
		t.Fatalf("%d requests at once, Apple allows 5", m)
	}

	fake.Update(func() { loc.Assets = loc.Assets[:150] })
	before = pages()
	got, err := c.Assets(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Assets) != 150 || got.Pages != 2 {
		t.Fatalf("after shrinking: %d assets in %d pages, want 150 in 2", len(got.Assets), got.Pages)
	}
	if n := pages() - before; n > 2+5 {
		t.Fatalf("after shrinking to 2 pages, %d pages were asked for; out-of-range ones should stop at one window (5)", n)
	}
	// The shrunken count is remembered: the next fetch asks for 2 pages.
	before = pages()
	if _, err := c.Assets(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	if n := pages() - before; n != 2 {
		t.Fatalf("third fetch asked for %d pages, want 2", n)
	}
}
