package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// licenceSetup is a server with one ACTIVE token whose apps are synced.
type licenceSetup struct {
	s        *testServer
	admin    string
	customer string
	token    string
	loc      *appletest.Location
	apps     map[string]string // adamID → App ID
}

// startLicences starts a server reachable by the fake Apple at a loopback
// ORCHARD_PUBLIC_URL when notify is true.
func startLicences(t *testing.T, env map[string]string, notify bool, extra map[string]string, prepare ...func(*appletest.Server)) *licenceSetup {
	t.Helper()
	addr := freeAddr(t)
	all := map[string]string{"ORCHARD_LISTEN": addr, "ORCHARD_APPLE_EVENT_POLL": "100ms", "ORCHARD_APPLE_NOTIFY_WAIT": "1h"}
	if notify {
		all["ORCHARD_PUBLIC_URL"] = "http://" + addr
	}
	for k, v := range env {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	s := startServer(t, all)
	s.Fake.EventDelay = 30 * time.Millisecond
	for _, p := range prepare {
		p(s.Fake)
	}
	ls := &licenceSetup{s: s, admin: s.key(), apps: map[string]string{}}
	ls.customer = s.createCustomer(ls.admin, "Contoso")
	year := time.Now().AddDate(1, 0, 0)
	file := appletest.TokenFile("Contoso Ltd", year, "contoso-licences")
	assets := appletest.MakeAssets(2)
	assets[0].TotalCount, assets[0].AssignedCount, assets[0].AvailableCount = 50, 0, 50
	assets[1].TotalCount, assets[1].AssignedCount, assets[1].AvailableCount = 2, 0, 2
	ls.loc = &appletest.Location{UID: "2049025000431439", Name: "Contoso HQ", ExpiresAt: year, Assets: assets}
	s.Fake.AddLocation(file, ls.loc)
	var up uploadResult
	s.upload(ls.admin, ls.customer, file).decode(t, &up)
	ls.token = up.UploadServerToken.Token.ID
	s.action(ls.admin, "confirmServerToken", ls.token).decode(t, &struct{}{})
	waitFor(t, func() bool {
		var out struct {
			Node struct {
				Apps struct {
					Edges []struct{ Node struct{ ID, AdamID string } }
				}
			}
		}
		s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on ServerToken { apps(first: 10) { edges { node { id adamID } } } } } }`, map[string]any{"id": ls.token}).decode(t, &out)
		for _, e := range out.Node.Apps.Edges {
			ls.apps[e.Node.AdamID] = e.Node.ID
		}
		return len(ls.apps) == 2
	})
	return ls
}

type operationView struct {
	ID        string
	Kind      string
	Status    string
	Requested int
	Completed int
	Failures  []struct {
		AdamID       *string
		SerialNumber *string
		ClientUserID *string
		Code         string
		Message      string
	}
	CompletedAt *string
}

const operationFields = `id kind status requested completed completedAt failures { adamID serialNumber clientUserID code message }`

func (ls *licenceSetup) assign(key, mutation string, adamID string, serials ...string) *gqlResponse {
	return ls.s.gql(key, `mutation($t: ID!, $a: String!, $s: [String!]) { `+mutation+`(input: {tokenID: $t, assets: [{adamID: $a}], serialNumbers: $s}) { operation { `+operationFields+` } } }`,
		map[string]any{"t": ls.token, "a": adamID, "s": serials})
}

func (ls *licenceSetup) startOp(t *testing.T, mutation, adamID string, serials ...string) operationView {
	t.Helper()
	var out map[string]struct{ Operation operationView }
	ls.assign(ls.admin, mutation, adamID, serials...).decode(t, &out)
	op := out[mutation].Operation
	if op.Requested != len(serials) || op.ID == "" {
		t.Fatalf("%s = %+v", mutation, op)
	}
	return op
}

// waitOp waits for an operation to end and returns it.
func (ls *licenceSetup) waitOp(t *testing.T, id string) operationView {
	t.Helper()
	var op operationView
	waitFor(t, func() bool {
		var out struct{ Node operationView }
		ls.s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on LicenceOperation { `+operationFields+` } } }`, map[string]any{"id": id}).decode(t, &out)
		op = out.Node
		return op.Status != "PENDING"
	})
	return op
}

