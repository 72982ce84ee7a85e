package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// envelope writes what json.Marshal of a wsEnvelope would.
func TestEnvelopeMatchesJSONMarshal(t *testing.T) {
	for _, m := range []wsEnvelope{
		{ID: "1", Type: "next", Payload: json.RawMessage(`{"data":{"a":1}}`)},
		{ID: `we"ird\</script>` + "\u2028é\x01", Type: "error", Payload: json.RawMessage(`[{"message":"x"}]`)},
		{ID: "7", Type: "complete"},
		{ID: "0f8fad5b-d9cb-469f-a165-70867728950e", Type: "next", Payload: json.RawMessage(`{}`)},
		{ID: "a<b>&c", Type: "next"},
		{ID: "é", Type: "next"},
		{ID: "", Type: "next"},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := envelope(m.ID, m.Type, m.Payload)
		if !json.Valid(got) {
			t.Fatalf("envelope(%q) = %s: not JSON", m.ID, got)
		}
		var back wsEnvelope
		if err := json.Unmarshal(got, &back); err != nil || back.ID != m.ID || back.Type != m.Type || !bytes.Equal(back.Payload, m.Payload) {
			t.Fatalf("envelope(%q) = %s, decodes to %+v; want %s", m.ID, got, back, want)
		}
	}
}

// Each write is bounded by wsWriteTimeout: a client that stops reading
// loses its socket once a write has waited that long (wsSessions'
// watcher), and a socket that writes nothing for longer keeps working,
// close handshake included.
func TestWriteDeadline(t *testing.T) {
	defer func(d time.Duration) { wsWriteTimeout = d }(wsWriteTimeout)
	wsWriteTimeout = 300 * time.Millisecond
	sessions := newWSSessions()
	conns := make(chan *wsConn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(&smallBuffers{ResponseWriter: w}, r, nil)
		if err != nil {
			return
		}
		c := &wsConn{conn: conn}
		sessions.add(c)
		conns <- c
	}))
	// Small kernel buffers, so that a client that stops reading holds up
	// a write after a few messages.
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func() (*websocket.Conn, *wsConn) {
		client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.CloseNow() })
		return client, <-conns
	}

	t.Run("the close handshake after a write", func(t *testing.T) {
		client, c := dial()
		c.write([]byte(`{"type":"ping"}`))
		if _, b, err := client.Read(ctx); err != nil || string(b) != `{"type":"ping"}` {
			t.Fatalf("got %q, %v", b, err)
		}
		time.Sleep(2 * wsWriteTimeout)
		go func() { _ = c.conn.Close(websocket.StatusNormalClosure, "bye") }()
		_, _, err := client.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("the client read %v, want a normal closure", err)
		}
	})

	t.Run("a client that stops reading", func(t *testing.T) {
		_, c := dial()
		big := bytes.Repeat([]byte("x"), 64<<10)
		for i := 0; ; i++ {
			if i == 1000 {
				t.Fatal("a thousand 64 KiB writes to a client that reads nothing went through")
			}
			start := time.Now()
			wrote := make(chan struct{})
			go func() {
				c.write(big)
				close(wrote)
			}()
			select {
			case <-wrote:
			case <-time.After(wsWriteTimeout + 2*time.Second):
				t.Fatalf("a write has waited %s, past the %s timeout", time.Since(start), wsWriteTimeout)
			}
			if time.Since(start) >= wsWriteTimeout {
				break
			}
		}
		if err := c.conn.Write(ctx, websocket.MessageText, []byte(`{}`)); err == nil {
			t.Fatal("the socket is still open after a write timed out")
		}
	})

	// With no socket left, the watcher ends.
	for _, s := range sessions.snapshot() {
		sessions.remove(s)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		sessions.mu.Lock()
		watching := sessions.watching
		sessions.mu.Unlock()
		if !watching {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the write watcher still runs with no socket open")
		}
	}
}

// nextMessage writes what envelope writes around writeResponse's answer,
// through either of writeResponse's paths, in a buffer that is reused.
func TestNextMessage(t *testing.T) {
	answers := []*graphql.Response{
		{Data: json.RawMessage(`{"tokenExpiryWarnings":{"level":"WARNING","daysUntilExpiry":3}}`)},
		{Data: json.RawMessage(`{"a":"<b>"}`)},
		{Errors: gqlerror.List{{Message: "no"}}, Data: json.RawMessage(`null`)},
	}
	for _, id := range []string{"1", `we"ird\</script>` + "\u2028", "0f8fad5b-d9cb-469f-a165-70867728950e"} {
		for _, resp := range answers {
			var payload bytes.Buffer
			writeResponse(&payload, resp)
			want := envelope(id, "next", payload.Bytes())
			msg := nextMessage(context.Background(), id, func(context.Context) *graphql.Response { return resp })
			if got := msg.Bytes(); !bytes.Equal(got, want) {
				t.Errorf("nextMessage(%q) = %s, want %s", id, got, want)
			}
			messageBuffers.Put(msg)
		}
	}
	if msg := nextMessage(context.Background(), "1", func(context.Context) *graphql.Response { return nil }); msg != nil {
		t.Errorf("the end of the stream gave %q", msg.Bytes())
	}
}

// smallSendBuffers gives each accepted connection a 4 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}
