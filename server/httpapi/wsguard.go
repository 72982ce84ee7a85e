package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
)

// MaxSubscriptionsPerSocket bounds the subscriptions one websocket may hold;
// a frontend needs one or two.
const MaxSubscriptionsPerSocket = 20

// wsWriteTimeout bounds one message to a client; a client that stops
// reading loses its socket instead of holding a goroutine forever. A
// variable for the tests.
var wsWriteTimeout = 10 * time.Second

const (
	// keyRecheckInterval is how often the keys behind open sockets are
	// checked again, so a revoked or expired key loses its sockets within
	// this (plus one query) on every instance.
	keyRecheckInterval = 5 * time.Second
	// keyRecheckBatch bounds the IDs of one query (SQLite and PostgreSQL
	// both cap the parameters of a statement).
	keyRecheckBatch = 500
)

// Close codes of graphql-transport-ws (enisdenjo/graphql-ws PROTOCOL.md) and
// RFC 6455 that Orchard sends.
const (
	closeNormal               = 1000
	closeGoingAway            = 1001
	closeBadRequest           = 4400
	closeUnauthorized         = 4401
	closeForbidden            = 4403
	closeInitTimeout          = 4408
	closeSubscriberExists     = 4409
	closeTooManyInitialisings = 4429
)

const transportWS = "graphql-transport-ws"

// wsSessions is every open websocket of this server. It closes them all at
// shutdown and waits until each has had its close frame, and it closes the
// ones whose API key stopped being valid.
type wsSessions struct {
	mu       sync.Mutex
	open     map[socket]struct{}
	shutting bool
	empty    chan struct{} // closed when shutting and the last socket is gone
	// watching says watchWrites runs: from the first socket until none
	// is open.
	watching bool
}

// socket is an open websocket of either transport.
type socket interface {
	// shut starts the close handshake with code, once.
	shut(code int, reason string)
	// closeNow drops the connection without a handshake.
	closeNow()
	// keyID is the API key the socket authenticated with, 0 before.
	keyID() int
	// writingSince is when the write under way began (wsClock), 0 when
	// none is, or when the socket bounds its writes itself.
	writingSince() int64
}

func newWSSessions() *wsSessions {
	return &wsSessions{open: map[socket]struct{}{}, empty: make(chan struct{})}
}

func (ss *wsSessions) add(s socket) {
	ss.mu.Lock()
	ss.open[s] = struct{}{}
	late := ss.shutting
	if !ss.watching {
		ss.watching = true
		go ss.watchWrites(wsWriteTimeout)
	}
	ss.mu.Unlock()
	if late {
		s.shut(closeGoingAway, "server shutting down")
	}
}

// wsEpoch is where wsClock counts from.
var wsEpoch = time.Now()

// wsClock is the monotonic time in nanoseconds since wsEpoch, never 0.
func wsClock() int64 { return max(1, int64(time.Since(wsEpoch))) }

// watchWrites drops, a few times per timeout, every socket whose write has
// been waiting longer than timeout: its client stopped reading, and the
// goroutine writing to it would otherwise wait for ever. Dropping the
// connection ends the write with an error. It returns when no socket is
// open; the next add starts it again.
func (ss *wsSessions) watchWrites(timeout time.Duration) {
	t := time.NewTicker(max(timeout/4, time.Millisecond))
	defer t.Stop()
	var stalled []socket
	for range t.C {
		since := wsClock() - int64(timeout)
		stalled = stalled[:0]
		ss.mu.Lock()
		if len(ss.open) == 0 {
			ss.watching = false
			ss.mu.Unlock()
			return
		}
		for s := range ss.open {
			if w := s.writingSince(); w != 0 && w < since {
				stalled = append(stalled, s)
			}
		}
		ss.mu.Unlock()
		for _, s := range stalled {
			s.closeNow()
		}
		clear(stalled) // keeps no closed socket from the collector
	}
}

func (ss *wsSessions) remove(s socket) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.open[s]; !ok {
		return
	}
	delete(ss.open, s)
	if ss.shutting && len(ss.open) == 0 {
		close(ss.empty)
	}
}

func (ss *wsSessions) snapshot() []socket {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]socket, 0, len(ss.open))
	for s := range ss.open {
		out = append(out, s)
	}
	return out
}

// Count is how many websockets are open.
func (ss *wsSessions) Count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.open)
}

