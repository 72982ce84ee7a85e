package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leadership decides which instance runs the jobs that must run once: the
// expiry watcher, the app sync and the cleanup.
type Leadership interface {
	// Lead calls fn with a context that ends when this instance stops
	// being the leader or ctx ends, each time it becomes the leader.
	Lead(ctx context.Context, fn func(ctx context.Context))
}

// Alone is the leadership of a single instance (SQLite): always the leader.
type Alone struct{}

// Lead implements Leadership.
func (Alone) Lead(ctx context.Context, fn func(context.Context)) { fn(ctx) }

// AdvisoryLock makes the instance holding a PostgreSQL advisory lock the
// leader. The lock lives on a dedicated connection: if the leader dies or
// loses its connection, PostgreSQL releases the lock and another instance
// takes it at its next try.
type AdvisoryLock struct {
	// URL is the PostgreSQL database the instances share.
	URL string
	// Retry is how long a follower waits between tries to take the lock.
	Retry time.Duration
	Log   *slog.Logger
}

// lockKey derives the advisory lock's key from the schema, so separate
// Orchards on one server do not block each other.
func lockKey(schema string) int64 {
	sum := sha256.Sum256([]byte("orchard jobs\x00" + schema))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// Lead implements Leadership.
func (a *AdvisoryLock) Lead(ctx context.Context, fn func(context.Context)) {
	for ctx.Err() == nil {
		a.term(ctx, fn)
		select {
		case <-ctx.Done():
		case <-time.After(a.Retry):
		}
	}
}

// term tries once to take the lock and, if it does, leads until it is lost.
func (a *AdvisoryLock) term(ctx context.Context, fn func(context.Context)) {
	conn, err := pgx.Connect(ctx, a.URL)
	if err != nil {
		a.Log.Warn("job leader election: cannot connect", "err", err)
		return
	}
	defer conn.Close(context.Background())
	var schema string
	var got bool
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return
	}
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(schema)).Scan(&got); err != nil || !got {
		return
	}
	a.Log.Info("this instance is now the job leader")
	lead, lost := context.WithCancel(ctx)
	// A pgx.Conn serves one caller at a time: the deferred Close must wait
	// until the pinger has left conn.Ping (defers run last-in, first-out).
	pinging := make(chan struct{})
	defer func() { lost(); <-pinging }()
	go func() {
		defer close(pinging)
		// Check the lock's connection; when it fails, stop leading at once.
		t := time.NewTicker(min(a.Retry, 2*time.Second))
		defer t.Stop()
		for {
			select {
			case <-lead.Done():
				return
			case <-t.C:
				pctx, cancel := context.WithTimeout(lead, 2*time.Second)
				err := conn.Ping(pctx)
				cancel()
				if err != nil && lead.Err() == nil {
					a.Log.Warn("lost the job leader's database connection; stepping down", "err", err)
					lost()
					return
				}
			}
		}
	}()
	fn(lead)
	a.Log.Info("this instance is no longer the job leader")
}

// Observe wraps l so that onChange(true) is called when this instance
// becomes the leader and onChange(false) when it stops; metrics use it to
// say which instance exports the gauges that describe every token.
func Observe(l Leadership, onChange func(leading bool)) Leadership {
	return observed{l, onChange}
}

type observed struct {
	Leadership
	onChange func(bool)
}

func (o observed) Lead(ctx context.Context, fn func(context.Context)) {
	o.Leadership.Lead(ctx, func(ctx context.Context) {
		o.onChange(true)
		defer o.onChange(false)
		fn(ctx)
	})
}
