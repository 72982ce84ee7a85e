package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
)

// wsTransport serves graphql-transport-ws itself, on coder/websocket, with
// as little kept per socket as it can: one goroutine reads, one runs each
// subscription, and pings and timeouts are timers.
// gqlgen's transport kept four goroutines per socket (reader, ping loop,
// close watcher, subscription). Sockets that do not offer
// graphql-transport-ws go to legacy (gqlgen's transport, which also speaks
// the older graphql-ws).
type wsTransport struct {
	legacy   graphql.Transport
	sessions *wsSessions
	accept   websocket.AcceptOptions
	// viewer checks a connection_init payload's API key.
	viewer      func(ctx context.Context, payload transport.InitPayload) (*viewer.Viewer, error)
	max         int
	initTimeout time.Duration
	// pingInterval is how often the server pings; a client that has not
	// answered a ping by the next one loses its socket.
	pingInterval time.Duration
	readLimit    int64
	workers      *eventWorkers
}

var _ graphql.Transport = (*wsTransport)(nil)

// Supports implements graphql.Transport.
func (t *wsTransport) Supports(r *http.Request) bool { return r.Header.Get("Upgrade") != "" }

// offers reports whether the client offers graphql-transport-ws.
func offers(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.TrimSpace(p) == transportWS {
				return true
			}
		}
	}
	return false
}

// Do implements graphql.Transport. It returns once the socket has closed,
// or right after the upgrade when the request may be detached.
func (t *wsTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	if !offers(r) {
		t.legacy.Do(w, r, exec)
		return
	}
	o := t.accept
	o.Subprotocols = []string{transportWS}
	hijack := &smallBuffers{ResponseWriter: w}
	conn, err := websocket.Accept(hijack, r, &o)
	if err != nil {
		return // Accept has answered
	}
	conn.SetReadLimit(t.readLimit)
	// The socket may outlive the request (see detachRequest).
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &wsConn{t: t, conn: conn, exec: exec, ctx: ctx, cancel: cancel, subs: map[string]*wsSub{}}
	if t.initTimeout > 0 {
		c.timer = time.AfterFunc(t.initTimeout, func() {
			c.closeWith(closeInitTimeout, "Connection initialisation timeout")
		})
	}
	t.sessions.add(c)
	if done := detachRequest(r.Context()); done != nil {
		// A fresh goroutine reads, and the handler's, with its stack grown
		// by the middleware and gqlgen, ends.
		go func() {
			c.read()
			done()
		}()
		return
	}
	c.read()
}

// wsConn is one graphql-transport-ws socket.
type wsConn struct {
	t    *wsTransport
	conn *websocket.Conn
	// writeMu keeps one write at a time, so that writing says when the
	// write under way began (wsClock; 0 between writes). wsSessions drops
	// a socket whose write has waited past wsWriteTimeout.
	writeMu sync.Mutex
	writing atomic.Int64
	exec    graphql.GraphExecutor
	// ctx ends when the socket closes, and with it every subscription;
	// after connection_init it carries the viewer.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	key      int
	initSeen bool
	// timer is the init timeout until connection_init, then the pinger.
	timer       *time.Timer
	awaitedPong bool // a ping went out and no pong has come back
	subs        map[string]*wsSub
	closing     bool
}

// wsSub is a running subscription; a client's complete cancels it.
type wsSub struct {
	cancel    context.CancelFunc
	completed bool // by the client: nothing more is sent for it
}

// read handles the client's messages until the socket ends.
func (c *wsConn) read() {
	defer func() {
		c.closeWith(closeNormal, "terminated")
	}()
	for {
		_, data, err := c.conn.Read(context.Background())
		if err != nil {
			return
		}
		if !c.handle(data) {
			return
		}
	}
}

