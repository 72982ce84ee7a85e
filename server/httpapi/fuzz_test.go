package httpapi

import (
	"bytes"
	"context"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/internal/servertest"
)

// fuzzHandler is the whole HTTP surface on a fresh database, with a key.
func fuzzHandler(f *testing.F) (http.Handler, string) {
	f.Helper()
	fake := appletest.New()
	f.Cleanup(fake.Close)
	client := testdb.SQLite(f).Client
	log := slog.New(slog.DiscardHandler)
	svc := domain.New(client, servertest.Modules(f, fake), domain.Config{WarnDays: []int{30}}, log)
	cfg := &Options{MaxUploadBytes: 65536, OperationTimeout: 5 * time.Second, Introspection: true}
	key, hash := NewAPIKey()
	client.APIKey.Create().SetName("fuzz").SetRole(apikey.RoleAdmin).SetCustomerIds([]int{}).SetHash(hash).SetPrefix("orch_f").
		SaveX(viewer.SystemContext(f.Context()))
	h := newHandler(serverDeps{cfg: cfg, client: client, db: alwaysReady{}, svc: svc, hub: domain.NewHub(svc), auth: newAuthenticator(client),
		metrics: newMetrics(log), limits: newRateLimits(0), log: log})
	return h, key
}

var allowedStatus = map[int]bool{200: true, 400: true, 401: true, 404: true, 405: true, 413: true, 415: true, 422: true, 429: true}

var contentTypes = []string{"application/json", "multipart/form-data; boundary=XYZ", "text/plain", "application/graphql", "", "application/x-www-form-urlencoded"}

// FuzzGraphQLHandler posts arbitrary bodies to /graphql: the answer is always
// a known status, nothing panics, and no request allocates without bound.
func FuzzGraphQLHandler(f *testing.F) {
	h, key := fuzzHandler(f)
	for _, seed := range []string{
		`{"query":"{ __typename }"}`,
		`{"query":"{ customers(first: 5) { totalCount edges { node { id name } } } }"}`,
		`{"query":"mutation { createCustomer(input: {name: \"x\"}) { id } }"}`,
		`{"query":"query($id: ID!) { node(id: $id) { id } }","variables":{"id":"b3JjaGFyZDox"}}`,
		`{"query":"{ tokens(first: 1000) { edges { node { id } } } }"}`,
		`{"query":"{`, `[]`, `null`, ``, `{"query":{"a":1}}`,
		"--XYZ\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--XYZ--\r\n",
	} {
		for i := range contentTypes {
			f.Add([]byte(seed), uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, ct uint8) {
		req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentTypes[int(ct)%len(contentTypes)])
		req.Header.Set("Authorization", "Bearer "+key)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)
		if !allowedStatus[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Fatalf("one request allocated %d MB", grew>>20)
		}
	})
}

// FuzzMultipart sends GraphQL multipart requests with arbitrary parts: the
// answer is a known status and no upload is ever written to a temp file.
func FuzzMultipart(f *testing.F) {
	tmp := f.TempDir()
	os.Setenv("TMPDIR", tmp) // gqlgen would spill uploads here; it must not
	h, key := fuzzHandler(f)
	f.Add(uploadMutation, `{"0":["variables.f"]}`, []byte("hello"))
	f.Add(`{"query":"mutation($f: Upload!) { uploadServerToken(input: {customerID: \"x\", file: $f}) { token { id } } }","variables":{"f":null}}`, `{"0":["variables.f"]}`, bytes.Repeat([]byte("A"), 70000))
	f.Add(`{}`, `{"0":["variables.nope"]}`, []byte{})
	f.Add(`not json`, `not json`, []byte{0, 1, 2})
	f.Add(`null`, `{"0":["variables.f"]}`, []byte("A")) // gqlgen panicked on it
	f.Fuzz(func(t *testing.T, operations, mapField string, file []byte) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("operations", operations)
		_ = mw.WriteField("map", mapField)
		fw, _ := mw.CreateFormFile("0", "token.vpptoken")
		_, _ = fw.Write(file)
		_ = mw.Close()
		req := httptest.NewRequest(http.MethodPost, "/graphql", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowedStatus[rec.Code] {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
			t.Fatalf("an upload was written to %s", entries[0].Name())
		}
	})
}

// uploadMutation uploads a token file as the console does.
const uploadMutation = `mutation($c: ID!, $f: Upload!) {
  uploadServerToken(input: {customerID: $c, file: $f}) {
    token { id state orgName locationName locationUID countryCode expiresAt daysUntilExpiry expiryStatus managedBy { id name metadata } }
    conflict { id name metadata }
    renews { id }
  }
}`

// alwaysReady answers /readyz with 200.
type alwaysReady struct{}

func (alwaysReady) Ping(context.Context) error { return nil }
