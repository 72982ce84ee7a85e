package simulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/simulator"
	"github.com/orchard-msp/orchard/modules/fault"
)

func waitDone(t *testing.T, c apple.Client, token []byte, id string) *apple.EventStatus {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, err := c.EventStatus(context.Background(), token, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Done() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("event still %s", st.State)
		}
	}
}

func TestSimulatedLicences(t *testing.T) {
	ctx := context.Background()
	c, err := modules.Load[apple.Client](ctx, "apple.simulator", json.RawMessage(`{"eventDelay":"50ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	token := simulator.ScenarioToken("S", time.Now().AddDate(1, 0, 0), "uid=42;apps=3")
	assets, _ := c.Assets(ctx, token)
	first := assets.Assets[0] // 50 bought, none assigned
	id := apple.AssetID{AdamID: first.AdamID, PricingParam: first.PricingParam}
	second := assets.Assets[1] // 51 bought, 1 assigned

	var mu sync.Mutex
	var got []*apple.Notification
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		n, err := apple.ParseNotification(b)
		if err != nil || !apple.NotificationAuthorized(r.Header.Get("Authorization"), "sim-secret") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer rcv.Close()
	cfg, err := c.UpdateClientConfig(ctx, token, apple.ClientConfigUpdate{Notifications: &apple.NotificationSettings{
		URL: rcv.URL, AuthToken: "sim-secret", Types: []apple.NotificationType{apple.NotifyAssetManagement, apple.NotifyAssetCount}}})
	if err != nil || cfg.LocationUID != "42" {
		t.Fatalf("registering: %+v, %v", cfg, err)
	}

	serials := make([]string, 52)
	for i := range serials {
		serials[i] = fmt.Sprintf("S%02d", i)
	}
	rec, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{id}, SerialNumbers: serials})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.EventStatus(ctx, token, rec.EventID); st.State != apple.EventPending {
		t.Fatalf("status right away %s, want PENDING for eventDelay", st.State)
	}
	st := waitDone(t, c, token, rec.EventID)
	if st.State != apple.EventComplete || st.NumCompleted != 50 || st.NumRequested != 52 || len(st.Failures) != 1 ||
		st.Failures[0].Number != 9709 || fmt.Sprint(st.Failures[0].SerialNumbers) != "[S50 S51]" {
		t.Fatalf("over-assignment ended as %+v", st)
	}
	assets, _ = c.Assets(ctx, token)
	if a := assets.Assets[0]; a.AssignedCount != 50 || a.AvailableCount != 0 || assets.VersionID == "sim-1" {
		t.Fatalf("counts after assigning: %+v (version %s)", a, assets.VersionID)
	}

	all, err := c.Assignments(ctx, token, apple.AssignmentQuery{})
	if err != nil || len(all.Assignments) != 53 || all.Incremental {
		t.Fatalf("assignments: %d, %v (the 50 new and the scenario's 3)", len(all.Assignments), err)
	}
	rec, _ = c.RevokeAssets(ctx, token, apple.RevokeAssets{SerialNumbers: []string{"S00", "S01"}})
	if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventComplete || st.NumCompleted != 2 {
		t.Fatalf("revoke: %+v", st)
	}
	inc, _ := c.Assignments(ctx, token, apple.AssignmentQuery{SinceVersionID: all.VersionID})
	if !inc.Incremental || len(inc.Assignments) != 0 || inc.VersionID == all.VersionID {
		t.Fatalf("incremental after a revoke: %+v", inc)
	}
	if err := c.(*simulator.Client).Purchase(ctx, token, apple.AssetID{AdamID: second.AdamID, PricingParam: "STDQ"}, 5); err != nil {
		t.Fatal(err)
	}

	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 5 || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// TEST, the associate's SUCCESS and FAILURE, the revoke's SUCCESS,
	// ASSET_COUNT. Each is sent on its own, so they may arrive in any order.
	var test, success, failure, revoke, count int
	for _, n := range got {
		switch {
		case n.Type == apple.NotifyTest:
			test++
		case n.AssetCount != nil && n.AssetCount.CountDelta == 5:
			count++
		case n.AssetManagement == nil:
		case n.AssetManagement.Type == apple.EventRevoke:
			revoke++
		case n.AssetManagement.Error != nil && n.AssetManagement.Error.Number == 9709:
			failure++
		case n.AssetManagement.Result == apple.ResultSuccess && len(n.AssetManagement.Assignments) == 50:
			success++
		}
	}
	if len(got) != 5 || test != 1 || success != 1 || failure != 1 || revoke != 1 || count != 1 {
		t.Fatalf("notifications: %d (test %d, success %d, failure %d, revoke %d, count %d)", len(got), test, success, failure, revoke, count)
	}
}

func TestSimulatedLimits(t *testing.T) {
	ctx := context.Background()
	c, _ := modules.Load[apple.Client](ctx, "apple.simulator", nil)
	token := simulator.ScenarioToken("S", time.Now().AddDate(1, 0, 0), "uid=43;apps=10")
	sc, _ := c.ServiceConfig(ctx)
	serials := make([]string, sc.Limits.MaxSerialNumbers+1)
	for i := range serials {
		serials[i] = fmt.Sprint(i)
	}
	_, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{{AdamID: "100000000", PricingParam: "STDQ"}}, SerialNumbers: serials})
	var ae *apple.Error
	if fault.CodeOf(err) != fault.BadUserInput || !errors.As(err, &ae) || ae.Number != 9702 {
		t.Fatalf("above maxSerialNumbers: %v", err)
	}
	// Asset 9 is a book: not device-assignable.
	_, err = c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{{AdamID: "100000009", PricingParam: "STDQ"}}, SerialNumbers: []string{"A"}})
	if !errors.As(err, &ae) || ae.Number != 9707 {
		t.Fatalf("book to a device: %v", err)
	}
	if _, err := c.UpdateClientConfig(ctx, token, apple.ClientConfigUpdate{Notifications: &apple.NotificationSettings{URL: "http://127.0.0.1:1/x", AuthToken: "s"}}); !errors.As(err, &ae) || ae.Number != 9728 {
		t.Fatalf("unreachable URL: %v", err)
	}
}
