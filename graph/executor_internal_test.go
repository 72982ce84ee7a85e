package graph

import (
	"context"
	"testing"

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