// handle applies graphql-transport-ws to one client message; false once
// the socket is closing.
func (c *wsConn) handle(data []byte) bool {
	var m wsEnvelope
	if err := json.Unmarshal(data, &m); err != nil || m.Type == "" {
		return c.closeWith(closeBadRequest, "Invalid message received")
	}
	c.mu.Lock()
	initSeen := c.initSeen
	c.mu.Unlock()
	switch m.Type {
	case "connection_init":
		if initSeen {
			return c.closeWith(closeTooManyInitialisings, "Too many initialisation requests")
		}
		return c.init(m.Payload)
	case "ping":
		b := []byte(`{"type":"pong"}`)
		if len(m.Payload) > 0 {
			b, _ = json.Marshal(wsEnvelope{Type: "pong", Payload: m.Payload})
		}
		c.write(b)
		return true
	case "pong":
		c.mu.Lock()
		c.awaitedPong = false
		c.mu.Unlock()
		return true
	case "subscribe":
		if !initSeen {
			return c.closeWith(closeUnauthorized, "Unauthorized")
		}
		if m.ID == "" {
			return c.closeWith(closeBadRequest, "A subscribe message needs an id")
		}
		return c.subscribe(m.ID, m.Payload)
	case "complete":
		c.mu.Lock()
		if s := c.subs[m.ID]; s != nil {
			s.completed = true
			s.cancel()
			delete(c.subs, m.ID)
		}
		c.mu.Unlock()
		return true
	}
	return c.closeWith(closeBadRequest, "Invalid message received")
}

// init authenticates the socket from connection_init's payload.
func (c *wsConn) init(payload json.RawMessage) bool {
	if p := bytes.TrimSpace(payload); len(p) > 0 && p[0] != '{' && !bytes.Equal(p, []byte("null")) {
		return c.closeWith(closeBadRequest, "The connection_init payload must be an object")
	}
	c.mu.Lock()
	c.initSeen = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	params := transport.InitPayload{}
	if len(payload) > 0 {
		if err := json.Unmarshal(payload, &params); err != nil {
			return c.closeWith(closeBadRequest, "The connection_init payload must be an object")
		}
	}
	v, err := c.t.viewer(c.ctx, params)
	if err != nil {
		return c.closeWith(closeForbidden, "Forbidden: a valid API key is required")
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.key = v.KeyID
	c.ctx = viewer.NewContext(c.ctx, v)
	if c.t.pingInterval > 0 {
		c.timer = time.AfterFunc(c.t.pingInterval, c.ping)
	}
	c.mu.Unlock()
	c.write([]byte(`{"type":"connection_ack"}`))
	return true
}

// ping runs on the ping timer: it closes a socket whose last ping went
// unanswered, else pings and sets the timer again.
func (c *wsConn) ping() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.awaitedPong {
		c.mu.Unlock()
		_ = c.conn.CloseNow()
		return
	}
	c.awaitedPong = true
	c.timer.Reset(c.t.pingInterval)
	c.mu.Unlock()
	c.write([]byte(`{"type":"ping"}`))
}

// subscribe registers id and starts its operation, or refuses it.
func (c *wsConn) subscribe(id string, payload json.RawMessage) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.subs[id] != nil {
		c.mu.Unlock()
		return c.closeWith(closeSubscriberExists, "Subscriber for "+domain.Truncate(id, 80)+" already exists")
	}
	if len(c.subs) >= c.t.max {
		c.mu.Unlock()
		c.sendErrors(id, nil, gqlerror.List{{
			Message:    "This connection already holds the most subscriptions allowed; complete one first or open another connection.",
			Extensions: map[string]any{"code": "BAD_USER_INPUT"},
		}})
		return true
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s := &wsSub{cancel: cancel}
	c.subs[id] = s
	c.mu.Unlock()
	go c.run(ctx, id, s, payload, graphql.Now())
	return true
}

// run executes one subscription and sends its events: the only goroutine
// that lives as long as the subscription.
func (c *wsConn) run(ctx context.Context, id string, s *wsSub, payload json.RawMessage, start time.Time) {
	var rc *graphql.OperationContext
	var errs gqlerror.List
	defer func() {
		if r := recover(); r != nil {
			var gqlErr *gqlerror.Error
			if rc == nil || !errors.As(rc.Recover(ctx, r), &gqlErr) {
				gqlErr = &gqlerror.Error{Message: "internal system error"}
			}
			errs = gqlerror.List{gqlErr}
		}
		c.finish(id, s, errs)
	}()
	ctx = graphql.StartOperationTrace(ctx)
	params := &graphql.RawParams{}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(params); err != nil {
		errs = gqlerror.List{{Message: "invalid json"}}
		return
	}
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	// params.Headers stays empty: nothing reads it, and every idle socket
	// would keep the upgrade's headers for it.
	if rc, errs = c.prepare(ctx, params); errs != nil {
		return
	}
	signal := domain.NewEventSignal()
	responses, ctx := c.exec.DispatchOperation(graphql.WithOperationContext(domain.WithEventSignal(ctx, signal), rc), rc)
	if !signal.Claimed() {
		// The resolver's events come without a signal: wait inside the
		// executor.
		for c.next(ctx, id, s, responses) {
		}
		return
	}
	for {
		select {
		case <-signal.C():
		case <-ctx.Done():
			// Let the executor see the end, as it would have waiting.
			for c.next(ctx, id, s, responses) {
			}
			return
		}
		for signal.Pending() > 0 {
			// The executor runs on a worker; the write, which waits for a
			// slow client, here.
			var msg *bytes.Buffer
			var p any
			c.t.workers.run(func() {
				defer func() { p = recover() }()
				msg = nextMessage(ctx, id, responses)
			})
			if p != nil {
				panic(p)
			}
			if msg == nil {
				return
			}
			c.sendMessage(s, msg)
		}
	}
}

