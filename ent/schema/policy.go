package schema

import (
	"context"

	"entgo.io/ent"
	"entgo.io/ent/entql"
	"entgo.io/ent/privacy"

	entprivacy "github.com/orchard-msp/orchard/ent/privacy"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/fault"
)

// The rules below enforce API-key roles and customer scope in the data layer,
// so every path to a row (root queries, node(id:), edges, eager loading and
// mutations) goes through them. Scoping adds a customer predicate through
// the generated entql filters.
//
// Every edge in the schema stays inside one customer (Customer → ServerToken
// → App), and AuditEvent has no edges, so a where-input edge predicate (which
// ent does not pass through privacy, ent#2957) can never reach another
// customer's rows: its outer query is already scoped.

// queryRuleFunc adapts a function to privacy.QueryRule; ent's generic privacy
// package has the mutation adapter only.
type queryRuleFunc func(context.Context, ent.Query) error

func (f queryRuleFunc) EvalQuery(ctx context.Context, q ent.Query) error { return f(ctx, q) }

// inScope limits a query or mutation to rows whose column is one of the
// viewer's customers.
func inScope(column string, ids []int) entprivacy.FilterFunc {
	return func(_ context.Context, f entprivacy.Filter) error {
		args := make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
		f.Where(entql.FieldIn(column, args...))
		return privacy.Allow
	}
}

func callerOf(ctx context.Context) (*viewer.Viewer, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, fault.New(fault.Unauthenticated, "An API key is required.")
	}
	return v, nil
}

// scopedRead lets system and unscoped viewers read everything and filters
// scoped viewers to their customers by column.
func scopedRead(column string) privacy.QueryRule {
	return queryRuleFunc(func(ctx context.Context, q ent.Query) error {
		v, err := callerOf(ctx)
		if err != nil {
			return err
		}
		if !v.Scoped() {
			return privacy.Allow
		}
		return inScope(column, v.Customers).EvalQuery(ctx, q)
	})
}

// systemOnly lets only Orchard itself through.
func systemOnly() privacy.QueryMutationRule {
	return privacy.ContextQueryMutationRule(func(ctx context.Context) error {
		v, err := callerOf(ctx)
		if err != nil {
			return err
		}
		if v.Role == viewer.System {
			return privacy.Allow
		}
		return fault.New(fault.Forbidden, "This is not available through the API.")
	})
}

// scopedWrite lets admins (and, unless adminOnly, technicians) change rows of
// their customers. column names the customer column; field names the same
// value on create ("" when a scoped key may not create at all).
func scopedWrite(column, field string, adminOnly bool) privacy.MutationRule {
	return privacy.MutationRuleFunc(func(ctx context.Context, m ent.Mutation) error {
		v, err := callerOf(ctx)
		if err != nil {
			return err
		}
		switch {
		case v.Role == viewer.System:
			return privacy.Allow
		case v.Role == viewer.ReadOnly:
			return fault.New(fault.Forbidden, "This API key is read-only (role viewer). Ask an admin for a technician or admin key.")
		case adminOnly && v.Role != viewer.Admin:
			return fault.New(fault.Forbidden, "Only an admin key may do this.")
		case !v.Scoped():
			return privacy.Allow
		}
		if m.Op().Is(ent.OpCreate) {
			if field == "" {
				return fault.New(fault.Forbidden, "This API key is limited to some customers and cannot create new ones.")
			}
			val, ok := m.Field(field)
			if id, isInt := val.(int); !ok || !isInt || !v.CanSee(id) {
				return fault.New(fault.NotFound, "No such customer.")
			}
			return privacy.Allow
		}
		return inScope(column, v.Customers).EvalMutation(ctx, m)
	})
}

// Policy of the Customer: admins manage customers, scoped admins only theirs.
func (Customer) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("id")},
		Mutation: privacy.MutationPolicy{scopedWrite("id", "", true)},
	}
}

// Policy of the ServerToken: technicians and admins manage their customers' tokens.
func (ServerToken) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("customer_id")},
		Mutation: privacy.MutationPolicy{scopedWrite("customer_id", "customer_id", false)},
	}
}

// Policy of the App: apps are read through the API and written by the sync.
func (App) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("customer_id")},
		Mutation: privacy.MutationPolicy{scopedWrite("customer_id", "customer_id", false)},
	}
}

// Policy of the APIKey: keys are managed from the command line only.
func (APIKey) Policy() ent.Policy { return privacyPolicy(systemOnly()) }

// Policy of the AuditEvent: read within scope, written by Orchard only.
func (AuditEvent) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("customer_id")},
		Mutation: privacy.MutationPolicy{systemOnly()},
	}
}

func privacyPolicy(rule privacy.QueryMutationRule) privacy.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{rule},
		Mutation: privacy.MutationPolicy{rule},
	}
}

// Policy of the LicenceOperation: read within scope; written by Orchard
// itself after the domain has checked the caller's role and scope.
func (LicenceOperation) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("customer_id")},
		Mutation: privacy.MutationPolicy{systemOnly()},
	}
}

// Policy of the LicenceAssignment: read within scope, written by Orchard only.
func (LicenceAssignment) Policy() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{scopedRead("customer_id")},
		Mutation: privacy.MutationPolicy{systemOnly()},
	}
}

// Policy of the LicenceEvent: Orchard's own bookkeeping.
func (LicenceEvent) Policy() ent.Policy { return privacyPolicy(systemOnly()) }

// Policy of the AppleNotification: Orchard's own bookkeeping.
func (AppleNotification) Policy() ent.Policy { return privacyPolicy(systemOnly()) }
