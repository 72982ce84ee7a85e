package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// rawSubscriber opens a socket, authenticates and subscribes to the
// warnings, reporting failures instead of ending the test (it runs on many
// goroutines at once).
func rawSubscriber(ctx context.Context, url, key string) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return nil, err
	}
	send := func(v any) error {
		b, _ := json.Marshal(v)
		return conn.Write(ctx, websocket.MessageText, b)
	}
	if err := send(map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + key}}); err != nil {
		return nil, err
	}
	_, b, err := conn.Read(ctx)
	if err != nil || !bytes.Contains(b, []byte("connection_ack")) {
		conn.CloseNow()
		return nil, fmt.Errorf("no ack: %s %v", b, err)
	}
	if err := send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": warningsSubscription}}); err != nil {
		return nil, err
	}
	return conn, nil
}

// closeCodeOf reads until the socket ends and returns its close code (-1
// when it ended without a close frame).
func closeCodeOf(conn *websocket.Conn, timeout time.Duration) (websocket.StatusCode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, _, err := conn.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err), err
		}
	}
}

// On SIGTERM every one of 1,000 open subscriptions gets a close frame with
// 1001 (going away) before the process exits, within the shutdown timeout.
func TestSIGTERMClosesEveryWebsocket(t *testing.T) {
	n := 1000
	if raceEnabled {
		// Both processes run several times slower; the point here is
		// the race detector's view of the shutdown, not its speed.
		n = 200
	}
	fake := appletest.New()
	defer fake.Close()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+t.TempDir(),
		"ORCHARD_APPLE_URL="+fake.BaseURL(), "ORCHARD_RATE_LIMIT=0", "ORCHARD_SHUTDOWN_TIMEOUT=8s")
	if os.Getenv("ORCHARD_TEST_DB") == "postgres" {
		env = append(env, "ORCHARD_DATABASE_URL="+testdb.Postgres(t).URL)
	}
	key := childAPIKey(t, env, "sig")
	server := serveChild(t, env)
	url := server.srv.URL

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := rawSubscriber(ctx, url, key)
				cancel()
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = c
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opening %d subscriptions: %v", n, err)
	}
	time.Sleep(300 * time.Millisecond) // let the last subscribes arrive

	codes := make([]websocket.StatusCode, n)
	for i, c := range conns {
		wg.Go(func() { codes[i], _ = closeCodeOf(c, 20*time.Second) })
	}
	start := time.Now()
	if err := server.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-server.exited
	if server.err != nil {
		t.Fatalf("exit after SIGTERM: %v", server.err)
	}
	exited := time.Since(start)
	wg.Wait()
	byCode := map[websocket.StatusCode]int{}
	for _, c := range codes {
		byCode[c]++
	}
	t.Logf("%d subscriptions, exit %v after SIGTERM, close codes %v", n, exited, byCode)
	if byCode[websocket.StatusGoingAway] != n {
		t.Fatalf("close codes %v; want all %d to be 1001", byCode, n)
	}
	if exited > 8*time.Second {
		t.Fatalf("exited %v after SIGTERM; the shutdown timeout is 8s", exited)
	}
}

// /readyz answers 503 from the moment shutdown begins, while the server
// still answers, so a load balancer that polls it stops sending.
func TestReadyzDuringShutdown(t *testing.T) {
	s := startServer(t, nil)
	readyz := func() (int, error) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
		resp, err := c.Get(s.URL + "/readyz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown = %d %v", code, err)
	}
	go s.stop()
	for {
		code, err := readyz()
		if err != nil {
			t.Fatalf("/readyz never answered 503 before connections were refused: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			return
		}
	}
}

// A mutation in flight at shutdown finishes and commits when it fits in
// the shutdown timeout, and is cut cleanly (answered, rolled back, before
// the database closes) when it does not.
func TestMutationInFlightAtShutdown(t *testing.T) {
	run := func(t *testing.T, shutdownTimeout string, latency time.Duration) (*gqlResponse, error, time.Duration, *testServer) {
		fake := appletest.New()
		t.Cleanup(fake.Close)
		fake.Latency = latency
		s := startServer(t, map[string]string{"ORCHARD_APPLE_URL": fake.BaseURL(), "ORCHARD_SHUTDOWN_TIMEOUT": shutdownTimeout, "ORCHARD_APPLE_RETRY_BUDGET": "30s"})
		key := s.key()
		cust := s.createCustomer(key, "Northwind")
		exp := time.Now().Add(200 * 24 * time.Hour)
		file := appletest.TokenFile("Northwind", exp, "northwind")
		fake.AddLocation(file, &appletest.Location{UID: "n1", Name: "Northwind HQ", ExpiresAt: exp})
		body, ct := multipartBody(uploadMutation, map[string]any{"c": cust, "f": nil}, file)
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+key)
		type result struct {
			r   *gqlResponse
			err error
		}
		done := make(chan result, 1)
		go func() { r, err := s.try(req); done <- result{r, err} }()
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		s.stop()
		stopped := time.Since(start)
		r := <-done
		return r.r, r.err, stopped, s
	}
	t.Run("Finishes", func(t *testing.T) {
		r, err, _, s := run(t, "5s", 1500*time.Millisecond)
		if err != nil || len(r.Errors) > 0 {
			t.Fatalf("upload in flight at shutdown: %v %+v", err, r)
		}
		if strings.Contains(s.Log.String(), "database is closed") {
			t.Fatalf("the database closed under a request:\n%s", s.Log)
		}
	})
	t.Run("Cut", func(t *testing.T) {
		r, err, stopped, s := run(t, "2s", 4*time.Second)
		if err != nil {
			t.Fatalf("the cut upload got no answer: %v", err)
		}
		if len(r.Errors) == 0 {
			t.Fatalf("an upload cut at shutdown answered %s", r.Raw)
		}
		if stopped > 3*time.Second {
			t.Fatalf("shutdown took %v with a 2s timeout", stopped)
		}
		if strings.Contains(s.Log.String(), "database is closed") {
			t.Fatalf("the database closed under a request:\n%s", s.Log)
		}
		s.start()
		var out struct{ Tokens struct{ TotalCount int } }
		s.gql(s.key(), `{ tokens { totalCount } }`, nil).decode(t, &out)
		if out.Tokens.TotalCount != 0 {
			t.Fatalf("the cut upload left %d tokens", out.Tokens.TotalCount)
		}
		t.Logf("cut upload answered %s; shutdown took %v", r.Raw, stopped)
	})
}
