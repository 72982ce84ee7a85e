package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// startConsoleLicences is a server with one ACTIVE token for Contoso whose two
// apps are synced: 400000000 with 50 licences available and 400000001 with 2
// (at or below the default threshold of 5). The apps have no names (a name
// would bring an icon from Apple's CDN, which this machine cannot reach).
// The fake Apple notifies the server at its loopback ORCHARD_PUBLIC_URL.
func startConsoleLicences(t *testing.T, env map[string]string) *licenceSetup {
	t.Helper()
	addr := freeAddr(t)
	all := map[string]string{"ORCHARD_LISTEN": addr, "ORCHARD_PUBLIC_URL": "http://" + addr,
		"ORCHARD_APPLE_EVENT_POLL": "100ms", "ORCHARD_APPLE_NOTIFY_WAIT": "1h"}
	for k, v := range env {
		all[k] = v
	}
	s := startServer(t, all)
	s.Fake.EventDelay = 30 * time.Millisecond
	ls := &licenceSetup{s: s, admin: s.key(), apps: map[string]string{}}
	ls.customer = s.createCustomer(ls.admin, "Contoso")
	year := time.Now().AddDate(1, 0, 0)
	file := appletest.TokenFile("Contoso Ltd", year, "contoso-console-licences")
	assets := appletest.MakeAssets(2)
	assets[0].TotalCount, assets[0].AssignedCount, assets[0].AvailableCount = 50, 0, 50
	assets[1].TotalCount, assets[1].AssignedCount, assets[1].AvailableCount = 2, 0, 2
	ls.loc = &appletest.Location{UID: "2049025000431440", Name: "Contoso HQ", ExpiresAt: year, Assets: assets}
	s.Fake.AddLocation(file, ls.loc)
	var up uploadResult
	s.upload(ls.admin, ls.customer, file).decode(t, &up)
	ls.token = up.UploadServerToken.Token.ID
	s.action(ls.admin, "confirmServerToken", ls.token).decode(t, &struct{}{})
	waitFor(t, func() bool {
		var out struct {
			Apps struct {
				Edges []struct {
					Node struct{ ID, AdamID, Name string }
				}
			}
		}
		s.gql(ls.admin, `query($id: ID!) { apps(first: 10, where: {hasTokenWith: [{id: $id}]}) { edges { node { id adamID } } } }`, map[string]any{"id": ls.token}).decode(t, &out)
		for _, e := range out.Apps.Edges {
			ls.apps[e.Node.AdamID] = e.Node.ID
		}
		return len(ls.apps) == 2
	})
	return ls
}

// Xpaths into the Licences tab.
const (
	opsTable = `//table[contains(@class, "operations")]`
	asgTable = `//table[contains(@class, "assignments")]`
)

// fill replaces a field's text as typing would, firing the input event.
func fill(xpath, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const el = document.evaluate(%q, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
		el.focus();
		el.value = %q;
		el.dispatchEvent(new Event('input', {bubbles: true}));
	})()`, xpath, text))
}

func appChoice(name string) string {
	return fmt.Sprintf(`//fieldset[contains(@class, "app-picker")]//label[contains(., %q)]/input`, name)
}

