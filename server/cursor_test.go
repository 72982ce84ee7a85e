package main

import (
	"strings"
	"testing"
)

// A cursor the client made up is its mistake, wherever the connection is:
// BAD_USER_INPUT naming the argument, not INTERNAL (a nested connection's
// cursor used to panic in the field collection).
func TestMadeUpCursorIsBadUserInput(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	s.createCustomer(key, "Cursor Co")
	for _, q := range []string{
		`{ tokens(first: 2, after: "garbage") { totalCount } }`,
		`{ customers(first: 2) { edges { node { name tokens(first: 2, after: "garbage") { edges { node { id } } } } } } }`,
		`{ customers(first: 2) { edges { node { tokens(first: 2) { edges { node { apps(last: 2, before: "x") { totalCount } } } } } } } }`,
	} {
		r := s.gql(key, q, nil)
		if r.code() != "BAD_USER_INPUT" || !strings.Contains(r.Errors[0].Message, "cursor") {
			t.Errorf("%s\nanswered %s", q, r.Raw)
		}
	}
	// A cursor the server gave goes through, as a literal or a variable.
	s.createCustomer(key, "Second Co")
	var page struct {
		Customers struct {
			Edges    []struct{ Node struct{ Name string } }
			PageInfo struct{ EndCursor string }
		}
	}
	s.gql(key, `{ customers(first: 1, orderBy: {field: NAME}) { edges { node { name } } pageInfo { endCursor } } }`, nil).decode(t, &page)
	first := page.Customers.Edges[0].Node.Name
	s.gql(key, `query($c: Cursor) { customers(first: 1, after: $c, orderBy: {field: NAME}) { edges { node { name } } pageInfo { endCursor } } }`,
		map[string]any{"c": page.Customers.PageInfo.EndCursor}).decode(t, &page)
	if len(page.Customers.Edges) != 1 || page.Customers.Edges[0].Node.Name == first {
		t.Errorf("the second page: %+v after %q", page.Customers, first)
	}
	// A null cursor is no cursor.
	if r := s.gql(key, `{ customers(first: 2) { edges { node { tokens(first: 2, after: null) { totalCount } } } } }`, nil); len(r.Errors) > 0 {
		t.Errorf("after: null answered %s", r.Raw)
	}
}
