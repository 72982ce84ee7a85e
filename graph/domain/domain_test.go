package domain_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/secrets"
	"github.com/orchard-msp/orchard/modules/secrets/aesgcm"
	_ "github.com/orchard-msp/orchard/modules/standard"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

// env is a Service wired to the real modules, the real Apple client and a
// fake Apple over HTTP, with a clock the test moves.
type env struct {
	t      *testing.T
	db     *testdb.DB
	svc    *domain.Service
	fake   *appletest.Server
	mods   domain.Modules
	now    time.Time
	clock  sync.Mutex
	admin  context.Context
	system context.Context
}

func load[T any](t *testing.T, id modules.ID, cfg string) T {
	t.Helper()
	m, err := modules.Load[T](context.Background(), id, json.RawMessage(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newEnv(t *testing.T, db *testdb.DB) *env {
	t.Helper()
	fake := appletest.New()
	t.Cleanup(fake.Close)
	e := &env{t: t, db: db, fake: fake, now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e.mods = domain.Modules{
		Parser: load[tokenfile.Parser](t, "tokenfile.vpptoken", ""),
		Apple:  load[apple.Client](t, "apple.appsandbooks", `{"baseURL":"`+fake.BaseURL()+`","minBackoff":"5ms","retryBudget":"500ms"}`),
		Sealer: load[secrets.Sealer](t, "secrets.aesgcm", `{"keys":["`+aesgcm.NewKey()+`"]}`),
		Broker: load[pubsub.Broker](t, "pubsub.memory", ""),
	}
	e.svc = e.service()
	e.admin = viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 1, Name: "admin", Role: viewer.Admin})
	e.system = viewer.SystemContext(context.Background())
	return e
}

// service returns a new Service on the same database and modules, as a
// restarted server would have.
func (e *env) service() *domain.Service {
	svc := domain.New(e.db.Client, e.mods, domain.Config{MDMName: "Orchard", MDMMetadata: "orchard.test", WarnDays: []int{30, 14, 7, 3, 1}}, nil)
	svc.Now = func() time.Time {
		e.clock.Lock()
		defer e.clock.Unlock()
		return e.now
	}
	return svc
}

func (e *env) advance(d time.Duration) {
	e.clock.Lock()
	e.now = e.now.Add(d)
	e.clock.Unlock()
}

func (e *env) customer(name string) *ent.Customer {
	e.t.Helper()
	c, err := e.svc.CreateCustomer(e.admin, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// location registers a token file with the fake Apple.
func (e *env) location(uid string, expires time.Time, secret string, assets int) ([]byte, *appletest.Location) {
	file := appletest.TokenFile("Org "+uid, expires, secret)
	loc := e.fake.Location(file)
	if loc == nil {
		loc = &appletest.Location{UID: uid, Name: "Location " + uid, Country: "GB", ExpiresAt: expires, Assets: appletest.MakeAssets(assets)}
	}
	e.fake.AddLocation(file, loc)
	return file, loc
}

func (e *env) activeToken(customerID int, file []byte) *ent.ServerToken {
	e.t.Helper()
	res, err := e.svc.UploadServerToken(e.admin, customerID, file)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.svc.ConfirmServerToken(e.admin, res.Token.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func wantCode(t *testing.T, err error, code fault.Code) {
	t.Helper()
	if got := fault.CodeOf(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func TestUploadConfirmRenew(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		c := e.customer("Contoso")
		exp := e.now.AddDate(1, 0, 0)
		file, loc := e.location("1001", exp, "first", 3)

		res, err := e.svc.UploadServerToken(e.admin, c.ID, file)
		if err != nil {
			t.Fatal(err)
		}
		if res.Token.State != servertoken.StatePENDING || res.Conflict != nil || res.Renews != nil || res.Token.LocationUID != "1001" {
			t.Fatalf("upload = %+v", res)
		}
		if loc.MDM != nil {
			t.Fatal("upload changed mdmInfo at Apple; only confirm may")
		}
		tok, err := e.svc.ConfirmServerToken(e.admin, res.Token.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tok.State != servertoken.StateACTIVE || loc.MDM == nil || loc.MDM.Name != "Orchard" || loc.MDM.Metadata != "orchard.test" || loc.MDM.ID != tok.MdmID {
			t.Fatalf("confirm: token %s, Apple mdmInfo %+v", tok.State, loc.MDM)
		}
		if err := e.svc.SyncToken(e.admin, tok.ID); err != nil {
			t.Fatal(err)
		}

		// A year later the technician downloads a new token for the same location.
		newExp := exp.AddDate(1, 0, 0)
		renewal := appletest.TokenFile("Org 1001", newExp, "second")
		e.fake.AddLocation(renewal, loc)
		e.fake.Update(func() { loc.ExpiresAt = newExp })
		res2, err := e.svc.UploadServerToken(e.admin, c.ID, renewal)
		if err != nil {
			t.Fatal(err)
		}
		if res2.Renews == nil || res2.Renews.ID != tok.ID || res2.Token.State != servertoken.StatePENDING {
			t.Fatalf("renewal upload = %+v, want it to name token %d", res2, tok.ID)
		}
		renewed, err := e.svc.ConfirmServerToken(e.admin, res2.Token.ID)
		if err != nil {
			t.Fatal(err)
		}
		if renewed.ID != tok.ID || !renewed.ExpiresAt.Equal(newExp.Truncate(time.Second)) {
			t.Fatalf("renewed token %d expiring %v, want token %d expiring %v", renewed.ID, renewed.ExpiresAt, tok.ID, newExp)
		}
		if n, _ := e.db.Client.ServerToken.Query().Count(e.system); n != 1 {
			t.Fatalf("%d tokens after renewal, want 1 (the pending one consumed)", n)
		}
		if n, _ := e.svc.AppCount(e.admin, tok.ID); n != 3 {
			t.Fatalf("apps after renewal = %d, want 3 kept", n)
		}
		if got, _ := e.mods.Sealer.Open(renewed.SealedToken, []byte("wrong row")); got != nil {
			t.Fatal("sealed token opened with another row's data")
		}
	})
}

func TestUploadRefusals(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c := e.customer("Contoso")
	other := e.customer("Fabrikam")

	t.Run("ExpiredFileNeverReachesApple", func(t *testing.T) {
		file, _ := e.location("2001", e.now.Add(-time.Hour), "old", 0)
		before := e.fake.Count("GET /mdm/v2/client/config")
		_, err := e.svc.UploadServerToken(e.admin, c.ID, file)
		wantCode(t, err, fault.TokenExpired)
		if e.fake.Count("GET /mdm/v2/client/config") != before {
			t.Fatal("Apple was called for an expired file")
		}
	})
	t.Run("UnknownToAppleIsInvalid", func(t *testing.T) {
		_, err := e.svc.UploadServerToken(e.admin, c.ID, appletest.TokenFile("X", e.now.AddDate(1, 0, 0), "nobody"))
		wantCode(t, err, fault.TokenInvalid)
	})
	t.Run("Revoked", func(t *testing.T) {
		file, loc := e.location("2002", e.now.AddDate(1, 0, 0), "rev", 0)
		loc.ErrorNumber = 9625
		_, err := e.svc.UploadServerToken(e.admin, c.ID, file)
		wantCode(t, err, fault.TokenRevoked)
	})
	t.Run("OwnedByOtherCustomer", func(t *testing.T) {
		file, _ := e.location("2003", e.now.AddDate(1, 0, 0), "owned", 0)
		e.activeToken(c.ID, file)
		again := appletest.TokenFile("Org 2003", e.now.AddDate(1, 0, 0), "owned-again")
		e.fake.AddLocation(again, e.fake.Location(file))
		_, err := e.svc.UploadServerToken(e.admin, other.ID, again)
		wantCode(t, err, fault.TokenOwnedByOtherCustomer)
	})
	t.Run("NothingStoredOnFailure", func(t *testing.T) {
		n, _ := e.db.Client.ServerToken.Query().Where(servertoken.StateNEQ(servertoken.StateACTIVE)).Count(e.system)
		if n != 0 {
			t.Fatalf("%d tokens left behind by failed uploads", n)
		}
	})
}

func TestConflictClaimCancel(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c := e.customer("Northwind")
	file, loc := e.location("3001", e.now.AddDate(1, 0, 0), "jamf", 0)
	loc.MDM = &appletest.MDMInfo{ID: "jamf-1", Name: "Jamf Pro", Metadata: "jamf.example.com"}

	res, err := e.svc.UploadServerToken(e.admin, c.ID, file)
	if err != nil {
		t.Fatal(err)
	}
	if res.Token.State != servertoken.StateCONFLICT || res.Conflict == nil || res.Conflict.Name != "Jamf Pro" {
		t.Fatalf("upload = %+v, want CONFLICT naming Jamf Pro", res)
	}
	_, err = e.svc.ConfirmServerToken(e.admin, res.Token.ID)
	wantCode(t, err, fault.TokenConflict)
	if loc.MDM.ID != "jamf-1" {
		t.Fatal("a refused confirm changed Apple's mdmInfo")
	}

	t.Run("Cancel", func(t *testing.T) {
		res2, err := e.svc.UploadServerToken(e.admin, c.ID, file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.svc.CancelServerToken(e.admin, res2.Token.ID)
		if err != nil || got.ID != res2.Token.ID || got.State != servertoken.StateCONFLICT {
			t.Fatalf("cancel = %+v, %v", got, err)
		}
		if _, err := e.db.Client.ServerToken.Get(e.system, res2.Token.ID); !ent.IsNotFound(err) {
			t.Fatal("cancelled token still stored")
		}
	})
	t.Run("Claim", func(t *testing.T) {
		tok, err := e.svc.ClaimServerToken(e.admin, res.Token.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tok.State != servertoken.StateACTIVE || loc.MDM.Name != "Orchard" {
			t.Fatalf("claim: %s, Apple says %+v", tok.State, loc.MDM)
		}
		_, err = e.svc.CancelServerToken(e.admin, tok.ID)
		wantCode(t, err, fault.InvalidState)
	})
}

func TestConcurrentConfirmsOfOneLocation(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		c := e.customer("Race")
		_, loc := e.location("4001", e.now.AddDate(1, 0, 0), "race-0", 0)
		var pending []int
		for i := range 10 {
			f := appletest.TokenFile("Org", e.now.AddDate(1, 0, 0), "race-"+string(rune('a'+i)))
			e.fake.AddLocation(f, loc)
			res, err := e.svc.UploadServerToken(e.admin, c.ID, f)
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, res.Token.ID)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(pending))
		for i, id := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.svc.ConfirmServerToken(e.admin, id)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && fault.CodeOf(err) == fault.Internal {
				t.Fatalf("a racing confirm failed internally: %v", err)
			}
		}
		active, err := e.db.Client.ServerToken.Query().Where(servertoken.StateEQ(servertoken.StateACTIVE)).All(e.system)
		if err != nil {
			t.Fatal(err)
		}
		if len(active) != 1 {
			t.Fatalf("%d ACTIVE tokens for one location, want exactly 1", len(active))
		}
	})
}

func TestSync(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		c := e.customer("Fabrikam")
		file, loc := e.location("5001", e.now.AddDate(1, 0, 0), "apps", 1200)
		loc.Assets[0].TotalCount = 2147483647 // unlimited free app
		loc.Assets[1].ProductType = "Book"
		loc.Names = map[string]string{loc.Assets[2].AdamID: "Keynote"}
		e.fake.PageSize = 250
		tok := e.activeToken(c.ID, file)

		if err := e.svc.SyncToken(e.admin, tok.ID); err != nil {
			t.Fatal(err)
		}
		if n, _ := e.svc.AppCount(e.admin, tok.ID); n != 1200 {
			t.Fatalf("appCount = %d, want 1200", n)
		}
		free, _ := e.db.Client.App.Query().Where(app.AdamID(loc.Assets[0].AdamID)).Only(e.system)
		if !free.Unlimited || free.TotalCount != 0 {
			t.Fatalf("unlimited app stored as %+v", free)
		}
		named, _ := e.db.Client.App.Query().Where(app.AdamID(loc.Assets[2].AdamID)).Only(e.system)
		if named.Name == nil || *named.Name != "Keynote" || named.BundleID == nil {
			t.Fatalf("metadata not filled: %+v", named)
		}
		lics, err := e.svc.TokenLicences(e.admin, []int{tok.ID})
		if err != nil {
			t.Fatal(err)
		}
		lic := lics[tok.ID]
		wantTotal := 0
		for _, a := range loc.Assets[1:] {
			wantTotal += a.TotalCount
		}
		if lic.Total != wantTotal || lic.UnlimitedCount != 1 {
			t.Fatalf("licences = %+v, want total %d and 1 unlimited", lic, wantTotal)
		}

		t.Run("UnchangedWritesNothing", func(t *testing.T) {
			before := lastAppWrite(t, e)
			e.advance(time.Hour)
			if err := e.svc.SyncToken(e.admin, tok.ID); err != nil {
				t.Fatal(err)
			}
			after := lastAppWrite(t, e)
			if !after.Equal(before) {
				t.Fatalf("an unchanged re-sync rewrote apps (%v → %v)", before, after)
			}
		})
		t.Run("RemovedAtAppleDisappears", func(t *testing.T) {
			e.fake.Update(func() { loc.Assets = loc.Assets[:1100] })
			if err := e.svc.SyncToken(e.admin, tok.ID); err != nil {
				t.Fatal(err)
			}
			if n, _ := e.svc.AppCount(e.admin, tok.ID); n != 1100 {
				t.Fatalf("appCount = %d, want 1100", n)
			}
		})
		t.Run("AnotherMDMTakesOver", func(t *testing.T) {
			e.fake.Update(func() { loc.MDM = &appletest.MDMInfo{ID: "x", Name: "Intune", Metadata: "tenant"} })
			err := e.svc.SyncToken(e.admin, tok.ID)
			wantCode(t, err, fault.TokenConflict)
			got, _ := e.db.Client.ServerToken.Get(e.system, tok.ID)
			if got.State != servertoken.StateCONFLICT || got.ManagedBy == nil || got.ManagedBy.Name != "Intune" || got.LastErrorCode != "TOKEN_CONFLICT" {
				t.Fatalf("token after takeover = %s %+v", got.State, got.ManagedBy)
			}
			before := e.fake.Count("POST /mdm/v2/client/config")
			_ = e.svc.SyncToken(e.admin, tok.ID)
			if e.fake.Count("POST /mdm/v2/client/config") != before {
				t.Fatal("Orchard wrote to a location another MDM holds")
			}
		})
	})
}

func TestSyncRecordsAppleVerdicts(t *testing.T) {
	for _, tc := range []struct {
		number int
		state  servertoken.State
		code   fault.Code
	}{
		{9625, servertoken.StateREVOKED, fault.TokenRevoked},
		{9622, servertoken.StateINVALID, fault.TokenInvalid},
		{9621, servertoken.StateACTIVE, fault.TokenExpired},
	} {
		t.Run(string(tc.code), func(t *testing.T) {
			e := newEnv(t, testdb.SQLite(t))
			c := e.customer("C")
			file, loc := e.location("6001", e.now.AddDate(1, 0, 0), "v", 2)
			tok := e.activeToken(c.ID, file)
			e.fake.Update(func() { loc.ErrorNumber = tc.number })
			wantCode(t, e.svc.SyncToken(e.admin, tok.ID), tc.code)
			got, _ := e.db.Client.ServerToken.Get(e.system, tok.ID)
			if got.State != tc.state || got.LastErrorCode != string(tc.code) || got.LastErrorAt == nil {
				t.Fatalf("token = %s, last error %q", got.State, got.LastErrorCode)
			}
			if tc.number == 9621 && domain.StatusOf(got.ExpiresAt, e.now, e.svc.WarnDays()) != domain.ExpiryExpired {
				t.Fatal("a token Apple calls expired does not read as EXPIRED")
			}
		})
	}
}

func TestScope(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		a, b := e.customer("A"), e.customer("B")
		fileB, _ := e.location("7001", e.now.AddDate(1, 0, 0), "b", 2)
		tokB := e.activeToken(b.ID, fileB)
		if err := e.svc.SyncToken(e.admin, tokB.ID); err != nil {
			t.Fatal(err)
		}
		tech := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 2, Name: "tech", Role: viewer.Technician, Customers: []int{a.ID}})
		ro := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 3, Name: "ro", Role: viewer.ReadOnly})
		client := e.db.Client

		if cs, _ := client.Customer.Query().All(tech); len(cs) != 1 || cs[0].ID != a.ID {
			t.Fatalf("scoped key sees %d customers", len(cs))
		}
		if _, err := client.Noder(tech, tokB.ID); !ent.IsNotFound(err) {
			t.Fatalf("node(B's token) = %v, want not found", err)
		}
		if n, _ := client.ServerToken.Query().Where(servertoken.HasCustomerWith()).Count(tech); n != 0 {
			t.Fatalf("edge predicate reached %d of B's tokens", n)
		}
		if n, _ := client.App.Query().Count(tech); n != 0 {
			t.Fatalf("scoped key sees %d of B's apps", n)
		}
		if n, _ := client.Customer.Query().QueryTokens().QueryApps().Count(tech); n != 0 {
			t.Fatalf("traversal reached %d of B's apps", n)
		}
		wantCode(t, e.svc.DeleteServerToken(tech, tokB.ID), fault.NotFound)
		_, err := e.svc.UploadServerToken(tech, b.ID, fileB)
		wantCode(t, err, fault.NotFound)
		_, err = e.svc.CreateCustomer(tech, "New")
		wantCode(t, err, fault.Forbidden)
		_, err = e.svc.CreateCustomer(ro, "New")
		wantCode(t, err, fault.Forbidden)
		_, err = e.svc.ConfirmServerToken(ro, tokB.ID)
		wantCode(t, err, fault.Forbidden)
		if _, err := client.Customer.Query().All(context.Background()); fault.CodeOf(err) != fault.Unauthenticated {
			t.Fatalf("query without a viewer = %v, want UNAUTHENTICATED", err)
		}
		if _, err := client.APIKey.Query().All(e.admin); fault.CodeOf(err) != fault.Forbidden {
			t.Fatalf("API keys readable through the API: %v", err)
		}
	})
}

