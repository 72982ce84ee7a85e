package appsandbooks_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/modules/apple/appsandbooks"
	"github.com/orchard-msp/orchard/modules/fault"
)

var ctx = context.Background()

// licenceSetup is a location holding one device-assignable app with the
// given number of licences available and none assigned.
func licenceSetup(t *testing.T, available int) (*appletest.Server, apple.Client, []byte, *appletest.Location) {
	t.Helper()
	fake, token, loc := setup(t)
	loc.Assets = []appletest.Asset{{AdamID: "408709785", PricingParam: "STDQ", ProductType: "App", TotalCount: available,
		AvailableCount: available, DeviceAssignable: true, Revocable: true, SupportedPlatforms: []string{"iOS"}}}
	return fake, newClient(t, fake, ""), token, loc
}

var app = apple.AssetID{AdamID: "408709785", PricingParam: "STDQ"}

// waitDone asks for the event's status until Apple says it ended.
func waitDone(t *testing.T, c apple.Client, token []byte, id string) *apple.EventStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.EventStatus(ctx, token, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Done() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s still %s", id, st.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counts(fake *appletest.Server, loc *appletest.Location) (assigned, available int) {
	fake.Update(func() { assigned, available = loc.Assets[0].AssignedCount, loc.Assets[0].AvailableCount })
	return
}

func TestAssociateEndsComplete(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 10)
	fake.EventDelay = 100 * time.Millisecond
	rec, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"C02A", "C02B"}, ClientUserIDs: []string{"user-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if rec.EventID == "" || rec.TokenExpiresAt.IsZero() {
		t.Fatalf("receipt = %+v", rec)
	}
	st, err := c.EventStatus(ctx, token, rec.EventID)
	if err != nil || st.State != apple.EventPending || st.NumRequested != 3 || st.NumCompleted != 0 {
		t.Fatalf("right after the request: %+v, %v; want PENDING 0/3", st, err)
	}
	if a, _ := counts(fake, loc); a != 0 {
		t.Fatalf("%d assigned while the event is pending", a)
	}
	st = waitDone(t, c, token, rec.EventID)
	if st.State != apple.EventComplete || st.Type != apple.EventAssociate || st.NumCompleted != 3 || len(st.Failures) != 0 {
		t.Fatalf("ended as %+v", st)
	}
	if a, av := counts(fake, loc); a != 3 || av != 7 {
		t.Fatalf("counts assigned %d available %d, want 3 and 7", a, av)
	}
	got, err := c.Assignments(ctx, token, apple.AssignmentQuery{AdamID: app.AdamID})
	if err != nil || len(got.Assignments) != 3 {
		t.Fatalf("assignments: %+v, %v", got, err)
	}
	if a := got.Assignments[2]; a.ClientUserID != "user-1" || a.SerialNumber != "" || a.PricingParam != "STDQ" {
		t.Fatalf("user assignment read as %+v", a)
	}
}

func TestOverAssignmentFailsPairs(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 1)
	rec, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"S1", "S2", "S3"}})
	if err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, c, token, rec.EventID)
	if st.State != apple.EventComplete || st.NumCompleted != 1 || st.NumRequested != 3 {
		t.Fatalf("status %+v, want COMPLETE 1/3", st)
	}
	if len(st.Failures) != 1 {
		t.Fatalf("failures %+v", st.Failures)
	}
	f := st.Failures[0]
	if f.Number != 9709 || len(f.Assets) != 1 || f.Assets[0] != app || fmt.Sprint(f.SerialNumbers) != "[S2 S3]" || f.Message == "" {
		t.Fatalf("failure %+v, want 9709 for %v × [S2 S3]", f, app)
	}
	if a, av := counts(fake, loc); a != 1 || av != 0 {
		t.Fatalf("counts %d/%d, want 1 assigned, 0 available", a, av)
	}

	// With none left, every pair fails and so does the event.
	rec, err = c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, ClientUserIDs: []string{"u1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventFailed || st.NumCompleted != 0 || fmt.Sprint(st.Failures[0].ClientUserIDs) != "[u1]" {
		t.Fatalf("status %+v, want FAILED naming u1", st)
	}
}

