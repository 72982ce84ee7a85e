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
	}, log)
	hub := domain.NewHub(svc)
	bg := newJobs(svc, cfg, log)
	svc.OnActivate = bg.requestSync
	svc.OnOutbox = bg.kickOutbox

	// baseCtx is every request's parent and outlives the signal, so requests
	// in flight at shutdown finish. Websockets also hang on wsCtx: ending it
	// completes their subscriptions and gqlgen closes them cleanly.
	baseCtx := context.WithoutCancel(ctx)
	wsCtx, endWebsockets := context.WithCancel(baseCtx)
	defer endWebsockets()
	jobCtx, stopJobs := context.WithCancel(baseCtx)
	defer stopJobs()

	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		if err := hub.Run(jobCtx); err != nil {
			log.Error("expiry hub stopped", "err", err)
		}
	}()

	h := newHandler(serverDeps{cfg: cfg, db: db, svc: svc, hub: hub, auth: newAuthenticator(db.Client), metrics: newMetrics(log), limits: newRateLimits(cfg.RateLimit), wsDone: wsCtx, log: log})
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,  // slowloris
		ReadTimeout:       30 * time.Second, // a token upload is a few KB
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
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
	bg.start(jobCtx, lead)
	log.Info("orchard serving", "addr", ln.Addr().String(), "apple", cfg.Apple, "database", redactURL(cfg.DatabaseURL), "playground", "http://"+ln.Addr().String()+"/")
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

	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop accepting, end subscriptions (their sockets close cleanly) and
	// let in-flight requests finish.
	stopJobs()
	endWebsockets()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("requests still running at the shutdown deadline", "err", err)
	}
	bg.wait()
	<-hubDone
	log.Info("stopped")
	return nil
}

func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

func redactURL(s string) string {
	if i := strings.Index(s, "@"); i > 0 {
		if j := strings.Index(s, "://"); j > 0 && j < i {
			return s[:j+3] + "…" + s[i:]
		}
	}
	return s
}
