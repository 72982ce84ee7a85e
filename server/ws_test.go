package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orchard-msp/orchard/server/httpapi"
)

// wsClient speaks graphql-transport-ws, as the graphql-ws library does.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func dialWS(t *testing.T, s *testServer, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/graphql", &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPHeader:   header,
	})
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.CloseNow() })
	return c, resp, nil
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next message other than ping/pong, or an error.
func (c *wsClient) read(timeout time.Duration) (wsMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			return wsMessage{}, err
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return wsMessage{}, err
		}
		if m.Type == "ping" {
			c.send(wsMessage{Type: "pong"})
			continue
		}
		if m.Type != "pong" {
			return m, nil
		}
	}
}

func (c *wsClient) init(key string) error {
	payload, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + key})
	c.send(wsMessage{Type: "connection_init", Payload: payload})
	m, err := c.read(5 * time.Second)
	if err != nil {
		return err
	}
	if m.Type != "connection_ack" {
		return errors.New("got " + m.Type)
	}
	return nil
}

const warningsSubscription = `subscription($c: ID) { tokenExpiryWarnings(customerID: $c) { daysUntilExpiry level issuedAt token { id locationName customer { name } } } }`

// subscriber dials, authenticates with key and subscribes to the expiry
// warnings (of customerID, when given) under id.
func subscriber(t *testing.T, s *testServer, key, id string, customerID *string) *wsClient {
	t.Helper()
	c, _, err := dialWS(t, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.init(key); err != nil {
		t.Fatal(err)
	}
	c.subscribe(id, customerID)
	return c
}

func (c *wsClient) subscribe(id string, customerID *string) {
	vars := map[string]any{}
	if customerID != nil {
		vars["c"] = *customerID
	}
	payload, _ := json.Marshal(map[string]any{"query": warningsSubscription, "variables": vars})
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: payload})
}

type warningPayload struct {
	Data struct {
		TokenExpiryWarnings struct {
			DaysUntilExpiry int
			Level           string
			IssuedAt        string
			Token           struct {
				ID       string
				Customer struct{ Name string }
			}
		}
	}
	Errors []gqlError
}

func (c *wsClient) nextWarning(timeout time.Duration) (*warningPayload, error) {
	for {
		m, err := c.read(timeout)
		if err != nil {
			return nil, err
		}
		if m.Type == "next" {
			var w warningPayload
			if err := json.Unmarshal(m.Payload, &w); err != nil {
				return nil, err
			}
			return &w, nil
		}
		if m.Type == "error" || m.Type == "complete" {
			return nil, errors.New(m.Type + ": " + string(m.Payload))
		}
	}
}

func TestExpiryWarningsOverWebsocket(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		tailspin := s.createCustomer(admin, "Tailspin")
		other := s.createCustomer(admin, "Other")
		otherKey := s.key("--role", "viewer", "--customer", other)

		first := subscriber(t, s, admin, "1", nil)
		outsider := subscriber(t, s, otherKey, "1", nil)
		time.Sleep(100 * time.Millisecond)

		// Confirm a token that expires in 5 days: one WARNING, at once.
		tokenID := s.tailspinExpiring(admin, tailspin)
		w, err := first.nextWarning(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := w.Data.TokenExpiryWarnings
		if got.Level != "WARNING" || (got.DaysUntilExpiry != 4 && got.DaysUntilExpiry != 5) || got.Token.Customer.Name != "Tailspin" {
			t.Fatalf("warning = %+v", w)
		}
		if w, err := outsider.nextWarning(300 * time.Millisecond); err == nil {
			t.Fatalf("a key scoped to another customer received %+v", w)
		}

		// A subscriber that comes later gets the current warning first.
		later := subscriber(t, s, admin, "a", &tailspin)
		w, err = later.nextWarning(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if w.Data.TokenExpiryWarnings.Token.ID != tokenID {
			t.Fatalf("first batch = %+v", w)
		}
	})
}

func TestWebsocketRefusals(t *testing.T) {
	s := startServer(t, nil)
	t.Run("BadKey", func(t *testing.T) {
		c, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.init("orch_wrong")
		if websocket.CloseStatus(err) != 4403 {
			if err == nil {
				_, err = c.read(2 * time.Second)
			}
			if websocket.CloseStatus(err) != 4403 {
				t.Fatalf("got %v, want close code 4403", err)
			}
		}
	})
	t.Run("DuplicateID", func(t *testing.T) {
		c, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.init(s.key()); err != nil {
			t.Fatal(err)
		}
		c.subscribe("same", nil)
		c.subscribe("same", nil)
		for {
			if _, err = c.read(3 * time.Second); err != nil {
				break
			}
		}
		if websocket.CloseStatus(err) != 4409 {
			t.Fatalf("got %v, want close code 4409", err)
		}
	})
	t.Run("TooManySubscriptions", func(t *testing.T) {
		c, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.init(s.key()); err != nil {
			t.Fatal(err)
		}
		for i := range httpapi.MaxSubscriptionsPerSocket + 1 {
			c.subscribe(strconv.Itoa(i), nil)
		}
		for {
			m, err := c.read(3 * time.Second)
			if err != nil {
				t.Fatalf("no refusal for subscription %d: %v", httpapi.MaxSubscriptionsPerSocket, err)
			}
			if m.Type == "error" && m.ID == strconv.Itoa(httpapi.MaxSubscriptionsPerSocket) {
				break
			}
		}
		// The socket stays open for the subscriptions it holds.
		c.send(wsMessage{ID: "0", Type: "complete"})
		c.subscribe("again", nil)
		for {
			m, err := c.read(time.Second)
			if err != nil {
				break // quiet: the new subscription was accepted
			}
			if m.Type == "error" && m.ID == "again" {
				t.Fatal("a freed slot was not reusable")
			}
		}
	})
	t.Run("ForeignOrigin", func(t *testing.T) {
		_, resp, err := dialWS(t, s, http.Header{"Origin": {"https://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-origin websocket: %v", err)
		}
	})
}

// Clients that go away are dropped: 1,000 subscriptions opened and closed
// leave neither subscribers nor goroutines behind.
func TestSubscriptionsDoNotLeakOverWebsockets(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for batch := 0; batch < 10; batch++ {
		var clients []*wsClient
		for range 100 {
			c := subscriber(t, s, key, "1", nil)
			clients = append(clients, c)
		}
		for _, c := range clients {
			c.conn.CloseNow()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before+10 {
		t.Fatalf("goroutines grew from %d to %d after 1,000 subscriptions came and went", before, after)
	}
	if got := scrape(t, s.URL, "Bearer "+key).value(t, "orchard_expiry_subscribers", nil); got != 0 {
		t.Fatalf("the hub still counts %v subscribers", got)
	}
}
