package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
)

// jobs runs Orchard's background work: the expiry watcher, the app sync and
// the cleanup of stale uploads. Each loop stops when ctx ends.
type jobs struct {
	svc *domain.Service
	cfg *Config
	log *slog.Logger

	wg      sync.WaitGroup
	syncNow chan int
	outbox  chan struct{}
	// licences asks the licence job to run now.
	licences chan struct{}
}

func newJobs(svc *domain.Service, cfg *Config, log *slog.Logger) *jobs {
	j := &jobs{svc: svc, cfg: cfg, log: log, syncNow: make(chan int, 64), outbox: make(chan struct{}, 1), licences: make(chan struct{}, 1)}
	// The licence settings travel with the jobs that use them, so the
	// service knows them before the first request.
	svc.SetLicenceConfig(domain.LicenceConfig{
		PublicURL:     cfg.PublicURL,
		EventPoll:     cfg.AppleEventPoll,
		NotifyWait:    cfg.AppleNotifyWait,
		WarnAvailable: cfg.LicenceWarnAvailable,
		ResendAfter:   time.Duration(resendAfter.Load()),
	}, j.kickLicences)
	return j
}

// resendAfter, when set, replaces Apple's 10 minutes that an event may stay
// PENDING before it is sent again. It is no setting: Apple fixes the window,
// and only tests need it shorter.
var resendAfter atomic.Int64

// kickLicences asks the licence job to look at due events now; it never blocks.
func (j *jobs) kickLicences() {
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

// requestSync asks for a token's first sync after it became ACTIVE; it
// never blocks a mutation.
func (j *jobs) requestSync(tokenID int) {
	select {
	case j.syncNow <- tokenID:
	default:
		j.log.Warn("sync queue full; the token syncs on the next round", "token", tokenID)
	}
}

// kickOutbox asks for webhook deliveries now; it never blocks.
func (j *jobs) kickOutbox() {
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

// start runs the jobs: the ones that must run once across instances under
// lead, the others (webhook deliveries, first syncs) on every instance.
func (j *jobs) start(ctx context.Context, lead leadership) {
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

func (j *jobs) leaderJobs(ctx context.Context, wg *sync.WaitGroup) {
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

func (j *jobs) localJobs(ctx context.Context) {
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
func (j *jobs) loop(ctx context.Context, wg *sync.WaitGroup, name string, every time.Duration, fn func(context.Context)) {
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

// wait blocks until every loop has stopped.
func (j *jobs) wait() { j.wg.Wait() }
