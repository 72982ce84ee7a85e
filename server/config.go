package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is everything `orchard` reads from its environment (contract.md,
// "Configuration"); a flag of the same meaning overrides each variable.
type Config struct {
	Listen             string
	DataDir            string
	DatabaseURL        string
	Apple              string
	AppleURL           string
	AppleRetryBudget   time.Duration
	SecretKey          string
	MDMName            string
	MDMMetadata        string
	WarnDays           []int
	ExpiryScanInterval time.Duration
	AppSyncInterval    time.Duration
	MaxUploadBytes     int64
	PendingTTL         time.Duration
	AllowedOrigins     []string
	Introspection      bool
	RateLimit          float64
	WebhookURL         string
	WebhookSecret      string
	LogLevel           string
	ShutdownTimeout    time.Duration
	OperationTimeout   time.Duration
	MetricsToken       string
	// ManualMigrate is ORCHARD_AUTO_MIGRATE=false; negated so that a
	// Config built in code migrates, like the default.
	ManualMigrate bool

	// AppleInteractiveBudget bounds Apple's part of an action a person waits for.
	AppleInteractiveBudget time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix

	// Licences (contract.md, "Licences").
	PublicURL            string
	AppleEventPoll       time.Duration
	AppleNotifyWait      time.Duration
	LicenceWarnAvailable int
}

// setting is one configuration value: its variable, flag, default and help.
type setting struct {
	env, flag, def, help string
	set                  func(c *Config, v string) error
}

var settings = []setting{
	{"ORCHARD_LISTEN", "listen", "127.0.0.1:8080", "address the HTTP server binds", func(c *Config, v string) error { c.Listen = v; return nil }},
	{"ORCHARD_DATA_DIR", "data-dir", "./data", "directory of the embedded database and the generated key (created 0700)", func(c *Config, v string) error { c.DataDir = v; return nil }},
	{"ORCHARD_DATABASE_URL", "database-url", "", "sqlite://PATH or postgres://…; default: SQLite orchard.db in the data dir", func(c *Config, v string) error { c.DatabaseURL = v; return nil }},
	{"ORCHARD_APPLE", "apple", "appsandbooks", "Apple module: appsandbooks (real API) or simulator (offline fake)", func(c *Config, v string) error { c.Apple = v; return nil }},
	{"ORCHARD_APPLE_URL", "apple-url", "https://vpp.itunes.apple.com/mdm/v2", "base URL of the Apps and Books API", func(c *Config, v string) error { c.AppleURL = v; return nil }},
	{"ORCHARD_APPLE_RETRY_BUDGET", "apple-retry-budget", "60s", "how long one Apple call may keep retrying (429, 5xx, network) before giving up", durationSetter(func(c *Config) *time.Duration { return &c.AppleRetryBudget })},
	{"ORCHARD_APPLE_INTERACTIVE_BUDGET", "apple-interactive-budget", "15s", "how long Apple may take, retries included, while a person waits (upload, confirm, claim, sync now); background syncs use the retry budget", durationSetter(func(c *Config) *time.Duration { return &c.AppleInteractiveBudget })},
	{"ORCHARD_SECRET_KEY", "secret-key", "", "base64 of 32 bytes that seals server tokens; unset: a key file in the data dir", func(c *Config, v string) error { c.SecretKey = v; return nil }},
	{"ORCHARD_MDM_NAME", "mdm-name", "Orchard", "name written into Apple's mdmInfo.name", func(c *Config, v string) error { c.MDMName = v; return nil }},
	{"ORCHARD_MDM_METADATA", "mdm-metadata", "", "mdmInfo.metadata: tells another MDM's admin which installation holds a location; default: Orchard at the host name", func(c *Config, v string) error { c.MDMMetadata = v; return nil }},
	{"ORCHARD_EXPIRY_WARN_DAYS", "expiry-warn-days", "30,14,7,3,1", "days before expiry at which a warning is raised", setWarnDays},
	{"ORCHARD_EXPIRY_SCAN_INTERVAL", "expiry-scan-interval", "1h", "how often the expiry watcher runs", durationSetter(func(c *Config) *time.Duration { return &c.ExpiryScanInterval })},
	{"ORCHARD_APP_SYNC_INTERVAL", "app-sync-interval", "6h", "how often every ACTIVE token's apps and health are re-read", durationSetter(func(c *Config) *time.Duration { return &c.AppSyncInterval })},
	{"ORCHARD_MAX_UPLOAD_BYTES", "max-upload-bytes", "65536", "largest token file accepted", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1024 || n > 16<<20 {
			return fmt.Errorf("must be a number of bytes between 1024 and 16777216")
		}
		c.MaxUploadBytes = n
		return nil
	}},
	{"ORCHARD_PENDING_TTL", "pending-ttl", "24h", "how long an unconfirmed upload is kept", durationSetter(func(c *Config) *time.Duration { return &c.PendingTTL })},
	{"ORCHARD_ALLOWED_ORIGINS", "allowed-origins", "", "comma-separated host patterns whose browser pages may open websockets (same origin always may)", func(c *Config, v string) error { c.AllowedOrigins = splitList(v); return nil }},
	{"ORCHARD_INTROSPECTION", "introspection", "true", "answer schema introspection (the Playground needs it); false also turns field suggestions off", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("must be true or false")
		}
		c.Introspection = b
		return nil
	}},
	{"ORCHARD_RATE_LIMIT", "rate-limit", "20", "requests per second allowed per API key and per client address (bursts of 5× that); uploads, confirms and claims get a tenth; 0 turns limits off", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return fmt.Errorf("must be a number of requests per second, 0 or more")
		}
		c.RateLimit = f
		return nil
	}},
	{"ORCHARD_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated CIDRs of load balancers whose X-Forwarded-For names the client for the per-address rate limit; empty: the peer address counts", setTrustedProxies},
	{"ORCHARD_WEBHOOK_URL", "webhook-url", "", "when set, every expiry warning is POSTed here as JSON", func(c *Config, v string) error { c.WebhookURL = v; return nil }},
	{"ORCHARD_WEBHOOK_SECRET", "webhook-secret", "", "signs webhook requests (X-Orchard-Signature: sha256=HMAC of TIMESTAMP.BODY)", func(c *Config, v string) error { c.WebhookSecret = v; return nil }},
	{"ORCHARD_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{"ORCHARD_SHUTDOWN_TIMEOUT", "shutdown-timeout", "8s", "how long a shutdown waits for requests and subscriptions", durationSetter(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"ORCHARD_AUTO_MIGRATE", "auto-migrate", "true", "apply pending schema migrations at start, under a lock that makes concurrent starts safe; false: run orchard migrate yourself, and every command refuses an out-of-date schema", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("must be true or false")
		}
		c.ManualMigrate = !b
		return nil
	}},
	{"ORCHARD_OPERATION_TIMEOUT", "operation-timeout", "60s", "the longest a query or mutation may run (Apple's retries included)", durationSetter(func(c *Config) *time.Duration { return &c.OperationTimeout })},
	{"ORCHARD_METRICS_TOKEN", "metrics-token", "", "bearer token a Prometheus scrape of /metrics must send; unset: /metrics needs an admin API key", func(c *Config, v string) error {
		if v != "" && len(v) < 16 {
			return fmt.Errorf("must be at least 16 characters; make one with: openssl rand -hex 32")
		}
		c.MetricsToken = v
		return nil
	}},
	{"ORCHARD_PUBLIC_URL", "public-url", "", "URL at which Apple reaches this installation (https; http only for a loopback host); set: tokens subscribe to Apple's notifications at URL/apple/notifications", setPublicURL},
	{"ORCHARD_APPLE_EVENT_POLL", "apple-event-poll", "30s", "least time between status checks of a licence operation Apple has not reported finished", durationSetter(func(c *Config) *time.Duration { return &c.AppleEventPoll })},
	{"ORCHARD_APPLE_NOTIFY_WAIT", "apple-notify-wait", "5m", "with notifications registered, how long Apple's notification is awaited before Orchard checks the status itself", durationSetter(func(c *Config) *time.Duration { return &c.AppleNotifyWait })},
	{"ORCHARD_LICENCE_WARN_AVAILABLE", "licence-warn-available", "5", "a licence warning is raised when an app's available licences fall to this number or below (0: only when none are left); updateApp overrides it per app", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000000 {
			return fmt.Errorf("must be a whole number of licences, 0 or more")
		}
		c.LicenceWarnAvailable = n
		return nil
	}},
}