func TestDeleteCustomerRefusedWithTokens(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c := e.customer("Busy")
	file, _ := e.location("8001", e.now.AddDate(1, 0, 0), "busy", 0)
	e.activeToken(c.ID, file)
	wantCode(t, e.svc.DeleteCustomer(e.admin, c.ID), fault.InvalidState)
	empty := e.customer("Empty")
	if err := e.svc.DeleteCustomer(e.admin, empty.ID); err != nil {
		t.Fatal(err)
	}
}

func TestCustomerNames(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c, err := e.svc.CreateCustomer(e.admin, "  Contoso  ")
	if err != nil || c.Name != "Contoso" {
		t.Fatalf("got %v, %v; want trimmed name", c, err)
	}
	for name, in := range map[string]string{"empty": "   ", "dup": "CONTOSO", "long": strings.Repeat("é", 201)} {
		t.Run(name, func(t *testing.T) {
			_, err := e.svc.CreateCustomer(e.admin, in)
			wantCode(t, err, fault.BadUserInput)
		})
	}
	if _, err := e.svc.CreateCustomer(e.admin, strings.Repeat("é", 200)); err != nil {
		t.Fatalf("a 200-character name was refused: %v", err)
	}
}

func lastAppWrite(t *testing.T, e *env) time.Time {
	t.Helper()
	a, err := e.db.Client.App.Query().Order(ent.Desc(app.FieldUpdatedAt)).First(e.system)
	if err != nil {
		t.Fatal(err)
	}
	return a.UpdatedAt
}

