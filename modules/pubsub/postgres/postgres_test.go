package postgres_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/pubsub/postgres"
)

func TestBrokerAcrossConnectionsAndReconnect(t *testing.T) {
	db := testdb.Postgres(t)
	cfg, _ := json.Marshal(map[string]string{"url": db.URL})
	a, err := modules.Load[pubsub.Broker](context.Background(), "pubsub.postgres", cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := modules.Load[pubsub.Broker](context.Background(), "pubsub.postgres", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := a.Subscribe(ctx, "orchard.expiry")
	if err != nil {
		t.Fatal(err)
	}
	next := func() []byte {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
			return nil
		}
	}
	if err := b.Publish(ctx, "orchard.expiry", []byte(`{"tokenID":1}`)); err != nil {
		t.Fatal(err)
	}
	if got := string(next()); got != `{"tokenID":1}` {
		t.Fatalf("got %q", got)
	}

	// Cut the listener's connection, as a database restart would.
	admin, err := sql.Open("pgx", db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var schema string
	if err := admin.QueryRow("SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	res, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1`,
		`LISTEN "`+postgres.Channel(schema, "orchard.expiry")+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d listener connections found, want 1", n)
	}
	if got := next(); len(got) != 0 {
		t.Fatalf("after a reconnect the listener should be told to catch up (an empty message), got %q", got)
	}
	if err := b.Publish(ctx, "orchard.expiry", []byte(`{"tokenID":2}`)); err != nil {
		t.Fatal(err)
	}
	if got := string(next()); got != `{"tokenID":2}` {
		t.Fatalf("after reconnecting: %q", got)
	}
}
