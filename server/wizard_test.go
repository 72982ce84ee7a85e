package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// The whole wizard over HTTP, with the real Apple client talking to a fake
// Apple that follows Apple's documentation.
func TestWizard(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		contoso := s.createCustomer(admin, "Contoso")
		fabrikam := s.createCustomer(admin, "Fabrikam")
		year := time.Now().AddDate(1, 0, 0)
		file := appletest.TokenFile("Contoso Ltd", year, "contoso-secret-1")
		loc := &appletest.Location{UID: "2049025000431439", Name: "Contoso HQ", Country: "GB", ExpiresAt: year, Assets: appletest.MakeAssets(30)}
		s.Fake.AddLocation(file, loc)

		var up uploadResult
		s.upload(admin, contoso, file).decode(t, &up)
		tok := up.UploadServerToken.Token
		if tok.State != "PENDING" || tok.LocationName != "Contoso HQ" || tok.LocationUID != loc.UID || tok.OrgName != "Contoso Ltd" || up.UploadServerToken.Renews != nil {
			t.Fatalf("upload = %+v", up)
		}
		if loc.MDM != nil {
			t.Fatal("the review step wrote to Apple")
		}

		var conf struct{ ConfirmServerToken struct{ Token tokenView } }
		s.action(admin, "confirmServerToken", tok.ID).decode(t, &conf)
		if conf.ConfirmServerToken.Token.State != "ACTIVE" || loc.MDM == nil || loc.MDM.Name != "Orchard" || loc.MDM.Metadata != "orchard.test" {
			t.Fatalf("confirm = %+v; Apple holds %+v", conf, loc.MDM)
		}
		if r := s.action(admin, "confirmServerToken", tok.ID); r.code() != "INVALID_STATE" {
			t.Fatalf("confirming an ACTIVE token: %s", r.Raw)
		}

		// The first sync runs in the background after confirm.
		waitFor(t, func() bool {
			var out struct{ Node struct{ AppCount int } }
			s.gql(admin, `query($id: ID!) { node(id: $id) { ... on ServerToken { appCount } } }`, map[string]any{"id": tok.ID}).decode(t, &out)
			return out.Node.AppCount == 30
		})

		t.Run("SameLocationOtherCustomer", func(t *testing.T) {
			again := appletest.TokenFile("Contoso Ltd", year, "contoso-secret-2")
			s.Fake.AddLocation(again, loc)
			if r := s.upload(admin, fabrikam, again); r.code() != "TOKEN_OWNED_BY_OTHER_CUSTOMER" {
				t.Fatalf("got %s", r.Raw)
			}
		})

		t.Run("RenewInPlace", func(t *testing.T) {
			later := year.AddDate(1, 0, 0)
			renewal := appletest.TokenFile("Contoso Ltd", later, "contoso-secret-renewed")
			s.Fake.Update(func() { loc.ExpiresAt = later })
			s.Fake.AddLocation(renewal, loc)
			var up2 uploadResult
			s.upload(admin, contoso, renewal).decode(t, &up2)
			if up2.UploadServerToken.Renews == nil || up2.UploadServerToken.Renews.ID != tok.ID {
				t.Fatalf("renewal upload does not say it renews %s: %+v", tok.ID, up2)
			}
			var c struct{ ConfirmServerToken struct{ Token tokenView } }
			s.action(admin, "confirmServerToken", up2.UploadServerToken.Token.ID).decode(t, &c)
			got := c.ConfirmServerToken.Token
			if got.ID != tok.ID || !strings.HasPrefix(got.ExpiresAt, later.UTC().Format("2006-01-02")) {
				t.Fatalf("renewed token = %+v, want id %s expiring %v", got, tok.ID, later)
			}
			var out struct {
				Tokens struct{ TotalCount int }
				Node   struct{ AppCount int }
			}
			s.gql(admin, `query($id: ID!) { tokens { totalCount } node(id: $id) { ... on ServerToken { appCount } } }`, map[string]any{"id": tok.ID}).decode(t, &out)
			if out.Tokens.TotalCount != 1 || out.Node.AppCount != 30 {
				t.Fatalf("after renewal: %d tokens, %d apps; want 1 and 30", out.Tokens.TotalCount, out.Node.AppCount)
			}
		})

		t.Run("ConflictClaimAndCancel", func(t *testing.T) {
			nw := appletest.TokenFile("Northwind", year, "northwind")
			nwLoc := &appletest.Location{UID: "981060278089131045", Name: "Northwind", ExpiresAt: year,
				MDM: &appletest.MDMInfo{ID: "29dd58b6", Name: "Zentral", Metadata: "zentral.example.com"}}
			s.Fake.AddLocation(nw, nwLoc)
			var up uploadResult
			s.upload(admin, fabrikam, nw).decode(t, &up)
			if up.UploadServerToken.Token.State != "CONFLICT" || up.UploadServerToken.Conflict == nil || up.UploadServerToken.Conflict.Name != "Zentral" {
				t.Fatalf("upload = %+v", up)
			}
			if r := s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID); r.code() != "TOKEN_CONFLICT" || !strings.Contains(r.Errors[0].Message, "Zentral") {
				t.Fatalf("confirm of a conflict: %s", r.Raw)
			}
			var up2 uploadResult
			s.upload(admin, fabrikam, nw).decode(t, &up2)
			var cancel struct{ CancelServerToken struct{ Token tokenView } }
			s.action(admin, "cancelServerToken", up2.UploadServerToken.Token.ID).decode(t, &cancel)
			if cancel.CancelServerToken.Token.State != "CONFLICT" {
				t.Fatalf("cancel = %+v", cancel)
			}
			var claim struct{ ClaimServerToken struct{ Token tokenView } }
			s.action(admin, "claimServerToken", up.UploadServerToken.Token.ID).decode(t, &claim)
			if claim.ClaimServerToken.Token.State != "ACTIVE" || nwLoc.MDM.Name != "Orchard" {
				t.Fatalf("claim = %+v, Apple holds %+v", claim, nwLoc.MDM)
			}
			var del struct{ DeleteServerToken struct{ DeletedID string } }
			s.gql(admin, `mutation($t: ID!) { deleteServerToken(input: {tokenID: $t}) { deletedID } }`, map[string]any{"t": up.UploadServerToken.Token.ID}).decode(t, &del)
			if del.DeleteServerToken.DeletedID != up.UploadServerToken.Token.ID {
				t.Fatalf("delete = %+v", del)
			}
			if r := s.gql(admin, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": up.UploadServerToken.Token.ID}); r.code() != "NOT_FOUND" {
				t.Fatalf("deleted token still found: %s", r.Raw)
			}
		})
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every bad file and every Apple failure gets its code and leaves nothing behind.
func TestUploadFailures(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_MAX_UPLOAD_BYTES": "4096"})
	admin := s.key()
	c := s.createCustomer(admin, "Contoso")
	year := time.Now().AddDate(1, 0, 0)
	known := func(secret string) []byte {
		f := appletest.TokenFile("Org", year, secret)
		s.Fake.AddLocation(f, &appletest.Location{UID: "1", Name: "L", ExpiresAt: year})
		return f
	}
	cases := []struct {
		name  string
		file  []byte
		setup func()
		code  string
	}{
		{"garbage", []byte("hello"), nil, "INVALID_TOKEN_FILE"},
		{"json without base64", []byte(`{"token":"x","expDate":"2030-01-01T00:00:00+0000","orgName":"o"}`), nil, "INVALID_TOKEN_FILE"},
		{"missing fields", []byte(base64.StdEncoding.EncodeToString([]byte(`{"token":"x"}`))), nil, "INVALID_TOKEN_FILE"},
		{"ADE token", []byte("Content-Type: application/pkcs7-mime; name=smime.p7m\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIAC"), nil, "WRONG_TOKEN_KIND"},
		{"expired file", appletest.TokenFile("Org", time.Now().Add(-time.Hour), "old"), nil, "TOKEN_EXPIRED"},
		{"unknown to Apple (9622 with HTTP 200)", appletest.TokenFile("Org", year, "unknown"), nil, "TOKEN_INVALID"},
		{"429 storm past the budget", known("storm"), func() {
			for range 50 {
				s.Fake.Fail(appletest.Failure{Status: 429, ErrorNumber: 9646, RetryAfter: "1"})
			}
		}, "APPLE_RATE_LIMITED"},
		{"500s past the budget", known("down"), func() {
			for range 200 {
				s.Fake.Fail(appletest.Failure{Status: 500})
			}
		}, "APPLE_UNAVAILABLE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.Fake.ClearFailures()
			if tc.setup != nil {
				tc.setup()
			}
			r := s.upload(admin, c, tc.file)
			if r.code() != tc.code {
				t.Fatalf("got %s, want %s", r.Raw, tc.code)
			}
			if !strings.Contains(r.Errors[0].Message, ".") || len(r.Errors[0].Message) < 30 {
				t.Fatalf("message %q does not say what to do next", r.Errors[0].Message)
			}
		})
	}
	s.Fake.ClearFailures()
	var out struct{ Tokens struct{ TotalCount int } }
	s.gql(admin, `{ tokens { totalCount } }`, nil).decode(t, &out)
	if out.Tokens.TotalCount != 0 {
		t.Fatalf("%d tokens stored by failed uploads", out.Tokens.TotalCount)
	}

	t.Run("TooLargeByContentLength", func(t *testing.T) {
		body, ct := multipartBody(uploadMutation, map[string]any{"c": c, "f": nil}, bytes.Repeat([]byte("A"), 20<<20))
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+admin)
		start := time.Now()
		r := s.do(req)
		if r.Status != http.StatusRequestEntityTooLarge || r.code() != "UPLOAD_TOO_LARGE" {
			t.Fatalf("got HTTP %d %s", r.Status, r.Raw)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("refusal took %v", time.Since(start))
		}
	})
	t.Run("TooLargeChunked", func(t *testing.T) {
		body, ct := multipartBody(uploadMutation, map[string]any{"c": c, "f": nil}, bytes.Repeat([]byte("A"), 1<<20))
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", io.MultiReader(body)) // no length: chunked
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+admin)
		r := s.do(req)
		if r.Status != http.StatusRequestEntityTooLarge || r.code() != "UPLOAD_TOO_LARGE" {
			t.Fatalf("got HTTP %d %s", r.Status, r.Raw)
		}
	})
	t.Run("FileOverLimitWithinRequest", func(t *testing.T) {
		r := s.upload(admin, c, bytes.Repeat([]byte("A"), 5000))
		if r.code() != "UPLOAD_TOO_LARGE" {
			t.Fatalf("got %s", r.Raw)
		}
	})
	t.Run("CrossSiteFormHasNoCredentials", func(t *testing.T) {
		// A browser form from another site can send multipart, but never
		// an Authorization header, and Orchard sets and reads no cookie.
		body, ct := multipartBody(uploadMutation, map[string]any{"c": c, "f": nil}, known("csrf"))
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Origin", "https://evil.example")
		req.AddCookie(&http.Cookie{Name: "session", Value: "anything"})
		r := s.do(req)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("cross-site form got HTTP %d", r.Status)
		}
	})
}