// setPublicURL accepts what Apple accepts as a notification URL: HTTPS,
// and plain HTTP only to a loopback host, for tests and local demos.
func setPublicURL(c *Config, v string) error {
	c.PublicURL = ""
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must be a URL like https://orchard.example.com, with no query or fragment")
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	loopback := host == "localhost" || ip != nil && ip.IsLoopback()
	if u.Scheme != "https" && !(u.Scheme == "http" && loopback) {
		return fmt.Errorf("must use https (Apple requires it); http is accepted only for localhost, 127.0.0.0/8 or ::1")
	}
	c.PublicURL = strings.TrimRight(v, "/")
	return nil
}

func durationSetter(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("must be a positive duration like 30s, 15m or 6h")
		}
		*field(c) = d
		return nil
	}
}

func setTrustedProxies(c *Config, v string) error {
	c.TrustedProxies = nil
	for _, p := range splitList(v) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			// A single address is a network of one.
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR: use networks like 10.0.0.0/8 or 192.0.2.7/32, comma-separated", p)
			}
			prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
			prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96)
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix.Masked())
	}
	return nil
}

func setWarnDays(c *Config, v string) error {
	c.WarnDays = nil
	for _, p := range splitList(v) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 366 {
			return fmt.Errorf("must be whole days between 0 and 366, comma-separated, like 30,14,7,3,1")
		}
		c.WarnDays = append(c.WarnDays, n)
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// loadConfig reads the environment, then the flags in args, and returns the
// configuration and the remaining arguments. It writes nothing: -h gives
// flag.ErrHelp and a bad flag a usageError, which run reports.
func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (*Config, []string, error) {
	fs := quietFlagSet(name)
	given := bindSettings(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	c, err := resolveConfig(given, getenv, nil)
	if err != nil {
		return nil, nil, err
	}
	return c, fs.Args(), nil
}

// quietFlagSet returns a flag set that leaves printing to run, so an error
// is said once and help goes to stdout.
func quietFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// bindSettings adds a flag to fs for every setting; the map it returns
// collects the values given on the command line, keyed by variable.
func bindSettings(fs *flag.FlagSet) map[string]string {
	given := map[string]string{}
	for _, s := range settings {
		fs.Func(s.flag, s.help+" ("+s.env+")", func(v string) error { given[s.env] = v; return nil })
	}
	return given
}

// resolveConfig builds the configuration: a flag wins over its variable,
// which wins over the command's own default (defaults, keyed by variable),
// which wins over the settings table's.
func resolveConfig(given map[string]string, getenv func(string) string, defaults map[string]string) (*Config, error) {
	c := &Config{}
	for _, s := range settings {
		v, ok := given[s.env]
		if !ok {
			v = getenv(s.env)
		}
		if !ok && v == "" {
			v = settingDefault(s, defaults)
		}
		if err := s.set(c, v); err != nil {
			return nil, fmt.Errorf("%s=%q: %w", s.env, v, err)
		}
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = "sqlite://" + filepath.Join(c.DataDir, "orchard.db")
	}
	if !strings.HasPrefix(c.DatabaseURL, "sqlite://") && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return nil, fmt.Errorf("ORCHARD_DATABASE_URL must start with sqlite:// or postgres://")
	}
	if u, err := url.Parse(c.AppleURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("ORCHARD_APPLE_URL=%q is not an http(s) URL", c.AppleURL)
	}
	if len(c.MDMName) > 100 {
		return nil, fmt.Errorf("ORCHARD_MDM_NAME is longer than Apple's 100 characters")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("ORCHARD_LOG_LEVEL=%q: must be debug, info, warn or error", c.LogLevel)
	}
	return c, nil
}

func settingDefault(s setting, defaults map[string]string) string {
	if v, ok := defaults[s.env]; ok {
		return v
	}
	return s.def
}

// writeSettingsHelp lists every setting with its flag, variable, default
// and meaning; it reads the settings table, so a new row shows up here by
// itself.
func writeSettingsHelp(w io.Writer, defaults map[string]string) {
	fmt.Fprintln(w, "configuration (a flag overrides its environment variable; shown with its default):")
	for _, s := range settings {
		env := s.env
		if def := settingDefault(s, defaults); def != "" {
			env += "=" + def
		}
		fmt.Fprintf(w, "  --%-24s %s\n        %s\n", s.flag, env, s.help)
	}
}
