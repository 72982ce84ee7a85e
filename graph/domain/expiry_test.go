package domain_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

func TestDaysAndStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	warn := []int{30, 7}
	for _, tc := range []struct {
		left   time.Duration
		days   int
		status domain.ExpiryStatus
		level  domain.WarningLevel
	}{
		{40 * 24 * time.Hour, 40, domain.ExpiryValid, domain.LevelNotice},
		{30 * 24 * time.Hour, 30, domain.ExpiryExpiringSoon, domain.LevelNotice},
		{5*24*time.Hour + time.Hour, 5, domain.ExpiryExpiringSoon, domain.LevelWarning},
		{12 * time.Hour, 0, domain.ExpiryExpiringSoon, domain.LevelCritical},
		{-time.Hour, -1, domain.ExpiryExpired, domain.LevelExpired},
		{-50 * time.Hour, -3, domain.ExpiryExpired, domain.LevelExpired},
	} {
		exp := now.Add(tc.left)
		if d := domain.DaysUntil(exp, now); d != tc.days {
			t.Errorf("DaysUntil(%v) = %d, want %d", tc.left, d, tc.days)
		}
		if s := domain.StatusOf(exp, now, warn); s != tc.status {
			t.Errorf("StatusOf(%v) = %s, want %s", tc.left, s, tc.status)
		}
		if l := domain.LevelOf(exp, now); l != tc.level {
			t.Errorf("LevelOf(%v) = %s, want %s", tc.left, l, tc.level)
		}
	}
}

// The watcher raises each threshold once per token and expiry date, across
// restarts, and starts afresh after a renewal.
func TestExpiryWatcher(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *testdb.DB) {
		e := newEnv(t, db)
		c := e.customer("Tailspin")
		exp := e.now.Add(40 * 24 * time.Hour)
		file, loc := e.location("9001", exp, "expiring", 0)
		tok := e.activeToken(c.ID, file)

		ctx, cancel := context.WithCancel(e.admin)
		defer cancel()
		hub := domain.NewHub(e.svc)
		go hub.Run(ctx)
		ch, err := hub.Subscribe(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the hub subscribes to the broker

		scan := func(svc *domain.Service, want int) {
			t.Helper()
			n, err := svc.ScanExpiry(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("at %d days left: %d warnings raised, want %d", domain.DaysUntil(exp, e.now), n, want)
			}
		}
		expect := func(level domain.WarningLevel) {
			t.Helper()
			select {
			case w := <-ch:
				if w.Level != level || w.Token.ID != tok.ID {
					t.Fatalf("got %s for token %d, want %s", w.Level, w.Token.ID, level)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("no %s warning delivered", level)
			}
		}

		scan(e.svc, 0)
		e.advance(11 * 24 * time.Hour) // 29 days left
		scan(e.svc, 1)
		expect(domain.LevelNotice)
		scan(e.svc, 0)
		e.advance(24 * 24 * time.Hour) // 5 days left: 14 and 7 both crossed, one warning
		scan(e.svc, 1)
		expect(domain.LevelWarning)

		restarted := e.service() // a restart remembers what was raised
		scan(restarted, 0)
		e.advance(3 * 24 * time.Hour) // 2 days left
		scan(restarted, 1)
		expect(domain.LevelWarning)
		e.advance(36 * time.Hour) // 12 hours left
		scan(restarted, 1)
		expect(domain.LevelCritical)
		e.advance(24 * time.Hour) // expired
		scan(restarted, 1)
		expect(domain.LevelExpired)
		scan(restarted, 0)

		// A renewal starts afresh: a new token already within 30 days warns at once.
		newExp := e.now.Add(20 * 24 * time.Hour)
		renewal := appletest.TokenFile("Org 9001", newExp, "renewed")
		e.fake.Update(func() { loc.ExpiresAt = newExp })
		e.fake.AddLocation(renewal, loc)
		res, err := e.svc.UploadServerToken(e.admin, c.ID, renewal)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.ConfirmServerToken(e.admin, res.Token.ID); err != nil {
			t.Fatal(err)
		}
		expect(domain.LevelNotice)
	})
}

func TestSubscriptionScopeAndFirstBatch(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	a, b := e.customer("A"), e.customer("B")
	fileA, _ := e.location("9101", e.now.Add(5*24*time.Hour), "a", 0)
	fileB, _ := e.location("9102", e.now.Add(200*24*time.Hour), "b", 0)
	tokA := e.activeToken(a.ID, fileA)
	e.activeToken(b.ID, fileB)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub := domain.NewHub(e.svc)
	go hub.Run(ctx)

	onlyB := viewer.NewContext(ctx, &viewer.Viewer{KeyID: 9, Name: "b", Role: viewer.ReadOnly, Customers: []int{b.ID}})
	chB, err := hub.Subscribe(onlyB, nil)
	if err != nil {
		t.Fatal(err)
	}
	chAll, err := hub.Subscribe(viewer.NewContext(ctx, &viewer.Viewer{KeyID: 8, Role: viewer.ReadOnly}), nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-chAll:
		if w.Token.ID != tokA.ID || w.Level != domain.LevelWarning || w.DaysUntilExpiry != 5 {
			t.Fatalf("first batch = %+v", w)
		}
	case <-time.After(time.Second):
		t.Fatal("the first batch did not carry the token already within a threshold")
	}
	select {
	case w := <-chB:
		t.Fatalf("a key scoped to B received A's warning: %+v", w)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := hub.Subscribe(onlyB, &a.ID); err == nil {
		t.Fatal("subscribing to another customer's warnings was allowed")
	}
}

func TestSubscriptionsDoNotLeak(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	hub := domain.NewHub(e.svc)
	root, stop := context.WithCancel(context.Background())
	defer stop()
	go hub.Run(root)
	time.Sleep(10 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 1000 {
		ctx, cancel := context.WithCancel(e.admin)
		if _, err := hub.Subscribe(ctx, nil); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	deadline := time.Now().Add(2 * time.Second)
	for hub.Subscribers() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := hub.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left after their clients went away", n)
	}
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Fatalf("goroutines grew from %d to %d", before, after)
	}
}
