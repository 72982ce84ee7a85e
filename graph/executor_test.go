package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/graph/relay"
)

// The rewritten executor (ent/gqlgen.go, graph/executor.go) must answer every
// operation byte for byte as gqlgen's own does. Each operation runs with the
// rewrite and with the rewritten call sites sent back to gqlgen's functions,
// in the same process, on the same data.
func TestExecutorRewriteEquivalence(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		seed(t, db.Client, 3, 3, 4)
		ctx := viewer.SystemContext(context.Background())
		cust := db.Client.Customer.Query().FirstX(ctx)
		tok := db.Client.ServerToken.Query().FirstX(ctx)
		a := db.Client.App.Query().FirstX(ctx)
		custID, tokID, appID := relay.Encode(cust.ID), relay.Encode(tok.ID), relay.Encode(a.ID)
		missing := relay.Encode(tok.ID + 1_000_000)
		// Strings JSON must escape, and some it must not, for the String
		// fields written from the object (stringField, intField).
		tricky := "say \"hi\"\\ back\ttab\r\nline\x01\x1f<b>&amp; é 東京 \u2028 🍏"
		db.Client.Customer.UpdateOneID(cust.ID).SetName(tricky).ExecX(ctx)
		db.Client.App.UpdateOneID(a.ID).SetName(tricky).SetBundleID("com.example.\"app\"").SetLowLicenceThreshold(2147483647).ExecX(ctx)

		svc := domain.New(db.Client, domain.Modules{}, domain.Config{WarnDays: []int{30, 7}}, nil)
		srv := handler.New(graph.NewSchema(svc, domain.NewHub(svc), nil))
		srv.AddTransport(transport.MultipartMixed{})
		srv.AddTransport(transport.POST{})
		srv.Use(extension.Introspection{})
		srv.Use(graph.PageLimit{Max: 100})
		srv.SetErrorPresenter(graph.ErrorPresenter(slog.New(slog.DiscardHandler)))
		srv.AroundResponses(graph.Loaders(svc))
		admin := &viewer.Viewer{KeyID: 1, Role: viewer.Admin}

		ops := []struct {
			name, query string
			vars        map[string]any
			deferred    bool
			want        []string // fragments the answer must hold, so that the case tests what it says
		}{
			{name: "nested lists", query: `{ customers(first: 10) { totalCount edges { cursor node { id name tokens(first: 10) { edges { node { locationUID apps(first: 10) { edges { node { adamID name totalCount } } } } } } } } } }`,
				want: []string{`"adamID":"3"`}},
			{name: "strings and numbers written from the object", query: `{ customers(first: 10) { edges { node { name tokens(first: 10) { edges { node { apps(first: 10) { edges { node { name bundleID totalCount lowLicenceThreshold assignedCount } } } } } } } } } }`,
				want: []string{`"name":"say \"hi\"\\ back\ttab\r\nline\u0001\u001F\u003cb\u003e\u0026amp; é 東京 \u2028 🍏"`, `"bundleID":"com.example.\"app\""`, `"lowLicenceThreshold":2147483647`, `"bundleID":null`}},
			{name: "fragments and aliases", query: `query Q { first: tokens(first: 2) { ...conn } all: tokens(first: 20, orderBy: {field: EXPIRES_AT, direction: DESC}) { ...conn } }
				fragment conn on ServerTokenConnection { totalCount edges { node { ...tok ... on ServerToken { alias: state } } } }
				fragment tok on ServerToken { id __typename state expiresAt apps(first: 2) { edges { node { ... on App { adamID kind: productType } } } } }`,
				want: []string{`"first":{`, `"alias":"ACTIVE"`, `"kind":"APP"`}},
			{name: "loader-backed fields", query: `{ tokens(first: 20) { edges { node { id appCount daysUntilExpiry expiryStatus licences { total assigned available } customer { name licences { total available } } } } } }`,
				want: []string{`"appCount":4`, `"licences":{"total":`}},
			{name: "node and nodes", query: `query($c: ID!, $t: ID!, $a: ID!) { node(id: $c) { id __typename ... on Customer { name } } nodes(ids: [$t, $a, $c]) { id __typename ... on ServerToken { appCount } ... on App { adamID } } }`,
				vars: map[string]any{"c": custID, "t": tokID, "a": appID}, want: []string{`"__typename":"App"`, `"appCount":4`}},
			{name: "not found", query: `query($id: ID!) { node(id: $id) { id } }`, vars: map[string]any{"id": missing}, want: []string{`NOT_FOUND`}},
			{name: "error in a list element", query: `query($t: ID!, $x: ID!) { nodes(ids: [$t, $x]) { id ... on ServerToken { appCount } } }`,
				vars: map[string]any{"t": tokID, "x": missing}, want: []string{`"errors":[`, `"appCount":4`}},
			{name: "introspection", query: `{ __schema { queryType { name } types { name kind fields(includeDeprecated: true) { name args { name } type { name kind ofType { name } } } } directives { name locations args { name } } } }`,
				want: []string{`"name":"defer"`, `"name":"ServerToken"`}},
			{name: "type", query: `{ __type(name: "App") { name fields { name type { kind ofType { name } } } } }`, want: []string{`"adamID"`}},
			{name: "validation error", query: `{ tokens(first: 2) { edges { node { nope } } } }`, want: []string{`GRAPHQL_VALIDATION_FAILED`}},
			// An edge's node whose selection is only plain fields is written
			// without a FieldContext (fieldsHeldOnly).
			{name: "plain nodes", query: `{ tokens(first: 3) { edges { node { __typename locationUID n: locationName ... on ServerToken { orgName } } } } customers(first: 2) { edges { node { id name } } } }`,
				want: []string{`"__typename":"ServerToken"`, `"n":"`, `"name":"C1"`}},
			{name: "one node plain, its alias not", query: `{ tokens(first: 2) { edges { node { apps(first: 2) { edges { a: node { adamID } b: node { adamID token { locationUID } } } } } } } }`,
				want: []string{`"a":{"adamID"`, `"b":{"adamID":"0","token":{"locationUID"`}},
			// gqlgen answers a deferred fragment of plain fields inline, and
			// defers one with a field it resolves concurrently.
			{name: "plain nodes with deferred fragments", deferred: true, query: `{ tokens(first: 2) { edges { node { locationUID ... @defer(label: "plain") { orgName } ... @defer(label: "late") { appCount } } } } }`,
				want: []string{`"orgName":"Org"`, `"label":"late"`, `"path":["tokens","edges",0,"node"]`}},
			{name: "defer with labels and paths", deferred: true, query: `{ tokens(first: 3) { edges { node { id
				... @defer(label: "counts") { appCount licences { total } }
				apps(first: 3) { edges { node { adamID ... @defer(label: "token") { token { locationUID } } } } }
				customer { name ...later @defer(label: "customer") } } } } }
				fragment later on Customer { licences { total } }`,
				want: []string{`"label":"counts"`, `"label":"token"`, `"label":"customer"`, `"path":["tokens","edges",0,"node"`}},
		}
		for _, op := range ops {
			t.Run(op.name, func(t *testing.T) {
				body, _ := json.Marshal(map[string]any{"query": op.query, "variables": op.vars})
				run := func(original bool) []string {
					graph.SetGqlgenOriginal(original)
					defer graph.SetGqlgenOriginal(false)
					rec := httptest.NewRecorder()
					req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					if op.deferred {
						req.Header.Set("Accept", "multipart/mixed")
					}
					srv.ServeHTTP(rec, req.WithContext(viewer.NewContext(req.Context(), admin)))
					if !op.deferred {
						return []string{rec.Body.String()}
					}
					return deferredPayloads(t, rec)
				}
				got, want := run(false), run(true)
				if !slices.Equal(got, want) {
					t.Fatalf("the rewritten executor answers\n%s\ngqlgen's answers\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				all := strings.Join(got, "\n")
				for _, w := range op.want {
					if !strings.Contains(all, w) {
						t.Fatalf("answer lacks %s:\n%s", w, all)
					}
				}
			})
		}
	})
}