func TestDisassociate(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 5)
	fake.Assign(loc, appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", SerialNumber: "S1"},
		appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", SerialNumber: "S2"})
	rec, err := c.DisassociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"S1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventComplete || st.Type != apple.EventDisassociate || st.NumCompleted != 1 {
		t.Fatalf("status %+v", st)
	}
	if a, av := counts(fake, loc); a != 1 || av != 4 {
		t.Fatalf("counts %d/%d, want 1 assigned, 4 available", a, av)
	}
	if left := fake.Assignments(loc); len(left) != 1 || left[0].SerialNumber != "S2" {
		t.Fatalf("left %+v, want S2 only", left)
	}
}

func TestRevoke(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 5)
	fake.Update(func() {
		loc.Assets = append(loc.Assets, appletest.Asset{AdamID: "2", PricingParam: "STDQ", TotalCount: 5, AvailableCount: 5, DeviceAssignable: true, Revocable: false})
	})
	fake.Assign(loc, appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", SerialNumber: "S1"},
		appletest.Assignment{AdamID: "2", PricingParam: "STDQ", SerialNumber: "S1"},
		appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", ClientUserID: "u1"},
		appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", SerialNumber: "S9"})
	rec, err := c.RevokeAssets(ctx, token, apple.RevokeAssets{SerialNumbers: []string{"S1"}, ClientUserIDs: []string{"u1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventComplete || st.Type != apple.EventRevoke || st.NumRequested != 2 || st.NumCompleted != 2 {
		t.Fatalf("status %+v, want COMPLETE 2/2 (devices and users named)", st)
	}
	left := fake.Assignments(loc)
	if len(left) != 2 || left[0].AdamID != "2" || left[1].SerialNumber != "S9" {
		t.Fatalf("left %+v, want the irrevocable asset on S1 and S9's licence", left)
	}
	if a, av := counts(fake, loc); a != 1 || av != 4 {
		t.Fatalf("counts %d/%d, want 1 assigned, 4 available", a, av)
	}
}

func TestAssignmentsPagesAndIncrementalRead(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 1000)
	fake.PageSize = 10
	fake.Latency = 5 * time.Millisecond
	var first []appletest.Assignment
	for i := range 95 {
		first = append(first, appletest.Assignment{AdamID: app.AdamID, PricingParam: "STDQ", SerialNumber: fmt.Sprintf("S%03d", i)})
	}
	fake.Assign(loc, first...)
	full, err := c.Assignments(ctx, token, apple.AssignmentQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Assignments) != 95 || full.Pages != 10 || full.Incremental || full.VersionID == "" {
		t.Fatalf("full read: %d assignments in %d pages (incremental %v, version %q), want 95 in 10", len(full.Assignments), full.Pages, full.Incremental, full.VersionID)
	}
	seen := map[string]bool{}
	for _, a := range full.Assignments {
		seen[a.SerialNumber] = true
	}
	if len(seen) != 95 {
		t.Fatalf("%d distinct serial numbers, want 95", len(seen))
	}
	if m := fake.MaxInFlight(); m > 5 || m < 2 {
		t.Fatalf("%d requests at once, want 2..5", m)
	}

	fake.Update(func() { fake.HoldEvents = true })
	rec, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"N1", "N2", "N3"}})
	if err != nil {
		t.Fatal(err)
	}
	fake.ReleaseEvents()
	if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventComplete {
		t.Fatalf("status %+v", st)
	}
	before := fake.Count("GET /mdm/v2/assignments")
	inc, err := c.Assignments(ctx, token, apple.AssignmentQuery{SinceVersionID: full.VersionID})
	if err != nil {
		t.Fatal(err)
	}
	if !inc.Incremental || len(inc.Assignments) != 3 || inc.Assignments[0].SerialNumber != "N1" || inc.VersionID == full.VersionID {
		t.Fatalf("incremental read: %+v", inc)
	}
	if n := fake.Count("GET /mdm/v2/assignments") - before; n != 1 {
		t.Fatalf("incremental read of 3 changes took %d requests, want 1", n)
	}
	again, err := c.Assignments(ctx, token, apple.AssignmentQuery{SinceVersionID: inc.VersionID})
	if err != nil || len(again.Assignments) != 0 || again.VersionID != inc.VersionID {
		t.Fatalf("nothing changed, yet: %+v, %v", again, err)
	}

	t.Run("UnknownVersionFallsBackToFull", func(t *testing.T) {
		got, err := c.Assignments(ctx, token, apple.AssignmentQuery{SinceVersionID: "not-a-version"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Incremental || len(got.Assignments) != 98 {
			t.Fatalf("got %d assignments, incremental %v; want the full 98", len(got.Assignments), got.Incremental)
		}
	})
	t.Run("Filter", func(t *testing.T) {
		got, err := c.Assignments(ctx, token, apple.AssignmentQuery{SerialNumber: "S042"})
		if err != nil || len(got.Assignments) != 1 || got.Assignments[0].SerialNumber != "S042" {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func TestServiceConfigLimitsCachedFiveMinutes(t *testing.T) {
	fake, _, _ := setup(t)
	fake.SetLimits(map[string]int{"maxSerialNumbers": 7, "maxRevokeClientUserIds": 3})
	c := newClient(t, fake, "").(*appsandbooks.Client)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	c.Now = func() time.Time { return now }
	sc, err := c.ServiceConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := apple.Limits{MaxAssets: 25, MaxSerialNumbers: 7, MaxClientUserIDs: 1000, MaxRevokeSerialNumbers: 100, MaxRevokeClientUserIDs: 3, MaxNotificationLength: 512}
	if sc.Limits != want || !sc.FetchedAt.Equal(now) || len(sc.NotificationTypes) == 0 {
		t.Fatalf("service config %+v, want limits %+v", sc, want)
	}
	fake.SetLimits(map[string]int{"maxSerialNumbers": 9})
	now = now.Add(5*time.Minute - time.Second)
	if sc, _ = c.ServiceConfig(ctx); sc.Limits.MaxSerialNumbers != 7 {
		t.Fatalf("re-read before 5 minutes: %+v", sc.Limits)
	}
	if n := fake.Count("GET /mdm/v2/service/config"); n != 1 {
		t.Fatalf("%d reads within 5 minutes, want 1", n)
	}
	now = now.Add(time.Second)
	if sc, _ = c.ServiceConfig(ctx); sc.Limits.MaxSerialNumbers != 9 || fake.Count("GET /mdm/v2/service/config") != 2 {
		t.Fatalf("after 5 minutes: %+v, %d reads", sc.Limits, fake.Count("GET /mdm/v2/service/config"))
	}
}

func TestLimitsAreApples(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 100)
	fake.SetLimits(map[string]int{"maxSerialNumbers": 2})
	_, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"A", "B", "C"}})
	var ae *apple.Error
	if fault.CodeOf(err) != fault.BadUserInput || !errors.As(err, &ae) || ae.Number != 9702 {
		t.Fatalf("got %v, want BAD_USER_INPUT carrying Apple's 9702", err)
	}
	if n := fake.Count("POST /mdm/v2/assets/associate"); n != 1 {
		t.Fatalf("%d requests: a refusal must not be retried", n)
	}
	fake.Update(func() { loc.Assets[0].DeviceAssignable = false })
	_, err = c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"A"}})
	if !errors.As(err, &ae) || ae.Number != 9707 || len(ae.Info.Assets) != 1 || ae.Info.Assets[0] != app {
		t.Fatalf("got %v, want 9707 naming the asset", err)
	}
	_, err = c.RevokeAssets(ctx, token, apple.RevokeAssets{SerialNumbers: []string{"A", "A"}})
	if !errors.As(err, &ae) || ae.Number != 9705 || fmt.Sprint(ae.Info.SerialNumbers) != "[A]" {
		t.Fatalf("got %v, want 9705 naming A", err)
	}
	if _, err := c.EventStatus(ctx, token, "no-such-event"); !errors.As(err, &ae) || ae.Number != 9708 || fault.CodeOf(err) != fault.BadUserInput {
		t.Fatalf("unknown event: %v", err)
	}
}

