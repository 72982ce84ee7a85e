package jobs

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

// Stepping down closes the lock's connection while the pinger may be inside
// conn.Ping; pgx.Conn is not safe for concurrent use, so under -race this
// test fails unless Close waits for the pinger. The pinger runs every
// millisecond and every term ends at once, so the two meet often.
func TestLeaderStepDownWaitsForPing(t *testing.T) {
	db := testdb.Postgres(t)
	a := &AdvisoryLock{URL: db.URL, Retry: time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var terms atomic.Int32
	a.Lead(ctx, func(lead context.Context) {
		terms.Add(1)
		select {
		case <-lead.Done():
		case <-time.After(time.Duration(terms.Load()%5) * time.Millisecond):
		}
	})
	if terms.Load() < 10 {
		t.Fatalf("led %d times in 3 s; want many short terms", terms.Load())
	}
}

// Observe says "leading" exactly while the jobs run and "not leading" once
// they return, which is what decides who exports the token gauges.
func TestObserveReportsTerms(t *testing.T) {
	var got []bool
	Observe(Alone{}, func(leading bool) { got = append(got, leading) }).Lead(t.Context(), func(context.Context) {
		if len(got) != 1 || !got[0] {
			t.Errorf("while leading, changes = %v; want [true]", got)
		}
	})
	if len(got) != 2 || got[1] {
		t.Errorf("after the term, changes = %v; want [true false]", got)
	}
}