// deferredPayloads splits a multipart/mixed answer into the initial payload
// and each incremental result, every one as the bytes gqlgen wrote. The
// transport groups incremental results by when they arrive and gqlgen
// resolves deferred fragments concurrently, so their order and grouping
// vary from run to run, and with them which one says hasNext false: they are
// compared sorted, without hasNext, and the last one must say false.
func deferredPayloads(t *testing.T, rec *httptest.ResponseRecorder) []string {
	t.Helper()
	_, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		t.Fatalf("not a multipart answer (%s): %s", rec.Header().Get("Content-Type"), rec.Body.String())
	}
	r := multipart.NewReader(rec.Body, params["boundary"])
	var initial string
	var incremental []string
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the multipart answer: %v\n%s", err, rec.Body.String())
		}
		b, _ := io.ReadAll(p)
		if initial == "" {
			initial = string(b)
			continue
		}
		var part struct {
			Incremental []json.RawMessage `json:"incremental"`
		}
		if err := json.Unmarshal(b, &part); err != nil {
			t.Fatalf("incremental part: %v: %s", err, b)
		}
		for _, inc := range part.Incremental {
			incremental = append(incremental, string(inc))
		}
	}
	for i, inc := range incremental {
		last := i == len(incremental)-1
		trimmed, ok := strings.CutSuffix(inc, `,"hasNext":`+strconv.FormatBool(!last)+`}`)
		if !ok {
			t.Fatalf("incremental result %d of %d should end with hasNext %v: %s", i+1, len(incremental), !last, inc)
		}
		incremental[i] = trimmed + "}"
	}
	slices.Sort(incremental)
	return append([]string{initial}, incremental...)
}
