// Package viewer carries who is calling through a context: the API key's
// role and customer scope. ent's privacy policies (ent/schema/policy.go)
// read it, so every query and mutation is scoped in the data layer.
package viewer

import (
	"context"
	"slices"
)

// Role is what an API key may do.
type Role string

// The roles of an API key, plus the system role of Orchard's own jobs.
const (
	// Admin may do everything within its scope, including managing customers.
	Admin Role = "admin"
	// Technician may read, and manage the tokens of its customers.
	Technician Role = "technician"
	// ReadOnly may only read.
	ReadOnly Role = "viewer"
	// System is Orchard itself: background jobs and the command line.
	System Role = "system"
)

// Valid reports whether r is a role an API key can have.
func (r Role) Valid() bool { return r == Admin || r == Technician || r == ReadOnly }

// Viewer is the caller of one request.
type Viewer struct {
	// KeyID is the API key's row ID; zero for the system.
	KeyID int
	// Name is the API key's name, recorded in the audit log.
	Name string
	Role Role
	// Customers scopes the viewer to these customer IDs; empty means all.
	Customers []int
}

// Scoped reports whether the viewer sees only some customers.
func (v *Viewer) Scoped() bool { return v.Role != System && len(v.Customers) > 0 }

// CanSee reports whether the viewer may see customer id.
func (v *Viewer) CanSee(id int) bool { return !v.Scoped() || slices.Contains(v.Customers, id) }

// CanWrite reports whether the viewer may change anything at all.
func (v *Viewer) CanWrite() bool { return v.Role != ReadOnly }

type ctxKey struct{}

// NewContext returns ctx carrying v.
func NewContext(ctx context.Context, v *Viewer) context.Context {
	return context.WithValue(ctx, ctxKey{}, v)
}

// FromContext returns the viewer of ctx, or nil.
func FromContext(ctx context.Context) *Viewer {
	v, _ := ctx.Value(ctxKey{}).(*Viewer)
	return v
}

// SystemContext returns ctx acting as Orchard itself, for background jobs and
// the command line. It must never be reachable from a request.
func SystemContext(ctx context.Context) context.Context {
	return NewContext(ctx, &Viewer{Name: "orchard", Role: System})
}
