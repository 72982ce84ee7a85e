package domain

import (
	"sync"
	"sync/atomic"
)

// Fanout belongs to one event that a hub hands to many subscribers at once
// (one expiry warning, one licence warning). The GraphQL layer keeps there
// what it rendered of the event for one shape of subscription (document,
// variables and viewer), so that ten thousand identical subscriptions render
// the event once and each sends the same bytes. An event made for a single
// subscriber (its first batch) has none.
type Fanout struct {
	// first is the first shape asked for: usually every subscriber has it,
	// and they read it here without taking mu one after another.
	first atomic.Pointer[rendering]
	mu    sync.Mutex
	shape map[string]*rendering
}

type rendering struct {
	key  string
	done chan struct{}
	b    []byte
	ok   bool
}

// Render returns what render returned for key: the first caller of a key
// runs render, the others wait for it and share the bytes. ok is false when
// render said its bytes must not be shared (they carried errors of the
// caller's own, say, or it panicked); each caller then renders for itself.
func (f *Fanout) Render(key string, render func() (b []byte, ok bool)) ([]byte, bool) {
	if r := f.first.Load(); r != nil && r.key == key {
		<-r.done
		return r.b, r.ok
	}
	f.mu.Lock()
	if f.shape == nil {
		f.shape = map[string]*rendering{}
	}
	r, seen := f.shape[key]
	if !seen {
		r = &rendering{key: key, done: make(chan struct{})}
		f.shape[key] = r
		f.first.CompareAndSwap(nil, r)
	}
	f.mu.Unlock()
	if seen {
		<-r.done
		return r.b, r.ok
	}
	defer close(r.done)
	r.b, r.ok = render()
	return r.b, r.ok
}

// Fanout returns the event's shared renderings, or nil when it went to one
// subscriber only.
func (w *Warning) Fanout() *Fanout { return w.fanout }

// Fanout returns the event's shared renderings, or nil when it went to one
// subscriber only.
func (w *LicenceWarning) Fanout() *Fanout { return w.fanout }
