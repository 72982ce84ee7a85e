// Package domain is Orchard's business logic: customers, the server token
// lifecycle (upload → review → confirm or claim → renew → delete), app sync
// and expiry. Resolvers and background jobs both call it; it knows nothing of
// GraphQL or HTTP. Each operation calls Apple outside any transaction and
// then writes in one short transaction, so a slow Apple never holds the
// database's single writer.
package domain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/modules/notify"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/secrets"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

// Config holds the settings the domain reads.
type Config struct {
	// MDMName is written into Apple's mdmInfo.name (ORCHARD_MDM_NAME).
	MDMName string
	// MDMMetadata is written into mdmInfo.metadata: it tells another MDM's
	// admin which installation holds the location (a host name, say).
	MDMMetadata string
	// WarnDays are the expiry warning thresholds in days, largest first.
	WarnDays []int
	// PendingTTL is how long an unconfirmed upload is kept.
	PendingTTL time.Duration
	// AppleInteractiveBudget bounds Apple's part of an upload, confirm,
	// claim or sync someone waits for; 0 means DefaultInteractiveBudget.
	AppleInteractiveBudget time.Duration
}

// Modules are the capabilities the domain uses.
type Modules struct {
	Parser tokenfile.Parser
	Apple  apple.Client
	Sealer secrets.Sealer
	Broker pubsub.Broker
	// Notifier is optional: nil when no webhook is configured.
	Notifier notify.Notifier
}

// Service runs Orchard's operations.
type Service struct {
	client   *ent.Client
	parser   tokenfile.Parser
	apple    apple.Client
	sealer   secrets.Sealer
	broker   pubsub.Broker
	notifier notify.Notifier
	cfg      Config
	log      *slog.Logger
	meta     *metaCache
	// syncLocks keeps two syncs of one token from running at once here.
	syncLocks keyedMutex
	// lic holds the licence settings (licences.go).
	lic licenceState
	// notes commits Apple's notifications that arrive together in one
	// transaction (licences_notify.go).
	notes      groupCommit
	notifyAuth notifyAuthCache

	// Now is the clock; tests move it.
	Now func() time.Time
	// OnActivate, when set, is called after a token becomes ACTIVE or is
	// renewed, outside any transaction (the server starts a sync and an
	// expiry scan from it).
	OnActivate func(tokenID int)
	// OnOutbox, when set, is called after warnings were queued for the
	// webhook, so deliveries start without waiting for the next round.
	OnOutbox func()
}

// New returns a Service.
func New(client *ent.Client, m Modules, cfg Config, log *slog.Logger) *Service {
	if cfg.MDMName == "" {
		cfg.MDMName = "Orchard"
	}
	if cfg.PendingTTL == 0 {
		cfg.PendingTTL = 24 * time.Hour
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.WarnDays = sortedDesc(cfg.WarnDays)
	return &Service{
		client: client, parser: m.Parser, apple: m.Apple, sealer: m.Sealer, broker: m.Broker, notifier: m.Notifier,
		cfg: cfg, log: log, Now: time.Now, meta: newMetaCache(),
	}
}

// Client returns the ent client the service writes through.
func (s *Service) Client() *ent.Client { return s.client }

// WarnDays returns the expiry thresholds, largest first.
func (s *Service) WarnDays() []int { return s.cfg.WarnDays }

// caller returns the viewer of ctx, refusing requests without one.
func caller(ctx context.Context) (*viewer.Viewer, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, fault.New(fault.Unauthenticated, "An API key is required.")
	}
	return v, nil
}

func requireWriter(ctx context.Context) (*viewer.Viewer, error) {
	v, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if !v.CanWrite() {
		return nil, fault.New(fault.Forbidden, "This API key is read-only (role viewer). Ask an admin for a technician or admin key.")
	}
	return v, nil
}

// withTx runs fn in a transaction and commits it, rolling back on error or panic.
func withTx(ctx context.Context, client *ent.Client, fn func(tx *ent.Tx) error) (err error) {
	tx, err := client.Tx(ctx)
	if err != nil {
		return fmt.Errorf("starting transaction: %w", err)
	}
	defer func() {
		if v := recover(); v != nil {
			_ = tx.Rollback()
			panic(v)
		}
	}()
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("rolling back: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// inTx is withTx for work that hands back what it read or wrote. Once the
// transaction committed, every entity in the result is rebound to the root
// client (ent.Detacher), so the resolvers can still follow its edges after
// the transaction ended. An entity that leaves this package from a
// transaction must come through here.
func inTx[T any](ctx context.Context, client *ent.Client, fn func(tx *ent.Tx) (T, error)) (T, error) {
	var out T
	err := withTx(ctx, client, func(tx *ent.Tx) (err error) {
		out, err = fn(tx)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	detach(out)
	return out, nil
}

// detacher is a result that holds entities of its own.
type detacher interface{ detach() }

func detach(v any) {
	switch v := v.(type) {
	case ent.Detacher:
		v.Detach()
	case detacher:
		v.detach()
	}
}

// notFound hides whether a row exists outside the caller's scope.
func notFound(err error, what string) error {
	if ent.IsNotFound(err) {
		return fault.New(fault.NotFound, "No %s with this ID is visible to this API key.", what)
	}
	return err
}

// audit records an action after it ended. It never fails the caller: the
// audit log is written with Orchard's own rights, and a failure is logged.
func (s *Service) audit(ctx context.Context, action string, customerID, tokenID *int, outcome error, detail string) {
	if err := s.auditWith(ctx, s.client, action, customerID, tokenID, outcome, detail); err != nil {
		s.log.Error("writing audit event", "action", action, "err", err)
	}
}

// auditWith writes an audit event through client, which may be a
// transaction's, so a successful action and its record commit together.
func (s *Service) auditWith(ctx context.Context, client *ent.Client, action string, customerID, tokenID *int, outcome error, detail string) error {
	v := viewer.FromContext(ctx)
	actor, keyID := "orchard", (*int)(nil)
	if v != nil {
		actor = v.Name
		if v.KeyID != 0 {
			id := v.KeyID
			keyID = &id
		}
	}
	result := "ok"
	if outcome != nil {
		result = string(fault.CodeOf(outcome))
	}
	return client.AuditEvent.Create().
		SetActor(actor).
		SetNillableActorKeyID(keyID).
		SetAction(action).
		SetNillableCustomerID(customerID).
		SetNillableTokenID(tokenID).
		SetOutcome(result).
		SetDetail(detail).
		Exec(viewer.SystemContext(context.WithoutCancel(ctx)))
}

func trimName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", fault.New(fault.BadUserInput, "A customer name is required.")
	case len([]rune(name)) > 200:
		return "", fault.New(fault.BadUserInput, "A customer name can be at most 200 characters.")
	}
	return name, nil
}
