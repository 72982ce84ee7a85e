package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/notify/webhook"
)

type hook struct {
	Event string
	Body  map[string]any
}

func TestLicenceWarnings(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		var mu sync.Mutex
		var hooks []hook
		receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			ts, _ := strconv.ParseInt(r.Header.Get("X-Orchard-Timestamp"), 10, 64)
			if r.Header.Get("X-Orchard-Signature") != webhook.Sign("hook-secret", ts, body) {
				t.Errorf("bad signature on %s", body)
			}
			var m map[string]any
			_ = json.Unmarshal(body, &m)
			mu.Lock()
			hooks = append(hooks, hook{r.Header.Get("X-Orchard-Event"), m})
			mu.Unlock()
		}))
		defer receiver.Close()
		ls := startLicences(t, env, true, map[string]string{"ORCHARD_WEBHOOK_URL": receiver.URL, "ORCHARD_WEBHOOK_SECRET": "hook-secret"})
		s := ls.s
		events := func(adamID string) []string {
			mu.Lock()
			defer mu.Unlock()
			var out []string
			for _, h := range hooks {
				if h.Body["adamID"] == adamID {
					out = append(out, h.Event)
				}
			}
			return out
		}
		defer func() {
			if t.Failed() {
				t.Log(s.Log.String())
			}
		}()
		// The first sync finds 2 of 400000001 left, at or below the default 5.
		waitFor(t, func() bool { return len(events("400000001")) == 1 })

		c, _, err := dialWS(t, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.init(ls.admin); err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(map[string]any{"query": `subscription { licenceWarnings { level availableCount threshold app { adamID } token { id } } }`})
		c.send(wsMessage{ID: "w", Type: "subscribe", Payload: payload})
		payload, _ = json.Marshal(map[string]any{"query": `subscription { licenceOperationUpdates { id status completed token { id } } }`})
		c.send(wsMessage{ID: "o", Type: "subscribe", Payload: payload})
		type warning struct {
			Level          string
			AvailableCount int
			Threshold      int
			App            struct{ AdamID string }
		}
		held := map[string][]json.RawMessage{} // messages read while waiting for another subscription
		next := func(id string) json.RawMessage {
			t.Helper()
			if q := held[id]; len(q) > 0 {
				held[id] = q[1:]
				return q[0]
			}
			for {
				m, err := c.read(5 * time.Second)
				if err != nil {
					t.Fatalf("waiting for %s: %v", id, err)
				}
				if m.Type != "next" {
					continue
				}
				if m.ID == id {
					return m.Payload
				}
				held[m.ID] = append(held[m.ID], m.Payload)
			}
		}
		var first struct {
			Data struct{ LicenceWarnings warning }
		}
		_ = json.Unmarshal(next("w"), &first)
		if w := first.Data.LicenceWarnings; w.Level != "LOW" || w.App.AdamID != "400000001" || w.AvailableCount != 2 || w.Threshold != 5 {
			t.Fatalf("first warning = %+v", w)
		}

		op := ls.startOp(t, "assignLicences", "400000001", "SN1", "SN2")
		var live struct {
			Data struct{ LicenceWarnings warning }
		}
		_ = json.Unmarshal(next("w"), &live)
		if w := live.Data.LicenceWarnings; w.Level != "EXHAUSTED" || w.AvailableCount != 0 {
			t.Fatalf("live warning = %+v", w)
		}
		for {
			var u struct {
				Data struct {
					LicenceOperationUpdates struct{ ID, Status string }
				}
			}
			_ = json.Unmarshal(next("o"), &u)
			if u.Data.LicenceOperationUpdates.ID != op.ID {
				t.Fatalf("update of another operation: %+v", u)
			}
			if u.Data.LicenceOperationUpdates.Status == "COMPLETE" {
				break
			}
		}
		waitFor(t, func() bool { return len(events("400000001")) == 2 })
		if got := events("400000001"); got[0] != "licence.low" || got[1] != "licence.exhausted" {
			t.Fatalf("webhooks = %v", got)
		}

		// A raised threshold is judged at once; going back above resets it.
		setThreshold := func(v any) {
			var out struct {
				UpdateApp struct{ LowLicenceThreshold *int }
			}
			s.gql(ls.admin, `mutation($id: ID!, $v: Int) { updateApp(id: $id, input: {lowLicenceThreshold: $v}) { lowLicenceThreshold } }`,
				map[string]any{"id": ls.apps["400000000"], "v": v}).decode(t, &out)
		}
		setThreshold(60)
		waitFor(t, func() bool { return len(events("400000000")) == 1 })
		setThreshold(61) // still below: no second warning for the same crossing
		setThreshold(nil)
		setThreshold(60) // a new crossing
		waitFor(t, func() bool { return len(events("400000000")) == 2 })
		time.Sleep(300 * time.Millisecond)
		if got := events("400000000"); len(got) != 2 || got[0] != "licence.low" {
			t.Fatalf("webhooks of 400000000 = %v", got)
		}

		// The gauge counts the customer's apps at or below their threshold,
		// as the API reports them.
		var apps struct {
			Node struct {
				Apps struct {
					Edges []struct {
						Node struct {
							AvailableCount      int
							LowLicenceThreshold *int
							Unlimited           bool
						}
					}
				}
			}
		}
		s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on ServerToken { apps(first: 100) { edges { node { availableCount lowLicenceThreshold unlimited } } } } } }`,
			map[string]any{"id": ls.token}).decode(t, &apps)
		low := 0
		for _, e := range apps.Node.Apps.Edges {
			threshold := 5
			if e.Node.LowLicenceThreshold != nil {
				threshold = *e.Node.LowLicenceThreshold
			}
			if !e.Node.Unlimited && e.Node.AvailableCount <= threshold {
				low++
			}
		}
		gauge := scrape(t, s.URL, "Bearer "+ls.admin).series("orchard_licence_apps_low", map[string]string{"customer_id": ls.customer})
		if low < 2 || len(gauge) != 1 || gauge[0].GetGauge().GetValue() != float64(low) {
			t.Fatalf("orchard_licence_apps_low for the customer = %v, want one series of %d", gauge, low)
		}

		viewerKey := s.key("--role", "viewer")
		if r := s.gql(viewerKey, `mutation($id: ID!) { updateApp(id: $id, input: {lowLicenceThreshold: 1}) { id } }`, map[string]any{"id": ls.apps["400000000"]}); r.code() != "FORBIDDEN" {
			t.Fatalf("viewer updateApp: %s", r.Raw)
		}
	})
}
