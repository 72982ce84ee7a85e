package domain_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/licenceassignment"
	"github.com/orchard-msp/orchard/ent/licenceoperation"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple"
)

// Two instances checking the same due events at once lease each event to
// one of them: Apple is asked about every event once, and the operation
// ends with every assignment recorded once.
func TestLicenceEventsTwoInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		e.fake.SetLimits(map[string]int{"maxSerialNumbers": 10})
		c := e.customer("Leases")
		file, loc := e.location("9961", e.now.AddDate(1, 0, 0), "leases", 1)
		loc.Assets[0].TotalCount, loc.Assets[0].AvailableCount, loc.Assets[0].AssignedCount = 500, 500, 0
		tok := e.activeToken(c.ID, file)
		if err := e.svc.SyncToken(e.admin, tok.ID); err != nil {
			t.Fatal(err)
		}
		cfg := domain.LicenceConfig{EventPoll: time.Second, NotifyWait: time.Second, ResendAfter: time.Hour}
		one, two := e.service(), e.service()
		for _, svc := range []*domain.Service{e.svc, one, two} {
			svc.SetLicenceConfig(cfg, nil)
		}
		serials := make([]string, 200)
		for i := range serials {
			serials[i] = fmt.Sprintf("C02LEASE%04d", i)
		}
		op, err := e.svc.AssignLicences(e.admin, domain.LicenceRequest{TokenID: tok.ID,
			Assets: []apple.AssetID{{AdamID: loc.Assets[0].AdamID, PricingParam: "STDQ"}}, SerialNumbers: serials})
		if err != nil {
			t.Fatal(err)
		}
		const events = 20
		if n := e.fake.Count("POST /mdm/v2/assets/associate"); n != events {
			t.Fatalf("%d requests to Apple, want %d", n, events)
		}
		e.advance(time.Minute) // past NotifyWait: every event is due
		var wg sync.WaitGroup
		looked := make([]int, 4)
		for i := range looked {
			svc := one
			if i%2 == 1 {
				svc = two
			}
			wg.Go(func() { looked[i] = svc.RunLicenceEvents(e.system) })
		}
		wg.Wait()
		if sum := looked[0] + looked[1] + looked[2] + looked[3]; sum != events {
			t.Fatalf("the instances leased %v events, %d in all; want each of the %d once", looked, sum, events)
		}
		if n := e.fake.Count("GET /mdm/v2/status"); n != events {
			t.Fatalf("Apple was asked %d times about %d events", n, events)
		}
		got, err := e.db.Client.LicenceOperation.Get(e.system, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != licenceoperation.StatusCOMPLETE || got.Completed != len(serials) {
			t.Fatalf("operation %s, %d of %d done", got.Status, got.Completed, len(serials))
		}
		rows, err := e.db.Client.LicenceAssignment.Query().Where(licenceassignment.TokenID(tok.ID)).Count(e.system)
		if err != nil || rows != len(serials) {
			t.Fatalf("%d assignment rows (%v), want %d", rows, err, len(serials))
		}
		a, err := e.db.Client.App.Query().Where(app.TokenID(tok.ID)).Only(e.system)
		if err != nil {
			t.Fatal(err)
		}
		if a.AssignedCount != len(serials) || a.AvailableCount != 500-len(serials) {
			t.Fatalf("app counts: %d assigned, %d available; want %d and %d", a.AssignedCount, a.AvailableCount, len(serials), 500-len(serials))
		}
	})
}
