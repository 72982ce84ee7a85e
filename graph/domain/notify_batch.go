package domain

import (
	"context"
	"crypto/sha256"
	"sync"

	"github.com/orchard-msp/orchard/modules/apple"
)

// maxNotificationBatch bounds how many notifications one transaction
// records, so a long burst still answers in steady steps.
const maxNotificationBatch = 64

// notifyTarget is the token a notification was authenticated for, and
// the sealed secret it was authenticated with.
type notifyTarget struct {
	ID, CustomerID int
	sealed         []byte
}

// pendingNotification is one authenticated notification waiting for its
// transaction, and then its answer.
type pendingNotification struct {
	ctx  context.Context
	tok  *notifyTarget
	n    *apple.Notification
	wake chan struct{}

	done bool
	// stale: the token changed since the notification was authenticated
	// (checkTargets); nothing was recorded.
	stale  bool
	result NotificationResult
	eff    *licenceEffects
	err    error
}

// reset forgets what an attempt that was rolled back decided.
func (p *pendingNotification) reset() {
	p.result, p.eff, p.err, p.stale = NotificationAccepted, nil, nil, false
}

// groupCommit lets work that arrives while a transaction is committing
// ride in the next transaction together. There is no goroutine of its
// own: the first caller to find it idle leads, records everything queued,
// and when its own work is done hands the lead to the next waiter.
type groupCommit struct {
	mu    sync.Mutex
	queue []*pendingNotification
	busy  bool
}

// do queues p and returns once run has recorded it.
func (g *groupCommit) do(p *pendingNotification, run func([]*pendingNotification)) {
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.busy {
		g.mu.Unlock()
		<-p.wake
		if p.done {
			return
		}
		// Handed the lead: p is first in the queue.
	} else {
		g.busy = true
		g.mu.Unlock()
	}
	for !p.done {
		g.mu.Lock()
		n := min(len(g.queue), maxNotificationBatch)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		run(batch)
		for _, q := range batch {
			q.done = true
			if q != p {
				q.wake <- struct{}{}
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.busy = false
		return
	}
	g.queue[0].wake <- struct{}{}
}

// notifyAuthCache remembers which token a location's notification secret
// authenticated, keyed by a digest of the Authorization header (never the
// secret itself), so a burst is not a database read and a decryption per
// notification. A remembered match is only a guess: checkTargets confirms
// it in the transaction that records the notification.
type notifyAuthCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*notifyTarget
}

// maxNotifyAuth bounds the cache; Orchard holds one entry per location.
const maxNotifyAuth = 4096

func notifyAuthKey(locationUID, authorization string) [sha256.Size]byte {
	return sha256.Sum256([]byte(locationUID + "\x00" + authorization))
}

func (c *notifyAuthCache) get(locationUID, authorization string) *notifyTarget {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[notifyAuthKey(locationUID, authorization)]
}

func (c *notifyAuthCache) put(locationUID, authorization string, t *notifyTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxNotifyAuth {
		c.m = map[[sha256.Size]byte]*notifyTarget{}
	}
	c.m[notifyAuthKey(locationUID, authorization)] = t
}

func (c *notifyAuthCache) forget(locationUID, authorization string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, notifyAuthKey(locationUID, authorization))
}
