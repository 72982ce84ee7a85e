// Package httpapi is Orchard's HTTP surface: /graphql (queries, mutations,
// uploads and websocket subscriptions) behind its body limits, API-key
// authentication and rate limits; the websocket guard that bounds and
// re-checks open sockets; /healthz, /readyz and the Prometheus /metrics;
// the console and the Playground, mounted from their own packages; and
// the graceful shutdown of all of it. package main builds one Server with
// New and serves it.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph/domain"
)

// Options are what the HTTP surface is built from: the data it serves and
// the settings of ORCHARD_* variables that shape it (contract.md).
type Options struct {
	Client *ent.Client
	// DB answers /readyz.
	DB interface{ Ping(context.Context) error }
	// Service and Hub are the domain the resolvers call.
	Service *domain.Service
	Hub     *domain.Hub

	// MaxUploadBytes bounds a token upload (ORCHARD_MAX_UPLOAD_BYTES).
	MaxUploadBytes int64
	// AllowedOrigins are the browser origins whose websockets are accepted.
	AllowedOrigins []string
	// Introspection turns on GraphQL introspection.
	Introspection bool
	// RateLimit is the sustained cost per second allowed per key and per
	// address; 0 turns the limits off.
	RateLimit float64
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// OperationTimeout bounds one query or mutation.
	OperationTimeout time.Duration
	// MetricsToken, when set, is the bearer /metrics wants instead of an
	// admin API key (ORCHARD_METRICS_TOKEN).
	MetricsToken string
	Log          *slog.Logger
}

// Server is the HTTP surface. It is an http.Handler; its other methods
// are for the process around it: the job leader, the key re-check and
// shutdown.
type Server struct {
	d       serverDeps
	handler http.Handler
}

// New builds the whole HTTP surface.
func New(opts Options) *Server {
	d := serverDeps{
		cfg:       &opts,
		client:    opts.Client,
		db:        opts.DB,
		svc:       opts.Service,
		hub:       opts.Hub,
		auth:      newAuthenticator(opts.Client),
		metrics:   newMetrics(opts.Log),
		limits:    newRateLimits(opts.RateLimit, opts.TrustedProxies...),
		sockets:   newWSSessions(),
		readiness: &readiness{},
		log:       opts.Log,
	}
	return &Server{d: d, handler: newHandler(d)}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// SetLeader records whether this instance is the job leader; only the
// leader exports the gauges that describe every token, so a sum over
// instances counts each token once.
func (s *Server) SetLeader(leading bool) { s.d.metrics.setLeader(leading) }

// WatchKeys closes the websockets whose API key has been revoked or has
// expired, until ctx ends.
func (s *Server) WatchKeys(ctx context.Context) {
	s.d.sockets.watchKeys(ctx, s.d.client, keyRecheckInterval, s.d.log)
}

// Websockets is the number of websockets open now.
func (s *Server) Websockets() int { return s.d.sockets.Count() }

// Shutdown stops srv, which serves s, within timeout; see shutdown.
func (s *Server) Shutdown(srv *http.Server, cut context.CancelFunc, timeout time.Duration) {
	shutdown(srv, s.d.sockets, s.d.readiness, cut, timeout, s.d.log)
}

// NewGraphQL is the /graphql endpoint alone, with its body limits but
// without authentication, rate limits or websockets: the caller puts a
// viewer in each request's context. The benchmarks measure it.
func NewGraphQL(opts Options) http.Handler {
	d := serverDeps{cfg: &opts, client: opts.Client, svc: opts.Service, hub: opts.Hub, metrics: newMetrics(opts.Log), log: opts.Log}
	return bodyGuard(opts.MaxUploadBytes, newGraphQL(d))
}

// shutdown stops srv within timeout, before the database closes: /readyz
// turns 503 (and, when something polls it, the server keeps serving for
// readinessGrace so a load balancer notices before connections are
// refused), every websocket gets a close frame (1001 going away) and its
// handshake is waited for, and requests in flight finish. A request still
// running cutMargin before the deadline is cut: its context ends, so its
// transaction rolls back and it answers with an error the client may retry.
// So ORCHARD_SHUTDOWN_TIMEOUT ≥ ORCHARD_OPERATION_TIMEOUT + cutMargin lets
// every operation finish; a shorter one bounds how long a restart waits.
func shutdown(srv *http.Server, sockets *wsSessions, ready *readiness, cut context.CancelFunc, timeout time.Duration, log *slog.Logger) {
	ready.draining.Store(true)
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sockets.closeAll(closeGoingAway, "server shutting down")
	if ready.polled.Load() {
		time.Sleep(readinessGrace(timeout))
	}
	sockets.closeAll(closeGoingAway, "server shutting down")

	finish, cancelFinish := context.WithDeadline(ctx, deadline.Add(-cutMargin(timeout)))
	err := srv.Shutdown(finish)
	cancelFinish()
	if err != nil {
		log.Warn("cutting requests still running at the shutdown deadline", "timeout", timeout.String())
		cut()
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("requests did not end after being cut; closing their connections", "err", err)
			_ = srv.Close()
		}
	}
	if left := sockets.wait(ctx); left > 0 {
		log.Warn("websockets still closing at the shutdown deadline", "count", left)
	}
}

// readinessGrace is how long a polled server answers 503 on /readyz while
// still serving: an eighth of the shutdown timeout, at most 1 s. A longer
// wait for a slow load balancer belongs before the signal (a pre-stop hook).
func readinessGrace(timeout time.Duration) time.Duration {
	return min(timeout/8, time.Second)
}

// cutMargin is the part of the shutdown timeout kept for cut requests to
// roll back and answer: a quarter, at most 2 s.
func cutMargin(timeout time.Duration) time.Duration {
	return min(timeout/4, 2*time.Second)
}