func TestLicenceEndpointsRetry(t *testing.T) {
	t.Run("ErrorBodyWithHTTP200", func(t *testing.T) {
		fake, c, token, _ := licenceSetup(t, 5)
		fake.Fail(appletest.Failure{Status: 200, ErrorNumber: 9646})
		if _, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"A"}}); err != nil {
			t.Fatal(err)
		}
		if n := fake.Count("POST /mdm/v2/assets/associate"); n != 2 {
			t.Fatalf("%d requests, want 2 (the 9646 in a 200 retried)", n)
		}
		fake.Fail(appletest.Failure{Status: 200, ErrorNumber: 9622})
		if _, err := c.Assignments(ctx, token, apple.AssignmentQuery{}); fault.CodeOf(err) != fault.TokenInvalid {
			t.Fatalf("9622 in a 200: %v, want TOKEN_INVALID", err)
		}
	})
	t.Run("RetryAfterHonoured", func(t *testing.T) {
		fake, c, token, _ := licenceSetup(t, 5)
		rec, err := c.RevokeAssets(ctx, token, apple.RevokeAssets{SerialNumbers: []string{"A"}})
		if err != nil {
			t.Fatal(err)
		}
		fake.Fail(appletest.Failure{Status: 429, ErrorNumber: 9646, RetryAfter: "1"})
		start := time.Now()
		if _, err := c.EventStatus(ctx, token, rec.EventID); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("retried after %v, before Retry-After's 1s", el)
		}
		fake.Fail(appletest.Failure{Status: 503, RetryAfter: "1"})
		start = time.Now()
		if _, err := c.DisassociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"A"}}); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("503 retried after %v, before Retry-After's 1s", el)
		}
	})
	t.Run("RateLimitedPastBudget", func(t *testing.T) {
		fake, _, token, _ := licenceSetup(t, 5)
		c := newClient(t, fake, `,"retryBudget":"300ms"`)
		for range 100 {
			fake.Fail(appletest.Failure{Status: 429, ErrorNumber: 9646})
		}
		_, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"A"}})
		if fault.CodeOf(err) != fault.AppleRateLimited {
			t.Fatalf("got %v, want APPLE_RATE_LIMITED", err)
		}
	})
}

