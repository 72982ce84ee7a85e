package domain

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/licenceevent"
	"github.com/orchard-msp/orchard/ent/licenceoperation"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
)

// NotificationPath is where Apple posts notifications, under PublicURL.
const NotificationPath = "/apple/notifications"

// notifyAAD binds a sealed notification secret to its token row.
func notifyAAD(tokenID, customerID int) []byte {
	return []byte("orchard/notification_secret/v1|" + strconv.Itoa(tokenID) + "|" + strconv.Itoa(customerID))
}

// RegisterNotifications subscribes the token's location to Apple's
// notifications with a fresh random secret, when PublicURL is set. The
// secret is stored sealed before Apple is asked, because Apple tests the
// URL (TEST_NOTIFICATION) before it answers. A failure is logged and
// audited; Orchard then polls instead.
func (s *Service) RegisterNotifications(ctx context.Context, tokenID int) error {
	cfg := s.LicenceSettings()
	if cfg.PublicURL == "" {
		return nil
	}
	sys := viewer.SystemContext(ctx)
	tok, err := s.client.ServerToken.Get(sys, tokenID)
	if err != nil {
		return err
	}
	err = s.registerNotifications(sys, tok, cfg.PublicURL+NotificationPath)
	s.audit(ctx, "apple.notifications.register", &tok.CustomerID, &tok.ID, err, cfg.PublicURL+NotificationPath)
	if err != nil {
		s.log.WarnContext(ctx, "registering for Apple's notifications failed; Orchard polls instead", "token", tok.ID, "err", err)
	}
	return err
}

func (s *Service) registerNotifications(ctx context.Context, tok *ent.ServerToken, url string) error {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := base64.RawURLEncoding.EncodeToString(raw)
	sealed, err := s.sealer.Seal([]byte(secret), notifyAAD(tok.ID, tok.CustomerID))
	if err != nil {
		return fmt.Errorf("sealing notification secret: %w", err)
	}
	if err := s.client.ServerToken.UpdateOneID(tok.ID).SetNotificationSecret(sealed).Exec(ctx); err != nil {
		return err
	}
	token, err := s.sealer.Open(tok.SealedToken, sealAAD(tok.ID, tok.CustomerID))
	if err != nil {
		return fmt.Errorf("opening sealed token %d: %w", tok.ID, err)
	}
	defer clear(token)
	_, err = s.apple.UpdateClientConfig(ctx, token, apple.ClientConfigUpdate{Notifications: &apple.NotificationSettings{
		URL: url, AuthToken: secret, Types: []apple.NotificationType{apple.NotifyAssetManagement, apple.NotifyAssetCount},
	}})
	if err != nil {
		return explainApple(err)
	}
	return s.client.ServerToken.UpdateOneID(tok.ID).SetNotificationURL(url).Exec(ctx)
}

// NotificationResult is how the endpoint answers Apple.
type NotificationResult int

// The answers to a notification.
const (
	// NotificationAccepted: recorded (or seen before); answer 200.
	NotificationAccepted NotificationResult = iota
	// NotificationUnauthorized: no location of Orchard's with this secret; 401.
	NotificationUnauthorized
	// NotificationMalformed: not a notification; 400.
	NotificationMalformed
	// NotificationRetry: about an event not recorded yet; Apple should
	// deliver it again later (503).
	NotificationRetry
)

// HandleNotification authenticates and records one of Apple's
// notifications. It only reads and writes the database: it never calls
// Apple, and subscribers and webhooks hear of it after it returns.
func (s *Service) HandleNotification(ctx context.Context, authorization string, body []byte) (NotificationResult, error) {
	ctx = viewer.SystemContext(ctx)
	n, err := apple.ParseNotification(body)
	if err != nil {
		return NotificationMalformed, err
	}
	if n.LocationUID == "" {
		return NotificationUnauthorized, nil
	}
	toks, err := s.client.ServerToken.Query().
		Where(servertoken.LocationUID(n.LocationUID), servertoken.StateEQ(servertoken.StateACTIVE)).All(ctx)
	if err != nil {
		return NotificationRetry, err
	}
	var tok *ent.ServerToken
	for _, t := range toks {
		if len(t.NotificationSecret) == 0 {
			continue
		}
		secret, err := s.sealer.Open(t.NotificationSecret, notifyAAD(t.ID, t.CustomerID))
		if err != nil {
			continue
		}
		ok := apple.NotificationAuthorized(authorization, string(secret))
		clear(secret)
		if ok {
			tok = t
			break
		}
	}
	if tok == nil {
		return NotificationUnauthorized, nil
	}
	if n.ID == "" {
		return NotificationMalformed, fmt.Errorf("notification without notificationId")
	}
	eff := &licenceEffects{}
	result := NotificationAccepted
	err = withTx(ctx, s.client, func(tx *ent.Tx) error {
		err := tx.AppleNotification.Create().SetNotificationID(n.ID).SetType(string(n.Type)).
			SetTokenID(tok.ID).SetReceivedAt(s.Now()).Exec(ctx)
		if ent.IsConstraintError(err) {
			s.log.InfoContext(ctx, "Apple notification seen before; ignored", "notification", n.ID, "type", n.Type)
			return errSeen
		} else if err != nil {
			return err
		}
		detail := fmt.Sprintf("%s %s", n.Type, n.ID)
		switch {
		case n.AssetManagement != nil:
			am := n.AssetManagement
			ev, err := tx.LicenceEvent.Query().Where(licenceevent.TokenID(tok.ID), licenceevent.EventID(am.EventID)).Only(ctx)
			if ent.IsNotFound(err) {
				// Apple may finish an event before Orchard has stored its
				// eventId; Apple delivers again.
				result = NotificationRetry
				return errSeen
			} else if err != nil {
				return err
			}
			op, err := tx.LicenceOperation.Get(ctx, ev.OperationID)
			if err != nil {
				return err
			}
			o := &outcome{kind: op.Kind, ev: ev, notice: true}
			noteOutcome(o, am)
			if err := s.applyOutcome(ctx, tx, op, o, eff); err != nil {
				return err
			}
			detail += fmt.Sprintf(": event %s %s %s, %d assignments", am.EventID, am.Type, am.Result, len(am.Assignments))
		case n.AssetCount != nil:
			ids, err := s.applyAssetCount(ctx, tx, tok, n.AssetCount, eff)
			if err != nil {
				return err
			}
			if err := s.raiseLicenceWarnings(ctx, tx, ids, eff); err != nil {
				return err
			}
			detail += fmt.Sprintf(": %s (%s) %+d", n.AssetCount.AdamID, n.AssetCount.PricingParam, n.AssetCount.CountDelta)
		}
		return s.auditWith(ctx, tx.Client(), "apple.notification", &tok.CustomerID, &tok.ID, nil, detail)
	})
	if err == errSeen {
		return result, nil
	}
	if err != nil {
		return NotificationRetry, err
	}
	go s.publishEffects(ctx, eff)
	return NotificationAccepted, nil
}

