package domain

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
)

// ExpiryTopic is the pubsub topic expiry warnings travel on.
const ExpiryTopic = "orchard.expiry"

// warningMessage is what travels on ExpiryTopic: small, so any broker carries
// it; listeners load the token themselves.
type warningMessage struct {
	TokenID    int       `json:"tokenID"`
	CustomerID int       `json:"customerID"`
	ExpiresAt  time.Time `json:"expiresAt"`
	Threshold  int       `json:"threshold"`
	IssuedAt   time.Time `json:"issuedAt"`
}

// nextWarnAt returns when a token expiring at exp crosses its next threshold
// after having raised warned (nil: none yet), or nil when nothing is left to raise.
func nextWarnAt(exp time.Time, warned *int, warnDays []int) *time.Time {
	var next *time.Time
	for _, d := range warnDays {
		if warned != nil && d >= *warned {
			continue
		}
		at := exp.Add(-days(d))
		if next == nil || at.Before(*next) {
			next = &at
		}
	}
	if next == nil && (warned == nil || *warned != expiredMark) {
		next = &exp
	}
	return next
}

// ScanExpiry raises the warnings that have come due: for each ACTIVE token
// whose next threshold has passed, the most urgent threshold now crossed,
// once per token and expiry date. It reads only the tokens that are due
// (an index on next_warn_at), and marks each warning in the database with a
// conditional update before publishing it, so a restart or a second instance
// neither repeats nor loses one. It returns the number of warnings raised.
func (s *Service) ScanExpiry(ctx context.Context) (int, error) {
	ctx = viewer.SystemContext(ctx)
	now := s.Now()
	due, err := s.client.ServerToken.Query().
		Where(servertoken.NextWarnAtLTE(now), servertoken.StateEQ(servertoken.StateACTIVE)).
		Select(servertoken.FieldID, servertoken.FieldCustomerID, servertoken.FieldExpiresAt,
			servertoken.FieldWarnedDays, servertoken.FieldWarnedExpiry, servertoken.FieldNextWarnAt).
		All(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading tokens due a warning: %w", err)
	}
	raised := 0
	// Warnings are recorded a batch per transaction: one commit (one fsync on
	// SQLite) for many tokens, and still all-or-nothing with their webhook
	// deliveries.
	for batch := range slices.Chunk(due, scanBatch) {
		var won []warningMessage
		err := withTx(ctx, s.client, func(tx *ent.Tx) error {
			won = won[:0]
			for _, t := range batch {
				ok, msg, err := s.raise(ctx, tx, t, now)
				if err != nil {
					return fmt.Errorf("recording warning for token %d: %w", t.ID, err)
				}
				if ok {
					won = append(won, msg)
				}
			}
			return nil
		})
		if err != nil {
			return raised, err
		}
		for _, msg := range won {
			raised++
			s.publish(ctx, msg)
		}
	}
	if raised > 0 && s.OnOutbox != nil {
		s.OnOutbox()
	}
	return raised, nil
}

// scanBatch is how many due tokens one transaction of the scan handles.
const scanBatch = 500

// raise records the warning due on t, if any, and its webhook delivery in
// tx. won is false when there was nothing new to say or
// another instance recorded it first.
func (s *Service) raise(ctx context.Context, tx *ent.Tx, t *ent.ServerToken, now time.Time) (won bool, msg warningMessage, err error) {
	warned := t.WarnedDays
	if t.WarnedExpiry == nil || !t.WarnedExpiry.Equal(t.ExpiresAt) {
		warned = nil // a new expiry date starts afresh
	}
	th, ok := crossed(t.ExpiresAt, now, s.cfg.WarnDays)
	fresh := ok && (warned == nil || th < *warned)
	if fresh {
		warned = &th
	}
	msg = warningMessage{TokenID: t.ID, CustomerID: t.CustomerID, ExpiresAt: t.ExpiresAt, Threshold: th, IssuedAt: now}
	err = func() error {
		upd := tx.ServerToken.Update().Where(servertoken.ID(t.ID), servertoken.NextWarnAtEQ(*t.NextWarnAt))
		if fresh {
			upd.SetWarnedDays(th).SetWarnedExpiry(t.ExpiresAt).SetWarnedAt(now)
		}
		switch next := nextWarnAt(t.ExpiresAt, warned, s.cfg.WarnDays); {
		case next == nil:
			upd.ClearNextWarnAt()
		case next.After(*t.NextWarnAt):
			upd.SetNextWarnAt(*next)
		default:
			// The next threshold is not ahead of this one: look again in
			// an hour rather than spin on the same row.
			upd.SetNextWarnAt(now.Add(time.Hour))
		}
		n, err := upd.Save(ctx)
		if err != nil || n == 0 || !fresh {
			return err
		}
		won = true
		// The webhook delivery is written with the warning: both or neither.
		return s.enqueueWarning(ctx, tx, msg)
	}()
	return won, msg, err
}

func (s *Service) publish(ctx context.Context, m warningMessage) {
	if s.broker == nil {
		return
	}
	b, err := json.Marshal(m)
	if err == nil {
		err = s.broker.Publish(ctx, ExpiryTopic, b)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "publishing expiry warning", "token", m.TokenID, "err", err)
	}
}

// armExpiry sets a freshly activated or renewed token's first warning time.
func armExpiry(upd *ent.ServerTokenUpdateOne, exp time.Time, warnDays []int) {
	if next := nextWarnAt(exp, nil, warnDays); next != nil {
		upd.SetNextWarnAt(*next)
	}
}

// sortedDesc returns the thresholds largest first, without duplicates or negatives.
func sortedDesc(warnDays []int) []int {
	out := slices.DeleteFunc(slices.Clone(warnDays), func(d int) bool { return d < 0 })
	slices.Sort(out)
	out = slices.Compact(out)
	slices.Reverse(out)
	return out
}
