package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/modules/fault"
)

// metrics holds Orchard's Prometheus instruments. Every label value comes
// from a set fixed by the code, never from what a client sends as is, so
// no request can add series without bound.
type metrics struct {
	log *slog.Logger
	reg *prometheus.Registry

	requests   *prometheus.CounterVec
	durations  *prometheus.HistogramVec
	wsOpen     prometheus.Gauge
	wsLifetime prometheus.Histogram
	ops        *prometheus.CounterVec
	opDuration *prometheus.HistogramVec

	opNames opNameSet

	// leader is true while this instance runs the jobs that must run once;
	// only then does it export the gauges that describe every token, so a
	// sum over instances counts each token once.
	leader atomic.Bool
}

// Bounds of the label sets.
const (
	// MaxOperationNames bounds the distinct GraphQL operation names kept:
	// clients choose them, so once this many are known the rest count as
	// "other". The frontends use a few dozen.
	MaxOperationNames = 100
	// tokenScrapeTimeout bounds the database read of one scrape, below
	// Prometheus's default scrape timeout of 10 s.
	tokenScrapeTimeout = 5 * time.Second
)

// requestBuckets span a health check (ms) to an upload whose Apple calls
// retry up to the operation timeout (60 s).
var requestBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// websocketBuckets span a refused connection_init to a console left open
// for a day.
var websocketBuckets = []float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600}

func newMetrics(log *slog.Logger) *metrics {
	m := &metrics{
		log: log,
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchard_http_requests_total",
			Help: "HTTP requests by method, route and status; websocket upgrades count here with status 101.",
		}, []string{"method", "route", "status"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orchard_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by method and route; websockets are in orchard_websocket_duration_seconds instead.",
			Buckets: requestBuckets,
		}, []string{"method", "route"}),
		wsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orchard_websockets_open",
			Help: "Websocket connections open on this instance.",
		}),
		wsLifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orchard_websocket_duration_seconds",
			Help:    "How long websocket connections stayed open.",
			Buckets: websocketBuckets,
		}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchard_graphql_operations_total",
			Help: "GraphQL queries and mutations by type, operation name and outcome; names past the first " + strconv.Itoa(MaxOperationNames) + " seen count as \"other\".",
		}, []string{"type", "operation", "outcome"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orchard_graphql_operation_duration_seconds",
			Help:    "Time to execute a GraphQL query or mutation, by type and outcome.",
			Buckets: requestBuckets,
		}, []string{"type", "outcome"}),
		opNames: opNameSet{max: MaxOperationNames, known: map[string]bool{}},
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.durations, m.wsOpen, m.wsLifetime, m.ops, m.opDuration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "orchard_leader",
			Help: "1 while this instance is the job leader and exports the token gauges, else 0.",
		}, func() float64 {
			if m.leader.Load() {
				return 1
			}
			return 0
		}),
	)
	return m
}

// setLeader records whether this instance is the job leader, in
// orchard_leader; only the leader exports the token gauges.
func (m *metrics) setLeader(leading bool) { m.leader.Store(leading) }

// httpMethods are the methods counted by name; any other is "other".
var httpMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

func methodLabel(method string) string {
	if httpMethods[method] {
		return method
	}
	return "other"
}

// routeLabel names the mux pattern that serves r (without its method), so
// routes are the handler's own fixed set; a path no pattern serves is
// "other".
func routeLabel(mux *http.ServeMux, r *http.Request) string {
	if r.Method == http.MethodConnect {
		// The mux may name a CONNECT request's redirect target rather
		// than a pattern; Orchard serves no CONNECT anyway.
		return "other"
	}
	_, pattern := mux.Handler(r)
	i := strings.IndexByte(pattern, '/')
	if i < 0 {
		return "other"
	}
	if p := strings.TrimSuffix(pattern[i:], "{$}"); p != "" {
		return p
	}
	return "/"
}

// statusWriter records the status and notices a websocket upgrade.
type statusWriter struct {
	http.ResponseWriter
	status   int
	upgraded bool
	m        *metrics
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if code == http.StatusSwitchingProtocols {
			w.upgraded = true
			w.m.wsOpen.Inc()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the websocket upgrade reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts and times every request of routes and logs it (never
// its body). A websocket's lifetime goes to its own histogram: it would
// drown every request latency.
func (m *metrics) instrument(routes *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, m: m}
		rt := routeLabel(routes, r)
		if !isWebsocket(r) {
			next.ServeHTTP(sw, r)
			m.record(r.Context(), r.Method, rt, sw, start)
			return
		}
		after := &afterHandler{}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), afterHandlerKey{}, after)))
		after.mu.Lock()
		if !after.detached {
			after.mu.Unlock()
			m.record(r.Context(), r.Method, rt, sw, start)
			return
		}
		// Keep neither the request nor the writer: net/http's state for
		// the connection is to be let go.
		res := &statusWriter{status: sw.status, upgraded: sw.upgraded}
		method, ctx := r.Method, context.WithoutCancel(r.Context())
		after.record = func() { m.record(ctx, method, rt, res, start) }
		ended := after.ended
		after.mu.Unlock()
		if ended {
			after.record()
		}
	})
}

