package domain

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/fault"
)

// Warning is one expiry warning as subscribers receive it.
type Warning struct {
	Token           *ent.ServerToken
	DaysUntilExpiry int
	Level           WarningLevel
	IssuedAt        time.Time
	fanout          *Fanout
}

// subscriberBuffer is how many warnings a subscriber may fall behind before
// it loses some; a slow client never holds up the others.
const subscriberBuffer = 64

type subscriber struct {
	v          *viewer.Viewer
	customerID *int
	ch         chan *Warning
	// starting is true while the first batch is read; live warnings wait
	// in backlog so they follow it.
	starting bool
	backlog  []*Warning
	// signal, when the transport gave one, is raised with every event.
	signal *EventSignal
}

// Hub fans expiry warnings from the broker out to the GraphQL subscribers of
// this instance. One goroutine reads the broker; each subscriber costs a
// buffered channel and no goroutine of its own.
type Hub struct {
	svc *Service
	log *slog.Logger

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// licences fans out licence news (licences_warn.go).
	licences *LicenceHub
}

// NewHub returns a hub; Run starts it.
func NewHub(svc *Service) *Hub {
	return &Hub{svc: svc, log: svc.log, subs: map[*subscriber]struct{}{}, licences: newLicenceHub(svc)}
}

// Run delivers warnings from the broker until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	go h.licences.Run(ctx)
	if h.svc.broker == nil {
		<-ctx.Done()
		return nil
	}
	msgs, err := h.svc.broker.Subscribe(ctx, ExpiryTopic)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", ExpiryTopic, err)
	}
	connected := h.svc.Now()
	for payload := range msgs {
		if len(payload) == 0 {
			// The broker reconnected: deliver what was raised meanwhile.
			h.catchUp(ctx, connected)
			connected = h.svc.Now()
			continue
		}
		var m warningMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			h.log.Error("bad expiry message", "err", err)
			continue
		}
		h.deliver(ctx, m)
	}
	return nil
}

// catchUpMargin covers clock skew between instances and the time a warning
// took to reach the broker.
const catchUpMargin = time.Minute

// catchUp delivers the warnings raised since (less a margin) that the
// broker may not have carried. A subscriber may see one twice; it never
// misses one.
func (h *Hub) catchUp(ctx context.Context, since time.Time) {
	toks, err := h.svc.client.ServerToken.Query().
		Where(servertoken.WarnedAtGTE(since.Add(-catchUpMargin)), servertoken.StateEQ(servertoken.StateACTIVE)).
		All(viewer.SystemContext(ctx))
	if err != nil {
		h.log.Error("catching up on expiry warnings", "err", err)
		return
	}
	for _, t := range toks {
		h.deliver(ctx, warningMessage{TokenID: t.ID, CustomerID: t.CustomerID, ExpiresAt: t.ExpiresAt, IssuedAt: *t.WarnedAt})
	}
	h.log.Info("expiry warnings caught up after a broker reconnect", "count", len(toks))
}

// Licences returns the hub of licence operation updates and warnings.
func (h *Hub) Licences() *LicenceHub { return h.licences }

