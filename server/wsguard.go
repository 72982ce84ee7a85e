package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// maxSubscriptionsPerSocket bounds the subscriptions one websocket may hold;
// a frontend needs one or two.
const maxSubscriptionsPerSocket = 20

// guardedWebsocket adds what gqlgen's websocket transport leaves to the
// application: duplicate subscription IDs close the socket with 4409, as
// graphql-transport-ws requires, and a socket may hold at most
// maxSubscriptionsPerSocket subscriptions (more are answered with an error).
type guardedWebsocket struct {
	transport.WebsocketImplementation
	max int
}

// Accept implements transport.WebsocketImplementation.
func (g guardedWebsocket) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := g.WebsocketImplementation.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	return &guardedConn{WebsocketConn: conn, max: g.max, active: map[string]bool{}}, nil
}

type guardedConn struct {
	transport.WebsocketConn
	max int

	mu     sync.Mutex
	active map[string]bool
}

type wsEnvelope struct {
	ID   string `json:"id,omitempty"`
	Type string `json:"type"`
}

var errDuplicateSubscription = errors.New("duplicate subscription id")

// NextReader inspects each client message before gqlgen sees it.
func (c *guardedConn) NextReader() (int, io.Reader, error) {
	for {
		kind, r, err := c.WebsocketConn.NextReader()
		if err != nil {
			return kind, r, err
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return kind, nil, err
		}
		var m wsEnvelope
		if json.Unmarshal(data, &m) == nil && m.ID != "" {
			switch m.Type {
			case "subscribe":
				c.mu.Lock()
				dup, full := c.active[m.ID], len(c.active) >= c.max
				if !dup && !full {
					c.active[m.ID] = true
				}
				c.mu.Unlock()
				if dup {
					_ = c.WebsocketConn.WriteClose(4409, "Subscriber for "+truncateBytes(m.ID, 80)+" already exists")
					return kind, nil, errDuplicateSubscription
				}
				if full {
					c.refuse(m.ID)
					continue
				}
			case "complete":
				c.done(m.ID)
			}
		}
		return kind, bytes.NewReader(data), nil
	}
}

func (c *guardedConn) refuse(id string) {
	payload, _ := json.Marshal([]map[string]any{{
		"message":    "This connection already holds the most subscriptions allowed; complete one first or open another connection.",
		"extensions": map[string]any{"code": "BAD_USER_INPUT"},
	}})
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.WebsocketConn.WriteJSON(map[string]any{"id": id, "type": "error", "payload": json.RawMessage(payload)})
}

func (c *guardedConn) done(id string) {
	c.mu.Lock()
	delete(c.active, id)
	c.mu.Unlock()
}

// WriteJSON notices when the server ends a subscription.
func (c *guardedConn) WriteJSON(v any) error {
	if b, err := json.Marshal(v); err == nil {
		var m wsEnvelope
		if json.Unmarshal(b, &m) == nil && m.ID != "" && (m.Type == "complete" || m.Type == "error") {
			c.done(m.ID)
		}
	}
	return c.WebsocketConn.WriteJSON(v)
}

// SetReadLimit passes the message size limit through.
func (c *guardedConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

// SetReadDeadline passes ping/pong deadlines through.
func (c *guardedConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