type appCounts struct{ TotalCount, AssignedCount, AvailableCount int }

func (ls *licenceSetup) counts(t *testing.T, adamID string) appCounts {
	t.Helper()
	var out struct{ Node appCounts }
	ls.s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on App { totalCount assignedCount availableCount } } }`, map[string]any{"id": ls.apps[adamID]}).decode(t, &out)
	return out.Node
}

func (ls *licenceSetup) assignments(t *testing.T, where map[string]any) []string {
	t.Helper()
	var out struct {
		Node struct {
			Assignments struct {
				TotalCount int
				Edges      []struct {
					Node struct {
						AdamID       string
						SerialNumber *string
						App          *struct{ ID string }
					}
				}
			}
		}
	}
	ls.s.gql(ls.admin, `query($id: ID!, $w: LicenceAssignmentWhereInput) { node(id: $id) { ... on ServerToken { assignments(first: 100, where: $w) { totalCount edges { node { adamID serialNumber app { id } } } } } } }`,
		map[string]any{"id": ls.token, "w": where}).decode(t, &out)
	var got []string
	for _, e := range out.Node.Assignments.Edges {
		if e.Node.SerialNumber == nil || e.Node.App == nil {
			t.Fatalf("assignment without serial number or app: %+v", e.Node)
		}
		got = append(got, e.Node.AdamID+"/"+*e.Node.SerialNumber)
	}
	return got
}

func TestLicencesByNotification(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, nil)
		s := ls.s
		if ls.loc.NotificationURL != s.URL+"/apple/notifications" || len(ls.loc.NotificationAuthToken) < 32 {
			t.Fatalf("confirm did not register notifications: %q", ls.loc.NotificationURL)
		}
		if strings.Contains(s.Log.String(), ls.loc.NotificationAuthToken) {
			t.Fatal("the notification secret is in the log")
		}

		t.Run("AssignComplete", func(t *testing.T) {
			op := ls.startOp(t, "assignLicences", "400000000", "SN1", "SN2", "SN3")
			if op.Kind != "ASSIGN" {
				t.Fatalf("kind %s", op.Kind)
			}
			done := ls.waitOp(t, op.ID)
			if done.Status != "COMPLETE" || done.Completed != 3 || len(done.Failures) != 0 || done.CompletedAt == nil {
				t.Fatalf("operation = %+v", done)
			}
			if n := s.Fake.Count("GET /mdm/v2/status"); n != 0 {
				t.Fatalf("polled Apple %d times although the notification came", n)
			}
			if c := ls.counts(t, "400000000"); c.AssignedCount != 3 || c.AvailableCount != 47 {
				t.Fatalf("counts after assign = %+v", c)
			}
			if got := ls.assignments(t, map[string]any{"serialNumber": "SN2"}); len(got) != 1 || got[0] != "400000000/SN2" {
				t.Fatalf("assignments of SN2 = %v", got)
			}
			if got := ls.assignments(t, map[string]any{"adamID": "400000000"}); len(got) != 3 {
				t.Fatalf("assignments of the app = %v", got)
			}
		})

		t.Run("OverAssignmentPartial", func(t *testing.T) {
			op := ls.startOp(t, "assignLicences", "400000001", "SN1", "SN2", "SN3")
			done := ls.waitOp(t, op.ID)
			if done.Status != "PARTIAL" || done.Completed != 2 || len(done.Failures) != 1 {
				t.Fatalf("operation = %+v", done)
			}
			f := done.Failures[0]
			if f.Code != "9709" || f.SerialNumber == nil || *f.SerialNumber != "SN3" || f.AdamID == nil || *f.AdamID != "400000001" || !strings.Contains(f.Message, "Buy more") {
				t.Fatalf("failure = %+v", f)
			}
			if c := ls.counts(t, "400000001"); c.AssignedCount != 2 || c.AvailableCount != 0 {
				t.Fatalf("counts = %+v", c)
			}
		})

		t.Run("Revoke", func(t *testing.T) {
			var out struct {
				RevokeLicences struct{ Operation operationView }
			}
			s.gql(ls.admin, `mutation($t: ID!) { revokeLicences(input: {tokenID: $t, serialNumbers: ["SN1"]}) { operation { `+operationFields+` } } }`,
				map[string]any{"t": ls.token}).decode(t, &out)
			done := ls.waitOp(t, out.RevokeLicences.Operation.ID)
			if done.Status != "COMPLETE" || done.Kind != "REVOKE" || done.Requested != 1 {
				t.Fatalf("revoke = %+v", done)
			}
			if got := ls.assignments(t, map[string]any{"serialNumber": "SN1"}); len(got) != 0 {
				t.Fatalf("SN1 still holds %v", got)
			}
			if c := ls.counts(t, "400000000"); c.AssignedCount != 2 || c.AvailableCount != 48 {
				t.Fatalf("counts after revoke = %+v", c)
			}
		})

		t.Run("PurchaseAndDuplicate", func(t *testing.T) {
			s.Fake.DuplicateNotifications = true
			defer func() { s.Fake.DuplicateNotifications = false }()
			before := ls.counts(t, "400000000")
			s.Fake.Purchase(ls.loc, "400000000", "STDQ", 10)
			waitFor(t, func() bool { return ls.counts(t, "400000000").TotalCount != before.TotalCount })
			time.Sleep(200 * time.Millisecond) // the duplicate has arrived by now
			if c := ls.counts(t, "400000000"); c.TotalCount != before.TotalCount+10 || c.AvailableCount != before.AvailableCount+10 {
				t.Fatalf("after a purchase of 10 sent twice: %+v, before %+v", c, before)
			}
		})

		t.Run("WrongSecret", func(t *testing.T) {
			before := ls.counts(t, "400000000")
			body := `{"notification":{"adamId":"400000000","countDelta":500,"pricingParam":"STDQ"},"notificationId":"forged-1","notificationType":"ASSET_COUNT","uId":"` + ls.loc.UID + `"}`
			for _, auth := range []string{"", "Bearer wrong", "Bearer " + ls.loc.NotificationAuthToken + "x"} {
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/apple/notifications", strings.NewReader(body))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("auth %q: HTTP %d", auth, resp.StatusCode)
				}
			}
			if c := ls.counts(t, "400000000"); c != before {
				t.Fatalf("a refused notification changed counts: %+v → %+v", before, c)
			}
		})

		t.Run("Roles", func(t *testing.T) {
			viewerKey := s.key("--role", "viewer")
			if r := ls.assign(viewerKey, "assignLicences", "400000000", "SN9"); r.code() != "FORBIDDEN" {
				t.Fatalf("viewer: %s", r.Raw)
			}
			other := s.createCustomer(ls.admin, "Fabrikam")
			tech := s.key("--role", "technician", "--customer", other)
			if r := ls.assign(tech, "assignLicences", "400000000", "SN9"); r.code() != "NOT_FOUND" {
				t.Fatalf("technician of another customer: %s", r.Raw)
			}
			own := s.key("--role", "technician", "--customer", ls.customer)
			var out struct {
				AssignLicences struct{ Operation operationView }
			}
			ls.assign(own, "assignLicences", "400000000", "SN9").decode(t, &out)
			if ls.waitOp(t, out.AssignLicences.Operation.ID).Status != "COMPLETE" {
				t.Fatal("the customer's technician could not assign")
			}
		})

		t.Run("Audit", func(t *testing.T) {
			var out struct {
				AuditEvents struct {
					Edges []struct {
						Node struct{ Action, Outcome, Detail string }
					}
				}
			}
			s.gql(ls.admin, `{ auditEvents(first: 100) { edges { node { action outcome detail } } } }`, nil).decode(t, &out)
			seen := map[string]string{}
			for _, e := range out.AuditEvents.Edges {
				seen[e.Node.Action] = e.Node.Outcome
				if strings.Contains(e.Node.Detail, ls.loc.NotificationAuthToken) {
					t.Fatalf("audit detail carries the secret: %+v", e.Node)
				}
			}
			for action, outcome := range map[string]string{"licence.assign": "ok", "licence.revoke.end": "ok", "apple.notification": "ok", "apple.notifications.register": "ok"} {
				if seen[action] != outcome {
					t.Errorf("audit %s = %q, want %q (seen %v)", action, seen[action], outcome, seen)
				}
			}
			if seen["licence.assign.end"] == "" {
				t.Errorf("no audit of an operation's end: %v", seen)
			}
		})

		t.Run("BadInput", func(t *testing.T) {
			if r := ls.assign(ls.admin, "assignLicences", "999", "SN1"); r.code() != "BAD_USER_INPUT" || !strings.Contains(r.Errors[0].Message, "999") {
				t.Fatalf("unknown asset: %s", r.Raw)
			}
			if r := ls.assign(ls.admin, "assignLicences", "400000000"); r.code() != "BAD_USER_INPUT" {
				t.Fatalf("no devices: %s", r.Raw)
			}
		})
	})
}

// Apple's limits (here 10 serial numbers a request, set before Orchard
// first reads them) decide how an operation is cut.
func TestLicencesSplitByAppleLimits(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, nil, func(f *appletest.Server) { f.SetLimits(map[string]int{"maxSerialNumbers": 10}) })
		s := ls.s
		before := s.Fake.Count("POST /mdm/v2/assets/associate")
		serials := make([]string, 35)
		for i := range serials {
			serials[i] = fmt.Sprintf("BULK%02d", i)
		}
		op := ls.startOp(t, "assignLicences", "400000000", serials...)
		if done := ls.waitOp(t, op.ID); done.Status != "COMPLETE" || done.Completed != 35 {
			t.Fatalf("operation = %+v", done)
		}
		if n := s.Fake.Count("POST /mdm/v2/assets/associate") - before; n != 4 {
			t.Fatalf("35 serial numbers at 10 a request took %d requests, want 4", n)
		}
		if m := s.Fake.MaxInFlight(); m > 5 {
			t.Fatalf("%d Apple requests in flight at once", m)
		}
	})
}

func TestLicencesByPolling(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, map[string]string{"ORCHARD_APPLE_NOTIFY_WAIT": "300ms"})
		ls.s.Fake.DropNotifications = true
		op := ls.startOp(t, "assignLicences", "400000000", "SN1", "SN2")
		done := ls.waitOp(t, op.ID)
		if done.Status != "COMPLETE" || done.Completed != 2 {
			t.Fatalf("operation = %+v", done)
		}
		if ls.s.Fake.Count("GET /mdm/v2/status") == 0 {
			t.Fatal("completed without asking Apple's status")
		}
		if c := ls.counts(t, "400000000"); c.AssignedCount != 2 {
			t.Fatalf("counts = %+v", c)
		}
	})
}

// An operation in flight when the server stops is finished by the next
// server on the same database.
func TestLicencesSurviveRestart(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, false, nil)
		ls.s.Fake.HoldEvents = true
		op := ls.startOp(t, "assignLicences", "400000000", "SN1")
		ls.s.stop()
		ls.s.Fake.ReleaseEvents()
		ls.s.start()
		done := ls.waitOp(t, op.ID)
		if done.Status != "COMPLETE" || done.Completed != 1 {
			t.Fatalf("operation after restart = %+v", done)
		}
	})
}

func TestPublicURLValidation(t *testing.T) {
	for v, ok := range map[string]bool{
		"https://orchard.example.com": true, "http://127.0.0.1:8080": true, "http://localhost:9": true, "http://[::1]:80": true,
		"http://orchard.example.com": false, "ftp://x": false, "https://": false, "https://a.example/?q=1": false,
	} {
		_, _, err := loadConfig("serve", nil, func(k string) string {
			if k == "ORCHARD_PUBLIC_URL" {
				return v
			}
			return ""
		}, &bytes.Buffer{})
		if (err == nil) != ok {
			t.Errorf("ORCHARD_PUBLIC_URL=%q: err %v, want ok=%v", v, err, ok)
		}
	}
}