// next takes the subscription's next event from the executor and sends
// it; false when the stream has ended.
func (c *wsConn) next(ctx context.Context, id string, s *wsSub, responses graphql.ResponseHandler) bool {
	msg := nextMessage(ctx, id, responses)
	if msg != nil {
		c.sendMessage(s, msg)
	}
	return msg != nil
}

// nextMessage is the next message of subscription id, built around the
// executor's next event in a buffer from messageBuffers (sendMessage
// returns it); nil when the stream has ended.
func nextMessage(ctx context.Context, id string, responses graphql.ResponseHandler) *bytes.Buffer {
	resp := responses(ctx)
	if resp == nil {
		return nil
	}
	msg := messageBuffers.Get().(*bytes.Buffer)
	msg.Reset()
	msg.Write(appendEnvelopeHead(msg.AvailableBuffer(), id, "next"))
	msg.WriteString(`,"payload":`)
	writeResponse(msg, resp)
	msg.WriteByte('}')
	return msg
}

// messageBuffers hold next messages while they are built and written: one
// warning to ten thousand subscribers would otherwise grow ten thousand
// buffers and then copy each into an envelope.
var messageBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledMessage is the largest buffer messageBuffers keeps; a rare
// large answer is left to the collector.
const maxPooledMessage = 64 << 10

// eventWorkers run the executor for subscriptions' events on a few
// goroutines whose stacks stay grown while there is work, instead of on
// each subscription's own, which the collector shrinks while it waits (see
// domain.EventSignal). A worker ends after a while without work.
type eventWorkers struct {
	jobs  chan func()
	slots chan struct{} // one per running worker
}

const eventWorkerIdle = 30 * time.Second

func newEventWorkers() *eventWorkers {
	return &eventWorkers{jobs: make(chan func()), slots: make(chan struct{}, max(4, 2*runtime.GOMAXPROCS(0)))}
}

// run runs job on a worker and returns when it has.
func (p *eventWorkers) run(job func()) {
	done := make(chan struct{})
	j := func() {
		defer close(done)
		job()
	}
	select {
	case p.jobs <- j:
	case p.slots <- struct{}{}:
		go p.work(j)
	}
	<-done
}

func (p *eventWorkers) work(j func()) {
	defer func() { <-p.slots }()
	idle := time.NewTimer(eventWorkerIdle)
	defer idle.Stop()
	for {
		j()
		idle.Reset(eventWorkerIdle)
		select {
		case j = <-p.jobs:
		case <-idle.C:
			return
		}
	}
}

// prepare parses and validates a subscribe on a short-lived goroutine, so
// the subscription's own keeps a small stack for as long as it waits. A
// subscribe refused before it runs (validation, rate limit, complexity)
// gets its errors as Orchard presents them.
func (c *wsConn) prepare(ctx context.Context, params *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	type result struct {
		rc   *graphql.OperationContext
		errs gqlerror.List
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				gqlErr := &gqlerror.Error{Message: "internal system error"}
				if r.rc != nil {
					_ = errors.As(r.rc.Recover(ctx, p), &gqlErr)
				}
				r.errs = gqlerror.List{gqlErr}
			}
			done <- r
		}()
		r.rc, r.errs = c.exec.CreateOperationContext(ctx, params)
		if r.errs != nil {
			if resp := c.exec.DispatchError(graphql.WithOperationContext(ctx, r.rc), r.errs); len(resp.Errors) > 0 {
				r.errs = resp.Errors
			}
		}
	}()
	r := <-done
	return r.rc, r.errs
}