// Ten confirms of the same location at once leave one ACTIVE token.
func TestConcurrentConfirms(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	c := s.createCustomer(admin, "Race")
	year := time.Now().AddDate(1, 0, 0)
	loc := &appletest.Location{UID: "777", Name: "Race", ExpiresAt: year}
	var ids []string
	for i := range 10 {
		f := appletest.TokenFile("Race", year, "race-"+string(rune('a'+i)))
		s.Fake.AddLocation(f, loc)
		var up uploadResult
		s.upload(admin, c, f).decode(t, &up)
		ids = append(ids, up.UploadServerToken.Token.ID)
	}
	var wg sync.WaitGroup
	codes := make([]string, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = s.action(admin, "confirmServerToken", id).code()
		}()
	}
	wg.Wait()
	for _, code := range codes {
		if code == "INTERNAL" {
			t.Fatalf("a racing confirm failed internally: %v", codes)
		}
	}
	var out struct{ Tokens struct{ TotalCount int } }
	s.gql(admin, `{ tokens(where: {state: ACTIVE}) { totalCount } }`, nil).decode(t, &out)
	if out.Tokens.TotalCount != 1 {
		t.Fatalf("%d ACTIVE tokens, want 1", out.Tokens.TotalCount)
	}
}

// The token never appears in a response, a log line or the database files,
// and survives a restart.
func TestSecretsStaySealed(t *testing.T) {
	s := startServer(t, map[string]string{forceSQLite: "1"})
	admin := s.key()
	c := s.createCustomer(admin, "Contoso")
	inner := "INNER-SECRET-" + strings.Repeat("Z", 40)
	year := time.Now().AddDate(1, 0, 0)
	file := appletest.TokenFile("Contoso", year, inner)
	loc := &appletest.Location{UID: "5150", Name: "HQ", ExpiresAt: year, Assets: appletest.MakeAssets(3)}
	s.Fake.AddLocation(file, loc)

	var responses bytes.Buffer
	r := s.upload(admin, c, file)
	responses.WriteString(r.Raw)
	var up uploadResult
	r.decode(t, &up)
	for _, m := range []string{"confirmServerToken", "syncServerToken"} {
		responses.WriteString(s.action(admin, m, up.UploadServerToken.Token.ID).Raw)
	}
	responses.WriteString(s.gql(admin, `{ tokens(first: 5) { edges { node { id orgName managedBy { id name metadata } } } } }`, nil).Raw)
	responses.WriteString(s.gql(admin, `{ __type(name: "ServerToken") { fields { name } } }`, nil).Raw)
	s.stop()

	secrets := map[string]string{
		"file":                 string(file),
		"file prefix":          string(file[:40]),
		"inner token (base64)": base64.StdEncoding.EncodeToString([]byte(inner)),
		"inner token":          inner,
	}
	data := map[string][]byte{"responses": responses.Bytes(), "log": []byte(s.Log.String())}
	dir := s.env["ORCHARD_DATA_DIR"]
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		data[e.Name()] = b
	}
	if _, ok := data["orchard.db"]; !ok {
		t.Fatalf("no database file in %s", dir)
	}
	for where, b := range data {
		for what, secret := range secrets {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the %s appears in %s", what, where)
			}
		}
	}
	if strings.Contains(responses.String(), "sealed") {
		t.Error("the schema exposes the sealed token")
	}

	// A restart on the same data dir keeps the token usable.
	s.start()
	var after struct{ SyncServerToken struct{ Token tokenView } }
	s.action(admin, "syncServerToken", up.UploadServerToken.Token.ID).decode(t, &after)
	if after.SyncServerToken.Token.State != "ACTIVE" {
		t.Fatalf("after restart: %+v", after)
	}
}

