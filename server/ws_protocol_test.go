package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/httpapi"
)

// rawFrame sends one text frame as is.
func (c *wsClient) rawFrame(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// closeCode reads until the socket ends and returns its close code.
func (c *wsClient) closeCode(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.read(time.Until(deadline))
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func dialRaw(t *testing.T, s *testServer) *wsClient {
	t.Helper()
	c, _, err := dialWS(t, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The close codes of graphql-transport-ws, with raw frames as a client
// written from the protocol would send them.
func TestGraphQLTransportWSCloseCodes(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	t.Run("InitTimeout", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, s)
		start := time.Now()
		if code := c.closeCode(15 * time.Second); code != 4408 {
			t.Fatalf("no connection_init: close code %d; want 4408", code)
		}
		if d := time.Since(start); d < 9*time.Second {
			t.Fatalf("closed after %v; the init timeout is 10s", d)
		}
	})
	t.Run("SubscribeBeforeAck", func(t *testing.T) {
		c := dialRaw(t, s)
		c.subscribe("1", nil)
		if code := c.closeCode(5 * time.Second); code != 4401 {
			t.Fatalf("subscribe before connection_init: close code %d; want 4401", code)
		}
	})
	t.Run("SecondInit", func(t *testing.T) {
		c := dialRaw(t, s)
		if err := c.init(key); err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + key})
		c.send(wsMessage{Type: "connection_init", Payload: payload})
		if code := c.closeCode(5 * time.Second); code != 4429 {
			t.Fatalf("second connection_init: close code %d; want 4429", code)
		}
	})
	t.Run("InvalidMessage", func(t *testing.T) {
		for _, frame := range []string{`not json`, `{"type":"next","id":"1"}`, `{"id":"1"}`, `{"type":"connection_init","payload":"x"}`} {
			c := dialRaw(t, s)
			c.rawFrame(frame)
			if code := c.closeCode(5 * time.Second); code != 4400 {
				t.Fatalf("%s: close code %d; want 4400", frame, code)
			}
		}
	})
	t.Run("PingBeforeInit", func(t *testing.T) {
		c := dialRaw(t, s)
		c.rawFrame(`{"type":"ping"}`)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, b, err := c.conn.Read(ctx)
		if err != nil || !strings.Contains(string(b), `"pong"`) {
			t.Fatalf("ping before connection_init got %s %v; want a pong", b, err)
		}
		if err := c.init(key); err != nil {
			t.Fatalf("init after a ping: %v", err)
		}
	})
	t.Run("ValidationErrorIsAnErrorMessage", func(t *testing.T) {
		c := dialRaw(t, s)
		if err := c.init(key); err != nil {
			t.Fatal(err)
		}
		c.rawFrame(`{"id":"bad","type":"subscribe","payload":{"query":"subscription { noSuchField }"}}`)
		m, err := c.read(5 * time.Second)
		if err != nil || m.Type != "error" || m.ID != "bad" {
			t.Fatalf("got %+v %v; want an error message for id bad", m, err)
		}
		if m, err := c.read(500 * time.Millisecond); err == nil {
			t.Fatalf("after the error came %+v; the protocol sends nothing more for that id", m)
		}
	})
}

// A subscribe refused by the rate limit arrives as an error message for
// its id (with RATE_LIMITED), not as a next followed by complete.
func TestRateLimitedSubscribeIsAnErrorMessage(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "1"})
	key := s.key()
	c := dialRaw(t, s)
	if err := c.init(key); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		c.subscribe(string(rune('a'+i)), nil)
	}
	for {
		m, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatalf("no subscribe was refused: %v", err)
		}
		if m.Type == "next" && strings.Contains(string(m.Payload), "RATE_LIMITED") {
			t.Fatalf("a refused subscribe came as next: %s", m.Payload)
		}
		if m.Type == "error" {
			var errs []gqlError
			if err := json.Unmarshal(m.Payload, &errs); err != nil || len(errs) == 0 || errs[0].Extensions["code"] != "RATE_LIMITED" {
				t.Fatalf("error payload %s; want a list of errors with code RATE_LIMITED", m.Payload)
			}
			if next, err := c.read(500 * time.Millisecond); err == nil && next.ID == m.ID {
				t.Fatalf("after the error for %s came %+v", m.ID, next)
			}
			return
		}
	}
}

// keyID finds an API key's ID (the first column of apikey list).
func keyID(t *testing.T, s *testServer, key string) string {
	t.Helper()
	out, _, err := s.command("apikey", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, key[:len(httpapi.KeyPrefix)+6]) {
			return strings.Fields(line)[0]
		}
	}
	t.Fatalf("key not in apikey list:\n%s", out)
	return ""
}

