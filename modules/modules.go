// Package modules is Orchard's registry of in-process, swappable modules.
//
// A module is one implementation of a capability (tokenfile, apple, secrets,
// pubsub, notify). It registers itself by ID ("apple.simulator") from an init
// function, like a database/sql driver, and the server picks one by
// configuration with Load. The default set compiled into the binary is listed
// in modules/standard.
package modules

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// ID names a module: "<namespace>.<name>", lowercase, the namespace being the
// capability package's name.
type ID string

// Namespace returns the capability part of the ID ("apple").
func (id ID) Namespace() string {
	ns, _, _ := strings.Cut(string(id), ".")
	return ns
}

// Name returns the implementation part of the ID ("simulator").
func (id ID) Name() string {
	_, name, _ := strings.Cut(string(id), ".")
	return name
}

// Module is implemented by every module.
type Module interface {
	ModuleInfo() Info
}

// Info describes a module.
type Info struct {
	ID ID
	// New returns a new, unconfigured instance with no side effects.
	New func() Module
}

// Provisioner is implemented by modules that need setup after their
// configuration is decoded: opening clients, reading keys.
type Provisioner interface {
	Provision(ctx context.Context) error
}

// loggerKey carries the host's logger in the context given to Load.
type loggerKey struct{}

// WithLogger returns ctx carrying l, so the modules Load provisions with it
// log through the host's configured logger (its format and level) rather
// than the process-wide default.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger a module should keep from the context its
// Provision receives: the host's (see WithLogger), or slog.Default() when
// the host gave none.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return slog.Default()
}

// Validator is implemented by modules that check their configuration.
type Validator interface {
	Validate() error
}

var (
	mu       sync.RWMutex
	registry = map[ID]Info{}
	validID  = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`)
)

// Register adds a module to the registry. It is meant for init functions and
// panics on a malformed or duplicate ID, as sql.Register does.
func Register(m Module) {
	info := m.ModuleInfo()
	if !validID.MatchString(string(info.ID)) {
		panic(fmt.Sprintf("modules: malformed module ID %q (want namespace.name)", info.ID))
	}
	if info.New == nil {
		panic(fmt.Sprintf("modules: module %q has no New function", info.ID))
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[info.ID]; dup {
		panic(fmt.Sprintf("modules: module %q registered twice", info.ID))
	}
	registry[info.ID] = info
}

// Lookup returns the registered module with the given ID.
func Lookup(id ID) (Info, error) {
	mu.RLock()
	info, ok := registry[id]
	mu.RUnlock()
	if !ok {
		known := IDs(id.Namespace())
		if len(known) == 0 {
			return Info{}, fmt.Errorf("unknown module %q: no %q modules are compiled in (forgotten import of modules/standard?)", id, id.Namespace())
		}
		return Info{}, fmt.Errorf("unknown module %q; known %s modules: %s", id, id.Namespace(), joinIDs(known))
	}
	return info, nil
}

// IDs lists the registered module IDs in namespace (all of them for ""), sorted.
func IDs(namespace string) []ID {
	mu.RLock()
	defer mu.RUnlock()
	var ids []ID
	for id := range registry {
		if namespace == "" || id.Namespace() == namespace {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Load creates the module id, decodes cfg into it strictly (unknown keys are
// an error), provisions and validates it, and returns it as the capability T.
func Load[T any](ctx context.Context, id ID, cfg json.RawMessage) (T, error) {
	var zero T
	info, err := Lookup(id)
	if err != nil {
		return zero, err
	}
	m := info.New()
	if len(bytes.TrimSpace(cfg)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(cfg))
		dec.DisallowUnknownFields()
		if err := dec.Decode(m); err != nil {
			return zero, fmt.Errorf("configuring module %q: %w", id, err)
		}
	}
	if p, ok := m.(Provisioner); ok {
		if err := p.Provision(ctx); err != nil {
			return zero, fmt.Errorf("provisioning module %q: %w", id, err)
		}
	}
	if v, ok := m.(Validator); ok {
		if err := v.Validate(); err != nil {
			return zero, fmt.Errorf("validating module %q: %w", id, err)
		}
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("module %q is a %T, which is not a %T", id, m, (*T)(nil))
	}
	return t, nil
}

func joinIDs(ids []ID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, ", ")
}
