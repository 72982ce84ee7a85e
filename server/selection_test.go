package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vektah/gqlparser/v2/ast"

	"github.com/orchard-msp/orchard/graph"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// The selections in this file are built from the schema itself: every field
// of every type reachable from a payload, down to selectionDepth entity
// levels. A field added to the schema later is asked for here without
// touching the test.
const selectionDepth = 4

// aliasPrefix marks the second selection of a field in the alias variant.
const aliasPrefix = "x_"

type selectionBuilder struct {
	t      *testing.T
	schema *ast.Schema
	// ids fills required ID arguments (node, nodes and any added later).
	ids []string
	// aliased selects every object field a second time under aliasPrefix,
	// with other arguments (first: 1) and the odd half of its leaves.
	aliased bool
	// half is which leaves the un-aliased copy selects: all (-1), or the
	// even half (0), so that two aliases select different columns.
	half int
}

func newSelectionBuilder(t *testing.T, aliased bool, half int, ids ...string) *selectionBuilder {
	return &selectionBuilder{t: t, schema: graph.NewExecutableSchema(graph.Config{}).Schema(), ids: ids, aliased: aliased, half: half}
}

// structural types carry no entity of their own and cost no depth.
func structural(name string) bool {
	return strings.HasSuffix(name, "Connection") || strings.HasSuffix(name, "Edge") || name == "PageInfo"
}