// finish ends subscription id: an error message when errs are given, else
// complete; nothing when the client completed it or the socket is closing.
func (c *wsConn) finish(id string, s *wsSub, errs gqlerror.List) {
	s.cancel()
	if errs != nil {
		c.sendErrors(id, s, errs)
	} else {
		c.send(id, s, "complete", nil)
	}
	c.mu.Lock()
	if c.subs[id] == s {
		delete(c.subs, id)
	}
	c.mu.Unlock()
}

func (c *wsConn) sendErrors(id string, s *wsSub, errs gqlerror.List) {
	b, err := json.Marshal(errs)
	if err != nil {
		panic(err)
	}
	c.send(id, s, "error", b)
}

// send writes one message for id unless s was completed by the client.
func (c *wsConn) send(id string, s *wsSub, kind string, payload json.RawMessage) {
	if s != nil {
		c.mu.Lock()
		done := s.completed
		c.mu.Unlock()
		if done {
			return
		}
	}
	c.write(envelope(id, kind, payload))
}

// sendMessage writes msg, a next message from nextMessage, unless s was
// completed by the client, and returns msg to messageBuffers.
func (c *wsConn) sendMessage(s *wsSub, msg *bytes.Buffer) {
	c.mu.Lock()
	done := s.completed
	c.mu.Unlock()
	if !done {
		c.write(msg.Bytes())
	}
	if msg.Cap() <= maxPooledMessage {
		messageBuffers.Put(msg)
	}
}

// envelope is wsEnvelope's encoding, built by hand: payload is already
// compact JSON, which json.Marshal would scan again for every subscriber.
func envelope(id, kind string, payload json.RawMessage) []byte {
	b := appendEnvelopeHead(make([]byte, 0, len(id)+len(kind)+len(payload)+34), id, kind)
	if len(payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, payload...)
	}
	return append(b, '}')
}

// appendEnvelopeHead appends a message's id and type, up to where its
// payload goes.
func appendEnvelopeHead(b []byte, id, kind string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"type":"`...)
	b = append(b, kind...)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string. Subscription IDs are
// usually numbers or UUIDs, which need no escaping; others go through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// write sends b unless the socket is closing (a socket whose key was
// revoked gets nothing more). A client that does not read within
// wsWriteTimeout loses its socket (wsSessions.watchWrites).
//
// The time limit is kept by that watcher rather than by a context or a
// write deadline. coder/websocket arms a context.AfterFunc for every
// message written under a context that can end, and a deadline set and
// cleared around each message moves a runtime timer twice: for one
// warning to ten thousand subscribers these were about 7% of the server's
// CPU each in profiles (issue 15, P6). Here a write costs two atomic
// stores.
func (c *wsConn) write(b []byte) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.writing.Store(wsClock())
	err := c.conn.Write(context.Background(), websocket.MessageText, b)
	c.writing.Store(0)
	if err != nil {
		c.closeNow()
	}
}

func (c *wsConn) writingSince() int64 { return c.writing.Load() }

// closeWith starts the close handshake with code, once, and ends every
// subscription; it returns false, for handle. The handshake runs in the
// background and the socket stays in sessions until it is over.
func (c *wsConn) closeWith(code int, reason string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.cancel()
	go func() {
		_ = c.conn.Close(websocket.StatusCode(code), reason)
		c.t.sessions.remove(c)
	}()
	return false
}

func (c *wsConn) keyID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key
}

func (c *wsConn) shut(code int, reason string) { c.closeWith(code, reason) }

func (c *wsConn) closeNow() { _ = c.conn.CloseNow() }

// Buffer sizes of a socket after the upgrade: messages here are a few
// hundred bytes, and net/http's 4 KiB reader and writer would stay with
// every idle socket for its whole life. Longer messages take more reads
// or writes, nothing else.
const (
	wsReadBuffer  = 512
	wsWriteBuffer = 512
)

// smallBuffers hands coder/websocket the hijacked connection with buffers
// of wsReadBuffer and wsWriteBuffer bytes instead of net/http's.
type smallBuffers struct {
	http.ResponseWriter
}

// Hijack implements http.Hijacker.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// What the client sent right behind its handshake is already in
	// net/http's reader: it goes into the new one's buffer, where
	// coder/websocket looks for it.
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	early = bytes.Clone(early)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), conn), max(wsReadBuffer, len(early)))
	if _, err := br.Peek(len(early)); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	// net/http flushed the 101 response before handing the writer over.
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, wsWriteBuffer)), nil
}