// closeAll starts closing every socket with code; sockets that arrive later
// are closed as they are accepted.
func (ss *wsSessions) closeAll(code int, reason string) {
	ss.mu.Lock()
	if !ss.shutting {
		ss.shutting = true
		if len(ss.open) == 0 {
			close(ss.empty)
		}
	}
	ss.mu.Unlock()
	for _, s := range ss.snapshot() {
		s.shut(code, reason)
	}
}

// wait returns once every socket has finished its close handshake, or when
// ctx ends; then it drops what is left and says how many there were.
func (ss *wsSessions) wait(ctx context.Context) int {
	select {
	case <-ss.empty:
		return 0
	case <-ctx.Done():
	}
	left := ss.snapshot()
	for _, s := range left {
		go s.closeNow() // may wait for its handshake's own timeout
	}
	return len(left)
}

// watchKeys closes, with 4403, every socket whose API key has been revoked,
// has expired or is gone, checking every interval until ctx ends. It reads
// the database, not a message, so it works the same on every instance.
func (ss *wsSessions) watchKeys(ctx context.Context, client *ent.Client, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ss.checkKeys(ctx, client, time.Now()); err != nil && ctx.Err() == nil {
			// The sockets stay until the database answers again: the next
			// tick retries.
			log.Warn("re-checking the API keys of open websockets", "err", err)
		}
	}
}

