package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/orchard-msp/orchard/server/httpapi"
)

func TestAPIKeys(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		acme := s.createCustomer(admin, "Acme")
		globex := s.createCustomer(admin, "Globex")

		t.Run("NoKey", func(t *testing.T) {
			r := s.gql("", `{ customers { totalCount } }`, nil)
			if r.Status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" || len(r.Data) > 0 && string(r.Data) != "null" {
				t.Fatalf("got HTTP %d %s", r.Status, r.Raw)
			}
		})
		t.Run("WrongKey", func(t *testing.T) {
			r := s.gql("orch_not-a-real-key", `{ customers { totalCount } }`, nil)
			if r.Status != http.StatusUnauthorized || r.code() != "UNAUTHENTICATED" {
				t.Fatalf("got HTTP %d %s", r.Status, r.Raw)
			}
		})
		t.Run("RevokedKey", func(t *testing.T) {
			k := s.key("--role", "viewer")
			if r := s.gql(k, `{ customers { totalCount } }`, nil); r.Status != http.StatusOK {
				t.Fatalf("fresh key refused: %s", r.Raw)
			}
			out, _, err := s.command("apikey", "list")
			if err != nil || !strings.Contains(out, "viewer") || strings.Contains(out, k) {
				t.Fatalf("apikey list = %q, %v (it must never show a key)", out, err)
			}
			var id string
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, k[:len(httpapi.KeyPrefix)+6]) {
					id = strings.Fields(line)[0]
				}
			}
			if _, errOut, err := s.command("apikey", "revoke", id); err != nil {
				t.Fatalf("revoke %s: %v %s", id, err, errOut)
			}
			if r := s.gql(k, `{ customers { totalCount } }`, nil); r.Status != http.StatusUnauthorized {
				t.Fatalf("revoked key still works: %s", r.Raw)
			}
		})
		t.Run("ViewerCannotMutate", func(t *testing.T) {
			k := s.key("--role", "viewer")
			r := s.gql(k, `mutation { createCustomer(input: {name: "Nope"}) { id } }`, nil)
			if r.code() != "FORBIDDEN" {
				t.Fatalf("got %s", r.Raw)
			}
			var out struct{ Customers struct{ TotalCount int } }
			s.gql(k, `{ customers { totalCount } }`, nil).decode(t, &out)
			if out.Customers.TotalCount != 2 {
				t.Fatalf("viewer sees %d customers, want 2", out.Customers.TotalCount)
			}
		})
		t.Run("ScopedTechnician", func(t *testing.T) {
			k := s.key("--role", "technician", "--customer", acme)
			var out struct {
				Customers struct {
					TotalCount int
					Edges      []struct{ Node struct{ ID, Name string } }
				}
			}
			s.gql(k, `{ customers(first: 10) { totalCount edges { node { id name } } } }`, nil).decode(t, &out)
			if out.Customers.TotalCount != 1 || out.Customers.Edges[0].Node.Name != "Acme" {
				t.Fatalf("scoped key sees %+v", out.Customers)
			}
			r := s.gql(k, `query($id: ID!) { node(id: $id) { id ... on Customer { name } } }`, map[string]any{"id": globex})
			if r.code() != "NOT_FOUND" {
				t.Fatalf("node(Globex) for an Acme key = %s", r.Raw)
			}
			r = s.gql(k, `query($id: ID!) { updateCustomer(id: $id, input: {name: "x"}) { id } }`, map[string]any{"id": globex})
			if r.code() == "" {
				t.Fatalf("a query named a mutation and passed: %s", r.Raw)
			}
			r = s.gql(k, `mutation($id: ID!) { deleteCustomer(id: $id) { deletedID } }`, map[string]any{"id": globex})
			if c := r.code(); c != "FORBIDDEN" && c != "NOT_FOUND" {
				t.Fatalf("technician deleted another customer: %s", r.Raw)
			}
		})
		t.Run("CustomerScopeMustExist", func(t *testing.T) {
			if _, _, err := s.command("apikey", "create", "--name", "x", "--customer", "bm9wZQ"); err == nil {
				t.Fatal("a key scoped to a non-existent customer was created")
			}
			if _, _, err := s.command("apikey", "create", "--name", "x", "--role", "root"); err == nil {
				t.Fatal("an unknown role was accepted")
			}
		})
	})
}

func TestCustomers(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	id := s.createCustomer(admin, "  Initech ")
	for name, input := range map[string]string{
		"duplicate": "INITECH",
		"empty":     "  ",
		"too long":  strings.Repeat("x", 201),
	} {
		t.Run(name, func(t *testing.T) {
			r := s.gql(admin, `mutation($n: String!) { createCustomer(input: {name: $n}) { id } }`, map[string]any{"n": input})
			if r.code() != "BAD_USER_INPUT" {
				t.Fatalf("got %s", r.Raw)
			}
		})
	}
	var upd struct{ UpdateCustomer struct{ Name string } }
	s.gql(admin, `mutation($id: ID!) { updateCustomer(id: $id, input: {name: "Initrode"}) { name } }`, map[string]any{"id": id}).decode(t, &upd)
	if upd.UpdateCustomer.Name != "Initrode" {
		t.Fatalf("rename = %+v", upd)
	}
	var del struct{ DeleteCustomer struct{ DeletedID string } }
	s.gql(admin, `mutation($id: ID!) { deleteCustomer(id: $id) { deletedID } }`, map[string]any{"id": id}).decode(t, &del)
	if del.DeleteCustomer.DeletedID != id {
		t.Fatalf("delete = %+v", del)
	}
	if r := s.gql(admin, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": "garbage"}); r.code() != "BAD_USER_INPUT" {
		t.Fatalf("a malformed ID gave %s", r.Raw)
	}
}

func TestRateLimits(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "4"})
	flooder, calm := s.key(), s.key()
	limited := 0
	var last *gqlResponse
	for range 30 {
		r := s.gql(flooder, `{ customers { totalCount } }`, nil)
		if r.Status == http.StatusTooManyRequests {
			limited++
			last = r
		}
	}
	if limited == 0 {
		t.Fatal("30 requests at once were never limited at 4/s")
	}
	if last.code() != "RATE_LIMITED" {
		t.Fatalf("limited answer = %s", last.Raw)
	}
	// Another key from the same address is still served.
	if r := s.gql(calm, `{ customers { totalCount } }`, nil); r.Status != http.StatusOK {
		t.Fatalf("a quiet key was refused during another key's flood: %s", r.Raw)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", strings.NewReader(`{"query":"{ customers { totalCount } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+flooder)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("flooding key: HTTP %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// Uploads, confirms and claims have a tighter limit per key, and aliases
// cannot batch around it.
func TestSensitiveMutationLimit(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "20"})
	key := s.key()
	var q strings.Builder
	q.WriteString("mutation {")
	for i := range 15 {
		fmt.Fprintf(&q, ` c%d: confirmServerToken(input: {tokenID: "b3JjaGFyZDox"}) { token { id } }`, i)
	}
	q.WriteString(" }")
	// More than the bucket of ten could ever take: refused as a request to
	// split, not one to retry (TestOperationAboveBucket).
	r := s.gql(key, q.String(), nil)
	if r.code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["reason"] != "RATE_LIMIT_BURST_EXCEEDED" {
		t.Fatalf("15 aliased confirms: HTTP %d %s", r.Status, r.Raw[:min(200, len(r.Raw))])
	}
}