// receiver is a notification endpoint that records what it is sent.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []*apple.Notification
	auth  []string
	fails bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		n, err := apple.ParseNotification(body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil || r.fails {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.got = append(r.got, n)
		r.auth = append(r.auth, req.Header.Get("Authorization"))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) wait(t *testing.T, n int) []*apple.Notification {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]*apple.Notification(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications arrived, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func register(t *testing.T, c apple.Client, token []byte, url string) (*apple.ClientConfig, error) {
	t.Helper()
	return c.UpdateClientConfig(ctx, token, apple.ClientConfigUpdate{
		MDMInfo: &apple.MDMInfo{ID: "ours", Name: "Orchard", Metadata: "msp.example"},
		Notifications: &apple.NotificationSettings{URL: url, AuthToken: "s3cret",
			Types: []apple.NotificationType{apple.NotifyAssetManagement, apple.NotifyAssetCount}},
	})
}

func TestNotifications(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 1)
	rcv := newReceiver(t)
	cfg, err := register(t, c, token, rcv.URL+"/apple/notifications")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NotificationURL != rcv.URL+"/apple/notifications" || fmt.Sprint(cfg.NotificationTypes) != "[ASSET_MANAGEMENT ASSET_COUNT]" || cfg.MDMInfo == nil || cfg.MDMInfo.ID != "ours" {
		t.Fatalf("config after registering: %+v", cfg)
	}
	got := rcv.wait(t, 1)
	if got[0].Type != apple.NotifyTest || got[0].LocationUID != loc.UID || got[0].ID == "" || rcv.auth[0] != "Bearer s3cret" {
		t.Fatalf("test notification %+v with %q", got[0], rcv.auth[0])
	}

	rec, err := c.AssociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"S1", "S2"}})
	if err != nil {
		t.Fatal(err)
	}
	got = rcv.wait(t, 3)
	ok, bad := got[1].AssetManagement, got[2].AssetManagement
	if ok == nil || ok.EventID != rec.EventID || ok.Result != apple.ResultSuccess || ok.Type != apple.EventAssociate || len(ok.Assignments) != 1 || ok.Assignments[0].SerialNumber != "S1" {
		t.Fatalf("success notification %+v", ok)
	}
	if bad == nil || bad.Result != apple.ResultFailure || bad.Error == nil || bad.Error.Number != 9709 || bad.Assignments[0].SerialNumber != "S2" {
		t.Fatalf("failure notification %+v", bad)
	}

	fake.Purchase(loc, app.AdamID, "STDQ", 10)
	got = rcv.wait(t, 4)
	if ac := got[3].AssetCount; ac == nil || ac.AdamID != app.AdamID || ac.CountDelta != 10 {
		t.Fatalf("asset count notification %+v", got[3])
	}
	if _, av := counts(fake, loc); av != 10 {
		t.Fatalf("available %d after buying 10, want 10", av)
	}
	for i, a := range rcv.auth {
		if a != "Bearer s3cret" {
			t.Fatalf("notification %d carried %q", i, a)
		}
	}

	t.Run("Duplicated", func(t *testing.T) {
		fake.Update(func() { fake.DuplicateNotifications = true })
		defer fake.Update(func() { fake.DuplicateNotifications = false })
		fake.Purchase(loc, app.AdamID, "STDQ", 1)
		got := rcv.wait(t, 6)
		if got[4].ID != got[5].ID || got[4].AssetCount == nil {
			t.Fatalf("duplicates %+v and %+v should share a notificationId", got[4], got[5])
		}
	})
	t.Run("Dropped", func(t *testing.T) {
		fake.Update(func() { fake.DropNotifications = true })
		rec, err := c.DisassociateAssets(ctx, token, apple.ManageAssets{Assets: []apple.AssetID{app}, SerialNumbers: []string{"S1"}})
		if err != nil {
			t.Fatal(err)
		}
		if st := waitDone(t, c, token, rec.EventID); st.State != apple.EventComplete {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
		if n := len(rcv.wait(t, 6)); n != 6 {
			t.Fatalf("%d notifications, want none more while dropping", n)
		}
	})
}

