package domain

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"entgo.io/ent/dialect/sql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/modules/fault"
)

// Topics licence news travels on between instances.
const (
	LicenceOperationTopic = "orchard.licence.operation"
	LicenceWarningTopic   = "orchard.licence.warning"
)

// Webhook events of licence warnings.
const (
	EventLicenceLow       = "licence.low"
	EventLicenceExhausted = "licence.exhausted"
)

// LicenceWarningLevel is how short an app is of licences.
type LicenceWarningLevel string

// The licence warning levels of the contract.
const (
	LicenceLow       LicenceWarningLevel = "LOW"
	LicenceExhausted LicenceWarningLevel = "EXHAUSTED"
)

// MarshalGQL writes the level as a GraphQL enum value.
func (l LicenceWarningLevel) MarshalGQL(w io.Writer) {
	_, _ = io.WriteString(w, strconv.Quote(string(l)))
}

// UnmarshalGQL reads a GraphQL enum value.
func (l *LicenceWarningLevel) UnmarshalGQL(v any) error {
	s, _ := v.(string)
	switch LicenceWarningLevel(s) {
	case LicenceLow, LicenceExhausted:
		*l = LicenceWarningLevel(s)
		return nil
	}
	return fault.New(fault.BadUserInput, "%v is not a licence warning level", v)
}

// LicenceWarning is one licence warning as subscribers receive it.
type LicenceWarning struct {
	App            *ent.App
	Token          *ent.ServerToken
	AvailableCount int
	Threshold      int
	Level          LicenceWarningLevel
	IssuedAt       time.Time
	fanout         *Fanout
}

// licenceWarningMessage travels on LicenceWarningTopic.
type licenceWarningMessage struct {
	AppID      int                 `json:"appID"`
	CustomerID int                 `json:"customerID"`
	Available  int                 `json:"available"`
	Threshold  int                 `json:"threshold"`
	Level      LicenceWarningLevel `json:"level"`
	IssuedAt   time.Time           `json:"issuedAt"`
}

// operationMessage travels on LicenceOperationTopic.
type operationMessage struct {
	OperationID int `json:"operationID"`
	CustomerID  int `json:"customerID"`
}

// thresholdOf returns an app's low-licence threshold.
func (s *Service) thresholdOf(a *ent.App) int {
	if a.LowLicenceThreshold != nil {
		return *a.LowLicenceThreshold
	}
	return s.LicenceSettings().WarnAvailable
}

// levelOf returns the warning an app's counts call for, "" for none.
func levelOf(available, threshold int, unlimited bool) LicenceWarningLevel {
	switch {
	case unlimited:
		return ""
	case available <= 0:
		return LicenceExhausted
	case available <= threshold:
		return LicenceLow
	}
	return ""
}

// raiseLicenceWarnings judges apps after a change of count or threshold:
// a level not raised since the app was last above its threshold is raised
// now, recorded on the app and queued for the webhook in tx.
func (s *Service) raiseLicenceWarnings(ctx context.Context, tx *ent.Tx, appIDs []int, eff *licenceEffects) error {
	if len(appIDs) == 0 {
		return nil
	}
	apps, err := tx.App.Query().Where(app.IDIn(appIDs...)).All(ctx)
	if err != nil {
		return err
	}
	now := s.Now()
	for _, a := range apps {
		th := s.thresholdOf(a)
		level := levelOf(a.AvailableCount, th, a.Unlimited)
		warned := a.LicenceWarned
		switch {
		case level == "" && len(warned) == 0:
			continue
		case level == "":
			if err := tx.App.UpdateOneID(a.ID).SetLicenceWarned([]string{}).Exec(ctx); err != nil {
				return err
			}
			continue
		case slices.Contains(warned, string(level)):
			continue
		}
		if err := tx.App.UpdateOneID(a.ID).SetLicenceWarned(append(slices.Clone(warned), string(level))).Exec(ctx); err != nil {
			return err
		}
		m := licenceWarningMessage{AppID: a.ID, CustomerID: a.CustomerID, Available: a.AvailableCount, Threshold: th, Level: level, IssuedAt: now}
		if err := s.enqueueLicenceWarning(ctx, tx, a, m); err != nil {
			return err
		}
		eff.warnings = append(eff.warnings, m)
	}
	return nil
}

