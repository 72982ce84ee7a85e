package graph

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/ent"
)

// PageLimit checks every connection in an operation before anything runs:
// a connection whose edges are asked for needs first or last, at most Max.
// A connection asked only for totalCount or pageInfo needs neither. Its
// after and before must be cursors it could have returned. It also
// bounds the nesting depth of the operation.
type PageLimit struct {
	Max      int
	MaxDepth int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = PageLimit{}

// ExtensionName implements graphql.HandlerExtension.
func (PageLimit) ExtensionName() string { return "PageLimit" }

// Validate implements graphql.HandlerExtension.
func (PageLimit) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationContext implements graphql.OperationContextMutator.
func (p PageLimit) MutateOperationContext(ctx context.Context, op *graphql.OperationContext) *gqlerror.Error {
	if op.Operation == nil {
		return nil
	}
	maxDepth := p.MaxDepth
	if maxDepth == 0 {
		maxDepth = 12
	}
	w := walker{limit: p, vars: op.Variables, doc: op.Doc, maxDepth: maxDepth}
	if err := w.selections(op.Operation.SelectionSet, 1); err != nil {
		err.Extensions = map[string]any{"code": "BAD_USER_INPUT"}
		return err
	}
	return nil
}

type walker struct {
	limit    PageLimit
	vars     map[string]any
	doc      *ast.QueryDocument
	maxDepth int
	seen     map[string]bool
}

func (w *walker) selections(set ast.SelectionSet, depth int) *gqlerror.Error {
	if depth > w.maxDepth && len(set) > 0 {
		return gqlerror.Errorf("The query is nested deeper than %d levels. Ask for less at once.", w.maxDepth)
	}
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if err := w.field(s, depth); err != nil {
				return err
			}
		case *ast.InlineFragment:
			if err := w.selections(s.SelectionSet, depth); err != nil {
				return err
			}
		case *ast.FragmentSpread:
			def := s.Definition
			if def == nil && w.doc != nil {
				def = w.doc.Fragments.ForName(s.Name)
			}
			if def == nil || w.seen[s.Name] {
				continue
			}
			if w.seen == nil {
				w.seen = map[string]bool{}
			}
			w.seen[s.Name] = true
			err := w.selections(def.SelectionSet, depth)
			delete(w.seen, s.Name)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *walker) field(f *ast.Field, depth int) *gqlerror.Error {
	if strings.HasPrefix(f.Name, "__") {
		return nil // introspection is bounded by gqlparser's own rule
	}
	if f.Definition != nil && f.Definition.Type != nil && strings.HasSuffix(f.Definition.Type.Name(), "Connection") {
		args := f.ArgumentMap(w.vars)
		first, hasFirst := intArg(args["first"])
		last, hasLast := intArg(args["last"])
		switch {
		case hasFirst && (first < 0 || first > w.limit.Max):
			return gqlerror.Errorf("%s: first must be between 0 and %d.", f.Alias, w.limit.Max)
		case hasLast && (last < 0 || last > w.limit.Max):
			return gqlerror.Errorf("%s: last must be between 0 and %d.", f.Alias, w.limit.Max)
		case !hasFirst && !hasLast && asksForNodes(f.SelectionSet, w.doc):
			return gqlerror.Errorf("%s: pass first or last (at most %d) to list edges; totalCount alone needs neither.", f.Alias, w.limit.Max)
		}
		for _, name := range []string{"after", "before"} {
			if v := args[name]; v != nil {
				if err := new(ent.Cursor).UnmarshalGQL(v); err != nil {
					return gqlerror.Errorf("%s: %s is not a cursor Orchard returned (%v). Pass one a connection returned: an edge's cursor, or pageInfo's startCursor or endCursor.", f.Alias, name, err)
				}
			}
		}
	}
	return w.selections(f.SelectionSet, depth+1)
}

func intArg(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), true
	}
	return 0, false
}

// asksForNodes reports whether a connection's selection reaches its edges.
func asksForNodes(set ast.SelectionSet, doc *ast.QueryDocument) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "edges" || s.Name == "nodes" {
				return true
			}
		case *ast.InlineFragment:
			if asksForNodes(s.SelectionSet, doc) {
				return true
			}
		case *ast.FragmentSpread:
			def := s.Definition
			if def == nil && doc != nil {
				def = doc.Fragments.ForName(s.Name)
			}
			if def != nil && asksForNodes(def.SelectionSet, doc) {
				return true
			}
		}
	}
	return false
}
