package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/httpapi"
)

// TestMain lets a test run the real program as a child process (for
// signal tests): with ORCHARD_TEST_RUN_MAIN=1 the test binary is orchard.
func TestMain(m *testing.M) {
	if os.Getenv(envBenchBaseline) == "1" {
		if err := serveBenchBaseline(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv(envBenchSubscribers) != "" {
		if err := runBenchSubscribers(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv("ORCHARD_TEST_RUN_MAIN") == "1" {
		profileOnSignal(os.Getenv(envBenchProfile))
		main()
		return
	}
	os.Exit(m.Run())
}

// syncBuffer collects the server's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is `orchard serve` running in process on a free port, with a
// fake Apple over HTTP behind the real Apps and Books client.
type testServer struct {
	t       *testing.T
	URL     string
	env     map[string]string
	Fake    *appletest.Server
	Log     *syncBuffer
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func (s *testServer) getenv(k string) string { return s.env[k] }

// startServer starts a server; env overrides the test defaults.
func startServer(t *testing.T, env map[string]string) *testServer {
	t.Helper()
	fake := appletest.New()
	t.Cleanup(fake.Close)
	s := &testServer{t: t, Fake: fake, Log: &syncBuffer{}, env: map[string]string{
		"ORCHARD_DATA_DIR":           t.TempDir() + "/data",
		"ORCHARD_LISTEN":             "127.0.0.1:0",
		"ORCHARD_APPLE_URL":          fake.BaseURL(),
		"ORCHARD_APPLE_RETRY_BUDGET": "2s",
		"ORCHARD_MDM_METADATA":       "orchard.test",
		"ORCHARD_SHUTDOWN_TIMEOUT":   "5s",
		"ORCHARD_RATE_LIMIT":         "1000", // TestRateLimits tests the limits themselves
	}}
	for k, v := range env {
		s.env[k] = v
	}
	// make test runs the server tests a second time on PostgreSQL.
	if os.Getenv("ORCHARD_TEST_DB") == "postgres" && s.env["ORCHARD_DATABASE_URL"] == "" && s.env[forceSQLite] == "" {
		s.env["ORCHARD_DATABASE_URL"] = testdb.Postgres(t).URL
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) start() {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		err := s.startOnce()
		if err == nil {
			return
		}
		// A test that must know its address before the server starts
		// (ORCHARD_PUBLIC_URL) takes a port freeAddr found free; something
		// else on the machine may have taken it since. On the first start
		// another port will do.
		listen := s.env["ORCHARD_LISTEN"]
		if s.URL == "" && attempt < 5 && errors.Is(err, syscall.EADDRINUSE) && s.env["ORCHARD_PUBLIC_URL"] == "http://"+listen {
			addr := freeAddr(s.t)
			s.env["ORCHARD_LISTEN"], s.env["ORCHARD_PUBLIC_URL"] = addr, "http://"+addr
			continue
		}
		s.t.Fatalf("server did not start: %v\n%s", err, s.Log)
	}
}

// startOnce starts the server once.
func (s *testServer) startOnce() error {
	s.t.Helper()
	cfg, _, err := loadConfig("serve", nil, s.getenv, io.Discard)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	s.cancel, s.done, s.stopped = cancel, make(chan error, 1), false
	go func() { s.done <- serve(ctx, cfg, s.Log, ready) }()
	select {
	case addr := <-ready:
		s.URL = "http://" + addr
		return nil
	case err := <-s.done:
		cancel()
		s.stopped = true
		return err
	case <-time.After(20 * time.Second):
		s.t.Fatal("server did not start in time")
	}
	return nil
}

func (s *testServer) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		s.t.Error("server did not stop")
	}
}

// restart stops and starts the server on the same data dir.
func (s *testServer) restart() {
	s.stop()
	s.start()
}

// command runs an orchard command with the server's configuration.
func (s *testServer) command(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	err = run(context.Background(), args, s.getenv, &out, &errb)
	return out.String(), errb.String(), err
}

// key creates an API key and returns it.
func (s *testServer) key(args ...string) string {
	s.t.Helper()
	out, errOut, err := s.command(append([]string{"apikey", "create", "--name", "test"}, args...)...)
	if err != nil {
		s.t.Fatalf("apikey create: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], httpapi.KeyPrefix) {
		s.t.Fatalf("apikey create printed %q; want the key alone on one line", out)
	}
	return lines[0]
}

type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

type gqlResponse struct {
	Status int
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
	Raw    string
}

func (r *gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// decode reads data into v, failing on GraphQL errors.
func (r *gqlResponse) decode(t *testing.T, v any) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("GraphQL errors: %s", r.Raw)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Raw, err)
	}
}

func (s *testServer) do(req *http.Request) *gqlResponse {
	s.t.Helper()
	out, err := s.try(req)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// try is do for requests that may fail, as during a crash.
func (s *testServer) try(req *http.Request) (*gqlResponse, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := &gqlResponse{Status: resp.StatusCode, Raw: string(body)}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("HTTP %d, not JSON: %s", resp.StatusCode, body)
	}
	return out, nil
}

// tryAction runs a token mutation and reports a failed connection as an error.
func (s *testServer) tryAction(key, mutation, tokenID string) (*gqlResponse, error) {
	body, _ := json.Marshal(map[string]any{
		"query":     fmt.Sprintf(`mutation($t: ID!) { %s(input: {tokenID: $t}) { token { id state } } }`, mutation),
		"variables": map[string]any{"t": tokenID},
	})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	return s.try(req)
}

// gql posts a GraphQL request with key (none when empty).
func (s *testServer) gql(key, query string, vars map[string]any) *gqlResponse {
	s.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return s.do(req)
}

const uploadMutation = `mutation($c: ID!, $f: Upload!) {
  uploadServerToken(input: {customerID: $c, file: $f}) {
    token { id state orgName locationName locationUID countryCode expiresAt daysUntilExpiry expiryStatus managedBy { id name metadata } }
    conflict { id name metadata }
    renews { id }
  }
}`

// multipartBody builds a GraphQL multipart request (the spec's operations, map and file parts).
func multipartBody(query string, vars map[string]any, file []byte) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	ops, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	_ = mw.WriteField("operations", string(ops))
	_ = mw.WriteField("map", `{"0":["variables.f"]}`)
	fw, _ := mw.CreateFormFile("0", "sToken_for_Location.vpptoken")
	_, _ = fw.Write(file)
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

func (s *testServer) upload(key, customerID string, file []byte) *gqlResponse {
	s.t.Helper()
	body, ct := multipartBody(uploadMutation, map[string]any{"c": customerID, "f": nil}, file)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+key)
	return s.do(req)
}

type tokenView struct {
	ID              string `json:"id"`
	State           string `json:"state"`
	OrgName         string `json:"orgName"`
	LocationName    string `json:"locationName"`
	LocationUID     string `json:"locationUID"`
	ExpiresAt       string `json:"expiresAt"`
	DaysUntilExpiry int    `json:"daysUntilExpiry"`
	ExpiryStatus    string `json:"expiryStatus"`
	ManagedBy       *struct {
		ID, Name, Metadata string
	} `json:"managedBy"`
}

type uploadResult struct {
	UploadServerToken struct {
		Token    tokenView `json:"token"`
		Conflict *struct {
			Name string `json:"name"`
		} `json:"conflict"`
		Renews *struct {
			ID string `json:"id"`
		} `json:"renews"`
	} `json:"uploadServerToken"`
}

func (s *testServer) createCustomer(key, name string) string {
	s.t.Helper()
	var out struct {
		CreateCustomer struct{ ID string } `json:"createCustomer"`
	}
	s.gql(key, `mutation($n: String!) { createCustomer(input: {name: $n}) { id } }`, map[string]any{"n": name}).decode(s.t, &out)
	return out.CreateCustomer.ID
}

func (s *testServer) action(key, mutation, tokenID string) *gqlResponse {
	s.t.Helper()
	return s.gql(key, fmt.Sprintf(`mutation($t: ID!) { %s(input: {tokenID: $t}) { token { id state expiresAt managedBy { name } } } }`, mutation), map[string]any{"t": tokenID})
}

// tailspinExpiring uploads and confirms, for customerID, the location
// "Tailspin Toys" with a token that expires in five days (so a WARNING is
// raised at once), and returns the token's ID.
func (s *testServer) tailspinExpiring(key, customerID string) string {
	s.t.Helper()
	exp := time.Now().Add(5*24*time.Hour + time.Hour)
	file := appletest.TokenFile("Tailspin", exp, "tailspin")
	s.Fake.AddLocation(file, &appletest.Location{UID: "4004", Name: "Tailspin Toys", ExpiresAt: exp})
	var up uploadResult
	s.upload(key, customerID, file).decode(s.t, &up)
	if r := s.action(key, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		s.t.Fatal(r.Raw)
	}
	return up.UploadServerToken.Token.ID
}

// forceSQLite, set in a test server's env, keeps it on SQLite in the
// PostgreSQL run (for tests about SQLite's files and settings).
const forceSQLite = "ORCHARD_TEST_FORCE_SQLITE"

// databaseEnv runs a test body on SQLite and, when ORCHARD_TEST_DATABASE_URL
// is set, again with the server on PostgreSQL.
func databaseEnv(t *testing.T, fn func(t *testing.T, env map[string]string)) {
	if os.Getenv("ORCHARD_TEST_DB") == "postgres" {
		t.Run("postgres", func(t *testing.T) { fn(t, nil) }) // startServer picks PostgreSQL
		return
	}
	t.Run("sqlite", func(t *testing.T) { fn(t, nil) })
	if os.Getenv(testdb.EnvPostgres) != "" {
		t.Run("postgres", func(t *testing.T) {
			db := testdb.Postgres(t)
			fn(t, map[string]string{"ORCHARD_DATABASE_URL": db.URL})
		})
	}
}

// envBenchProfile names a file: a server the benchmarks start writes a CPU
// profile there, from SIGUSR1 to SIGUSR2 (P6 sends them around its
// fan-out).
const envBenchProfile = "ORCHARD_BENCH_PROFILE"

func profileOnSignal(path string) {
	if path == "" {
		return
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(path); err == nil {
					// A fan-out lasts a fraction of a second: sample
					// at 1 kHz rather than 100 Hz.
					runtime.SetCPUProfileRate(1000)
					_ = pprof.StartCPUProfile(f)
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				_ = f.Close()
				f = nil
			}
		}
	}()
}
