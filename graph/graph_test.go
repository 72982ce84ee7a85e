package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

func seed(t *testing.T, client *ent.Client, customers, tokensEach, appsEach int) {
	t.Helper()
	ctx := viewer.SystemContext(context.Background())
	for c := range customers {
		cust := client.Customer.Create().SetName("C" + strconv.Itoa(c)).SetNameKey("c" + strconv.Itoa(c)).SaveX(ctx)
		for k := range tokensEach {
			tok := client.ServerToken.Create().SetCustomerID(cust.ID).SetState(servertoken.StateACTIVE).
				SetOrgName("Org").SetLocationUID(fmt.Sprintf("%d-%d", c, k)).SetExpiresAt(time.Now().AddDate(0, 0, 10+k)).
				SetFileExpiresAt(time.Now().AddDate(1, 0, 0)).SetSealedToken([]byte{1}).SetMdmID("m").SaveX(ctx)
			bulk := make([]*ent.AppCreate, appsEach)
			for a := range appsEach {
				bulk[a] = client.App.Create().SetTokenID(tok.ID).SetCustomerID(cust.ID).SetAdamID(strconv.Itoa(a)).
					SetPricingParam("STDQ").SetProductType(app.ProductTypeAPP).SetTotalCount(10).SetAssignedCount(a % 10).
					SetAvailableCount(10 - a%10).SetSupportedPlatforms([]string{"iOS"})
			}
			client.App.CreateBulk(bulk...).ExecX(ctx)
		}
	}
}

func newHandler(client *ent.Client) http.Handler {
	svc := domain.New(client, domain.Modules{}, domain.Config{WarnDays: []int{30, 7}}, nil)
	srv := handler.New(graph.NewSchema(svc, domain.NewHub(svc), nil))
	srv.AddTransport(transport.POST{})
	srv.Use(graph.PageLimit{Max: 100})
	srv.AroundResponses(graph.Loaders(svc))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.ServeHTTP(w, r.WithContext(viewer.NewContext(r.Context(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})))
	})
}

func query(t *testing.T, h http.Handler, q string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": q})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out["errors"] != nil {
		t.Fatalf("query failed: %s", rec.Body.String())
	}
	return out
}

const listQuery = `{ tokens(first: 50, orderBy: {field: EXPIRES_AT, direction: ASC}) { totalCount edges { node {
  id state expiresAt daysUntilExpiry expiryStatus appCount licences { total assigned available }
  customer { name licences { total } }
  apps(first: 20, orderBy: {field: ADAM_ID, direction: ASC}) { totalCount edges { node { adamID name totalCount availableCount } } }
} } } }`

// The tokens list runs a constant number of SQL statements, however many
// tokens it shows.
func TestListQueryStatementCount(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		counts := map[int]int64{}
		for _, tokens := range []int{1, 50} {
			t.Run(strconv.Itoa(tokens), func(t *testing.T) {
				d := db
				if tokens > 1 {
					d = map[string]func(testing.TB) *testdb.DB{"sqlite": testdb.SQLite, "postgres": testdb.Postgres}[db.Name](t)
				}
				client, c := testdb.Counting(d)
				seed(t, client, tokens, 1, 25)
				h := newHandler(client)
				c.N.Store(0)
				out := query(t, h, listQuery)
				counts[tokens] = c.N.Load()
				edges := out["data"].(map[string]any)["tokens"].(map[string]any)["edges"].([]any)
				if len(edges) != tokens {
					t.Fatalf("%d tokens listed, want %d", len(edges), tokens)
				}
				node := edges[0].(map[string]any)["node"].(map[string]any)
				if node["appCount"].(float64) != 25 || len(node["apps"].(map[string]any)["edges"].([]any)) != 20 {
					t.Fatalf("node = %v", node)
				}
			})
		}
		if counts[1] != counts[50] {
			t.Fatalf("statements: %d for 1 token, %d for 50; want the same", counts[1], counts[50])
		}
		t.Logf("%s: %d statements for 1 and for 50 tokens", db.Name, counts[1])
	})
}

func TestAppFilters(t *testing.T) {
	db := testdb.SQLite(t)
	seed(t, db.Client, 1, 1, 30)
	ctx := viewer.SystemContext(context.Background())
	db.Client.App.Update().Where(app.AdamIDIn("1", "2")).SetSupportedPlatforms([]string{"macOS"}).SetAvailableCount(0).ExecX(ctx)
	db.Client.App.Update().Where(app.AdamID("3")).SetName("Keynote").SetProductType(app.ProductTypeBOOK).ExecX(ctx)
	h := newHandler(db.Client)
	count := func(where string) float64 {
		t.Helper()
		out := query(t, h, `{ apps(where: `+where+`) { totalCount } }`)
		return out["data"].(map[string]any)["apps"].(map[string]any)["totalCount"].(float64)
	}
	for where, want := range map[string]float64{
		`{platform: "macos"}`:             2,
		`{platform: "iOS"}`:               28,
		`{availableCountLT: 1}`:           2,
		`{nameContainsFold: "keyNOTE"}`:   1,
		`{productType: BOOK}`:             1,
		`{hasTokenWith: {state: ACTIVE}}`: 30,
	} {
		if got := count(where); got != want {
			t.Errorf("apps(where: %s) = %v, want %v", where, got, want)
		}
	}
}

func TestExpiryFilters(t *testing.T) {
	db := testdb.SQLite(t)
	seed(t, db.Client, 1, 5, 0) // expiring in 10, 11, 12, 13 and 14 days
	ctx := viewer.SystemContext(context.Background())
	db.Client.ServerToken.Update().Where(servertoken.LocationUID("0-4")).SetExpiresAt(time.Now().Add(-time.Hour)).ExecX(ctx)
	db.Client.ServerToken.Update().Where(servertoken.LocationUID("0-3")).SetExpiresAt(time.Now().AddDate(0, 0, 90)).ExecX(ctx)
	h := newHandler(db.Client)
	for where, want := range map[string]float64{
		`{expiresWithinDays: 12}`:       4, // 10, 11, 12 and the expired one
		`{expiryStatus: EXPIRED}`:       1,
		`{expiryStatus: EXPIRING_SOON}`: 3,
		`{expiryStatus: VALID}`:         1,
	} {
		out := query(t, h, `{ tokens(where: `+where+`) { totalCount } }`)
		if got := out["data"].(map[string]any)["tokens"].(map[string]any)["totalCount"].(float64); got != want {
			t.Errorf("tokens(where: %s) = %v, want %v", where, got, want)
		}
	}
}
