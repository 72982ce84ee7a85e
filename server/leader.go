package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// leadership decides which instance runs the jobs that must run once: the
// expiry watcher, the app sync and the cleanup.
type leadership interface {
	// Lead calls fn with a context that ends when this instance stops
	// being the leader or ctx ends, each time it becomes the leader.
	Lead(ctx context.Context, fn func(ctx context.Context))
}

// alone is the leadership of a single instance (SQLite): always the leader.
type alone struct{}

func (alone) Lead(ctx context.Context, fn func(context.Context)) { fn(ctx) }

// advisoryLock makes the instance holding a PostgreSQL advisory lock the
// leader. The lock lives on a dedicated connection: if the leader dies or
// loses its connection, PostgreSQL releases the lock and another instance
// takes it at its next try.
type advisoryLock struct {
	url   string
	retry time.Duration
	log   *slog.Logger
}

// lockKey derives the advisory lock's key from the schema, so separate
// Orchards on one server do not block each other.
func lockKey(schema string) int64 {
	sum := sha256.Sum256([]byte("orchard jobs\x00" + schema))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

func (a *advisoryLock) Lead(ctx context.Context, fn func(context.Context)) {
	for ctx.Err() == nil {
		a.term(ctx, fn)
		select {
		case <-ctx.Done():
		case <-time.After(a.retry):
		}
	}
}

// term tries once to take the lock and, if it does, leads until it is lost.
func (a *advisoryLock) term(ctx context.Context, fn func(context.Context)) {
	conn, err := pgx.Connect(ctx, a.url)
	if err != nil {
		a.log.Warn("job leader election: cannot connect", "err", err)
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
	a.log.Info("this instance is now the job leader")
	lead, lost := context.WithCancel(ctx)
	// A pgx.Conn serves one caller at a time: the deferred Close must wait
	// until the pinger has left conn.Ping (defers run last-in, first-out).
	pinging := make(chan struct{})
	defer func() { lost(); <-pinging }()
	go func() {
		defer close(pinging)
		// Check the lock's connection; when it fails, stop leading at once.
		t := time.NewTicker(min(a.retry, 2*time.Second))
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
					a.log.Warn("lost the job leader's database connection; stepping down", "err", err)
					lost()
					return
				}
			}
		}
	}()
	fn(lead)
	a.log.Info("this instance is no longer the job leader")
}
