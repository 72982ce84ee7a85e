package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/server/console"
	"github.com/orchard-msp/orchard/server/playground"
)

// Limits of the GraphQL endpoint; each number is chosen on purpose.
const (
	// parserTokenLimit bounds a document before it is parsed (gqlgen's
	// default is unlimited: CVE-2023-49559). The largest frontend query is
	// a few hundred tokens.
	parserTokenLimit = 15000
	// complexityLimit: connections multiply by their page size, so this
	// admits 100 customers × 50 tokens with their fields, not a crawl.
	complexityLimit = 200000
	// multipartOverhead is what an upload request carries besides the file:
	// the operations and map fields and the part headers.
	multipartOverhead = 16 << 10
	// wsReadLimit bounds one websocket message; subscription requests are small.
	wsReadLimit = 64 << 10
	// maxJSONBody bounds a JSON request: the largest legitimate query with
	// its variables is a few KB.
	maxJSONBody = 256 << 10
)

// serverDeps is what the HTTP layer is built from.
type serverDeps struct {
	cfg    *Options
	client *ent.Client
	// db answers /readyz.
	db      interface{ Ping(context.Context) error }
	svc     *domain.Service
	hub     *domain.Hub
	auth    *authenticator
	metrics *metrics
	limits  *rateLimits
	// sockets tracks the websockets, for shutdown and key revocation; nil
	// in tests that need neither.
	sockets *wsSessions
	// readiness turns /readyz to 503 when shutdown begins; nil in tests.
	readiness *readiness
	log       *slog.Logger
}