// afterHandler lets a websocket outlive its HTTP handler, so the handler's
// goroutine and what net/http keeps for it are let go: the transport
// detaches the request, and the request is recorded when the socket ends.
type afterHandler struct {
	mu       sync.Mutex
	detached bool
	ended    bool   // the socket has ended
	record   func() // set once the handler has returned
}

type afterHandlerKey struct{}

// detachRequest marks ctx's request as going on after its handler returns
// and gives the function to call when it ends; nil when nothing records
// the request (the handler then has to keep it until the end).
func detachRequest(ctx context.Context) func() {
	a, _ := ctx.Value(afterHandlerKey{}).(*afterHandler)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	a.detached = true
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		a.ended = true
		record := a.record
		a.mu.Unlock()
		if record != nil {
			record()
		}
	}
}

// record counts, times and logs a request that has ended.
func (m *metrics) record(ctx context.Context, method, rt string, sw *statusWriter, start time.Time) {
	d := time.Since(start)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	method = methodLabel(method)
	m.requests.WithLabelValues(method, rt, strconv.Itoa(sw.status)).Inc()
	if sw.upgraded {
		m.wsOpen.Dec()
		m.wsLifetime.Observe(d.Seconds())
	} else {
		m.durations.WithLabelValues(method, rt).Observe(d.Seconds())
	}
	if rt == "/graphql" || sw.status >= 400 {
		attrs := []any{"method", method, "path", rt, "status", sw.status, "duration_ms", d.Milliseconds()}
		if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
			info.mu.Lock()
			attrs = append(attrs, "request_id", info.id)
			if info.key != "" {
				attrs = append(attrs, "api_key", info.key)
			}
			info.mu.Unlock()
		}
		m.log.Info("http request", attrs...)
	}
}

// opNameSet admits the first max distinct operation names; later ones are
// "other", so a client inventing names cannot grow the series.
type opNameSet struct {
	mu    sync.Mutex
	max   int
	known map[string]bool
}

// graphqlName is a GraphQL name short enough to be a label.
var graphqlName = regexp.MustCompile(`^[_A-Za-z][_0-9A-Za-z]{0,63}$`)

