package graph

import (
	"context"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vikstrous/dataloadgen"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/graph/domain"
)

// loaders batch the computed fields of lists (appCount, licences). The root
// list resolvers prime them for a whole page with one query per field, so
// the count of SQL statements does not grow with the page; elsewhere (edges,
// node) they batch what arrives within a short wait.
type loaders struct {
	appCount         *dataloadgen.Loader[int, int]
	tokenLicences    *dataloadgen.Loader[int, *domain.LicenceTotals]
	customerLicences *dataloadgen.Loader[int, *domain.LicenceTotals]
}

type loadersKey struct{}

// batchWait is how long a loader gathers keys; sibling fields of a list are
// resolved together, so a short wait catches them all.
const batchWait = 2 * time.Millisecond

func mapped[V any](fetch func(context.Context, []int) (map[int]V, error)) func(context.Context, []int) ([]V, []error) {
	return func(ctx context.Context, keys []int) ([]V, []error) {
		m, err := fetch(ctx, keys)
		out := make([]V, len(keys))
		if err != nil {
			return out, []error{err}
		}
		for i, k := range keys {
			out[i] = m[k]
		}
		return out, nil
	}
}

func newLoaders(svc *domain.Service) *loaders {
	wait := dataloadgen.WithWait(batchWait)
	return &loaders{
		appCount:         dataloadgen.NewLoader(mapped(svc.AppCounts), wait),
		tokenLicences:    dataloadgen.NewLoader(mapped(svc.TokenLicences), wait),
		customerLicences: dataloadgen.NewLoader(mapped(svc.CustomerLicences), wait),
	}
}

// lazyLoaders builds the loaders on first use: most operations need none.
type lazyLoaders struct {
	once sync.Once
	l    *loaders
}

// Loaders gives every GraphQL response (and every subscription event) fresh
// loaders, so nothing is cached across requests or events.
func Loaders(svc *domain.Service) func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		return next(context.WithValue(ctx, loadersKey{}, &lazyLoaders{}))
	}
}

func loadersFrom(ctx context.Context, svc *domain.Service) *loaders {
	if lazy, ok := ctx.Value(loadersKey{}).(*lazyLoaders); ok {
		lazy.once.Do(func() { lazy.l = newLoaders(svc) })
		return lazy.l
	}
	return newLoaders(svc)
}

// asked reports whether the current field's selection reaches path
// (for example "edges", "node", "appCount"), through fragments too.
func asked(ctx context.Context, path ...string) bool {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || !graphql.HasOperationContext(ctx) {
		return false
	}
	op := graphql.GetOperationContext(ctx)
	sels := fc.Field.Selections
	for _, name := range path {
		var next ast.SelectionSet
		found := false
		for _, f := range graphql.CollectFields(op, sels, nil) {
			if f.Name == name {
				found = true
				next = append(next, f.Selections...)
			}
		}
		if !found {
			return false
		}
		sels = next
	}
	return true
}

// primeTokens loads the computed fields of a page of tokens with one query
// each, so the fields' loaders never query per token.
func (r *Resolver) primeTokens(ctx context.Context, conn *ent.ServerTokenConnection) error {
	if conn == nil || len(conn.Edges) == 0 {
		return nil
	}
	l := loadersFrom(ctx, r.svc)
	ids := make([]int, 0, len(conn.Edges))
	var customers []int
	for _, e := range conn.Edges {
		ids = append(ids, e.Node.ID)
		if c := e.Node.Edges.Customer; c != nil {
			customers = append(customers, c.ID)
		}
	}
	if asked(ctx, "edges", "node", "appCount") {
		counts, err := r.svc.AppCounts(ctx, ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			l.appCount.Prime(id, counts[id])
		}
	}
	if asked(ctx, "edges", "node", "licences") {
		if err := prime(ctx, l.tokenLicences, ids, r.svc.TokenLicences); err != nil {
			return err
		}
	}
	if len(customers) > 0 && asked(ctx, "edges", "node", "customer", "licences") {
		if err := prime(ctx, l.customerLicences, customers, r.svc.CustomerLicences); err != nil {
			return err
		}
	}
	return nil
}

// primeCustomers does the same for a page of customers.
func (r *Resolver) primeCustomers(ctx context.Context, conn *ent.CustomerConnection) error {
	if conn == nil || len(conn.Edges) == 0 || !asked(ctx, "edges", "node", "licences") {
		return nil
	}
	ids := make([]int, 0, len(conn.Edges))
	for _, e := range conn.Edges {
		ids = append(ids, e.Node.ID)
	}
	return prime(ctx, loadersFrom(ctx, r.svc).customerLicences, ids, r.svc.CustomerLicences)
}

func prime[V any](ctx context.Context, l *dataloadgen.Loader[int, V], ids []int, fetch func(context.Context, []int) (map[int]V, error)) error {
	m, err := fetch(ctx, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		l.Prime(id, m[id])
	}
	return nil
}
