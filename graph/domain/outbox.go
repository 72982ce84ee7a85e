package domain

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/ent/webhookdelivery"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/modules/notify"
)

// EventExpiryWarning is the webhook event of an expiry warning.
const EventExpiryWarning = "token.expiry_warning"

// WebhookWarning is the JSON body of a token.expiry_warning delivery.
type WebhookWarning struct {
	DeliveryID      string    `json:"deliveryID"`
	Event           string    `json:"event"`
	TokenID         string    `json:"tokenID"`
	CustomerID      string    `json:"customerID"`
	CustomerName    string    `json:"customerName"`
	OrgName         string    `json:"orgName"`
	LocationName    string    `json:"locationName"`
	LocationUID     string    `json:"locationUID"`
	ExpiresAt       time.Time `json:"expiresAt"`
	DaysUntilExpiry int       `json:"daysUntilExpiry"`
	Level           string    `json:"level"`
	IssuedAt        time.Time `json:"issuedAt"`
}

// enqueueWarning writes the webhook delivery of a warning into the outbox,
// inside the transaction that records the warning.
func (s *Service) enqueueWarning(ctx context.Context, tx *ent.Tx, m warningMessage) error {
	if s.notifier == nil {
		return nil
	}
	tok, err := tx.ServerToken.Get(ctx, m.TokenID)
	if err != nil {
		return err
	}
	cust, err := tx.Customer.Get(ctx, tok.CustomerID)
	if err != nil {
		return err
	}
	id := uuid.NewString()
	body, err := json.Marshal(WebhookWarning{
		DeliveryID: id, Event: EventExpiryWarning,
		TokenID: relay.Encode(tok.ID), CustomerID: relay.Encode(cust.ID), CustomerName: cust.Name,
		OrgName: tok.OrgName, LocationName: tok.LocationName, LocationUID: tok.LocationUID,
		ExpiresAt: tok.ExpiresAt.UTC(), DaysUntilExpiry: DaysUntil(tok.ExpiresAt, m.IssuedAt),
		Level: string(LevelOf(tok.ExpiresAt, m.IssuedAt)), IssuedAt: m.IssuedAt.UTC(),
	})
	if err != nil {
		return err
	}
	return tx.WebhookDelivery.Create().
		SetDeliveryID(id).SetEvent(EventExpiryWarning).SetPayload(body).
		SetCustomerID(cust.ID).SetNextAttemptAt(m.IssuedAt).
		Exec(ctx)
}

// Delivery retry policy: doubling from 10 s up to an hour, for three days.
const (
	firstRetry    = 10 * time.Second
	maxRetry      = time.Hour
	retryWindow   = 72 * time.Hour
	deliveryLease = 2 * time.Minute
	outboxBatch   = 100
)

func retryDelay(attempts int) time.Duration {
	d := firstRetry << min(attempts-1, 20)
	d = min(d, maxRetry)
	return d/2 + rand.N(d/2+1)
}

// DeliverOutbox sends the deliveries that are due. Each is leased with a
// conditional update before it is sent, so several instances can drain one
// outbox without sending a delivery twice at once. It never blocks the
// watcher: it runs on its own.
func (s *Service) DeliverOutbox(ctx context.Context) (delivered, failed int) {
	if s.notifier == nil {
		return 0, 0
	}
	ctx = viewer.SystemContext(ctx)
	now := s.Now()
	due, err := s.client.WebhookDelivery.Query().
		Where(webhookdelivery.DeliveredAtIsNil(), webhookdelivery.AbandonedAtIsNil(), webhookdelivery.NextAttemptAtLTE(now)).
		Order(ent.Asc(webhookdelivery.FieldNextAttemptAt)).
		Limit(outboxBatch).All(ctx)
	if err != nil {
		s.log.ErrorContext(ctx, "reading the webhook outbox", "err", err)
		return 0, 0
	}
	for _, d := range due {
		if ctx.Err() != nil {
			return delivered, failed
		}
		n, err := s.client.WebhookDelivery.Update().
			Where(webhookdelivery.ID(d.ID), webhookdelivery.NextAttemptAtEQ(d.NextAttemptAt), webhookdelivery.DeliveredAtIsNil()).
			SetNextAttemptAt(now.Add(deliveryLease)).Save(ctx)
		if err != nil || n == 0 {
			continue // another instance has it
		}
		err = s.notifier.Notify(ctx, notify.Delivery{ID: d.DeliveryID, Event: d.Event, Payload: d.Payload})
		upd := s.client.WebhookDelivery.UpdateOneID(d.ID).AddAttempts(1)
		if err == nil {
			delivered++
			upd.SetDeliveredAt(s.Now()).SetLastError("")
		} else {
			failed++
			upd.SetLastError(Truncate(err.Error(), 500)).SetNextAttemptAt(s.Now().Add(retryDelay(d.Attempts + 1)))
			if s.Now().Sub(d.CreatedAt) > retryWindow {
				upd.SetAbandonedAt(s.Now())
				s.log.ErrorContext(ctx, "webhook delivery abandoned", "delivery", d.DeliveryID, "attempts", d.Attempts+1, "err", err)
			} else {
				s.log.WarnContext(ctx, "webhook delivery failed; will retry", "delivery", d.DeliveryID, "attempts", d.Attempts+1, "err", err)
			}
		}
		if err := upd.Exec(ctx); err != nil {
			s.log.ErrorContext(ctx, "recording webhook delivery", "delivery", d.DeliveryID, "err", err)
		}
	}
	return delivered, failed
}

// Truncate keeps at most n bytes of s without splitting a character:
// PostgreSQL refuses a string that ends inside a UTF-8 sequence, and so do
// Apple's mdmInfo and a websocket close reason.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