// Subscribers returns the number of open subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *Hub) deliver(ctx context.Context, m warningMessage) {
	h.mu.Lock()
	var targets []*subscriber
	for s := range h.subs {
		if s.v.CanSee(m.CustomerID) && (s.customerID == nil || *s.customerID == m.CustomerID) {
			targets = append(targets, s)
		}
	}
	h.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	// The customer is loaded with the token: every subscriber shares this
	// one value, so its customer edge costs one query, not one each.
	tok, err := h.svc.client.ServerToken.Query().Where(servertoken.ID(m.TokenID)).WithCustomer().Only(viewer.SystemContext(ctx))
	if err != nil {
		if !ent.IsNotFound(err) {
			h.log.Error("loading warned token", "token", m.TokenID, "err", err)
		}
		return
	}
	w := &Warning{
		Token:           tok,
		DaysUntilExpiry: DaysUntil(tok.ExpiresAt, m.IssuedAt),
		Level:           LevelOf(tok.ExpiresAt, m.IssuedAt),
		IssuedAt:        m.IssuedAt,
	}
	if len(targets) > 1 {
		w.fanout = &Fanout{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range targets {
		if _, open := h.subs[s]; !open {
			continue
		}
		if s.starting {
			s.backlog = append(s.backlog, w)
			continue
		}
		h.send(s, w)
	}
}

// send hands w to s without waiting; h.mu is held.
func (h *Hub) send(s *subscriber, w *Warning) {
	select {
	case s.ch <- w:
		s.signal.raise()
	default:
		h.log.Warn("expiry subscriber is not keeping up; warning dropped", "token", w.Token.ID)
	}
}

// Subscribe returns the caller's current warnings, then each new one, until
// ctx ends. customerID narrows to one customer.
//
// The database work runs on a short-lived goroutine: the caller's goroutine
// lives as long as the subscription, and a stack grown by one query would
// stay grown for hours, for every idle subscriber.
func (h *Hub) Subscribe(ctx context.Context, customerID *int) (<-chan *Warning, error) {
	type result struct {
		ch  <-chan *Warning
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, err := h.subscribe(ctx, customerID)
		done <- result{ch, err}
	}()
	r := <-done
	return r.ch, r.err
}

func (h *Hub) subscribe(ctx context.Context, customerID *int) (<-chan *Warning, error) {
	v, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if customerID != nil {
		if _, err := h.svc.client.Customer.Get(ctx, *customerID); err != nil {
			return nil, notFound(err, "customer")
		}
	}
	// Register first, so nothing raised while the first batch is read is lost.
	s := &subscriber{v: v, customerID: customerID, starting: true}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	current, err := h.svc.currentWarnings(ctx, customerID)
	if err != nil {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		return nil, err
	}
	h.mu.Lock()
	s.ch = make(chan *Warning, subscriberBuffer+len(current))
	if sig := eventSignalFrom(ctx); sig != nil {
		ch := s.ch
		sig.claim(func() int { return len(ch) })
		s.signal = sig
		defer sig.raise() // for the first batch
	}
	sent := map[int]WarningLevel{}
	for _, w := range current {
		s.ch <- w
		sent[w.Token.ID] = w.Level
	}
	for _, w := range s.backlog {
		if sent[w.Token.ID] != w.Level {
			h.send(s, w)
		}
	}
	s.starting, s.backlog = false, nil
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.subs, s)
		close(s.ch)
		h.mu.Unlock()
		s.signal.raise()
	})
	return s.ch, nil
}

// currentWarnings lists a warning for every ACTIVE token in scope that is
// already within the largest threshold, soonest first.
func (s *Service) currentWarnings(ctx context.Context, customerID *int) ([]*Warning, error) {
	if len(s.cfg.WarnDays) == 0 {
		return nil, nil
	}
	now := s.Now()
	q := s.client.ServerToken.Query().
		Where(servertoken.StateEQ(servertoken.StateACTIVE), servertoken.ExpiresAtLTE(now.Add(days(s.cfg.WarnDays[0])))).
		Order(ent.Asc(servertoken.FieldExpiresAt)).
		WithCustomer()
	if customerID != nil {
		q.Where(servertoken.CustomerID(*customerID))
	}
	toks, err := q.All(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Warning, len(toks))
	for i, t := range toks {
		out[i] = &Warning{Token: t, DaysUntilExpiry: DaysUntil(t.ExpiresAt, now), Level: LevelOf(t.ExpiresAt, now), IssuedAt: now}
	}
	return out, nil
}

// MarshalGQL writes the level as a GraphQL enum value.
func (l WarningLevel) MarshalGQL(w io.Writer) { _, _ = io.WriteString(w, strconv.Quote(string(l))) }

// UnmarshalGQL reads a GraphQL enum value.
func (l *WarningLevel) UnmarshalGQL(v any) error {
	s, _ := v.(string)
	switch WarningLevel(s) {
	case LevelNotice, LevelWarning, LevelCritical, LevelExpired:
		*l = WarningLevel(s)
		return nil
	}
	return fault.New(fault.BadUserInput, "%v is not an expiry warning level", v)
}

// MarshalGQL writes the status as a GraphQL enum value.
func (e ExpiryStatus) MarshalGQL(w io.Writer) { _, _ = io.WriteString(w, strconv.Quote(string(e))) }

// UnmarshalGQL reads a GraphQL enum value.
func (e *ExpiryStatus) UnmarshalGQL(v any) error {
	s, _ := v.(string)
	switch ExpiryStatus(s) {
	case ExpiryValid, ExpiryExpiringSoon, ExpiryExpired:
		*e = ExpiryStatus(s)
		return nil
	}
	return fault.New(fault.BadUserInput, "%v is not an expiry status", v)
}
