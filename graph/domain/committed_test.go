package domain_test

import (
	"context"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/hook"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

// Every entity a domain function returns still answers its edges after the
// transaction that read or wrote it ended, as the resolvers ask them.
func TestEntitiesOutliveTheirTransaction(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	ctx := e.admin
	c := e.customer("Contoso")
	exp := e.now.AddDate(0, 0, 20)
	file, loc := e.location("900", exp, "first", 2)

	edges := func(what string, tok *ent.ServerToken) {
		t.Helper()
		cust, err := tok.Customer(ctx) // as the resolver asks it
		if err != nil || cust.ID != c.ID {
			t.Fatalf("%s: customer edge: %v, %v", what, cust, err)
		}
		if _, err := tok.QueryApps().Count(ctx); err != nil {
			t.Fatalf("%s: apps edge: %v", what, err)
		}
	}
	up, err := e.svc.UploadServerToken(ctx, c.ID, file)
	if err != nil {
		t.Fatal(err)
	}
	edges("upload", up.Token)
	tok, err := e.svc.ConfirmServerToken(ctx, up.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	edges("confirm", tok)

	renewal, _ := e.location("900", exp, "second", 2)
	e.fake.AddLocation(renewal, loc)
	up, err = e.svc.UploadServerToken(ctx, c.ID, renewal)
	if err != nil {
		t.Fatal(err)
	}
	if up.Renews == nil {
		t.Fatal("the renewal upload does not say what it renews")
	}
	edges("upload renews", up.Renews)
	again, err := e.svc.UploadServerToken(ctx, c.ID, renewal)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := e.svc.CancelServerToken(ctx, again.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	edges("cancel", cancelled)
	claimed, err := e.svc.ClaimServerToken(ctx, up.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	edges("claim", claimed)
	synced, err := e.svc.SyncServerToken(ctx, claimed.ID)
	if err != nil {
		t.Fatal(err)
	}
	edges("sync", synced)
}

// A mutation whose write committed answers with its result, even when the
// caller goes away right after the commit and what follows fails.
func TestCommittedMutationsAnswerSuccess(t *testing.T) {
	db := testdb.SQLite(t)
	e := newEnv(t, db)
	c := e.customer("Contoso")
	file, _ := e.location("901", e.now.AddDate(0, 0, 20), "secret", 2)

	ctx, cancel := context.WithCancel(e.admin)
	defer cancel()
	// Cancel the caller's context as soon as an activation or a sync is stored.
	db.Client.ServerToken.Use(func(next ent.Mutator) ent.Mutator {
		return hook.ServerTokenFunc(func(hctx context.Context, m *ent.ServerTokenMutation) (ent.Value, error) {
			v, err := next.Mutate(hctx, m)
			if err != nil {
				return v, err
			}
			if _, ok := m.LastSyncedAt(); ok {
				cancel()
			}
			if tx, txErr := m.Tx(); txErr == nil {
				if st, ok := m.State(); ok && st == "ACTIVE" {
					tx.OnCommit(func(next ent.Committer) ent.Committer {
						return ent.CommitFunc(func(cctx context.Context, tx *ent.Tx) error {
							err := next.Commit(cctx, tx)
							cancel()
							return err
						})
					})
				}
			}
			return v, err
		})
	})

	up, err := e.svc.UploadServerToken(ctx, c.ID, file)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.svc.ConfirmServerToken(ctx, up.Token.ID)
	if err != nil || tok == nil || tok.State != "ACTIVE" {
		t.Fatalf("confirm after its commit: %v, %v", tok, err)
	}
	if _, err := tok.QueryCustomer().Only(e.admin); err != nil {
		t.Fatal(err)
	}

	ctx, cancel = context.WithCancel(e.admin)
	defer cancel()
	e.advance(time.Minute)
	synced, err := e.svc.SyncServerToken(ctx, tok.ID)
	if err != nil || synced == nil {
		t.Fatalf("sync after its commit: %v, %v", synced, err)
	}
	if ctx.Err() == nil {
		t.Fatal("the test did not cancel the sync's context after it was stored")
	}
}
