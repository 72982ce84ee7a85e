package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// userOp starts mutation with devices and users at once.
func (ls *licenceSetup) userOp(t *testing.T, mutation string, adamID string, serials, users []string) operationView {
	t.Helper()
	input := `{tokenID: $t, assets: [{adamID: $a}], serialNumbers: $s, clientUserIDs: $u}`
	vars := map[string]any{"t": ls.token, "a": adamID, "s": serials, "u": users}
	if mutation == "revokeLicences" {
		input = `{tokenID: $t, serialNumbers: $s, clientUserIDs: $u}`
		delete(vars, "a")
	}
	decl := `$t: ID!, $a: String!, $s: [String!], $u: [String!]`
	if mutation == "revokeLicences" {
		decl = `$t: ID!, $s: [String!], $u: [String!]`
	}
	var out map[string]struct{ Operation operationView }
	ls.s.gql(ls.admin, `mutation(`+decl+`) { `+mutation+`(input: `+input+`) { operation { `+operationFields+` } } }`, vars).decode(t, &out)
	op := out[mutation].Operation
	if op.ID == "" {
		t.Fatalf("%s gave no operation", mutation)
	}
	return op
}

type assignmentRow struct {
	ID           string
	AdamID       string
	SerialNumber *string
	ClientUserID *string
}

func (r assignmentRow) String() string {
	if r.SerialNumber != nil {
		return r.AdamID + "/s:" + *r.SerialNumber
	}
	if r.ClientUserID != nil {
		return r.AdamID + "/u:" + *r.ClientUserID
	}
	return r.AdamID + "/?"
}

// allAssignments lists the token's assignments matching where, devices and
// users alike, sorted by String.
func (ls *licenceSetup) allAssignments(t *testing.T, where map[string]any) []assignmentRow {
	t.Helper()
	var out struct {
		Node struct {
			Assignments struct {
				TotalCount int
				Edges      []struct{ Node assignmentRow }
			}
		}
	}
	ls.s.gql(ls.admin, `query($id: ID!, $w: LicenceAssignmentWhereInput) { node(id: $id) { ... on ServerToken { assignments(first: 100, where: $w) { totalCount edges { node { id adamID serialNumber clientUserID } } } } } }`,
		map[string]any{"id": ls.token, "w": where}).decode(t, &out)
	var rows []assignmentRow
	for _, e := range out.Node.Assignments.Edges {
		rows = append(rows, e.Node)
	}
	if out.Node.Assignments.TotalCount != len(rows) {
		t.Fatalf("totalCount %d, %d edges", out.Node.Assignments.TotalCount, len(rows))
	}
	slices.SortFunc(rows, func(a, b assignmentRow) int {
		if a.String() < b.String() {
			return -1
		}
		return 1
	})
	return rows
}

func names(rows []assignmentRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.String()
	}
	return out
}