// newHandler builds Orchard's whole HTTP surface.
func newHandler(d serverDeps) http.Handler {
	gql := newGraphQL(d)
	mux := http.NewServeMux()
	mux.Handle("/graphql", d.limits.middleware(bodyGuard(d.cfg.MaxUploadBytes, d.auth.middleware(checkOperations(gql)))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := d.db.Ping(ctx); err != nil {
			d.log.Warn("readiness check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database not answering\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", d.metrics.handler(d))
	mux.Handle("POST /apple/notifications", d.limits.middleware(appleNotifications(d)))
	pg := playground.Handler()
	mux.Handle("GET /playground", pg)
	mux.Handle("GET /playground/", pg)
	ui := console.Handler(console.Options{MaxUploadBytes: d.cfg.MaxUploadBytes})
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET /console/", ui)
	return d.metrics.instrument(mux, withRequestID(d.log, d.readiness.middleware(mux)))
}

// readiness is what /readyz says beyond the database: not ready once
// shutdown has begun, so a load balancer stops sending before the
// listener goes away.
type readiness struct {
	draining atomic.Bool
	// polled is set once something asks /readyz: only then is there a
	// load balancer to wait for at shutdown.
	polled atomic.Bool
}

func (rd *readiness) middleware(next http.Handler) http.Handler {
	if rd == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			rd.polled.Store(true)
			if rd.draining.Load() {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("shutting down\n"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func newGraphQL(d serverDeps) *handler.Server {
	srv := handler.New(graph.NewSchema(d.svc, d.hub, d.log))
	origins := append([]string{}, d.cfg.AllowedOrigins...)
	readLimit := int64(wsReadLimit)
	sockets := d.sockets
	if sockets == nil {
		sockets = newWSSessions()
	}
	accept := websocket.AcceptOptions{OriginPatterns: origins} // coder/websocket refuses cross-origin browsers unless listed here
	srv.AddTransport(&wsTransport{
		legacy: websocketTransport{
			Websocket: transport.Websocket{
				Implementation: guardedWebsocket{
					accept:      accept,
					max:         MaxSubscriptionsPerSocket,
					initTimeout: 10 * time.Second,
				},
				InitFunc:         d.auth.wsInit,
				PingPongInterval: 20 * time.Second,
				PayloadReadLimit: &readLimit,
			},
			sessions: sockets,
		},
		sessions:     sockets,
		accept:       accept,
		viewer:       d.auth.wsViewer,
		max:          MaxSubscriptionsPerSocket,
		initTimeout:  10 * time.Second,
		pingInterval: 20 * time.Second,
		readLimit:    readLimit,
		workers:      newEventWorkers(),
	})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(jsonPOST{})
	srv.AddTransport(transport.MultipartForm{
		MaxUploadSize: d.cfg.MaxUploadBytes + multipartOverhead,
		// Above MaxUploadSize, so an upload is always held in memory and a
		// token never touches a temp file.
		MaxMemory: 2 * (d.cfg.MaxUploadBytes + multipartOverhead),
	})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetParserTokenLimit(parserTokenLimit)
	if d.cfg.Introspection {
		use(srv, extension.Introspection{})
	} else {
		// Without introspection, "did you mean" hints would leak the schema.
		srv.SetDisableSuggestion(true)
	}
	use(srv, extension.FixedComplexityLimit(complexityLimit))
	use(srv, graph.PageLimit{Max: 100})
	if d.limits != nil {
		use(srv, d.limits) // after the complexity limit, whose figure it reads
	}
	srv.SetErrorPresenter(graph.ErrorPresenter(d.log))
	srv.SetRecoverFunc(graph.Recover(d.log))
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		op := graphql.GetOperationContext(ctx)
		if op.Operation != nil && op.Operation.Operation != ast.Subscription {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d.cfg.OperationTimeout)
			resp := next(ctx)
			return func(ctx context.Context) *graphql.Response {
				defer cancel()
				return resp(ctx)
			}
		}
		return next(ctx)
	})
	srv.AroundResponses(d.metrics.graphqlResponses)
	srv.AroundResponses(graph.Loaders(d.svc))
	return srv
}

// use adds an extension to the GraphQL server. A field interceptor is
// refused: the generated executor marshals plain scalar fields directly,
// without the field middleware (ent/gqlgen.go), so one would silently miss
// most fields. Nothing here calls srv.AroundFields for the same reason.
func use(srv *handler.Server, ext graphql.HandlerExtension) {
	if _, ok := ext.(graphql.FieldInterceptor); ok {
		panic(fmt.Sprintf("httpapi: %s intercepts fields, which plain scalar fields skip (see ent/gqlgen.go)", ext.ExtensionName()))
	}
	srv.Use(ext)
}

// checkOperations refuses a multipart request whose operations field has
// no variables object, which gqlgen panics on when it maps the file into
// the variables (FuzzMultipart keeps a seed of it). The body is already
// bounded by bodyGuard, so it is read into memory here and handed on
// unchanged.
func checkOperations(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
			next.ServeHTTP(w, r)
			return
		}
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			next.ServeHTTP(w, r.WithContext(r.Context())) // let the guards answer
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		part, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).NextPart()
		if err == nil && part.FormName() == "operations" {
			// Read the first JSON value as gqlgen does, which ignores
			// anything after it ({}0 is {} to gqlgen).
			var ops any
			if json.NewDecoder(part).Decode(&ops) == nil && !hasVariables(ops) {
				writeGraphQLError(w, http.StatusBadRequest, fault.New(fault.BadUserInput,
					"The operations field must carry a variables object with the file's variable set to null (GraphQL multipart request spec)."))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hasVariables reports whether every operation in a multipart operations
// value (an object, or a batch array) has a variables object.
func hasVariables(ops any) bool {
	switch v := ops.(type) {
	case map[string]any:
		vars, ok := v["variables"].(map[string]any)
		return ok && vars != nil
	case []any:
		for _, op := range v {
			if !hasVariables(op) {
				return false
			}
		}
		return len(v) > 0
	case nil:
		// null decodes into gqlgen's params without an error, and without
		// variables (FuzzMultipart found it; it keeps a seed of it).
		return false
	}
	return true // not JSON gqlgen can use: it answers that itself
}

// bodyGuard bounds request bodies before anything reads them: uploads to
// the token size limit plus the multipart envelope, other requests to
// maxJSONBody. Too large is answered with HTTP 413 and UPLOAD_TOO_LARGE (for
// uploads) or BAD_USER_INPUT: at once when Content-Length says so, and as
// soon as a chunked body passes the limit. The rest of the body is then
// read and thrown away for a while (see linger), so the client sees the 413.
func bodyGuard(maxFile int64, next http.Handler) http.Handler {
	jsonTooLarge := fault.New(fault.BadUserInput, "The request body is larger than %d bytes. Send a smaller query.", maxJSONBody)
	uploadTooLarge := fault.New(fault.UploadTooLarge, "The upload is larger than a server token can be (limit %d bytes). Choose the .vpptoken file downloaded from Apple Business Manager.", maxFile)
	slots := make(chan struct{}, maxLingering)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || isWebsocket(r) {
			next.ServeHTTP(w, r)
			return
		}
		limit, tooLarge := int64(maxJSONBody), jsonTooLarge
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
			limit, tooLarge = maxFile+multipartOverhead, uploadTooLarge
		}
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close")
			writeGraphQLError(w, http.StatusRequestEntityTooLarge, tooLarge)
			linger(w, r, r.Body, slots)
			return
		}
		body := r.Body
		lr := &limitedBody{ReadCloser: body, left: limit}
		r.Body = lr
		gw := &guardWriter{ResponseWriter: w, tripped: &lr.tripped, err: tooLarge}
		next.ServeHTTP(gw, r)
		if lr.tripped {
			if !gw.replaced {
				gw.replace()
			}
			linger(w, r, body, slots)
		}
	})
}