// WebhookLicenceWarning is the JSON body of licence.low and licence.exhausted.
type WebhookLicenceWarning struct {
	DeliveryID     string    `json:"deliveryID"`
	Event          string    `json:"event"`
	AppID          string    `json:"appID"`
	TokenID        string    `json:"tokenID"`
	CustomerID     string    `json:"customerID"`
	CustomerName   string    `json:"customerName"`
	LocationName   string    `json:"locationName"`
	AdamID         string    `json:"adamID"`
	PricingParam   string    `json:"pricingParam"`
	Name           string    `json:"name,omitempty"`
	AvailableCount int       `json:"availableCount"`
	Threshold      int       `json:"threshold"`
	Level          string    `json:"level"`
	IssuedAt       time.Time `json:"issuedAt"`
}

func (s *Service) enqueueLicenceWarning(ctx context.Context, tx *ent.Tx, a *ent.App, m licenceWarningMessage) error {
	if s.notifier == nil {
		return nil
	}
	tok, err := tx.ServerToken.Get(ctx, a.TokenID)
	if err != nil {
		return err
	}
	cust, err := tx.Customer.Get(ctx, a.CustomerID)
	if err != nil {
		return err
	}
	event := EventLicenceLow
	if m.Level == LicenceExhausted {
		event = EventLicenceExhausted
	}
	id := uuid.NewString()
	name := ""
	if a.Name != nil {
		name = *a.Name
	}
	body, err := json.Marshal(WebhookLicenceWarning{
		DeliveryID: id, Event: event, AppID: relay.Encode(a.ID), TokenID: relay.Encode(tok.ID),
		CustomerID: relay.Encode(cust.ID), CustomerName: cust.Name, LocationName: tok.LocationName,
		AdamID: a.AdamID, PricingParam: a.PricingParam, Name: name,
		AvailableCount: m.Available, Threshold: m.Threshold, Level: string(m.Level), IssuedAt: m.IssuedAt.UTC(),
	})
	if err != nil {
		return err
	}
	return tx.WebhookDelivery.Create().
		SetDeliveryID(id).SetEvent(event).SetPayload(body).
		SetCustomerID(cust.ID).SetNextAttemptAt(m.IssuedAt).Exec(ctx)
}

// UpdateApp changes an app's own low-licence threshold (nil: back to the
// default); the app is judged against it at once.
func (s *Service) UpdateApp(ctx context.Context, id int, threshold graphql.Omittable[*int]) (out *ent.App, err error) {
	var a *ent.App
	defer func() {
		var cust, tok *int
		if a != nil {
			cust, tok = &a.CustomerID, &a.TokenID
		}
		s.audit(ctx, "app.update", cust, tok, err, "")
	}()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	if a, err = s.client.App.Get(ctx, id); err != nil {
		return nil, notFound(err, "app")
	}
	if !threshold.IsSet() {
		return a, nil
	}
	v := threshold.Value()
	if v != nil && (*v < 0 || *v > 1000000) {
		return nil, fault.New(fault.BadUserInput, "lowLicenceThreshold must be between 0 and 1000000, or null for the default.")
	}
	eff := &licenceEffects{}
	err = withTx(ctx, s.client, func(tx *ent.Tx) error {
		upd := tx.App.UpdateOneID(id)
		if v == nil {
			upd.ClearLowLicenceThreshold()
		} else {
			upd.SetLowLicenceThreshold(*v)
		}
		if err := upd.Exec(ctx); err != nil {
			return notFound(err, "app")
		}
		return s.raiseLicenceWarnings(viewer.SystemContext(ctx), tx, []int{id}, eff)
	})
	if err != nil {
		return nil, err
	}
	s.publishEffects(ctx, eff)
	return s.client.App.Get(ctx, id)
}

// LowLicenceApps counts, per customer, the apps at or below their
// threshold now (unlimited apps never are). It backs a metrics gauge.
func (s *Service) LowLicenceApps(ctx context.Context) (map[int]int, error) {
	def := s.LicenceSettings().WarnAvailable
	var rows []struct {
		CustomerID int `json:"customer_id"`
		N          int `json:"n"`
	}
	err := s.client.App.Query().
		Where(app.Unlimited(false), atOrBelowThreshold(def)).
		GroupBy(app.FieldCustomerID).Aggregate(ent.As(ent.Count(), "n")).
		Scan(viewer.SystemContext(ctx), &rows)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int, len(rows))
	for _, r := range rows {
		out[r.CustomerID] = r.N
	}
	return out, nil
}

