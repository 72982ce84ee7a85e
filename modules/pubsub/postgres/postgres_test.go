package postgres_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
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

// The broker logs through the logger its host gives (the server's JSON
// logger at the configured level), not through slog.Default().
func TestBrokerLogsThroughTheHostLogger(t *testing.T) {
	db := testdb.Postgres(t)
	cfg, _ := json.Marshal(map[string]string{"url": db.URL})
	var warnLog, errorLog syncBuffer
	load := func(w io.Writer, level slog.Level) pubsub.Broker {
		t.Helper()
		ctx := modules.WithLogger(context.Background(), slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
		b, err := modules.Load[pubsub.Broker](ctx, "pubsub.postgres", cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	atWarn, atError := load(&warnLog, slog.LevelWarn), load(&errorLog, slog.LevelError)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgsWarn, err := atWarn.Subscribe(ctx, "orchard.logs")
	if err != nil {
		t.Fatal(err)
	}
	msgsError, err := atError.Subscribe(ctx, "orchard.logs")
	if err != nil {
		t.Fatal(err)
	}

	// Cut both listeners' connections: each broker logs a warning.
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
		`LISTEN "`+postgres.Channel(schema, "orchard.logs")+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 2 {
		t.Fatalf("%d listener connections found, want 2", n)
	}
	for _, msgs := range []<-chan []byte{msgsWarn, msgsError} {
		select {
		case <-msgs: // the catch-up signal: both have reconnected, after logging
		case <-time.After(10 * time.Second):
			t.Fatal("a listener did not reconnect")
		}
	}

	lines := strings.Split(strings.TrimSpace(warnLog.String()), "\n")
	var entry struct {
		Level, Msg, Module, Err string
	}
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &entry) != nil {
		t.Fatalf("want one JSON line at warn level, got %q", warnLog.String())
	}
	if entry.Level != "WARN" || entry.Module != "pubsub.postgres" || !strings.Contains(entry.Msg, "reconnecting") || entry.Err == "" {
		t.Errorf("log line %+v", entry)
	}
	if errorLog.String() != "" {
		t.Errorf("a broker configured at error level logged %q", errorLog.String())
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