// A refused body is still read and discarded, up to lingerBytes or for
// lingerTime, like nginx's lingering close. Clients that send the whole body
// before they read (fetch, urllib, browsers) otherwise have their upload cut
// by a reset and never read the 413. maxLingering bounds how many
// connections may be drained at once; beyond that they just close.
const (
	lingerBytes  = 32 << 20
	lingerTime   = 10 * time.Second
	maxLingering = 64
)

// linger flushes the answer already written to w, then drains body within
// the bounds above. A client that sent "Expect: 100-continue" is waiting
// for us and sends nothing more, so there is nothing to drain.
func linger(w http.ResponseWriter, r *http.Request, body io.Reader, slots chan struct{}) {
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		return
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, body, lingerBytes)
}

type limitedBody struct {
	io.ReadCloser
	left    int64
	tripped bool
}

// Close leaves the request body open: the server closes it after the
// handler, and a refused body must stay readable for linger.
func (b *limitedBody) Close() error { return nil }

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.tripped = true
		return 0, &http.MaxBytesError{}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = 0
		b.tripped = true
		return n, &http.MaxBytesError{}
	}
	b.left -= int64(n)
	return n, err
}

// guardWriter swallows the transport's own answer once the body limit has
// tripped, so the client gets 413 and the right code instead.
type guardWriter struct {
	http.ResponseWriter
	tripped  *bool
	replaced bool
	err      error
}

// Unwrap lets http.ResponseController reach the connection.
func (g *guardWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *guardWriter) replace() {
	g.replaced = true
	g.ResponseWriter.Header().Set("Connection", "close")
	writeGraphQLError(g.ResponseWriter, http.StatusRequestEntityTooLarge, g.err)
}

func (g *guardWriter) WriteHeader(code int) {
	if *g.tripped {
		if !g.replaced {
			g.replace()
		}
		return
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *guardWriter) Write(b []byte) (int, error) {
	if *g.tripped {
		if !g.replaced {
			g.WriteHeader(0)
		}
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

// Request IDs and per-request logging.

type requestInfo struct {
	id  string
	mu  sync.Mutex
	key string
}

type requestInfoKey struct{}

var safeRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func withRequestID(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !safeRequestID.MatchString(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-ID", id)
		info := &requestInfo{id: id}
		ctx := context.WithValue(r.Context(), requestInfoKey{}, info)
		ctx = withLogger(ctx, log.With("request_id", id))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func setRequestKey(ctx context.Context, name string) {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		info.mu.Lock()
		info.key = name
		info.mu.Unlock()
	}
}

type loggerKey struct{}

func withLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