func (s *Service) publishOperation(ctx context.Context, opID, customerID int) {
	if s.broker == nil {
		return
	}
	b, _ := json.Marshal(operationMessage{OperationID: opID, CustomerID: customerID})
	if err := s.broker.Publish(context.WithoutCancel(ctx), LicenceOperationTopic, b); err != nil {
		s.log.ErrorContext(ctx, "publishing licence operation", "operation", opID, "err", err)
	}
}

func (s *Service) publishLicenceWarning(ctx context.Context, m licenceWarningMessage) {
	if s.broker == nil {
		return
	}
	b, _ := json.Marshal(m)
	if err := s.broker.Publish(context.WithoutCancel(ctx), LicenceWarningTopic, b); err != nil {
		s.log.ErrorContext(ctx, "publishing licence warning", "app", m.AppID, "err", err)
	}
}

// LicenceHub fans licence operation updates and licence warnings out to
// this instance's GraphQL subscribers, as Hub does for expiry warnings.
type LicenceHub struct {
	svc *Service

	mu   sync.Mutex
	ops  map[*licenceSub[*ent.LicenceOperation]]struct{}
	warn map[*licenceSub[*LicenceWarning]]struct{}
}

type licenceSub[T any] struct {
	v          *viewer.Viewer
	customerID *int
	ch         chan T
}

func (l *licenceSub[T]) wants(customerID int) bool {
	return l.v.CanSee(customerID) && (l.customerID == nil || *l.customerID == customerID)
}

func newLicenceHub(svc *Service) *LicenceHub {
	return &LicenceHub{svc: svc, ops: map[*licenceSub[*ent.LicenceOperation]]struct{}{}, warn: map[*licenceSub[*LicenceWarning]]struct{}{}}
}