// args fills a field's arguments: first for connections, every required one
// with a value of its type.
func (b *selectionBuilder) args(f *ast.FieldDefinition, first int) string {
	var out []string
	for _, a := range f.Arguments {
		switch {
		case a.Name == "first" && a.Type.Name() == "Int":
			out = append(out, fmt.Sprintf("first: %d", first))
		case a.Type.NonNull && a.DefaultValue == nil:
			out = append(out, a.Name+": "+b.value(f, a.Type))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "(" + strings.Join(out, ", ") + ")"
}

func (b *selectionBuilder) value(f *ast.FieldDefinition, t *ast.Type) string {
	switch {
	case t.Elem != nil:
		vals := make([]string, len(b.ids))
		for i, id := range b.ids {
			vals[i] = fmt.Sprintf("%q", id)
		}
		if t.Elem.Name() != "ID" {
			b.t.Fatalf("the test does not know how to fill the required argument of %s (%s): teach selectionBuilder.value", f.Name, t)
		}
		return "[" + strings.Join(vals, ", ") + "]"
	case t.Name() == "ID":
		return fmt.Sprintf("%q", b.ids[0])
	}
	b.t.Fatalf("the test does not know how to fill the required argument of %s (%s): teach selectionBuilder.value", f.Name, t)
	return ""
}

// selection returns the selection set of type name, depth entity levels deep.
// half selects the leaves at odd (1) or even (0) positions, or all (-1).
func (b *selectionBuilder) selection(name string, depth, half int, aliased bool, first int) string {
	return b.selectionAs(name, "", depth, half, aliased, first)
}

// selectionAs is selection with every field's response name prefixed by
// prefix: the fragments of an interface's types use their type name, as
// two types may have a field of one name and different types.
func (b *selectionBuilder) selectionAs(name, prefix string, depth, half int, aliased bool, first int) string {
	def := b.schema.Types[name]
	if def == nil {
		b.t.Fatalf("no type %s in the schema", name)
	}
	switch def.Kind {
	case ast.Interface, ast.Union:
		parts := []string{"__typename"}
		for _, p := range b.schema.GetPossibleTypes(def) {
			if sub := b.selectionAs(p.Name, p.Name+"_", depth, half, aliased, first); sub != "" {
				parts = append(parts, "... on "+p.Name+" "+sub)
			}
		}
		return "{ " + strings.Join(parts, " ") + " }"
	}
	var parts []string
	leaf := 0
	for _, f := range def.Fields {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		ft := b.schema.Types[f.Type.Name()]
		if ft.Kind == ast.Scalar || ft.Kind == ast.Enum {
			if half < 0 || leaf%2 == half || f.Name == "id" {
				parts = append(parts, alias(prefix, f.Name)+f.Name)
			}
			leaf++
			continue
		}
		next := depth
		if !structural(ft.Name) {
			next--
		}
		if depth <= 0 || next < 0 {
			continue
		}
		if sub := b.selection(ft.Name, next, half, aliased, first); sub != "" {
			parts = append(parts, alias(prefix, f.Name)+f.Name+b.args(f, first)+" "+sub)
			if aliased {
				// The second copy asks for the other half of the leaves,
				// and for one element where the first asks for two.
				if alt := b.selection(ft.Name, next, 1, false, 1); alt != "" {
					parts = append(parts, aliasPrefix+prefix+f.Name+": "+f.Name+b.args(f, 1)+" "+alt)
				}
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "{ " + strings.Join(parts, " ") + " }"
}

func alias(prefix, name string) string {
	if prefix == "" {
		return ""
	}
	return prefix + name + ": "
}

// of returns the selection for the payload of a root field.
func (b *selectionBuilder) of(root, field string) string {
	def := b.schema.Types[root].Fields.ForName(field)
	if def == nil {
		b.t.Fatalf("no field %s.%s", root, field)
	}
	return b.selection(def.Type.Name(), selectionDepth, b.half, b.aliased, 2)
}

// rootQueries lists every field of Query with its arguments and selection.
func (b *selectionBuilder) rootQueries() map[string]string {
	out := map[string]string{}
	for _, f := range b.schema.Query.Fields {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		q := f.Name + b.args(f, 2) + " " + b.of("Query", f.Name)
		if b.aliased {
			depth := selectionDepth
			if k := b.schema.Types[f.Type.Name()].Kind; k == ast.Interface || k == ast.Union {
				// node and nodes reach every type of the schema: doubled
				// at full depth they pass the server's 15,000-token parser
				// limit, so their aliased copies go one level less (the
				// plain TestFullSelections covers them at full depth).
				depth--
				q = f.Name + b.args(f, 2) + " " + b.selection(f.Type.Name(), depth, b.half, true, 2)
			}
			// The root field itself twice, too: a query of scalars only
			// (viewer) has no deeper object to alias.
			if alt := b.selection(f.Type.Name(), depth, 1, false, 1); alt != "" {
				q += " " + aliasPrefix + f.Name + ": " + f.Name + b.args(f, 1) + " " + alt
			}
		}
		out[f.Name] = q
	}
	return out
}

// mustAnswer fails on any GraphQL error and returns the data.
func mustAnswer(t *testing.T, what string, r *gqlResponse) map[string]any {
	t.Helper()
	if r.Status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("%s: HTTP %d: %.3000s", what, r.Status, r.Raw)
	}
	var data map[string]any
	if err := json.Unmarshal(r.Data, &data); err != nil || data == nil {
		t.Fatalf("%s: no data: %.2000s", what, r.Raw)
	}
	return data
}

func (s *testServer) uploadWith(key, customerID string, file []byte, sel string) *gqlResponse {
	s.t.Helper()
	q := `mutation($c: ID!, $f: Upload!) { uploadServerToken(input: {customerID: $c, file: $f}) ` + sel + ` }`
	body, ct := multipartBody(q, map[string]any{"c": customerID, "f": nil}, file)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/graphql", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+key)
	return s.do(req)
}

// dig walks data along keys (map keys; numbers index arrays).
func dig(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

// wizardRun is the wizard's every mutation, each asked with sel's full
// selection of its payload; check sees each answer.
type wizardRun struct {
	t     *testing.T
	s     *testServer
	key   string
	b     *selectionBuilder
	check func(what string, data map[string]any)
	// tag keeps names and locations apart when one server runs twice.
	tag string
}

func (w *wizardRun) mutate(what, call string) map[string]any {
	w.t.Helper()
	field := call[:strings.IndexByte(call, '(')]
	data := mustAnswer(w.t, what, w.s.gql(w.key, "mutation { "+call+" "+w.b.of("Mutation", field)+" }", nil))
	if w.check != nil {
		w.check(what, data)
	}
	return data
}

func (w *wizardRun) upload(what, customerID string, file []byte) map[string]any {
	w.t.Helper()
	data := mustAnswer(w.t, what, w.s.uploadWith(w.key, customerID, file, w.b.of("Mutation", "uploadServerToken")))
	if w.check != nil {
		w.check(what, data)
	}
	return data
}

func (w *wizardRun) action(what, mutation, tokenID string) map[string]any {
	w.t.Helper()
	return w.mutate(what, fmt.Sprintf(`%s(input: {tokenID: %q})`, mutation, tokenID))
}

// run goes through the wizard and returns the IDs it leaves behind: a
// customer, its ACTIVE token (expiring soon, so it is warned about) and an app.
func (w *wizardRun) run() (customerID, tokenID, appID string) {
	t, s := w.t, w.s
	cust := w.mutate("createCustomer", fmt.Sprintf(`createCustomer(input: {name: "Contoso %s"})`, w.tag))
	customerID = str(dig(cust, "createCustomer", "id"))
	w.mutate("updateCustomer", fmt.Sprintf(`updateCustomer(id: %q, input: {name: "Contoso %s Ltd"})`, customerID, w.tag))
	doomed := str(dig(w.mutate("createCustomer (to delete)", fmt.Sprintf(`createCustomer(input: {name: "Doomed %s"})`, w.tag)), "createCustomer", "id"))
	w.mutate("deleteCustomer", fmt.Sprintf(`deleteCustomer(id: %q)`, doomed))

	// Within the largest warning threshold, so confirming raises a warning.
	exp := time.Now().Add(20 * 24 * time.Hour)
	loc := &appletest.Location{UID: "55500" + w.tag, Name: "Contoso HQ " + w.tag, Country: "GB", ExpiresAt: exp, Assets: appletest.MakeAssets(3)}
	file := appletest.TokenFile("Contoso Ltd", exp, "contoso-"+w.tag)
	s.Fake.AddLocation(file, loc)
	up := w.upload("uploadServerToken (valid)", customerID, file)
	tokenID = str(dig(up, "uploadServerToken", "token", "id"))
	if st := dig(up, "uploadServerToken", "token", "state"); st != "PENDING" {
		t.Fatalf("upload state %v", st)
	}
	w.action("confirmServerToken", "confirmServerToken", tokenID)
	w.waitForApps(tokenID, 3)

	renewal := appletest.TokenFile("Contoso Ltd", exp, "contoso-renewed-"+w.tag)
	s.Fake.AddLocation(renewal, loc)
	up = w.upload("uploadServerToken (renewal)", customerID, renewal)
	if got := str(dig(up, "uploadServerToken", "renews", "id")); got != tokenID {
		t.Fatalf("renewal upload renews %q, want %q", got, tokenID)
	}
	if got := str(dig(w.action("confirmServerToken (renewal)", "confirmServerToken", str(dig(up, "uploadServerToken", "token", "id"))), "confirmServerToken", "token", "id")); got != tokenID {
		t.Fatalf("renewal confirmed into %q, want %q", got, tokenID)
	}
	w.action("syncServerToken", "syncServerToken", tokenID)
	w.waitForApps(tokenID, 3)

	other := &appletest.Location{UID: "66600" + w.tag, Name: "Northwind " + w.tag, ExpiresAt: exp.AddDate(1, 0, 0),
		MDM: &appletest.MDMInfo{ID: "29dd58b6", Name: "Zentral", Metadata: "zentral.example.com"}, Assets: appletest.MakeAssets(2)}
	nw := appletest.TokenFile("Northwind", other.ExpiresAt, "northwind-"+w.tag)
	s.Fake.AddLocation(nw, other)
	up = w.upload("uploadServerToken (another MDM)", customerID, nw)
	if st := dig(up, "uploadServerToken", "token", "state"); st != "CONFLICT" {
		t.Fatalf("upload of another MDM's location: state %v", st)
	}
	conflicted := str(dig(up, "uploadServerToken", "token", "id"))
	again := str(dig(w.upload("uploadServerToken (another MDM, again)", customerID, nw), "uploadServerToken", "token", "id"))
	w.action("cancelServerToken", "cancelServerToken", again)
	w.action("claimServerToken", "claimServerToken", conflicted)
	w.waitForApps(conflicted, 2)
	w.action("deleteServerToken", "deleteServerToken", conflicted)

	var apps struct {
		Node struct {
			Apps struct {
				Edges []struct{ Node struct{ ID string } }
			}
		}
	}
	s.gql(w.key, `query($id: ID!) { node(id: $id) { ... on ServerToken { apps(first: 1) { edges { node { id } } } } } }`, map[string]any{"id": tokenID}).decode(t, &apps)
	if len(apps.Node.Apps.Edges) != 1 {
		t.Fatal("the synced token has no app")
	}
	return customerID, tokenID, apps.Node.Apps.Edges[0].Node.ID
}

// waitForApps waits until the background sync stored n apps and finished.
func (w *wizardRun) waitForApps(tokenID string, n int) {
	w.t.Helper()
	waitFor(w.t, func() bool {
		var out struct {
			Node struct {
				AppCount     int
				LastSyncedAt *string
			}
		}
		w.s.gql(w.key, `query($id: ID!) { node(id: $id) { ... on ServerToken { appCount lastSyncedAt } } }`, map[string]any{"id": tokenID}).decode(w.t, &out)
		return out.Node.AppCount == n && out.Node.LastSyncedAt != nil
	})
}

// Every field of every answer resolves: the wizard's mutations, each root
// query and the expiry warning event, each asked for with every field down
// to selectionDepth, on SQLite and PostgreSQL.
func TestFullSelections(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		w := &wizardRun{t: t, s: s, key: admin, b: newSelectionBuilder(t, false, -1), tag: "1"}
		customerID, tokenID, appID := w.run()

		b := newSelectionBuilder(t, false, -1, tokenID, customerID, appID)
		queries := b.rootQueries()
		for _, name := range sortedKeys(queries) {
			t.Run("query/"+name, func(t *testing.T) {
				mustAnswer(t, name, s.gql(admin, "query { "+queries[name]+" }", nil))
			})
		}
		for _, id := range []string{customerID, tokenID, appID} {
			data := mustAnswer(t, "node", s.gql(admin, "query { node(id: "+fmt.Sprintf("%q", id)+") "+b.of("Query", "node")+" }", nil))
			if typ := str(dig(data, "node", "__typename")); str(dig(data, "node", typ+"_id")) != id {
				t.Fatalf("node(%s) = %v", id, data)
			}
		}

		t.Run("subscription/tokenExpiryWarnings", func(t *testing.T) {
			ev := subscribeWith(t, s, admin, "subscription { tokenExpiryWarnings "+b.of("Subscription", "tokenExpiryWarnings")+" }")
			if str(dig(ev, "tokenExpiryWarnings", "token", "id")) != tokenID || dig(ev, "tokenExpiryWarnings", "token", "customer", "name") != "Contoso 1 Ltd" {
				t.Fatalf("warning = %v", ev)
			}
		})
	})
}

// Each object selected twice, under two aliases with different
// sub-selections and arguments: every alias gets its own, correct data.
func TestAliasedSelections(t *testing.T) {
	databaseEnv(t, func(t *testing.T, env map[string]string) {
		s := startServer(t, env)
		admin := s.key()
		var w *wizardRun
		w = &wizardRun{t: t, s: s, key: admin, b: newSelectionBuilder(t, true, -1), tag: "2", check: func(what string, data map[string]any) {
			// Each alias agrees with the un-aliased copy in the same answer.
			// Not after confirm and claim: their first sync runs meanwhile,
			// so two fields of one answer may see the apps before and after.
			if !strings.HasPrefix(what, "confirm") && !strings.HasPrefix(what, "claim") {
				compareAliases(t, what, data)
			}
		}}
		customerID, tokenID, appID := w.run()

		plain := newSelectionBuilder(t, false, -1, tokenID, customerID, appID)
		aliased := newSelectionBuilder(t, true, 0, tokenID, customerID, appID)
		events := newSelectionBuilder(t, true, -1, tokenID, customerID, appID)
		want, got := plain.rootQueries(), aliased.rootQueries()
		for _, name := range sortedKeys(want) {
			t.Run("query/"+name, func(t *testing.T) {
				ref := mustAnswer(t, name, s.gql(admin, "query { "+want[name]+" }", nil))
				ans := mustAnswer(t, name+" (aliased)", s.gql(admin, "query { "+got[name]+" }", nil))
				if n := compareTo(t, name, ans, ref, false); n == 0 {
					t.Fatalf("%s: nothing compared", name)
				}
			})
		}
		t.Run("subscription/tokenExpiryWarnings", func(t *testing.T) {
			ev := subscribeWith(t, s, admin, "subscription { tokenExpiryWarnings "+events.of("Subscription", "tokenExpiryWarnings")+" }")
			compareAliases(t, "tokenExpiryWarnings", ev)
			if str(dig(ev, "tokenExpiryWarnings", aliasPrefix+"token", "id")) != tokenID {
				t.Fatalf("warning = %v", ev)
			}
		})
	})
}

// The review step as a wizard asks it, and the example of issue 11.
func TestReviewStepSelections(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	cust := s.createCustomer(admin, "Review")
	exp := time.Now().AddDate(1, 0, 0)
	file := appletest.TokenFile("Review Ltd", exp, "review")
	s.Fake.AddLocation(file, &appletest.Location{UID: "777", Name: "Review HQ", ExpiresAt: exp, Assets: appletest.MakeAssets(2)})
	data := mustAnswer(t, "upload", s.uploadWith(admin, cust, file, `{ token { id customer { name } apps(first: 2) { totalCount } } }`))
	if dig(data, "uploadServerToken", "token", "customer", "name") != "Review" {
		t.Fatalf("upload = %v", data)
	}
	id := str(dig(data, "uploadServerToken", "token", "id"))
	data = mustAnswer(t, "confirm", s.gql(admin, `mutation($t: ID!) { confirmServerToken(input: {tokenID: $t}) { token { id customer { name } } } }`, map[string]any{"t": id}))
	if dig(data, "confirmServerToken", "token", "customer", "name") != "Review" {
		t.Fatalf("confirm = %v", data)
	}
	waitFor(t, func() bool {
		var out struct{ Apps struct{ TotalCount int } }
		s.gql(admin, `{ apps { totalCount } }`, nil).decode(t, &out)
		return out.Apps.TotalCount == 2
	})
	data = mustAnswer(t, "apps", s.gql(admin, `{ apps(first: 1) { edges { node { id } a: node { adamID name } } } }`, nil))
	if a := dig(data, "apps", "edges", 0, "a"); str(dig(a, "adamID")) != "400000000" {
		t.Fatalf("aliased node = %v", a)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// compareAliases checks, within one answer, every aliasPrefix copy against
// its un-aliased sibling.
func compareAliases(t *testing.T, what string, data map[string]any) {
	t.Helper()
	compareTo(t, what, data, data, false)
}

// compareTo checks that every value in got equals the one at the same place
// in ref; an aliasPrefix key is compared with its un-aliased name, and
// under it connections hold their first element only. It returns how many
// aliases it compared.
func compareTo(t *testing.T, path string, got, ref any, firstOnly bool) int {
	t.Helper()
	n := 0
	switch g := got.(type) {
	case map[string]any:
		r, ok := ref.(map[string]any)
		if !ok {
			t.Errorf("%s: got %v, want %v", path, got, ref)
			return n
		}
		if firstOnly {
			r = firstOfConnection(r)
		}
		for k, v := range g {
			name, sub := k, firstOnly
			if strings.HasPrefix(k, aliasPrefix) {
				name, sub = strings.TrimPrefix(k, aliasPrefix), true
				n++
			}
			want, ok := r[name]
			if !ok {
				t.Errorf("%s.%s: not in the reference answer", path, k)
				continue
			}
			n += compareTo(t, path+"."+k, v, want, sub)
		}
	case []any:
		r, ok := ref.([]any)
		if !ok || len(r) != len(g) {
			t.Errorf("%s: got %d elements %v, want %v", path, len(g), got, ref)
			return n
		}
		for i := range g {
			n += compareTo(t, fmt.Sprintf("%s[%d]", path, i), g[i], r[i], firstOnly)
		}
	default:
		if !reflect.DeepEqual(got, ref) {
			t.Errorf("%s: got %v, want %v", path, got, ref)
		}
	}
	return n
}

// firstOfConnection turns a connection's answer for first: 2 into the one
// for first: 1.
func firstOfConnection(r map[string]any) map[string]any {
	edges, ok := r["edges"].([]any)
	if !ok {
		return r
	}
	if _, ok := r["pageInfo"]; !ok {
		return r
	}
	out := map[string]any{}
	for k, v := range r {
		out[k] = v
	}
	pi := map[string]any{"hasPreviousPage": false, "hasNextPage": false, "startCursor": nil, "endCursor": nil}
	if len(edges) > 0 {
		out["edges"] = edges[:1]
		c := dig(edges[0], "cursor")
		pi["startCursor"], pi["endCursor"] = c, c
		total, _ := r["totalCount"].(float64)
		pi["hasNextPage"] = len(edges) > 1 || total > 1
	}
	out["pageInfo"] = pi
	return out
}

// subscribeWith subscribes over graphql-transport-ws with query and returns
// the first event's data, failing on any error.
func subscribeWith(t *testing.T, s *testServer, key, query string) map[string]any {
	t.Helper()
	c, _, err := dialWS(t, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.init(key); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"query": query})
	c.send(wsMessage{ID: "1", Type: "subscribe", Payload: payload})
	m, err := c.read(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "next" {
		t.Fatalf("got %s: %s", m.Type, m.Payload)
	}
	var ev struct {
		Data   map[string]any
		Errors []gqlError
	}
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Errors) > 0 || ev.Data == nil {
		t.Fatalf("event with errors: %.3000s", m.Payload)
	}
	return ev.Data
}
