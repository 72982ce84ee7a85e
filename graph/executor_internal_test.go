package graph

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

// fieldsHeldOnly says yes only for a selection of plain fields, inside a
// list's memo, and remembers its answer there.
func TestFieldsHeldOnly(t *testing.T) {
	doc, err := parser.ParseQuery(&ast.Source{Input: `{
		plain { __typename adamID n: name ... on App { totalCount } ...more }
		resolved { adamID token { id } }
		deferred { adamID ... @defer { name } }
		elsewhere { adamID ... on ServerToken { appCount } }
		empty { __typename }
	}
	fragment more on App { bundleID }`})
	if err != nil {
		t.Fatal(err)
	}
	oc := &graphql.OperationContext{Doc: doc, Variables: map[string]any{}}
	sel := map[string]ast.SelectionSet{}
	for _, s := range doc.Operations[0].SelectionSet {
		f := s.(*ast.Field)
		sel[f.Name] = f.SelectionSet
	}
	memo := &fieldsMemo{}
	inList := context.WithValue(context.Background(), fieldsMemoKey{}, memo)
	for name, want := range map[string]bool{"plain": true, "resolved": false, "deferred": false, "elsewhere": true, "empty": true} {
		if got := fieldsHeldOnly(inList, oc, sel[name], appImplementors, "App"); got != want {
			t.Errorf("%s: fieldsHeldOnly = %v, want %v", name, got, want)
		}
	}
	// Asked again, the memo answers.
	fcFree := fcFreeFields["App"]
	fcFreeFields["App"] = nil
	if !fieldsHeldOnly(inList, oc, sel["plain"], appImplementors, "App") {
		t.Error("the memo's answer was not kept")
	}
	fcFreeFields["App"] = fcFree
	if fieldsHeldOnly(context.Background(), oc, sel["plain"], appImplementors, "App") {
		t.Error("outside a list's memo the answer must be no")
	}
	gqlgenOriginal = true
	defer func() { gqlgenOriginal = false }()
	if fieldsHeldOnly(inList, oc, sel["plain"], appImplementors, "App") {
		t.Error("gqlgen's own way must keep every FieldContext")
	}
}

// A list marshalled in a plain loop gives each element what
// graphql.WithFieldContext would: its index, its result and the list's
// FieldContext as parent, with every value of the list's context. The
// FieldContexts are made only when one is asked for.
func TestElementContext(t *testing.T) {
	doc, err := parser.ParseQuery(&ast.Source{Input: `{ apps { adamID } }`})
	if err != nil {
		t.Fatal(err)
	}
	sel := doc.Operations[0].SelectionSet[0].(*ast.Field).SelectionSet
	type key struct{}
	listFC := &graphql.FieldContext{Object: "AppConnection"}
	ctx, cancel := context.WithCancel(graphql.WithFieldContext(context.WithValue(context.Background(), key{}, "above"), listFC))
	values := []string{"a", "b", "c"}
	var seen []context.Context
	marshalListElements(ctx, "App", sel, len(values), 0, false, func(i int) any { return &values[i] }, func(ctx context.Context, i int) graphql.Marshaler {
		seen = append(seen, ctx)
		return graphql.Null
	})
	if len(seen) != 3 {
		t.Fatalf("%d elements marshalled, want 3", len(seen))
	}
	list := seen[0].(*elementContext).list
	if list.fcs != nil {
		t.Fatal("FieldContexts were made though nothing asked for one")
	}
	for i, ec := range seen {
		fc := graphql.GetFieldContext(ec)
		if fc == nil || fc.Index == nil || *fc.Index != i || fc.Parent != listFC || fc.Result != &values[i] {
			t.Fatalf("element %d: FieldContext %+v", i, fc)
		}
		if graphql.GetFieldContext(ec) != fc {
			t.Fatalf("element %d: a second FieldContext", i)
		}
		child := graphql.WithFieldContext(ec, &graphql.FieldContext{})
		if graphql.GetFieldContext(child).Parent != fc || child.Value(key{}) != "above" {
			t.Fatalf("element %d: a field below does not see the element", i)
		}
		if got := graphql.GetFieldContext(ec).Path().String(); got != fmt.Sprintf("[%d]", i) {
			t.Fatalf("element %d: path %q", i, got)
		}
	}
	below, stop := context.WithCancel(seen[1])
	defer stop()
	cancel()
	select {
	case <-below.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the list's context did not reach a context below an element")
	}
}