func (ss *wsSessions) checkKeys(ctx context.Context, client *ent.Client, now time.Time) error {
	byKey := map[int][]socket{}
	for _, s := range ss.snapshot() {
		if id := s.keyID(); id != 0 {
			byKey[id] = append(byKey[id], s)
		}
	}
	ids := make([]int, 0, len(byKey))
	for id := range byKey {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	sys := viewer.SystemContext(ctx)
	for batch := range slices.Chunk(ids, keyRecheckBatch) {
		valid, err := client.APIKey.Query().
			Where(apikey.IDIn(batch...), apikey.RevokedAtIsNil(), apikey.Or(apikey.ExpiresAtIsNil(), apikey.ExpiresAtGT(now))).
			IDs(sys)
		if err != nil {
			return err
		}
		for _, id := range batch {
			if slices.Contains(valid, id) {
				continue
			}
			for _, s := range byKey[id] {
				s.shut(closeForbidden, "Forbidden: the API key was revoked or has expired")
			}
		}
	}
	return nil
}

type wsSessionKey struct{}

func sessionFrom(ctx context.Context) *wsSession {
	s, _ := ctx.Value(wsSessionKey{}).(*wsSession)
	return s
}

// websocketTransport is gqlgen's websocket transport with a session around
// each connection: the session is the connection gqlgen talks through, and
// it travels in the request context so wsInit can tell it the key.
type websocketTransport struct {
	transport.Websocket
	sessions *wsSessions
}

// Do implements graphql.Transport.
func (t websocketTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	s := &wsSession{sessions: t.sessions}
	t.Websocket.Do(w, r.WithContext(context.WithValue(r.Context(), wsSessionKey{}, s)), refusalsAsErrors{exec})
	if s.conn != nil {
		// gqlgen leaves a few paths without a close (a connection_init it
		// cannot decode); closing twice is a no-op.
		s.closeWith(closeNormal, "terminated")
	}
}

// refusalsAsErrors reports a subscribe refused before it runs (validation,
// rate limit, complexity) as graphql-transport-ws's error message for its
// id. gqlgen sends those as a next and a complete once Orchard's error
// presenter has given them contract codes (it picks the message by code).
type refusalsAsErrors struct{ graphql.GraphExecutor }

func (e refusalsAsErrors) CreateOperationContext(ctx context.Context, params *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	rc, errs := e.GraphExecutor.CreateOperationContext(ctx, params)
	if len(errs) > 0 {
		if s := sessionFrom(ctx); s != nil {
			s.mu.Lock()
			s.refused = true
			s.mu.Unlock()
		}
	}
	return rc, errs
}

// guardedWebsocket accepts websockets for the transport; the connections it
// returns are wsSessions.
type guardedWebsocket struct {
	accept websocket.AcceptOptions
	max    int
	// initTimeout closes a socket that sends no connection_init with 4408
	// (gqlgen's own InitTimeout closes with 1002).
	initTimeout time.Duration
}

// Accept implements transport.WebsocketImplementation.
func (g guardedWebsocket) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	for k, vs := range opts.ResponseHeader {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	o := g.accept
	o.Subprotocols = slices.Clone(o.Subprotocols)
	for _, p := range opts.Subprotocols {
		if !slices.Contains(o.Subprotocols, p) {
			o.Subprotocols = append(o.Subprotocols, p)
		}
	}
	conn, err := websocket.Accept(w, r, &o)
	if err != nil {
		return nil, err
	}
	s := sessionFrom(r.Context())
	if s == nil {
		s = &wsSession{}
	}
	s.conn, s.max, s.active, s.errored = conn, g.max, map[string]bool{}, map[string]bool{}
	if s.sessions == nil {
		s.sessions = newWSSessions()
	}
	if d := g.initTimeout; d > 0 && conn.Subprotocol() == transportWS {
		s.initTimer = time.AfterFunc(d, func() {
			s.closeWith(closeInitTimeout, "Connection initialisation timeout")
		})
	}
	s.sessions.add(s)
	return s, nil
}

// wsSession is one websocket. Besides carrying messages it enforces what
// gqlgen's transport leaves to the application: graphql-transport-ws's close
// codes, at most max subscriptions (more are answered with an error),
// nothing sent after the close has begun, and a close that is waited for.
type wsSession struct {
	sessions *wsSessions
	conn     *websocket.Conn
	max      int

	mu        sync.Mutex
	key       int
	initSeen  bool
	initTimer *time.Timer
	readTimer *time.Timer
	active    map[string]bool
	errored   map[string]bool // ids whose error was sent: their complete is not
	current   string          // the subscribe being handled by the read loop
	refused   bool            // it was refused before running
	closing   bool
}

var _ transport.WebsocketConn = (*wsSession)(nil)

type wsEnvelope struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

var errClosedByServer = errors.New("websocket closed by the server")

func (s *wsSession) setKey(id int) {
	s.mu.Lock()
	s.key = id
	s.mu.Unlock()
}

func (s *wsSession) keyID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

// closeWith starts the close handshake with code, once: later calls, with
// whatever code, do nothing. The handshake runs in the background and the
// session stays in sessions until it is over, so shutdown can wait for it.
func (s *wsSession) closeWith(code int, reason string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	for _, t := range []*time.Timer{s.initTimer, s.readTimer} {
		if t != nil {
			t.Stop()
		}
	}
	s.mu.Unlock()
	go func() {
		_ = s.conn.Close(websocket.StatusCode(code), reason)
		s.sessions.remove(s)
	}()
}

func (s *wsSession) shut(code int, reason string) { s.closeWith(code, reason) }

func (s *wsSession) closeNow() { _ = s.conn.CloseNow() }

// writingSince implements socket: gqlgen's transport bounds each write
// with a context (wsWriteTimeout).
func (s *wsSession) writingSince() int64 { return 0 }

func (s *wsSession) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// NextReader hands gqlgen the client's next message, after the checks of
// graphql-transport-ws that gqlgen answers with 1002 or not at all.
func (s *wsSession) NextReader() (int, io.Reader, error) {
	for {
		kind, data, err := s.conn.Read(context.Background())
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusNoStatusRcvd:
				return int(kind), nil, transport.ErrWebsocketClosed
			}
			if s.isClosing() {
				return int(kind), nil, net.ErrClosed
			}
			return int(kind), nil, err
		}
		if s.conn.Subprotocol() != transportWS {
			return int(kind), bytes.NewReader(data), nil
		}
		pass, err := s.check(data)
		if err != nil {
			return int(kind), nil, err
		}
		if pass {
			return int(kind), bytes.NewReader(data), nil
		}
	}
}