// A key revoked with `apikey revoke`, or one that expires, loses its open
// subscriptions: each closes with 4403 within 10 s and receives nothing
// after that.
func TestRevokedKeyClosesItsWebsockets(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		cust := s.createCustomer(admin, "Contoso")
		confirmExpiring := func(name string) {
			exp := time.Now().Add(5*24*time.Hour + time.Hour)
			file := appletest.TokenFile(name, exp, name)
			s.Fake.AddLocation(file, &appletest.Location{UID: name, Name: name, ExpiresAt: exp})
			var up uploadResult
			s.upload(admin, cust, file).decode(t, &up)
			if r := s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
				t.Fatal(r.Raw)
			}
		}
		confirmExpiring("first")

		t.Run("Revoked", func(t *testing.T) {
			k := s.key("--role", "viewer")
			ws := subscriber(t, s, k, "1", nil)
			if _, err := ws.nextWarning(5 * time.Second); err != nil {
				t.Fatalf("no first warning before revocation: %v", err)
			}
			keep := subscriber(t, s, admin, "1", nil) // another key's socket stays
			if _, err := keep.nextWarning(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := s.command("apikey", "revoke", keyID(t, s, k)); err != nil {
				t.Fatalf("revoke: %v %s", err, errOut)
			}
			revoked := time.Now()
			confirmExpiring("second") // an event raised right after the revocation
			code, got := closeAfter(t, ws, 10*time.Second)
			if code != 4403 {
				t.Fatalf("revoked key's socket: close code %d; want 4403 within 10s", code)
			}
			t.Logf("closed %v after the revocation; %d warnings came before the close", time.Since(revoked), got)
			if w, err := keep.nextWarning(5 * time.Second); err != nil {
				t.Fatalf("a socket of a valid key lost its warnings: %v %+v", err, w)
			}
		})
		t.Run("Expired", func(t *testing.T) {
			k := s.key("--role", "viewer", "--expires-in", "4s")
			ws := subscriber(t, s, k, "1", nil)
			if _, err := ws.nextWarning(5 * time.Second); err != nil {
				t.Fatalf("no first warning before expiry: %v", err)
			}
			code, _ := closeAfter(t, ws, 4*time.Second+10*time.Second)
			if code != 4403 {
				t.Fatalf("expired key's socket: close code %d; want 4403 within 10s of expiry", code)
			}
		})
	})
}

// closeAfter reads a subscriber until its socket closes and returns the
// close code and how many warnings came before it.
func closeAfter(t *testing.T, c *wsClient, timeout time.Duration) (websocket.StatusCode, int) {
	t.Helper()
	deadline, warnings := time.Now().Add(timeout), 0
	for {
		m, err := c.read(time.Until(deadline))
		if err != nil {
			return websocket.CloseStatus(err), warnings
		}
		if m.Type == "next" {
			warnings++
		}
	}
}

// The stock graphql-ws client (the build the Playground vendors) under
// Node: a subscribe refused for validation or by the rate limit reaches its
// sink as GraphQL errors, and a bad key closes with 4403.
func TestGraphQLWSClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "1"})
	key := s.key()
	_, file, _, _ := runtime.Caller(0)
	lib := filepath.Join(filepath.Dir(file), "playground", "assets", "graphql-ws.min.js")
	const script = `
const { createClient } = require(process.env.LIB);
const url = process.env.URL.replace('http', 'ws') + '/graphql';
const out = (...a) => console.log(...a);
function client(key, extra = {}) {
  return createClient({ url, connectionParams: { Authorization: 'Bearer ' + key }, lazy: false, retryAttempts: 0, ...extra });
}
function once(c, query) {
  return new Promise(resolve => c.subscribe({ query }, {
    next: v => resolve('next ' + JSON.stringify(v)),
    error: e => resolve(Array.isArray(e) ? 'errors ' + JSON.stringify(e) : 'closed ' + (e && e.code)),
    complete: () => resolve('complete'),
  }));
}
(async () => {
  const c = client(process.env.KEY);
  out('validation', await once(c, 'subscription { noSuchField }'));
  let limited = '';
  for (let i = 0; i < 12 && !limited.includes('RATE_LIMITED'); i++) {
    limited = await Promise.race([once(c, 'subscription { tokenExpiryWarnings { level } }'), new Promise(r => setTimeout(() => r('open'), 200))]);
  }
  out('ratelimit', limited);
  await c.dispose();
  out('badkey', await once(client('orch_wrong'), 'subscription { tokenExpiryWarnings { level } }'));
  process.exit(0);
})().catch(e => { out('failed', e); process.exit(1); });
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--experimental-websocket", "-e", script)
	cmd.Env = append(os.Environ(), "LIB="+lib, "URL="+s.URL, "KEY="+key)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	for _, want := range []string{"validation errors [", "ratelimit errors [", `"RATE_LIMITED"`, "badkey closed 4403"} {
		if !strings.Contains(out, want) {
			t.Fatalf("graphql-ws client output lacks %q:\n%s", want, out)
		}
	}
}