func TestTokenInspect(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.vpptoken")
	exp := time.Date(2031, 3, 14, 9, 12, 45, 0, time.UTC)
	_ = os.WriteFile(good, appletest.TokenFile("Contoso Ltd", exp, "do-not-print-me"), 0o600)
	bad := filepath.Join(dir, "bad.p7m")
	_ = os.WriteFile(bad, []byte("Content-Type: application/pkcs7-mime\r\n"), 0o600)
	env := func(string) string { return "" }

	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"token", "inspect", good}, env, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var got struct {
		OrgName   string `json:"orgName"`
		ExpiresAt string `json:"expiresAt"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.OrgName != "Contoso Ltd" || got.ExpiresAt != "2031-03-14T09:12:45Z" {
		t.Fatalf("inspect printed %q (%v)", out.String(), err)
	}
	if strings.Contains(out.String(), "do-not-print-me") || strings.Contains(out.String(), base64.StdEncoding.EncodeToString([]byte("do-not-print-me"))) {
		t.Fatal("inspect printed the secret")
	}
	err := run(t.Context(), []string{"token", "inspect", bad}, env, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "Automated Device Enrollment") {
		t.Fatalf("inspect of an ADE token: %v", err)
	}
}

// `orchard secrets rotate` re-seals every token under a new key while the
// server runs; the server keeps opening tokens throughout and after.
func TestSecretsRotate(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	c := s.createCustomer(admin, "Rotating")
	year := time.Now().AddDate(1, 0, 0)
	var ids []string
	for i := range 3 {
		f := appletest.TokenFile("R", year, "rotate-"+string(rune('a'+i)))
		s.Fake.AddLocation(f, &appletest.Location{UID: "rot" + string(rune('a'+i)), Name: "R", ExpiresAt: year})
		var up uploadResult
		s.upload(admin, c, f).decode(t, &up)
		s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID)
		ids = append(ids, up.UploadServerToken.Token.ID)
	}
	keyFile := filepath.Join(s.env["ORCHARD_DATA_DIR"], "secret.key")
	before, _ := os.ReadFile(keyFile)

	out, errOut, err := s.command("secrets", "rotate")
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "re-sealed 3 server tokens") {
		t.Fatalf("rotate printed %q", out)
	}
	after, _ := os.ReadFile(keyFile)
	if bytes.Equal(before, after) || !bytes.Contains(after, bytes.TrimSpace(before)) {
		t.Fatal("the key file should hold a new key first and keep the old one")
	}
	// The running server opens the re-sealed tokens.
	for _, id := range ids {
		if r := s.action(admin, "syncServerToken", id); len(r.Errors) > 0 {
			t.Fatalf("sync after rotation: %s", r.Raw)
		}
	}
	if _, errOut, err := s.command("secrets", "rotate", "--drop-old"); err != nil {
		t.Fatalf("rotate --drop-old: %v\n%s", err, errOut)
	}
	s.restart()
	for _, id := range ids {
		if r := s.action(admin, "syncServerToken", id); len(r.Errors) > 0 {
			t.Fatalf("sync after restart with only the new key: %s", r.Raw)
		}
	}
}
