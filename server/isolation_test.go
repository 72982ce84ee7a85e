package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// A key scoped to customer A reaches nothing of customer B by any path:
// lists, node, edges, where filters with edge predicates, subscriptions and
// every mutation.
func TestTenantIsolation(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		a, b := s.createCustomer(admin, "Alpha"), s.createCustomer(admin, "Bravo")
		exp := time.Now().Add(10 * 24 * time.Hour)
		token := func(cust, uid string) string {
			f := appletest.TokenFile(uid, exp, "secret-"+uid)
			s.Fake.AddLocation(f, &appletest.Location{UID: uid, Name: "Loc " + uid, ExpiresAt: exp, Assets: appletest.MakeAssets(3)})
			var up uploadResult
			s.upload(admin, cust, f).decode(t, &up)
			id := up.UploadServerToken.Token.ID
			if r := s.action(admin, "confirmServerToken", id); len(r.Errors) > 0 {
				t.Fatal(r.Raw)
			}
			if r := s.action(admin, "syncServerToken", id); len(r.Errors) > 0 {
				t.Fatal(r.Raw)
			}
			return id
		}
		tokA, tokB := token(a, "uid-a"), token(b, "uid-b")
		var appsB struct {
			Apps struct {
				Edges []struct{ Node struct{ ID string } }
			}
		}
		s.gql(admin, `{ apps(first: 1, where: {hasTokenWith: {locationUID: "uid-b"}}) { edges { node { id } } } }`, nil).decode(t, &appsB)
		appB := appsB.Apps.Edges[0].Node.ID
		techA := s.key("--role", "technician", "--customer", a)

		counts := map[string]string{
			`{ customers { totalCount } }`: `{"customers":{"totalCount":1}}`,
			`{ tokens { totalCount } }`:    `{"tokens":{"totalCount":1}}`,
			`{ apps { totalCount } }`:      `{"apps":{"totalCount":3}}`,
			`{ customers(where: {hasTokensWith: {locationUID: "uid-b"}}) { totalCount } }`:       `{"customers":{"totalCount":0}}`,
			`{ tokens(where: {hasCustomerWith: {name: "Bravo"}}) { totalCount } }`:               `{"tokens":{"totalCount":0}}`,
			`{ apps(where: {hasTokenWith: {hasCustomerWith: {name: "Bravo"}}}) { totalCount } }`: `{"apps":{"totalCount":0}}`,
			`{ customers(where: {nameContains: "Bra"}) { totalCount } }`:                         `{"customers":{"totalCount":0}}`,
		}
		for q, want := range counts {
			r := s.gql(techA, q, nil)
			if len(r.Errors) > 0 || string(r.Data) != want {
				t.Errorf("%s = %s, want %s", q, r.Raw, want)
			}
		}
		for what, id := range map[string]string{"customer": b, "token": tokB, "app": appB} {
			if r := s.gql(techA, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id}); r.code() != "NOT_FOUND" {
				t.Errorf("node(B's %s) = %s", what, r.Raw)
			}
		}
		r := s.gql(techA, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": []string{b, tokB, appB}})
		if strings.Contains(string(r.Data), `"id"`) {
			t.Errorf("nodes(B's IDs) = %s", r.Raw)
		}
		var edges struct {
			Tokens struct {
				Edges []struct {
					Node struct {
						Customer struct{ Name string }
						Apps     struct{ TotalCount int }
					}
				}
			}
		}
		s.gql(techA, `{ tokens(first: 10) { edges { node { customer { name } apps { totalCount } } } } }`, nil).decode(t, &edges)
		for _, e := range edges.Tokens.Edges {
			if e.Node.Customer.Name != "Alpha" {
				t.Errorf("an edge reached %s", e.Node.Customer.Name)
			}
		}
		var audit struct{ AuditEvents struct{ TotalCount int } }
		s.gql(techA, `{ auditEvents { totalCount } }`, nil).decode(t, &audit)
		var all struct{ AuditEvents struct{ TotalCount int } }
		s.gql(admin, `{ auditEvents { totalCount } }`, nil).decode(t, &all)
		if audit.AuditEvents.TotalCount == 0 || audit.AuditEvents.TotalCount >= all.AuditEvents.TotalCount {
			t.Errorf("audit events: scoped key sees %d of %d", audit.AuditEvents.TotalCount, all.AuditEvents.TotalCount)
		}

		// Every mutation on B's objects reads as not found (or forbidden).
		mutations := map[string]map[string]any{
			`mutation($id: ID!) { updateCustomer(id: $id, input: {name: "x"}) { id } }`: {"id": b},
			`mutation($id: ID!) { deleteCustomer(id: $id) { deletedID } }`:              {"id": b},
			`mutation { createCustomer(input: {name: "Charlie"}) { id } }`:              nil,
		}
		for _, m := range []string{"confirmServerToken", "claimServerToken", "cancelServerToken", "syncServerToken"} {
			mutations[`mutation($t: ID!) { `+m+`(input: {tokenID: $t}) { token { id } } }`] = map[string]any{"t": tokB}
		}
		mutations[`mutation($t: ID!) { deleteServerToken(input: {tokenID: $t}) { deletedID } }`] = map[string]any{"t": tokB}
		for q, vars := range mutations {
			r := s.gql(techA, q, vars)
			if c := r.code(); c != "NOT_FOUND" && c != "FORBIDDEN" {
				t.Errorf("%s = %s", q, r.Raw)
			}
		}
		f := appletest.TokenFile("x", exp, "secret-new")
		s.Fake.AddLocation(f, &appletest.Location{UID: "uid-new", Name: "New", ExpiresAt: exp})
		if r := s.upload(techA, b, f); r.code() != "NOT_FOUND" {
			t.Errorf("upload for B = %s", r.Raw)
		}

		// Subscriptions: B's customer ID is refused; the stream carries only A.
		ws, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.init(techA); err != nil {
			t.Fatal(err)
		}
		ws.subscribe("b", &b)
		ws.subscribe("all", nil)
		refused, gotA := false, false
		for !(refused && gotA) {
			m, err := ws.read(3 * time.Second)
			if err != nil {
				t.Fatalf("refused=%v gotA=%v: %v", refused, gotA, err)
			}
			switch {
			case m.ID == "b" && (m.Type == "next" || m.Type == "error"):
				if !strings.Contains(string(m.Payload), "NOT_FOUND") || strings.Contains(string(m.Payload), tokB) {
					t.Fatalf("subscription to B's warnings: %s", m.Payload)
				}
				refused = true
			case m.ID == "all" && m.Type == "next":
				var w warningPayload
				_ = json.Unmarshal(m.Payload, &w)
				if w.Data.TokenExpiryWarnings.Token.ID != tokA {
					t.Fatalf("scoped stream carried %s", m.Payload)
				}
				gotA = true
			}
		}

		// B's token still exists and is untouched.
		var check struct{ Node struct{ State string } }
		s.gql(admin, `query($id: ID!) { node(id: $id) { ... on ServerToken { state } } }`, map[string]any{"id": tokB}).decode(t, &check)
		if check.Node.State != "ACTIVE" {
			t.Errorf("B's token is now %s", check.Node.State)
		}
	})
}