// check applies the protocol to one client message: it reports whether
// gqlgen should see it, or an error once the socket is being closed.
func (s *wsSession) check(data []byte) (bool, error) {
	var m wsEnvelope
	if err := json.Unmarshal(data, &m); err != nil || m.Type == "" {
		s.closeWith(closeBadRequest, "Invalid message received")
		return false, errClosedByServer
	}
	s.mu.Lock()
	initSeen := s.initSeen
	s.mu.Unlock()
	switch m.Type {
	case "connection_init":
		if initSeen {
			s.closeWith(closeTooManyInitialisings, "Too many initialisation requests")
			return false, errClosedByServer
		}
		if p := bytes.TrimSpace(m.Payload); len(p) > 0 && p[0] != '{' && !bytes.Equal(p, []byte("null")) {
			s.closeWith(closeBadRequest, "The connection_init payload must be an object")
			return false, errClosedByServer
		}
		s.mu.Lock()
		s.initSeen = true
		if s.initTimer != nil {
			s.initTimer.Stop()
		}
		s.mu.Unlock()
		return true, nil
	case "ping", "pong":
		if !initSeen {
			// Allowed at any time; gqlgen only takes them after the ack.
			if m.Type == "ping" {
				return false, s.write(context.Background(), []byte(`{"type":"pong"}`))
			}
			return false, nil
		}
		return true, nil
	case "subscribe":
		if !initSeen {
			s.closeWith(closeUnauthorized, "Unauthorized")
			return false, errClosedByServer
		}
		if m.ID == "" {
			s.closeWith(closeBadRequest, "A subscribe message needs an id")
			return false, errClosedByServer
		}
		s.mu.Lock()
		dup, full := s.active[m.ID], len(s.active) >= s.max
		if !dup && !full {
			s.active[m.ID] = true
			s.current, s.refused = m.ID, false
			delete(s.errored, m.ID)
		}
		s.mu.Unlock()
		if dup {
			s.closeWith(closeSubscriberExists, "Subscriber for "+domain.Truncate(m.ID, 80)+" already exists")
			return false, errClosedByServer
		}
		if full {
			return false, s.refuse(m.ID)
		}
		return true, nil
	case "complete":
		s.done(m.ID)
		return true, nil
	}
	s.closeWith(closeBadRequest, "Invalid message received")
	return false, errClosedByServer
}

func (s *wsSession) refuse(id string) error {
	payload, _ := json.Marshal([]map[string]any{{
		"message":    "This connection already holds the most subscriptions allowed; complete one first or open another connection.",
		"extensions": map[string]any{"code": "BAD_USER_INPUT"},
	}})
	b, _ := json.Marshal(wsEnvelope{ID: id, Type: "error", Payload: payload})
	return s.write(context.Background(), b)
}

func (s *wsSession) done(id string) {
	s.mu.Lock()
	delete(s.active, id)
	s.mu.Unlock()
}

// WriteJSON sends gqlgen's message unless the socket is closing (a socket
// whose key was revoked gets nothing more), turning a refused subscribe's
// next into an error and dropping the complete that follows an error.
func (s *wsSession) WriteJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m wsEnvelope
	if json.Unmarshal(b, &m) == nil && m.ID != "" && s.conn.Subprotocol() == transportWS {
		s.mu.Lock()
		switch m.Type {
		case "next":
			if m.ID == s.current && s.refused {
				s.refused = false
				var resp struct{ Errors json.RawMessage }
				if json.Unmarshal(m.Payload, &resp) == nil && len(resp.Errors) > 0 {
					b, _ = json.Marshal(wsEnvelope{ID: m.ID, Type: "error", Payload: resp.Errors})
					s.errored[m.ID] = true
					delete(s.active, m.ID)
				}
			}
		case "error":
			s.errored[m.ID] = true
			delete(s.active, m.ID)
		case "complete":
			drop := s.errored[m.ID]
			delete(s.errored, m.ID)
			delete(s.active, m.ID)
			if drop {
				s.mu.Unlock()
				return nil
			}
		}
		s.mu.Unlock()
	}
	return s.write(context.Background(), b)
}

func (s *wsSession) write(ctx context.Context, b []byte) error {
	if s.isClosing() {
		return net.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
	defer cancel()
	return s.conn.Write(ctx, websocket.MessageText, b)
}

// WriteClose implements transport.WebsocketConn; the first close wins.
func (s *wsSession) WriteClose(code int, reason string) error {
	s.closeWith(code, reason)
	return nil
}

// Close implements transport.WebsocketConn. gqlgen calls it after
// WriteClose, whose handshake then owns the connection.
func (s *wsSession) Close() error {
	s.closeWith(closeNormal, "terminated")
	return nil
}

// Subprotocol implements transport.WebsocketConn.
func (s *wsSession) Subprotocol() string { return s.conn.Subprotocol() }

// SetReadLimit implements transport.WebsocketReadLimiter.
func (s *wsSession) SetReadLimit(limit int64) { s.conn.SetReadLimit(limit) }

// SetReadDeadline implements transport.WebsocketReadDeadliner: a client
// that stops answering pings loses its socket at t.
func (s *wsSession) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readTimer != nil {
		s.readTimer.Stop()
		s.readTimer = nil
	}
	if t.IsZero() || s.closing {
		return nil
	}
	s.readTimer = time.AfterFunc(time.Until(t), func() { _ = s.conn.CloseNow() })
	return nil
}