// The same app bought under two tokens of one storefront is looked up once,
// and a re-sync asks for nothing.
func TestMetadataIsCached(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c := e.customer("Meta")
	f1, l1 := e.location("9501", e.now.AddDate(1, 0, 0), "m1", 3)
	f2, l2 := e.location("9502", e.now.AddDate(1, 0, 0), "m2", 3)
	names := map[string]string{l1.Assets[0].AdamID: "Pages", l1.Assets[1].AdamID: "Numbers"}
	l1.Names, l2.Names = names, names
	t1, t2 := e.activeToken(c.ID, f1), e.activeToken(c.ID, f2)
	for _, id := range []int{t1.ID, t2.ID, t1.ID} {
		if err := e.svc.SyncToken(e.admin, id); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.fake.Count("GET /lookup"); n != 1 {
		t.Fatalf("%d metadata lookups, want 1", n)
	}
	named, _ := e.db.Client.App.Query().Where(app.NameEQ("Pages")).Count(e.system)
	if named != 2 {
		t.Fatalf("%d apps named Pages, want 2 (one per token)", named)
	}
}

// Two instances syncing one token at once both succeed and store each app once.
func TestConcurrentSyncs(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		c := e.customer("Twice")
		file, _ := e.location("9901", e.now.AddDate(1, 0, 0), "twice", 300)
		tok := e.activeToken(c.ID, file)
		one, two := e.service(), e.service()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			svc := one
			if i%2 == 1 {
				svc = two
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = svc.SyncToken(e.admin, tok.ID)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("concurrent sync failed: %v", err)
			}
		}
		if n, _ := e.svc.AppCount(e.admin, tok.ID); n != 300 {
			t.Fatalf("appCount = %d, want 300", n)
		}
	})
}

func TestCleanupPending(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	c := e.customer("Stale")
	file, _ := e.location("9951", e.now.AddDate(1, 0, 0), "stale", 0)
	if _, err := e.svc.UploadServerToken(e.admin, c.ID, file); err != nil {
		t.Fatal(err)
	}
	kept, _ := e.location("9952", e.now.AddDate(1, 0, 0), "kept", 0)
	active := e.activeToken(c.ID, kept)
	if n, _ := e.svc.CleanupPending(context.Background()); n != 0 {
		t.Fatalf("a fresh upload was removed")
	}
	e.advance(25 * time.Hour)
	if n, err := e.svc.CleanupPending(context.Background()); n != 1 || err != nil {
		t.Fatalf("cleanup removed %d (%v), want the one stale upload", n, err)
	}
	if _, err := e.db.Client.ServerToken.Get(e.system, active.ID); err != nil {
		t.Fatal("cleanup removed an ACTIVE token")
	}
}