// The token page's Licences tab in a real browser: assign an app to two
// devices through the form and watch the operation go from Pending to
// Complete without a reload, the assignments follow, an over-assignment
// names the failed pair, a threshold edited in the Apps table, licence
// warnings live on the token page and the overview, and a viewer key that
// sees no licence action.
func TestConsoleLicences(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		ls := startConsoleLicences(t, env)
		s := ls.s
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("server log:\n%s", s.Log)
			}
		})
		ctx := browser(t)
		nodes := func(xpath string) int {
			t.Helper()
			n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.evaluate(%q, document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null).snapshotLength`, xpath)))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}

		signIn(ctx, t, s.URL, ls.admin)
		// Events stay PENDING until released, so the browser sees both states.
		s.Fake.Update(func() { s.Fake.HoldEvents = true })
		do(ctx, t, "opening the token", chromedp.Navigate(s.URL+"/#/tokens/"+ls.token), waitText(`//h1[normalize-space()="Contoso HQ"]`),
			click(`//*[@role="tab" and normalize-space()="Licences"]`), waitText(heading("Operations")),
			waitText(opsTable+`/caption[contains(., "No licence operation yet")]`))
		if sel, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[role=tab][aria-selected=true]').textContent + ' ' + location.hash`)); err != nil || !strings.HasPrefix(sel, "Licences #/tokens/") || !strings.HasSuffix(sel, "?tab=licences") {
			t.Errorf("selected tab and URL: %q (%v)", sel, err)
		}
		// 400000001 is at 2 of the default 5 since the first sync: its warning
		// is on the token page.
		do(ctx, t, "the token's licence warning", waitText(`//ul[contains(@class, "licence-warnings")]/li[contains(., "adamID 400000001") and contains(., "2 licences left") and contains(., "Low")]`))
		// Marks this page load: a reload would lose it.
		do(ctx, t, "marking the page", chromedp.Evaluate[chromedp.Void](`window.orchardSamePage = true`))

		// Assign 400000000 to two devices (typed with a blank line and a repeat).
		do(ctx, t, "filling the assign form", click(appChoice("adamID 400000000")),
			chromedp.SendKeys(labelled("Serial numbers, one per line"), "C02SN0001\rC02SN0002\r\rC02SN0001", chromedp.NodeVisible),
			click(button("Assign licences")),
			waitText(`//p[@role="status" and contains(., "Assign started for 2 licences")]`),
			waitText(opsTable+`//tr[@data-status="PENDING"]/td[normalize-space()="Pending"]`))
		if n := nodes(opsTable + `/tbody/tr`); n != 1 {
			t.Fatalf("%d operations listed, want 1", n)
		}
		if got := textOf(ctx, t, "table.operations tbody tr"); !strings.Contains(got, "Assign") || !strings.Contains(got, "2") {
			t.Errorf("the pending operation reads %q", got)
		}
		s.Fake.Update(func() { s.Fake.HoldEvents = false })
		s.Fake.ReleaseEvents()
		do(ctx, t, "the operation completing live", waitText(opsTable+`//tr[@data-status="COMPLETE"]/td[normalize-space()="Complete"]`),
			waitText(asgTable+`//td[normalize-space()="C02SN0001"]`), waitText(asgTable+`//td[normalize-space()="C02SN0002"]`))
		if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.orchardSamePage === true`)); err != nil || !same {
			t.Fatalf("the page reloaded (%v)", err)
		}
		if got := textOf(ctx, t, "table.assignments tbody"); strings.Count(got, "400000000") != 2 {
			t.Errorf("the assignments table reads %q", got)
		}
		// Filter by serial number, then by app.
		do(ctx, t, "filtering by serial number", chromedp.SendKeys(labelled("Serial number"), "sn0002", chromedp.NodeVisible),
			waitText(asgTable+`/caption[contains(., "of 1")]`))
		if got := textOf(ctx, t, "table.assignments tbody"); !strings.Contains(got, "C02SN0002") || strings.Contains(got, "C02SN0001") {
			t.Errorf("filtered by serial number: %q", got)
		}
		do(ctx, t, "filtering by app", fill(labelled("Serial number"), ""), chromedp.SendKeys(labelled("App"), "400000001", chromedp.NodeVisible),
			waitText(asgTable+`/caption[contains(., "No assignment matches")]`),
			fill(labelled("App"), "400000000"),
			waitText(asgTable+`/caption[contains(., "of 2")]`))

		// Over-assignment: 400000001 has 2 licences for 3 devices. The third
		// pair fails with the server's message, and the app is exhausted.
		do(ctx, t, "over-assigning", click(appChoice("adamID 400000000")), click(appChoice("adamID 400000001")),
			fill(labelled("Serial numbers, one per line"), "C02SN0001\nC02SN0002\nC02SN0003\n"),
			click(button("Assign licences")),
			waitText(opsTable+`//tr[@data-status="PARTIAL"]//ul[contains(@class, "failures")]/li`))
		var op struct {
			Node struct {
				LicenceOperations struct {
					Edges []struct{ Node operationView }
				}
			}
		}
		s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on ServerToken { licenceOperations(first: 1, orderBy: {field: CREATED_AT, direction: DESC}) { edges { node { `+operationFields+` } } } } } }`,
			map[string]any{"id": ls.token}).decode(t, &op)
		if len(op.Node.LicenceOperations.Edges) != 1 || len(op.Node.LicenceOperations.Edges[0].Node.Failures) != 1 {
			t.Fatalf("the over-assignment over GraphQL: %+v", op)
		}
		f := op.Node.LicenceOperations.Edges[0].Node.Failures[0]
		shown := textOf(ctx, t, "table.operations tbody tr:first-child ul.failures")
		for _, want := range []string{"adamID 400000001", "serial number C02SN0003", f.Message, f.Code} {
			if !strings.Contains(shown, want) {
				t.Errorf("the failure shows %q, want it to contain %q", shown, want)
			}
		}
		if got := textOf(ctx, t, "table.operations tbody tr:first-child"); !strings.Contains(got, "Partly done") {
			t.Errorf("the partial operation reads %q", got)
		}
		do(ctx, t, "the exhausted warning, live", waitText(`//ul[contains(@class, "licence-warnings")]/li[contains(., "adamID 400000001") and contains(., "0 licences left") and contains(., "Exhausted")]`))
		// The picker's counts followed the operations too.
		do(ctx, t, "the picker's counts", waitText(`//fieldset[contains(@class, "app-picker")]//label[contains(., "adamID 400000000") and contains(., "48 available")]`))
		shoot(ctx, t, "7-licences-tab")
		// A form mistake is caught before anything is sent.
		do(ctx, t, "assigning without apps", click(appChoice("adamID 400000001")), click(button("Assign licences")))
		if got := alertText(ctx, t); got != "Choose at least one app." {
			t.Errorf("the alert says %q", got)
		}

		// The threshold in the Apps table: 400000000 warns at 10 from now on.
		do(ctx, t, "editing a threshold", click(`//*[@role="tab" and starts-with(normalize-space(), "Apps")]`),
			// Before: the server's default, by its number.
			waitText(`//tr[contains(., "adamID 400000000")]/td[contains(@class, "threshold") and starts-with(normalize-space(), "5 (default)")]`),
			click(button("Edit threshold for adamID 400000000")),
			chromedp.SendKeys(labelled("Low-licence threshold for adamID 400000000"), "10", chromedp.NodeVisible),
			click(button("Save")), waitText(`//tr[contains(., "adamID 400000000")]/td[contains(@class, "threshold") and starts-with(normalize-space(), "10")]`))
		var app struct {
			Node struct{ LowLicenceThreshold *int }
		}
		s.gql(ls.admin, `query($id: ID!) { node(id: $id) { ... on App { lowLicenceThreshold } } }`, map[string]any{"id": ls.apps["400000000"]}).decode(t, &app)
		if app.Node.LowLicenceThreshold == nil || *app.Node.LowLicenceThreshold != 10 {
			t.Errorf("400000000's threshold over GraphQL: %v", app.Node.LowLicenceThreshold)
		}
		// 400000000's counts followed the operation without a sync.
		if got := textOf(ctx, t, ".apps table.data tbody"); !strings.Contains(got, "48") {
			t.Errorf("the Apps table after the assignment: %q", got)
		}

		// A warning raised elsewhere (a threshold set over GraphQL) appears
		// on the expiry overview without a reload.
		do(ctx, t, "opening the overview", click(`//nav//a[starts-with(normalize-space(), "Expiry overview")]`), waitText(heading("Licence warnings")),
			waitText(`//ul[contains(@class, "licence-warnings")]/li[contains(., "adamID 400000001") and contains(., "Exhausted") and contains(., "Contoso HQ")]`))
		if r := s.gql(ls.admin, `mutation($id: ID!) { updateApp(id: $id, input: {lowLicenceThreshold: 60}) { id } }`, map[string]any{"id": ls.apps["400000000"]}); len(r.Errors) > 0 {
			t.Fatal(r.Raw)
		}
		do(ctx, t, "the live licence warning", waitText(`//ul[contains(@class, "licence-warnings")]/li[contains(., "adamID 400000000") and contains(., "48 licences left") and contains(., "warns at 60")]`))
		if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.orchardSamePage === true`)); err != nil || !same {
			t.Fatalf("the page reloaded (%v)", err)
		}
		shoot(ctx, t, "8-overview-licence-warnings")

		// A viewer reads everything and sees no licence action.
		viewer := s.key("--role", "viewer")
		do(ctx, t, "signing out", click(button("Sign out")), waitText(labelled("API key")))
		signIn(ctx, t, s.URL, viewer)
		do(ctx, t, "the viewer's Licences tab", chromedp.Navigate(s.URL+"/#/tokens/"+ls.token+"?tab=licences"),
			waitText(opsTable+`//tr[@data-status="PARTIAL"]`), waitText(asgTable+`//td[normalize-space()="C02SN0002"]`))
		actions := `[...document.querySelectorAll('button, a, textarea, input[type=checkbox]')].filter(e => e.tagName === 'TEXTAREA' || e.type === 'checkbox' || /Assign licences|Unassign licences|Revoke|Edit/.test(e.textContent)).length`
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](actions))
		if err != nil || n != 0 {
			t.Errorf("a viewer sees %d licence controls on the Licences tab (%v)", n, err)
		}
		do(ctx, t, "the viewer's Apps tab", click(`//*[@role="tab" and starts-with(normalize-space(), "Apps")]`), waitText(`//td[contains(., "adamID 400000000")]`))
		if n, err = chromedp.Run(ctx, chromedp.Evaluate[int](actions)); err != nil || n != 0 {
			t.Errorf("a viewer sees %d licence controls on the Apps tab (%v)", n, err)
		}
	})
}

