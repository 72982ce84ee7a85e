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
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/notify"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/secrets"
	_ "github.com/orchard-msp/orchard/modules/standard"
	"github.com/orchard-msp/orchard/modules/tokenfile"
	"github.com/orchard-msp/orchard/server/httpapi"
	"github.com/orchard-msp/orchard/server/jobs"
	"github.com/orchard-msp/orchard/server/store"
)

func main() {
	// Libraries that write through the standard log package (gqlgen's
	// websocket transport, when it refuses an upgrade) still log JSON.
	stdlog.SetFlags(0)
	stdlog.SetOutput(stdlogWriter{slog.New(slog.NewJSONHandler(os.Stderr, nil))})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

// resendAfter, when set, replaces Apple's 10 minutes that an event may stay
// PENDING before it is sent again. It is no setting: Apple fixes the window,
// and only tests need it shorter.
var resendAfter atomic.Int64

// stdlogWriter turns each line of the standard log package into a JSON
// warning.
type stdlogWriter struct{ log *slog.Logger }

func (w stdlogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)), "via", "log")
	return len(p), nil
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
	if store.IsPostgres(cfg.DatabaseURL) {
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
	return domain.Truncate("Orchard at "+host, 255)
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
	db, err := store.Open(ctx, cfg.storeOptions())
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
	bg := jobs.New(jobs.Options{
		Service:            svc,
		ExpiryScanInterval: cfg.ExpiryScanInterval,
		AppSyncInterval:    cfg.AppSyncInterval,
		PendingTTL:         cfg.PendingTTL,
		AppleEventPoll:     cfg.AppleEventPoll,
		Log:                log,
	})
	svc.OnActivate = bg.RequestSync
	svc.OnOutbox = bg.KickOutbox
	// The licence settings reach the service before the first request.
	svc.SetLicenceConfig(domain.LicenceConfig{
		PublicURL:     cfg.PublicURL,
		EventPoll:     cfg.AppleEventPoll,
		NotifyWait:    cfg.AppleNotifyWait,
		WarnAvailable: cfg.LicenceWarnAvailable,
		ResendAfter:   time.Duration(resendAfter.Load()),
	}, bg.KickLicences)

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

	api := httpapi.New(httpapi.Options{
		Client:           db.Client,
		DB:               db,
		Service:          svc,
		Hub:              hub,
		MaxUploadBytes:   cfg.MaxUploadBytes,
		AllowedOrigins:   cfg.AllowedOrigins,
		Introspection:    cfg.Introspection,
		RateLimit:        cfg.RateLimit,
		TrustedProxies:   cfg.TrustedProxies,
		OperationTimeout: cfg.OperationTimeout,
		MetricsToken:     cfg.MetricsToken,
		Log:              log,
	})
	srv := &http.Server{
		Handler:           api,
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
	var lead jobs.Leadership = jobs.Alone{}
	if store.IsPostgres(cfg.DatabaseURL) {
		lead = &jobs.AdvisoryLock{URL: cfg.DatabaseURL, Retry: min(cfg.ExpiryScanInterval, 5*time.Second), Log: log}
	}
	bg.Start(jobCtx, jobs.Observe(lead, api.SetLeader))
	go api.WatchKeys(jobCtx)
	log.Info("orchard serving", "addr", ln.Addr().String(), "apple", cfg.Apple, "database", store.RedactURL(cfg.DatabaseURL), "console", "http://"+ln.Addr().String()+"/", "playground", "http://"+ln.Addr().String()+"/playground")
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

	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String(), "websockets", api.Websockets())
	stopJobs()
	api.Shutdown(srv, cutRequests, cfg.ShutdownTimeout)
	bg.Wait()
	<-hubDone
	log.Info("stopped")
	return nil
}

// storeOptions says which database cfg names and who migrates it.
func (cfg *Config) storeOptions() store.Options {
	return store.Options{URL: cfg.DatabaseURL, ManualMigrate: cfg.ManualMigrate}
}
