package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

// Without the PageLimit extension in front, a made-up cursor of a nested
// connection reaches ent's field collection: it must come back as the
// client's mistake, not a panic.
func TestNestedCursorInFieldCollection(t *testing.T) {
	db := testdb.SQLite(t)
	seed(t, db.Client, 2, 2, 2)
	svc := domain.New(db.Client, domain.Modules{}, domain.Config{WarnDays: []int{30, 7}}, nil)
	srv := handler.New(graph.NewSchema(svc, domain.NewHub(svc), nil))
	srv.AddTransport(transport.POST{})
	panicked := false
	srv.SetRecoverFunc(func(_ context.Context, _ any) error { panicked = true; return errors.New("panic") })
	body, _ := json.Marshal(map[string]any{"query": `{ customers(first: 2) { edges { node { tokens(first: 2, after: "garbage") { totalCount } } } } }`})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	srv.ServeHTTP(rec, req.WithContext(viewer.NewContext(req.Context(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})))
	got := rec.Body.String()
	if panicked || !strings.Contains(got, `tokens: after is not a cursor Orchard returned`) || !strings.Contains(got, `"code":"BAD_USER_INPUT"`) {
		t.Errorf("panicked %v, answered %s", panicked, got)
	}
}
