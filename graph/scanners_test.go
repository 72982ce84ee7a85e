package graph_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

// ent's queries scan every row into the values of the first (see
// ent/template/scanners.tmpl). Each entity read must still hold its own row:
// strings, NULLs after values and values after NULLs, byte slices, JSON
// lists and eager-loaded edges.
func TestRowsKeepTheirOwnValues(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		ctx := viewer.SystemContext(context.Background())
		client := db.Client
		cust := client.Customer.Create().SetName("Scan Co").SetNameKey("scan co").SaveX(ctx)
		const tokens, apps = 3, 7
		for k := range tokens {
			tok := client.ServerToken.Create().SetCustomerID(cust.ID).SetState(servertoken.StateACTIVE).
				SetOrgName("Org").SetLocationName(fmt.Sprintf("Location %d", k)).SetLocationUID(fmt.Sprintf("scan-%d", k)).
				SetExpiresAt(time.Now().AddDate(1, 0, 0)).SetFileExpiresAt(time.Now().AddDate(1, 0, 0)).
				SetSealedToken(bytes.Repeat([]byte{byte(k + 1)}, 8+k)).SetMdmID("m").SaveX(ctx)
			for a := range apps {
				c := client.App.Create().SetTokenID(tok.ID).SetCustomerID(cust.ID).SetAdamID(fmt.Sprintf("%d-%d", k, a)).
					SetPricingParam("STDQ").SetProductType(app.ProductTypeAPP).SetTotalCount(10*k + a).
					SetSupportedPlatforms(slices.Repeat([]string{"iOS" + strconv.Itoa(a)}, a%3))
				if a%2 == 0 { // even apps have a name and a threshold, odd ones NULL
					c.SetName(fmt.Sprintf("App %d-%d", k, a)).SetLowLicenceThreshold(a)
				}
				c.SaveX(ctx)
			}
		}
		check := func(t *testing.T, a *ent.App, k int) {
			t.Helper()
			var n int
			if _, err := fmt.Sscanf(a.AdamID, fmt.Sprintf("%d-%%d", k), &n); err != nil {
				t.Fatalf("app %q under token %d", a.AdamID, k)
			}
			if a.TotalCount != 10*k+n || len(a.SupportedPlatforms) != n%3 || (n%3 > 0 && a.SupportedPlatforms[0] != "iOS"+strconv.Itoa(n)) {
				t.Errorf("app %s: total %d, platforms %v", a.AdamID, a.TotalCount, a.SupportedPlatforms)
			}
			if n%2 == 0 {
				if a.Name == nil || *a.Name != fmt.Sprintf("App %d-%d", k, n) || a.LowLicenceThreshold == nil || *a.LowLicenceThreshold != n {
					t.Errorf("app %s: name %v, threshold %v", a.AdamID, a.Name, a.LowLicenceThreshold)
				}
			} else if a.Name != nil || a.LowLicenceThreshold != nil {
				t.Errorf("app %s: name %v, threshold %v, want both NULL", a.AdamID, a.Name, a.LowLicenceThreshold)
			}
		}

		toks := client.ServerToken.Query().Order(servertoken.ByID()).WithApps(func(q *ent.AppQuery) { q.Order(app.ByID()) }).AllX(ctx)
		if len(toks) != tokens {
			t.Fatalf("%d tokens", len(toks))
		}
		for k, tok := range toks {
			if want := bytes.Repeat([]byte{byte(k + 1)}, 8+k); !bytes.Equal(tok.SealedToken, want) || tok.LocationName != fmt.Sprintf("Location %d", k) {
				t.Errorf("token %d: sealed %v, location %q", k, tok.SealedToken, tok.LocationName)
			}
			if len(tok.Edges.Apps) != apps {
				t.Fatalf("token %d has %d apps", k, len(tok.Edges.Apps))
			}
			for _, a := range tok.Edges.Apps {
				check(t, a, k)
			}
		}
	})
}
