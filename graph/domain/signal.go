package domain

import "context"

// EventSignal tells a transport that a subscription has an event waiting.
// With it, the transport's goroutine for a subscription waits on a shallow
// stack and calls the executor only when an event is there. Waiting inside
// the executor instead costs every subscriber a stack that the collector
// shrinks while it idles and that must grow again, copied frame by frame,
// when the event comes: for one warning to 10,000 subscribers that was a
// third of the server's CPU (issue 15, P6).
//
// A hub that honours the signal claims it when the subscription starts and
// raises it after each event it queues and when the stream ends. A signal
// nobody claimed means the transport must wait inside the executor as
// before.
type EventSignal struct {
	c       chan struct{}
	pending func() int
}

// NewEventSignal returns a signal for one subscription.
func NewEventSignal() *EventSignal { return &EventSignal{c: make(chan struct{}, 1)} }

type eventSignalKey struct{}

// WithEventSignal returns ctx carrying s, for the subscription resolver.
func WithEventSignal(ctx context.Context, s *EventSignal) context.Context {
	return context.WithValue(ctx, eventSignalKey{}, s)
}

func eventSignalFrom(ctx context.Context) *EventSignal {
	s, _ := ctx.Value(eventSignalKey{}).(*EventSignal)
	return s
}

// Claimed reports whether the subscription's hub raises the signal. Read
// it after the subscription has started.
func (s *EventSignal) Claimed() bool { return s.pending != nil }

// C receives after one or more events were queued, or the stream ended.
func (s *EventSignal) C() <-chan struct{} { return s.c }

// Pending is the number of events queued and not yet taken.
func (s *EventSignal) Pending() int { return s.pending() }

// claim is the hub's: pending counts the events queued for the subscriber.
func (s *EventSignal) claim(pending func() int) { s.pending = pending }

// raise never blocks: one raised signal covers every event queued before
// the transport looks at Pending.
func (s *EventSignal) raise() {
	if s == nil {
		return
	}
	select {
	case s.c <- struct{}{}:
	default:
	}
}
