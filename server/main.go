// Command orchard is the Orchard server: a GraphQL backend that keeps
// Apple Apps and Books server tokens for an MSP's customers.
//
// Usage:
//
//	orchard serve                 run the server until SIGINT/SIGTERM
//	orchard apikey create|list|revoke
//	orchard token inspect FILE    parse a .vpptoken offline
//	orchard demo                  serve with the simulator and sample tokens
//
// Configuration comes from ORCHARD_* environment variables; a flag of the
// same meaning overrides each (orchard serve -h lists them).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "orchard:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: orchard COMMAND [flags]

commands:
  serve                      run the server until SIGINT or SIGTERM
  apikey create --name NAME [--role admin|technician|viewer] [--customer ID]...
  apikey list                list keys (never the keys themselves)
  apikey revoke ID           stop a key at once
  token inspect FILE         print a .vpptoken's organisation and expiry as JSON
  secrets rotate [--drop-old] re-seal every stored token under a new key, while servers run
  demo [--dir DIR]           serve with the Apple simulator, sample token files and an admin key
  modules                    list the modules compiled in

Configuration is read from ORCHARD_* variables; run "orchard serve -h" for the list.
`

// run is the whole program, so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		cfg, _, err := loadConfig("serve", rest, getenv, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr, nil)
	case "apikey":
		return apikeyCommand(ctx, rest, getenv, stdout, stderr)
	case "token":
		return tokenCommand(rest, getenv, stdout, stderr)
	case "secrets":
		return secretsCommand(ctx, rest, getenv, stdout, stderr)
	case "demo":
		return demoCommand(ctx, rest, getenv, stdout, stderr)
	case "modules":
		for _, id := range modules.IDs("") {
			fmt.Fprintln(stdout, id)
		}
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// loadModules loads the modules a configuration selects.
func loadModules(ctx context.Context, cfg *Config) (*domain.Modules, error) {
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
	mods, err := loadModules(ctx, cfg)
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

	h := newHandler(serverDeps{cfg: cfg, db: db, svc: svc, hub: hub, auth: newAuthenticator(db.Client), metrics: newMetrics(log), limits: newRateLimits(cfg.RateLimit, cfg.TrustedProxies...), wsDone: wsCtx, log: log})
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
