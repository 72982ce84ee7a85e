package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/store"
)

func TestSQLiteSettings(t *testing.T) {
	s := startServer(t, map[string]string{forceSQLite: "1"})
	dir := s.env["ORCHARD_DATA_DIR"]
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "secret.key"): 0o600, filepath.Join(dir, "orchard.db"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	cfg, _, err := loadConfig("serve", nil, s.getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), cfg.storeOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check := func(name string, conn *sql.DB) {
		for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "10000"} {
			var got string
			if err := conn.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s connection: PRAGMA %s = %s, want %s", name, pragma, got, want)
			}
		}
	}
	writer, reader := db.SQLitePools()
	check("writer", writer)
	check("reader", reader)
	if n := writer.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer pool allows %d connections, want 1", n)
	}
	var qo string
	_ = reader.QueryRow("PRAGMA query_only").Scan(&qo)
	if qo != "1" {
		t.Errorf("reader connections can write (query_only=%s)", qo)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	c := s.createCustomer(admin, "Metric Co")
	exp := time.Now().AddDate(0, 0, 20)
	f := appletest.TokenFile("Metric", exp, "m")
	s.Fake.AddLocation(f, &appletest.Location{UID: "42", Name: "Metric HQ", ExpiresAt: exp})
	var up uploadResult
	s.upload(admin, c, f).decode(t, &up)
	s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID)

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get(s.URL + path)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("GET %s = %v %v", path, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	// The token gauges come from the job leader, which may still be electing
	// itself on PostgreSQL.
	var body string
	waitFor(t, func() bool {
		r := scrape(t, s.URL, "Bearer "+admin)
		body = r.body
		return r.value(t, "orchard_leader", nil) == 1
	})
	tokenID := up.UploadServerToken.Token.ID
	for _, want := range []string{
		`orchard_http_requests_total{method="POST",route="/graphql",status="200"}`,
		`orchard_graphql_operations_total{operation="anonymous",outcome="ok",type="mutation"}`,
		fmt.Sprintf(`orchard_server_token_expiry_timestamp_seconds{customer_id="%s",location_uid="42",token_id="%s"} %s`, c, tokenID, strconv.FormatFloat(float64(exp.Unix()), 'g', -1, 64)),
		`orchard_server_tokens{expiry_status="EXPIRING_SOON",state="ACTIVE"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, admin) {
		t.Error("/metrics shows an API key")
	}
	if strings.Contains(s.Log.String(), admin) {
		t.Error("the log shows an API key")
	}
}

func TestGraphQLLimits(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	deep := "{ customers(first: 1) { edges { node { tokens(first: 1) { edges { node { customer { tokens(first: 1) { edges { node { customer { tokens(first: 1) { edges { node { id } } } } } } } } } } } } } } }"
	for name, q := range map[string]string{
		"no page size":      `{ tokens { edges { node { id } } } }`,
		"page too large":    `{ tokens(first: 1000) { edges { node { id } } } }`,
		"too deep":          deep,
		"many directives":   "{ __typename " + strings.Repeat("@include(if: true) ", 20000) + "}",
		"unknown field":     `{ nope }`,
		"bad syntax":        `{ customers(`,
		"huge nested pages": `{ customers(first: 100) { edges { node { tokens(first: 100) { edges { node { apps(first: 100) { edges { node { id } } } } } } } } } }`,
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			r := s.gql(admin, q, nil)
			if r.code() != "BAD_USER_INPUT" {
				t.Fatalf("got %s", r.Raw[:min(len(r.Raw), 300)])
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("refusal took %v", d)
			}
		})
	}
	t.Run("TotalCountNeedsNoPage", func(t *testing.T) {
		var out struct{ Customers struct{ TotalCount int } }
		s.gql(admin, `{ customers { totalCount } }`, nil).decode(t, &out)
	})
	t.Run("GETIsQueryOnly", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.URL+`/graphql?query=mutation{createCustomer(input:{name:"x"}){id}}`, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		r := s.do(req)
		if len(r.Errors) == 0 {
			t.Fatalf("a mutation ran over GET: %s", r.Raw)
		}
	})
}

func TestPlaygroundIsSelfContained(t *testing.T) {
	s := startServer(t, nil)
	resp, err := http.Get(s.URL + "/playground")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "graphiql") {
		t.Fatalf("GET /playground = %d", resp.StatusCode)
	}
	for _, bad := range []string{"cdn.", "unpkg", "jsdelivr", "googleapis"} {
		if strings.Contains(string(page), bad) {
			t.Errorf("the Playground page loads from %s", bad)
		}
	}
	for _, asset := range []string{"/playground/graphiql.min.js", "/playground/graphiql.min.css", "/playground/react.production.min.js", "/playground/react-dom.production.min.js", "/playground/graphql-ws.min.js", "/playground/playground.js"} {
		resp, err := http.Get(s.URL + asset)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s = %v %v", asset, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
}

// SIGTERM ends the real program with exit code 0 well within 10 s, closing
// an open subscription with 1001 (going away).
func TestSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	fake := appletest.New()
	defer fake.Close()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+dir, "ORCHARD_APPLE_URL="+fake.BaseURL())

	key := childAPIKey(t, env, "sig")

	server := serveChild(t, env)
	ws := subscriber(t, server.srv, key, "1", nil)
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	if err := server.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-server.exited:
		if server.err != nil {
			t.Fatalf("exit after SIGTERM: %v", server.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after SIGTERM")
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start))
	// The subscription ended with a close frame that says the server went
	// away, so a client reconnects, not with a reset.
	m, err := ws.read(2 * time.Second)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway && code != websocket.StatusServiceRestart {
		t.Fatalf("subscription got %+v, %v at shutdown; want close code 1001 or 1012", m, err)
	}
}