func (s *opNameSet) label(name string) string {
	if name == "" {
		return "anonymous"
	}
	if !graphqlName.MatchString(name) {
		return "other"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[name] {
		return name
	}
	if len(s.known) >= s.max {
		return "other"
	}
	s.known[name] = true
	return name
}

// graphqlResponses counts and times GraphQL queries and mutations. A
// subscription's responses are its events, spaced by whatever the server
// has to say, so they are left to the websocket metrics.
func (m *metrics) graphqlResponses(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	start := time.Now()
	resp := next(ctx)
	if !graphql.HasOperationContext(ctx) {
		return resp
	}
	op := graphql.GetOperationContext(ctx)
	kind, name := "invalid", "none"
	if op.Operation != nil {
		if op.Operation.Operation == ast.Subscription {
			return resp
		}
		kind = string(op.Operation.Operation)
		// The parsed name, not the request's operationName field: a
		// document names its operations in a grammar, the field is free text.
		name = m.opNames.label(op.Operation.Name)
	}
	outcome := "ok"
	if resp != nil && len(resp.Errors) > 0 {
		outcome = "error"
	}
	m.ops.WithLabelValues(kind, name, outcome).Inc()
	m.opDuration.WithLabelValues(kind, outcome).Observe(time.Since(start).Seconds())
	return resp
}

// handler serves the metrics to a caller with the metrics token (when
// ORCHARD_METRICS_TOKEN is set) or else an admin API key: they describe
// every customer's tokens.
func (m *metrics) handler(d serverDeps) http.Handler {
	state := prometheus.NewRegistry()
	state.MustRegister(&tokenCollector{client: d.client, svc: d.svc, hub: d.hub, m: m})
	h := promhttp.HandlerFor(prometheus.Gatherers{m.reg, state}, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	})
	var token []byte
	if d.cfg.MetricsToken != "" {
		sum := sha256.Sum256([]byte(d.cfg.MetricsToken))
		token = sum[:]
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := m.authorize(r, token, d.auth); status != http.StatusOK {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orchard metrics"`)
			http.Error(w, msg, status)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authorize checks a scrape's bearer: the metrics token's hash when one is
// configured (compared in constant time), else an admin API key.
func (m *metrics) authorize(r *http.Request, tokenHash []byte, auth *authenticator) (int, string) {
	header := r.Header.Get("Authorization")
	if tokenHash != nil {
		scheme, got, ok := strings.Cut(strings.TrimSpace(header), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], tokenHash) != 1 {
			return http.StatusUnauthorized, "/metrics needs \"Authorization: Bearer TOKEN\" with the value of ORCHARD_METRICS_TOKEN (in Prometheus: authorization: {credentials: TOKEN})."
		}
		return http.StatusOK, ""
	}
	if auth == nil {
		return http.StatusUnauthorized, "/metrics is closed: set ORCHARD_METRICS_TOKEN."
	}
	v, err := auth.viewerFor(r.Context(), header)
	if err != nil {
		if fault.CodeOf(err) == fault.Internal {
			loggerFrom(r.Context()).Error("checking the API key of a scrape", "err", err)
			return http.StatusServiceUnavailable, "The API key could not be checked; try again."
		}
		return http.StatusUnauthorized, "/metrics needs \"Authorization: Bearer KEY\" with an admin API key, or set ORCHARD_METRICS_TOKEN and send that instead."
	}
	if v.Role != viewer.Admin {
		return http.StatusForbidden, "/metrics describes every customer, so it needs an admin API key (or ORCHARD_METRICS_TOKEN)."
	}
	return http.StatusOK, ""
}

// tokenCollector reads the database-backed gauges at scrape time. A
// failed read is reported in orchard_scrape_error, not as a failed scrape,
// so the process metrics keep coming while the database is away.
type tokenCollector struct {
	client *ent.Client
	svc    *domain.Service
	hub    *domain.Hub
	m      *metrics
}

var (
	tokensDesc = prometheus.NewDesc("orchard_server_tokens",
		"Server tokens by state and expiry status; exported by the job leader only.",
		[]string{"state", "expiry_status"}, nil)
	expiryDesc = prometheus.NewDesc("orchard_server_token_expiry_timestamp_seconds",
		"When each ACTIVE server token expires (Unix time), by token ID, customer ID (as in GraphQL) and Apple location uId; exported by the job leader only.",
		[]string{"token_id", "customer_id", "location_uid"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("orchard_scrape_error",
		"1 when this scrape could not read the token gauges from the database, else 0.", nil, nil)
	scrapeDurationDesc = prometheus.NewDesc("orchard_scrape_duration_seconds",
		"Time this scrape spent reading the token gauges from the database.", nil, nil)
	licenceLowDesc = prometheus.NewDesc("orchard_licence_apps_low",
		"Apps at or below their low-licence threshold (unlimited apps never count), by customer ID (as in GraphQL); customers with none are left out; exported by the job leader only.",
		[]string{"customer_id"}, nil)
	subscribersDesc = prometheus.NewDesc("orchard_expiry_subscribers",
		"Open tokenExpiryWarnings subscriptions on this instance.", nil, nil)
)

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tokensDesc, expiryDesc, licenceLowDesc, scrapeErrorDesc, scrapeDurationDesc, subscribersDesc} {
		ch <- d
	}
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(subscribersDesc, prometheus.GaugeValue, float64(c.hub.Subscribers()))
	failed := 0.0
	if c.m.leader.Load() {
		start := time.Now()
		if err := c.collectTokens(ch); err != nil {
			c.m.log.Error("reading token metrics", "err", err)
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(scrapeDurationDesc, prometheus.GaugeValue, time.Since(start).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
}

func (c *tokenCollector) collectTokens(ch chan<- prometheus.Metric) error {
	ctx, cancel := context.WithTimeout(viewer.SystemContext(context.Background()), tokenScrapeTimeout)
	defer cancel()
	toks, err := c.client.ServerToken.Query().
		Select(servertoken.FieldState, servertoken.FieldExpiresAt, servertoken.FieldLocationUID, servertoken.FieldCustomerID).
		All(ctx)
	if err != nil {
		return err
	}
	// Every combination is exported, zeros included, so a state that
	// empties reads 0 instead of vanishing.
	counts := map[[2]string]int{}
	for _, st := range []servertoken.State{servertoken.StatePENDING, servertoken.StateCONFLICT, servertoken.StateACTIVE, servertoken.StateREVOKED, servertoken.StateINVALID} {
		for _, es := range []domain.ExpiryStatus{domain.ExpiryValid, domain.ExpiryExpiringSoon, domain.ExpiryExpired} {
			counts[[2]string{string(st), string(es)}] = 0
		}
	}
	now := c.svc.Now()
	for _, t := range toks {
		counts[[2]string{string(t.State), string(domain.StatusOf(t.ExpiresAt, now, c.svc.WarnDays()))}]++
		if t.State == servertoken.StateACTIVE {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(t.ExpiresAt.Unix()),
				relay.Encode(t.ID), relay.Encode(t.CustomerID), t.LocationUID)
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	low, err := c.svc.LowLicenceApps(ctx)
	if err != nil {
		return err
	}
	for customerID, n := range low {
		ch <- prometheus.MustNewConstMetric(licenceLowDesc, prometheus.GaugeValue, float64(n), relay.Encode(customerID))
	}
	return nil
}
