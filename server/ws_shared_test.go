package main

import (
	"encoding/json"
	"testing"
	"time"
)

// One warning reaches many subscriptions at once, and subscriptions of the
// same shape share one rendering of it (graph.sharedEvents). Each must
// still get exactly the answer its own document, variables and key ask
// for: a subscriber handed another shape's bytes would show it here.
func TestSharedWarningKeepsEachSubscriptionsAnswer(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		secondAdmin := s.key()
		viewerKey := s.key("--role", "viewer")
		tailspin := s.createCustomer(admin, "Tailspin")
		other := s.createCustomer(admin, "Other")

		const plain = `subscription { tokenExpiryWarnings { level token { locationName } } }`
		const aliased = `subscription { w: tokenExpiryWarnings { lvl: level token { name: locationName } } }`
		const included = `subscription($x: Boolean!) { tokenExpiryWarnings { level token @include(if: $x) { locationName } } }`
		const scoped = `subscription($c: ID) { tokenExpiryWarnings(customerID: $c) { level } }`
		type sub struct {
			key, query string
			vars       map[string]any
			want       string // the payload, exactly
		}
		subs := []sub{
			{admin, plain, nil, `{"data":{"tokenExpiryWarnings":{"level":"WARNING","token":{"locationName":"Tailspin Toys"}}}}`},
			{admin, plain, nil, `{"data":{"tokenExpiryWarnings":{"level":"WARNING","token":{"locationName":"Tailspin Toys"}}}}`},
			{secondAdmin, plain, nil, `{"data":{"tokenExpiryWarnings":{"level":"WARNING","token":{"locationName":"Tailspin Toys"}}}}`},
			{viewerKey, plain, nil, `{"data":{"tokenExpiryWarnings":{"level":"WARNING","token":{"locationName":"Tailspin Toys"}}}}`},
			{admin, aliased, nil, `{"data":{"w":{"lvl":"WARNING","token":{"name":"Tailspin Toys"}}}}`},
			{admin, included, map[string]any{"x": true}, `{"data":{"tokenExpiryWarnings":{"level":"WARNING","token":{"locationName":"Tailspin Toys"}}}}`},
			{admin, included, map[string]any{"x": false}, `{"data":{"tokenExpiryWarnings":{"level":"WARNING"}}}`},
			{admin, scoped, map[string]any{"c": tailspin}, `{"data":{"tokenExpiryWarnings":{"level":"WARNING"}}}`},
		}
		clients := make([]*wsClient, len(subs))
		for i, sb := range subs {
			c, _, err := dialWS(t, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.init(sb.key); err != nil {
				t.Fatal(err)
			}
			vars := sb.vars
			if vars == nil {
				vars = map[string]any{}
			}
			payload, _ := json.Marshal(map[string]any{"query": sb.query, "variables": vars})
			c.send(wsMessage{ID: "w", Type: "subscribe", Payload: payload})
			clients[i] = c
		}
		// Scoped to the other customer: this one must hear nothing.
		elsewhere, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := elsewhere.init(admin); err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(map[string]any{"query": scoped, "variables": map[string]any{"c": other}})
		elsewhere.send(wsMessage{ID: "w", Type: "subscribe", Payload: payload})
		waitFor(t, func() bool {
			return scrape(t, s.URL, "Bearer "+admin).value(t, "orchard_expiry_subscribers", nil) >= float64(len(subs)+1)
		})

		s.tailspinExpiring(admin, tailspin)
		for i, c := range clients {
			m, err := c.read(5 * time.Second)
			if err != nil {
				t.Fatalf("subscriber %d: %v", i, err)
			}
			if m.Type != "next" || m.ID != "w" || string(m.Payload) != subs[i].want {
				t.Errorf("subscriber %d (%s): got %s %s, want %s", i, subs[i].query, m.Type, m.Payload, subs[i].want)
			}
		}
		if m, err := elsewhere.read(300 * time.Millisecond); err == nil {
			t.Fatalf("a subscription scoped to another customer received %s %s", m.Type, m.Payload)
		}
	})
}
