// Command orchard is the Orchard server: a GraphQL backend that keeps
// Apple Apps and Books server tokens for an MSP's customers.
//
// Usage:
//
//	orchard serve                 run the server until SIGINT/SIGTERM
//	orchard apikey create|list|revoke
//	orchard token inspect FILE    parse a .vpptoken offline
//	orchard secrets rotate        re-seal stored tokens under a new key
//	orchard demo                  serve with the simulator and sample tokens
//	orchard modules | version
//
// Configuration comes from ORCHARD_* environment variables; a flag of the
// same meaning overrides each. "orchard COMMAND -h" lists a command's flags
// with their defaults and variables; the commands table in cli.go is the
// one place commands are declared.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/notify"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/secrets"
	_ "github.com/orchard-msp/orchard/modules/standard"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// loadModules loads the modules a configuration selects; those that log
// do so through log.
func loadModules(ctx context.Context, cfg *Config, log *slog.Logger) (*domain.Modules, error) {
	ctx = modules.WithLogger(ctx, log)
	var m domain.Modules
	var err error
	parserCfg, _ := json.Marshal(map[string]any{"maxBytes": cfg.MaxUploadBytes})
	if m.Parser, err = modules.Load[tokenfile.Parser](ctx, "tokenfile.vpptoken", parserCfg); err != nil {
		return nil, err
	}
	appleID := modules.ID(cfg.Apple)
	if !strings.Contains(cfg.Apple, ".") {
		appleID = modules.ID(apple.Namespace + "." + cfg.Apple)
	}
	var appleCfg json.RawMessage
	if appleID == "apple.appsandbooks" {
		appleCfg, _ = json.Marshal(map[string]any{"baseURL": cfg.AppleURL, "retryBudget": cfg.AppleRetryBudget.String()})
	}
	if m.Apple, err = modules.Load[apple.Client](ctx, appleID, appleCfg); err != nil {
		return nil, fmt.Errorf("ORCHARD_APPLE=%q: %w", cfg.Apple, err)
	}
	secretCfg := map[string]any{"keyFile": filepath.Join(cfg.DataDir, "secret.key")}
	if cfg.SecretKey != "" {
		secretCfg = map[string]any{"keys": strings.Split(cfg.SecretKey, ",")}
	}
	raw, _ := json.Marshal(secretCfg)
	if m.Sealer, err = modules.Load[secrets.Sealer](ctx, "secrets.aesgcm", raw); err != nil {
		return nil, fmt.Errorf("ORCHARD_SECRET_KEY: %w", err)
	}
	broker, brokerCfg := modules.ID("pubsub.memory"), json.RawMessage(nil)
	if isPostgres(cfg.DatabaseURL) {
		// Several instances share one PostgreSQL: warnings travel between
		// them over LISTEN/NOTIFY.
		broker = "pubsub.postgres"
		brokerCfg, _ = json.Marshal(map[string]any{"url": cfg.DatabaseURL})
	}
	if m.Broker, err = modules.Load[pubsub.Broker](ctx, broker, brokerCfg); err != nil {
		return nil, err
	}
	if cfg.WebhookURL != "" {
		raw, _ := json.Marshal(map[string]any{"url": cfg.WebhookURL, "secret": cfg.WebhookSecret})
		if m.Notifier, err = modules.Load[notify.Notifier](ctx, "notify.webhook", raw); err != nil {
			return nil, fmt.Errorf("ORCHARD_WEBHOOK_URL: %w", err)
		}
	}
	return &m, nil
}

func mdmMetadata(cfg *Config) string {
	if cfg.MDMMetadata != "" {
		return cfg.MDMMetadata
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown host"
	}
	return truncateBytes("Orchard at "+host, 255)
}

// truncateBytes shortens s to at most n bytes without splitting a character.
func truncateBytes(s string, n int) string {
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// serve runs the server until ctx ends. ready, when set, receives the
// listening address once requests are accepted (tests use it).
func serve(ctx context.Context, cfg *Config, stderr io.Writer, ready chan<- string) error {
	log := newLogger(cfg.LogLevel, stderr)
	applyGCPolicy(log)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("securing data dir: %w", err)
	}
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Error("closing the database", "err", err)
		}
	}()
	mods, err := loadModules(ctx, cfg, log)
	if err != nil {
		return err
	}
	svc := domain.New(db.Client, *mods, domain.Config{
		MDMName:     cfg.MDMName,
		MDMMetadata: mdmMetadata(cfg),
		WarnDays:    cfg.WarnDays,
		PendingTTL:  cfg.PendingTTL,
		// A person waits for uploads, confirms, claims and syncs.
		AppleInteractiveBudget: cfg.AppleInteractiveBudget,
	}, log)
	hub := domain.NewHub(svc)
	bg := newJobs(svc, cfg, log)
	svc.OnActivate = bg.requestSync
	svc.OnOutbox = bg.kickOutbox

	// reqCtx is every request's parent and outlives the signal, so requests
	// in flight at shutdown finish; it ends only to cut the ones still
	// running at the shutdown deadline.
	baseCtx := context.WithoutCancel(ctx)
	reqCtx, cutRequests := context.WithCancel(baseCtx)
	defer cutRequests()
	jobCtx, stopJobs := context.WithCancel(baseCtx)
	defer stopJobs()

	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		if err := hub.Run(jobCtx); err != nil {
			log.Error("expiry hub stopped", "err", err)
		}
	}()

	sockets, readyz, met := newWSSessions(), &readiness{}, newMetrics(log)
	h := newHandler(serverDeps{cfg: cfg, db: db, svc: svc, hub: hub, auth: newAuthenticator(db.Client), metrics: met, limits: newRateLimits(cfg.RateLimit, cfg.TrustedProxies...), sockets: sockets, readiness: readyz, log: log})
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,  // slowloris
		ReadTimeout:       30 * time.Second, // a token upload is a few KB
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	var lead leadership = alone{}
	if isPostgres(cfg.DatabaseURL) {
		lead = &advisoryLock{url: cfg.DatabaseURL, retry: min(cfg.ExpiryScanInterval, 5*time.Second), log: log}
	}
	bg.start(jobCtx, met.trackLeader(lead))
	go sockets.watchKeys(jobCtx, db.Client, keyRecheckInterval, log)
	log.Info("orchard serving", "addr", ln.Addr().String(), "apple", cfg.Apple, "database", redactURL(cfg.DatabaseURL), "console", "http://"+ln.Addr().String()+"/", "playground", "http://"+ln.Addr().String()+"/playground")
	if ready != nil {
		ready <- ln.Addr().String()
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String(), "websockets", sockets.Count())
	stopJobs()
	shutdown(srv, sockets, readyz, cutRequests, cfg.ShutdownTimeout, log)
	bg.wait()
	<-hubDone
	log.Info("stopped")
	return nil
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

func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// passwordParam finds a password given as a URL query parameter
// (?password=…) or in a key/value DSN (password=… or password='…').
var passwordParam = regexp.MustCompile(`(?i)(\bpassword=)('(?:[^'\\]|\\.)*'|[^&\s]*)`)

// redactURL hides the credentials of a database URL or DSN, for logs.
func redactURL(s string) string {
	if j := strings.Index(s, "://"); j > 0 {
		authority := s[j+3:]
		if end := strings.IndexAny(authority, "/?#"); end >= 0 {
			authority = authority[:end]
		}
		if i := strings.LastIndex(authority, "@"); i >= 0 {
			s = s[:j+3] + "…" + s[j+3+i:]
		}
	}
	return passwordParam.ReplaceAllString(s, "${1}…")
}
