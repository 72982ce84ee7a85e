// Package jobs runs Orchard's background work beside the HTTP server: the
// expiry watcher, the app sync and the cleanup of stale uploads, which run
// on one instance at a time (the leader, see Leadership), and the webhook
// deliveries and first syncs, which run on every instance.
package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
)

// Options are what the jobs work on and how often.
type Options struct {
	Service *domain.Service
	// ExpiryScanInterval is how often every token's expiry is looked at
	// (ORCHARD_EXPIRY_SCAN_INTERVAL).
	ExpiryScanInterval time.Duration
	// AppSyncInterval is how old a token's last sync may get.
	AppSyncInterval time.Duration
	// PendingTTL is how long an unconfirmed upload is kept (ORCHARD_PENDING_TTL).
	PendingTTL time.Duration
	// AppleEventPoll is the least time between status checks of a licence
	// event (ORCHARD_APPLE_EVENT_POLL); the licence job looks a few times
	// as often, so no check comes late.
	AppleEventPoll time.Duration
	Log            *slog.Logger
}

// Jobs runs Orchard's background work: the expiry watcher, the app sync and
// the cleanup of stale uploads. Each loop stops when ctx ends.
type Jobs struct {
	svc *domain.Service
	cfg Options
	log *slog.Logger

	wg      sync.WaitGroup
	syncNow chan int
	outbox  chan struct{}
	// licences asks the licence job to run now.
	licences chan struct{}
}

// New prepares the jobs; Start runs them.
func New(opts Options) *Jobs {
	return &Jobs{svc: opts.Service, cfg: opts, log: opts.Log, syncNow: make(chan int, 64), outbox: make(chan struct{}, 1), licences: make(chan struct{}, 1)}
}

// KickLicences asks the licence job to look at due events now; it never
// blocks (the domain calls it when an operation is recorded or Apple's
// notification arrives).
func (j *Jobs) KickLicences() {
	select {
	case j.licences <- struct{}{}:
	default:
	}
}

// licenceInterval is how often the licence job looks for due events: well
// under the poll interval, so no check comes late by more than a fraction of it.
func licenceInterval(poll time.Duration) time.Duration {
	return min(max(poll/4, 50*time.Millisecond), 5*time.Second)
}

// RequestSync asks for a token's first sync after it became ACTIVE; it
// never blocks a mutation.
func (j *Jobs) RequestSync(tokenID int) {
	select {
	case j.syncNow <- tokenID:
	default:
		j.log.Warn("sync queue full; the token syncs on the next round", "token", tokenID)
	}
}

// KickOutbox asks for webhook deliveries now; it never blocks.
func (j *Jobs) KickOutbox() {
	select {
	case j.outbox <- struct{}{}:
	default:
	}
}

// outboxInterval is how often the webhook outbox is looked at when nothing
// asks sooner: retries come due on their own.
const outboxInterval = 5 * time.Second

// syncWorkers is how many tokens sync at once; each keeps Apple's own
// limit of five requests in flight.
const syncWorkers = 4

// Start runs the jobs: the ones that must run once across instances under
// lead, the others (webhook deliveries, first syncs) on every instance.
func (j *Jobs) Start(ctx context.Context, lead Leadership) {
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		lead.Lead(ctx, func(ctx context.Context) {
			var wg sync.WaitGroup
			j.leaderJobs(ctx, &wg)
			wg.Wait()
		})
	}()
	j.localJobs(ctx)
}

func (j *Jobs) leaderJobs(ctx context.Context, wg *sync.WaitGroup) {
	j.loop(ctx, wg, "expiry watcher", j.cfg.ExpiryScanInterval, func(ctx context.Context) {
		n, err := j.svc.ScanExpiry(ctx)
		if err != nil {
			j.log.Error("expiry scan failed", "err", err)
		} else if n > 0 {
			j.log.Info("expiry warnings raised", "count", n)
		}
	})
	j.loop(ctx, wg, "app sync", min(j.cfg.AppSyncInterval, 10*time.Minute), func(ctx context.Context) {
		synced, failed := j.svc.SyncDue(ctx, j.svc.Now().Add(-j.cfg.AppSyncInterval), syncWorkers)
		if synced+failed > 0 {
			j.log.Info("app sync round", "synced", synced, "failed", failed)
		}
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Licence operations: send what no one sent, check and resend
		// Apple's events, across restarts and instances.
		t := time.NewTicker(licenceInterval(j.cfg.AppleEventPoll))
		defer t.Stop()
		for {
			func() {
				defer func() {
					if v := recover(); v != nil {
						j.log.Error("background job panicked", "job", "licence operations", "panic", v)
					}
				}()
				j.svc.RunLicenceEvents(ctx)
			}()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-j.licences:
			}
		}
	}()
	j.loop(ctx, wg, "pending cleanup", min(j.cfg.PendingTTL/4, time.Hour), func(ctx context.Context) {
		if n, err := j.svc.CleanupPending(ctx); err != nil {
			j.log.Error("cleanup failed", "err", err)
		} else if n > 0 {
			j.log.Info("stale uploads removed", "count", n)
		}
	})
}

func (j *Jobs) localJobs(ctx context.Context) {
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		t := time.NewTicker(outboxInterval)
		defer t.Stop()
		for {
			if ok, failed := j.svc.DeliverOutbox(ctx); ok+failed > 0 {
				j.log.Info("webhook deliveries", "delivered", ok, "failed", failed)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-j.outbox:
			}
		}
	}()
	for range syncWorkers {
		j.wg.Add(1)
		go func() {
			defer j.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-j.syncNow:
					if err := j.svc.SyncInBackground(ctx, id); err != nil && ctx.Err() == nil {
						j.log.Warn("first sync failed; it is retried on the next round", "token", id, "err", err)
					}
				}
			}
		}()
	}
}

// loop runs fn at once and then every interval until ctx ends. A panic in
// one round is logged and the loop goes on.
func (j *Jobs) loop(ctx context.Context, wg *sync.WaitGroup, name string, every time.Duration, fn func(context.Context)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			func() {
				defer func() {
					if v := recover(); v != nil {
						j.log.Error("background job panicked", "job", name, "panic", v)
					}
				}()
				fn(ctx)
			}()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Wait blocks until every loop has stopped.
func (j *Jobs) Wait() { j.wg.Wait() }