// An event Apple still calls PENDING after the resend window is sent again;
// the operation ends once, each pair counted once.
func TestLicencesResendPending(t *testing.T) {
	resendAfter.Store(int64(400 * time.Millisecond))
	t.Cleanup(func() { resendAfter.Store(0) })
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, false, nil)
		f := ls.s.Fake
		f.Update(func() { f.HoldEvents = true })
		before := f.Count("POST /mdm/v2/assets/associate")
		op := ls.startOp(t, "assignLicences", "400000000", "SN1", "SN2")
		waitFor(t, func() bool { return f.Count("POST /mdm/v2/assets/associate")-before >= 2 })
		if f.Count("GET /mdm/v2/status") == 0 {
			t.Fatal("resent without asking Apple's status first")
		}
		var pending struct{ Node operationView }
		ls.s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on LicenceOperation { `+operationFields+` } } }`, map[string]any{"id": op.ID}).decode(t, &pending)
		if pending.Node.Status != "PENDING" || pending.Node.Completed != 0 {
			t.Fatalf("before Apple ends the events: %+v", pending.Node)
		}
		// Apple ends the first request and the resent one alike.
		f.Update(func() { f.HoldEvents = false })
		f.ReleaseEvents()
		done := ls.waitOp(t, op.ID)
		if done.Status != "COMPLETE" || done.Completed != 2 || done.Requested != 2 || len(done.Failures) != 0 {
			t.Fatalf("operation = %+v", done)
		}
		time.Sleep(300 * time.Millisecond) // a stray check or resend would land now
		if c := ls.counts(t, "400000000"); c.AssignedCount != 2 || c.AvailableCount != 48 {
			t.Fatalf("counts after a resent assign of 2: %+v", c)
		}
		if got := names(ls.allAssignments(t, nil)); !slices.Equal(got, []string{"400000000/s:SN1", "400000000/s:SN2"}) {
			t.Fatalf("assignments = %v", got)
		}
		if again := ls.waitOp(t, op.ID); again.Completed != 2 || again.Status != "COMPLETE" {
			t.Fatalf("operation changed after it ended: %+v", again)
		}
	})
}

// After the first full read, a sync reads only what changed at Apple since
// the versionId it stored, and leaves the rows it has alone.
func TestLicencesIncrementalAssignmentSync(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, false, nil)
		f := ls.s.Fake
		const reads = "GET /mdm/v2/assignments"
		// The confirm's first sync reads the assignments after the apps,
		// which startLicences waited for: wait for that read too.
		waitFor(t, func() bool { return len(f.Queries(reads)) > 0 })
		time.Sleep(100 * time.Millisecond) // a second read would land now
		first := f.Queries(reads)
		if len(first) != 1 || first[0].Get("sinceVersionId") != "" {
			t.Fatalf("the confirm's sync read assignments %v, want one full read", first)
		}
		op := ls.startOp(t, "assignLicences", "400000000", "SN1", "SN2")
		if ls.waitOp(t, op.ID).Status != "COMPLETE" {
			t.Fatal("assign did not complete")
		}
		mine := ls.allAssignments(t, nil)

		// Another tool assigns at Apple; one assignment Orchard never made
		// leaves Apple without Orchard hearing of it.
		f.Assign(ls.loc,
			appletest.Assignment{AdamID: "400000000", PricingParam: "STDQ", SerialNumber: "EXT1"},
			appletest.Assignment{AdamID: "400000001", PricingParam: "STDQ", ClientUserID: "user-ext"})
		var tok struct {
			SyncServerToken struct{ Token struct{ ID string } }
		}
		ls.s.gql(ls.admin, `mutation($t: ID!) { syncServerToken(input: {tokenID: $t}) { token { id } } }`, map[string]any{"t": ls.token}).decode(t, &tok)
		all := f.Queries(reads)
		if len(all) != 2 {
			t.Fatalf("the sync read assignments %d times, want 1", len(all)-1)
		}
		since := all[1].Get("sinceVersionId")
		if since == "" || all[1].Get("pageIndex") != "" && all[1].Get("pageIndex") != "0" {
			t.Fatalf("the sync's read was %v, want an incremental read of one page", all[1])
		}
		got := ls.allAssignments(t, nil)
		want := []string{"400000000/s:EXT1", "400000000/s:SN1", "400000000/s:SN2", "400000001/u:user-ext"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("assignments after the sync = %v, want %v", names(got), want)
		}
		// The rows Orchard had are the same rows (same IDs), not rewritten.
		for _, m := range mine {
			i := slices.IndexFunc(got, func(r assignmentRow) bool { return r.String() == m.String() })
			if got[i].ID != m.ID {
				t.Fatalf("%s was rewritten: id %s → %s", m, m.ID, got[i].ID)
			}
		}
		// Nothing changed at Apple: the next read is incremental again and
		// brings nothing.
		ls.s.gql(ls.admin, `mutation($t: ID!) { syncServerToken(input: {tokenID: $t}) { token { id } } }`, map[string]any{"t": ls.token}).decode(t, &tok)
		all = f.Queries(reads)
		if len(all) != 3 || all[2].Get("sinceVersionId") == "" {
			t.Fatalf("third read %v", all[len(all)-1])
		}
		if after := ls.allAssignments(t, nil); !slices.Equal(names(after), want) {
			t.Fatalf("an empty incremental read changed assignments: %v", names(after))
		}
	})
}

// Devices and users together: assign, unassign and revoke each end with
// counts and assignments back where Apple has them.
func TestLicencesUnassignAndUsers(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, nil)
		op := ls.userOp(t, "assignLicences", "400000000", []string{"SN1", "SN2"}, []string{"user-1", "user-2"})
		if op.Requested != 4 {
			t.Fatalf("requested %d, want 2 devices + 2 users", op.Requested)
		}
		if done := ls.waitOp(t, op.ID); done.Status != "COMPLETE" || done.Completed != 4 {
			t.Fatalf("assign = %+v", done)
		}
		if c := ls.counts(t, "400000000"); c.AssignedCount != 4 || c.AvailableCount != 46 {
			t.Fatalf("counts after assign = %+v", c)
		}
		if got := names(ls.allAssignments(t, map[string]any{"clientUserID": "user-2"})); !slices.Equal(got, []string{"400000000/u:user-2"}) {
			t.Fatalf("assignments of user-2 = %v", got)
		}

		t.Run("Unassign", func(t *testing.T) {
			op := ls.userOp(t, "unassignLicences", "400000000", []string{"SN1"}, []string{"user-1"})
			done := ls.waitOp(t, op.ID)
			if done.Kind != "UNASSIGN" || done.Status != "COMPLETE" || done.Completed != 2 || done.Requested != 2 {
				t.Fatalf("unassign = %+v", done)
			}
			if c := ls.counts(t, "400000000"); c.AssignedCount != 2 || c.AvailableCount != 48 {
				t.Fatalf("counts after unassign = %+v", c)
			}
			want := []string{"400000000/s:SN2", "400000000/u:user-2"}
			if got := names(ls.allAssignments(t, nil)); !slices.Equal(got, want) {
				t.Fatalf("assignments after unassign = %v, want %v", got, want)
			}
			if n := len(ls.s.Fake.Assignments(ls.loc)); n != 2 {
				t.Fatalf("Apple holds %d assignments, want 2", n)
			}
		})

		t.Run("UnassignNothing", func(t *testing.T) {
			// SN1 holds nothing any more: Apple reports success and the
			// counts do not move.
			op := ls.userOp(t, "unassignLicences", "400000000", []string{"SN1"}, nil)
			if done := ls.waitOp(t, op.ID); done.Status != "COMPLETE" {
				t.Fatalf("unassign of an unassigned device = %+v", done)
			}
			if c := ls.counts(t, "400000000"); c.AssignedCount != 2 || c.AvailableCount != 48 {
				t.Fatalf("counts moved: %+v", c)
			}
		})

		t.Run("RevokeUser", func(t *testing.T) {
			op := ls.userOp(t, "revokeLicences", "", nil, []string{"user-2"})
			done := ls.waitOp(t, op.ID)
			if done.Kind != "REVOKE" || done.Status != "COMPLETE" || done.Requested != 1 {
				t.Fatalf("revoke = %+v", done)
			}
			if got := names(ls.allAssignments(t, nil)); !slices.Equal(got, []string{"400000000/s:SN2"}) {
				t.Fatalf("assignments after revoking user-2 = %v", got)
			}
			if c := ls.counts(t, "400000000"); c.AssignedCount != 1 || c.AvailableCount != 49 {
				t.Fatalf("counts after revoke = %+v", c)
			}
		})
	})
}

// Apple's limits shrink while Orchard still holds the old ones (it reads
// them every 5 minutes): the request Apple refuses as too large (9702) is
// cut again by freshly read limits, and the operation ends as if the
// limits had been known.
func TestLicencesLimitsShrinkWithinCache(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startLicences(t, env, true, nil)
		f := ls.s.Fake
		// The first operation reads (and caches) maxSerialNumbers 1000.
		op := ls.startOp(t, "assignLicences", "400000000", "SN0")
		if ls.waitOp(t, op.ID).Status != "COMPLETE" {
			t.Fatal("first assign did not complete")
		}
		configs := f.Count("GET /mdm/v2/service/config")
		f.SetLimits(map[string]int{"maxSerialNumbers": 10})
		before := f.Count("POST /mdm/v2/assets/associate")
		serials := make([]string, 25)
		for i := range serials {
			serials[i] = fmt.Sprintf("SHRINK%02d", i)
		}
		op = ls.startOp(t, "assignLicences", "400000000", serials...)
		done := ls.waitOp(t, op.ID)
		if done.Status != "COMPLETE" || done.Completed != 25 || done.Requested != 25 || len(done.Failures) != 0 {
			t.Fatalf("operation after the limits shrank = %+v", done)
		}
		if n := f.Count("POST /mdm/v2/assets/associate") - before; n != 4 {
			t.Fatalf("%d associate requests, want the refused one and 3 of at most 10", n)
		}
		if n := f.Count("GET /mdm/v2/service/config") - configs; n != 1 {
			t.Fatalf("service config read %d more times, want 1", n)
		}
		if c := ls.counts(t, "400000000"); c.AssignedCount != 26 || c.AvailableCount != 24 {
			t.Fatalf("counts = %+v", c)
		}

		t.Run("RefusedForAnotherReason", func(t *testing.T) {
			// Limits that have not changed leave a 9702 a failure of its
			// pairs, with what to do.
			f.Fail(appletest.Failure{ErrorNumber: 9702})
			op := ls.startOp(t, "assignLicences", "400000000", "LATE1")
			done := ls.waitOp(t, op.ID)
			if done.Status != "FAILED" || len(done.Failures) != 1 || done.Failures[0].Code != "9702" {
				t.Fatalf("operation = %+v", done)
			}
		})
	})
}