func TestNotificationRegistrationRefused(t *testing.T) {
	fake, c, token, loc := licenceSetup(t, 1)
	rcv := newReceiver(t)
	for name, tc := range map[string]struct {
		url    string
		number int
	}{
		"NotHTTPS":    {"http://orchard.example.com/apple/notifications", 9712},
		"Unreachable": {"http://127.0.0.1:1/apple/notifications", 9728},
		"Answers400":  {rcv.URL + "/refuses", 9728},
	} {
		t.Run(name, func(t *testing.T) {
			rcv.mu.Lock()
			rcv.fails = name == "Answers400"
			rcv.mu.Unlock()
			_, err := register(t, c, token, tc.url)
			var ae *apple.Error
			if fault.CodeOf(err) != fault.BadUserInput || !errors.As(err, &ae) || ae.Number != tc.number {
				t.Fatalf("got %v, want BAD_USER_INPUT with %d", err, tc.number)
			}
		})
	}
	_, err := c.UpdateClientConfig(ctx, token, apple.ClientConfigUpdate{Notifications: &apple.NotificationSettings{URL: rcv.URL}})
	if ae := (*apple.Error)(nil); !errors.As(err, &ae) || ae.Number != 9710 {
		t.Fatalf("URL without secret: %v, want 9710", err)
	}
	fake.Update(func() {
		if loc.NotificationURL != "" {
			t.Errorf("a refused URL was registered: %s", loc.NotificationURL)
		}
	})
}