type seenError struct{}

func (seenError) Error() string { return "notification seen before" }

var errSeen error = seenError{}

// noteOutcome reads an ASSET_MANAGEMENT notification into an outcome.
func noteOutcome(o *outcome, am *apple.AssetManagement) {
	code, msg := "", ""
	if am.Result == apple.ResultFailure {
		code, msg = "FAILED", "Apple reported a failure without naming a reason. Try the operation again."
		if am.Error != nil {
			code, msg = strconv.Itoa(am.Error.Number), failureMessage(am.Error.Number, am.Error.Message)
		}
	}
	for _, a := range am.Assignments {
		p := pair{AdamID: a.AdamID, Pricing: a.PricingParam, Serial: a.SerialNumber, User: a.ClientUserID}
		if o.kind == licenceoperation.KindREVOKE {
			t := pair{Serial: a.SerialNumber, User: a.ClientUserID}
			if code != "" {
				o.failed(t, code, msg)
				continue
			}
			o.removed = append(o.removed, p)
			continue
		}
		if code != "" {
			o.failed(p, code, msg)
		} else {
			o.ok(p)
		}
	}
	// Apple notifies once a revoke has ended: the devices and users it did
	// not report as failed are done.
	if o.kind == licenceoperation.KindREVOKE && am.Result == apple.ResultSuccess {
		o.rest, o.restOK = true, true
	}
}

// applyAssetCount changes an app's counts by a purchase, transfer or
// refund. An asset Orchard has not seen yet is added and a sync asked for,
// which fills in its kind and name.
func (s *Service) applyAssetCount(ctx context.Context, tx *ent.Tx, tok *ent.ServerToken, c *apple.AssetCount, eff *licenceEffects) ([]int, error) {
	pricing := c.PricingParam
	if pricing == "" {
		pricing = "STDQ"
	}
	row, err := tx.App.Query().Where(app.TokenID(tok.ID), app.AdamID(c.AdamID), app.PricingParam(pricing)).Only(ctx)
	if ent.IsNotFound(err) {
		n := max(c.CountDelta, 0)
		row, err = tx.App.Create().SetTokenID(tok.ID).SetCustomerID(tok.CustomerID).
			SetAdamID(c.AdamID).SetPricingParam(pricing).SetProductType(app.ProductTypeAPP).
			SetTotalCount(n).SetAvailableCount(n).SetSupportedPlatforms([]string{}).Save(ctx)
		if err != nil {
			return nil, err
		}
		eff.sync = append(eff.sync, tok.ID)
		return []int{row.ID}, nil
	} else if err != nil {
		return nil, err
	}
	if row.Unlimited {
		return nil, nil
	}
	// Added in SQL: purchases notified at once must not overwrite each
	// other's count (PostgreSQL runs them side by side).
	if err := tx.App.UpdateOneID(row.ID).AddTotalCount(c.CountDelta).AddAvailableCount(c.CountDelta).Exec(ctx); err != nil {
		return nil, err
	}
	if c.CountDelta < 0 { // a refund never takes a count below 0
		if _, err := tx.App.Update().Where(app.ID(row.ID), app.Or(app.TotalCountLT(0), app.AvailableCountLT(0))).
			SetTotalCount(max(row.TotalCount+c.CountDelta, 0)).SetAvailableCount(max(row.AvailableCount+c.CountDelta, 0)).Save(ctx); err != nil {
			return nil, err
		}
	}
	return []int{row.ID}, nil
}