// Run delivers licence news from the broker until ctx ends.
func (h *LicenceHub) Run(ctx context.Context) {
	if h.svc.broker == nil {
		return
	}
	ops, err := h.svc.broker.Subscribe(ctx, LicenceOperationTopic)
	if err != nil {
		h.svc.log.Error("subscribing to licence operations", "err", err)
		return
	}
	warns, err := h.svc.broker.Subscribe(ctx, LicenceWarningTopic)
	if err != nil {
		h.svc.log.Error("subscribing to licence warnings", "err", err)
		return
	}
	sys := viewer.SystemContext(ctx)
	for ops != nil || warns != nil {
		select {
		case p, ok := <-ops:
			if !ok {
				ops = nil
				continue
			}
			var m operationMessage
			if json.Unmarshal(p, &m) != nil || m.OperationID == 0 {
				continue
			}
			h.mu.Lock()
			var targets []*licenceSub[*ent.LicenceOperation]
			for s := range h.ops {
				if s.wants(m.CustomerID) {
					targets = append(targets, s)
				}
			}
			h.mu.Unlock()
			if len(targets) == 0 {
				continue
			}
			op, err := h.svc.client.LicenceOperation.Get(sys, m.OperationID)
			if err != nil {
				continue
			}
			h.mu.Lock()
			for _, s := range targets {
				if _, open := h.ops[s]; open {
					select {
					case s.ch <- op:
					default:
					}
				}
			}
			h.mu.Unlock()
		case p, ok := <-warns:
			if !ok {
				warns = nil
				continue
			}
			var m licenceWarningMessage
			if json.Unmarshal(p, &m) != nil || m.AppID == 0 {
				continue
			}
			h.mu.Lock()
			var targets []*licenceSub[*LicenceWarning]
			for s := range h.warn {
				if s.wants(m.CustomerID) {
					targets = append(targets, s)
				}
			}
			h.mu.Unlock()
			if len(targets) == 0 {
				continue
			}
			a, err := h.svc.client.App.Query().Where(app.ID(m.AppID)).WithToken().Only(sys)
			if err != nil {
				continue
			}
			w := &LicenceWarning{App: a, Token: a.Edges.Token, AvailableCount: m.Available, Threshold: m.Threshold, Level: m.Level, IssuedAt: m.IssuedAt}
			if len(targets) > 1 {
				w.fanout = &Fanout{}
			}
			h.mu.Lock()
			for _, s := range targets {
				if _, open := h.warn[s]; open {
					select {
					case s.ch <- w:
					default:
					}
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *LicenceHub) checkCustomer(ctx context.Context, customerID *int) (*viewer.Viewer, error) {
	v, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if customerID != nil {
		if _, err := h.svc.client.Customer.Get(ctx, *customerID); err != nil {
			return nil, notFound(err, "customer")
		}
	}
	return v, nil
}

// SubscribeOperations sends each change of a licence operation in the
// caller's scope (and of customerID, when given) until ctx ends.
func (h *LicenceHub) SubscribeOperations(ctx context.Context, customerID *int) (<-chan *ent.LicenceOperation, error) {
	v, err := h.checkCustomer(ctx, customerID)
	if err != nil {
		return nil, err
	}
	s := &licenceSub[*ent.LicenceOperation]{v: v, customerID: customerID, ch: make(chan *ent.LicenceOperation, subscriberBuffer)}
	h.mu.Lock()
	h.ops[s] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.ops, s)
		close(s.ch)
		h.mu.Unlock()
	})
	return s.ch, nil
}

// SubscribeWarnings sends first a warning for each app in scope already at
// or below its threshold, then each new one, until ctx ends.
func (h *LicenceHub) SubscribeWarnings(ctx context.Context, customerID *int) (<-chan *LicenceWarning, error) {
	v, err := h.checkCustomer(ctx, customerID)
	if err != nil {
		return nil, err
	}
	q := h.svc.client.App.Query().Where(app.Unlimited(false), atOrBelowThreshold(h.svc.LicenceSettings().WarnAvailable)).WithToken().Order(ent.Asc(app.FieldAvailableCount)).Limit(1000)
	if customerID != nil {
		q.Where(app.CustomerID(*customerID))
	}
	current, err := q.All(ctx)
	if err != nil {
		return nil, err
	}
	s := &licenceSub[*LicenceWarning]{v: v, customerID: customerID, ch: make(chan *LicenceWarning, subscriberBuffer+len(current))}
	now := h.svc.Now()
	for _, a := range current {
		th := h.svc.thresholdOf(a)
		s.ch <- &LicenceWarning{App: a, Token: a.Edges.Token, AvailableCount: a.AvailableCount, Threshold: th, Level: levelOf(a.AvailableCount, th, false), IssuedAt: now}
	}
	h.mu.Lock()
	h.warn[s] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.warn, s)
		close(s.ch)
		h.mu.Unlock()
	})
	return s.ch, nil
}

// judgeTokenApps raises the licence warnings a sync's new counts call for:
// the token's apps at or below their threshold, and those warned before
// (which may be above it again).
func (s *Service) judgeTokenApps(ctx context.Context, tokenID int) error {
	def := s.LicenceSettings().WarnAvailable
	ids, err := s.client.App.Query().Where(app.TokenID(tokenID),
		app.Or(atOrBelowThreshold(def), func(sel *sql.Selector) {
			// Strings are stored as JSON text; an empty list is "[]" on
			// SQLite and PostgreSQL alike.
			sel.Where(sql.ExprP("CAST(" + sel.C(app.FieldLicenceWarned) + " AS TEXT) <> '[]'"))
		})).IDs(ctx)
	if err != nil || len(ids) == 0 {
		return err
	}
	eff := &licenceEffects{}
	err = withTx(ctx, s.client, func(tx *ent.Tx) error {
		return s.raiseLicenceWarnings(ctx, tx, ids, eff)
	})
	if err == nil {
		s.publishEffects(ctx, eff)
	}
	return err
}

// atOrBelowThreshold filters apps whose available count is at or below
// their own threshold, or def when they have none.
func atOrBelowThreshold(def int) func(*sql.Selector) {
	return func(sel *sql.Selector) {
		sel.Where(sql.P(func(b *sql.Builder) {
			b.Ident(sel.C(app.FieldAvailableCount)).WriteString(" <= COALESCE(").
				Ident(sel.C(app.FieldLowLicenceThreshold)).WriteString(", ").Arg(def).WriteString(")")
		}))
	}
}