// The tabs work with the keyboard alone: arrow keys move between them and
// a revoke asks once more, with the focus on the question. A refused action
// shows the server's message.
func TestConsoleLicencesKeyboard(t *testing.T) {
	ls := startConsoleLicences(t, nil)
	s := ls.s
	ctx := browser(t)
	signIn(ctx, t, s.URL, ls.admin)
	do(ctx, t, "opening the token", chromedp.Navigate(s.URL+"/#/tokens/"+ls.token), waitText(`//h1[normalize-space()="Contoso HQ"]`),
		chromedp.Focus(`//*[@role="tab" and starts-with(normalize-space(), "Apps")]`), chromedp.KeyEvent(kb.ArrowRight), waitText(heading("Operations")))
	if got := focusedOn(ctx, t, is("Licences")); got != "Licences" {
		t.Errorf("after ArrowRight the focus is on %q", got)
	}
	do(ctx, t, "asking to revoke", chromedp.SendKeys(labelled("Serial numbers to revoke, one per line"), "C02SN0009", chromedp.NodeVisible),
		chromedp.Focus(button("Revoke licences")), chromedp.KeyEvent("\r"), waitText(button("Keep them")),
		// The focus moves once the question is painted.
		chromedp.Poll[chromedp.Void](`document.activeElement && document.activeElement.id === 'revoke-q'`, chromedp.WithPollingTimeout(3*time.Second)))
	const revokeQuestion = "Revoke every licence of 1 device under Contoso HQ?"
	if got := focusedOn(ctx, t, func(s string) bool { return strings.Contains(s, revokeQuestion) }); !strings.Contains(got, revokeQuestion) {
		t.Errorf("the focus is on %q, want the question", got)
	}
	do(ctx, t, "revoking", click(button("Revoke")), waitText(`//p[@role="status" and contains(., "Revoke started")]`),
		waitText(opsTable+`//tr[@data-status="COMPLETE"]/td[normalize-space()="Revoke"]`))
	do(ctx, t, "back to Apps", chromedp.Focus(`//*[@role="tab" and normalize-space()="Licences"]`), chromedp.KeyEvent(kb.ArrowLeft), waitText(`//td[contains(., "adamID 400000000")]`))
	if got := focusedOn(ctx, t, func(s string) bool { return strings.HasPrefix(s, "Apps") }); !strings.HasPrefix(got, "Apps") {
		t.Errorf("after ArrowLeft the focus is on %q", got)
	}

	// The token is deleted elsewhere while the form is open: the server's
	// refusal is shown as it wrote it.
	do(ctx, t, "back to Licences", chromedp.KeyEvent(kb.ArrowRight), waitText(heading("Operations")),
		click(appChoice("adamID 400000000")), fill(labelled("Serial numbers, one per line"), "C02SN0010"))
	if r := s.gql(ls.admin, `mutation($t: ID!) { deleteServerToken(input: {tokenID: $t}) { deletedID } }`, map[string]any{"t": ls.token}); len(r.Errors) > 0 {
		t.Fatal(r.Raw)
	}
	want := ls.assign(ls.admin, "assignLicences", "400000000", "C02SN0010")
	if len(want.Errors) == 0 {
		t.Fatalf("assigning on a deleted token: %s", want.Raw)
	}
	do(ctx, t, "assigning on the deleted token", click(button("Assign licences")))
	if got := alertText(ctx, t); got != want.Errors[0].Message {
		t.Errorf("the alert says %q, want the server's %q", got, want.Errors[0].Message)
	}
}
