package domain

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/applenotification"
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
//
// Notifications arriving together (Apple sends a burst after a large
// purchase) are committed together: one transaction, so one disk flush,
// for all that queued while the previous one committed.
func (s *Service) HandleNotification(ctx context.Context, authorization string, body []byte) (NotificationResult, error) {
	ctx = viewer.SystemContext(ctx)
	n, err := apple.ParseNotification(body)
	if err != nil {
		return NotificationMalformed, err
	}
	if n.LocationUID == "" {
		return NotificationUnauthorized, nil
	}
	if n.ID == "" {
		// Checked after the secret, so that only Apple learns this.
		tok, err := s.notificationToken(ctx, n.LocationUID, authorization, false)
		switch {
		case err != nil:
			return NotificationRetry, err
		case tok == nil:
			return NotificationUnauthorized, nil
		}
		return NotificationMalformed, fmt.Errorf("notification without notificationId")
	}
	// The first try may use the remembered secret; when the batch finds the
	// token changed since (renewed, deleted, a new secret), ask again.
	for _, fresh := range []bool{false, true} {
		tok, err := s.notificationToken(ctx, n.LocationUID, authorization, fresh)
		if err != nil {
			return NotificationRetry, err
		}
		if tok == nil {
			return NotificationUnauthorized, nil
		}
		p := &pendingNotification{ctx: ctx, tok: tok, n: n, wake: make(chan struct{}, 1)}
		s.notes.do(p, s.recordNotifications)
		if p.stale {
			s.notifyAuth.forget(n.LocationUID, authorization)
			continue
		}
		if p.err != nil {
			return NotificationRetry, p.err
		}
		if p.result == NotificationAccepted && p.eff != nil {
			go s.publishEffects(ctx, p.eff)
		}
		return p.result, nil
	}
	return NotificationRetry, fmt.Errorf("location %s changed while its notification was recorded", n.LocationUID)
}

// notificationToken finds the ACTIVE token of the location whose
// registered secret the request carries; nil when none does. Unless fresh,
// a match remembered from an earlier notification answers without the
// database or a decryption; the transaction that records the notification
// checks it still holds (checkTargets).
func (s *Service) notificationToken(ctx context.Context, locationUID, authorization string, fresh bool) (*notifyTarget, error) {
	if !fresh {
		if t := s.notifyAuth.get(locationUID, authorization); t != nil {
			return t, nil
		}
	}
	toks, err := s.client.ServerToken.Query().
		Where(servertoken.LocationUID(locationUID), servertoken.StateEQ(servertoken.StateACTIVE)).All(ctx)
	if err != nil {
		return nil, err
	}
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
			target := &notifyTarget{ID: t.ID, CustomerID: t.CustomerID, sealed: t.NotificationSecret}
			s.notifyAuth.put(locationUID, authorization, target)
			return target, nil
		}
	}
	return nil, nil
}

// recordNotifications records a batch of authenticated notifications in
// one transaction. When that transaction fails (another instance recorded
// one of them first, a database error), each is recorded again on its
// own, so one notification's failure never costs another its answer.
func (s *Service) recordNotifications(batch []*pendingNotification) {
	if len(batch) > 1 {
		ctx := batch[0].ctx
		err := withTx(ctx, s.client, func(tx *ent.Tx) error { return s.recordBatch(ctx, tx, batch) })
		if err == nil {
			return
		}
		s.log.InfoContext(ctx, "recording Apple notifications together failed; recording each alone", "notifications", len(batch), "err", err)
	}
	for _, p := range batch {
		p.err = withTx(p.ctx, s.client, func(tx *ent.Tx) error {
			return s.recordBatch(p.ctx, tx, []*pendingNotification{p})
		})
		if ent.IsConstraintError(p.err) { // recorded by another instance meanwhile
			p.reset()
		}
	}
}

// recordBatch records, inside tx, each notification of the batch that is
// new and whose token still holds.
func (s *Service) recordBatch(ctx context.Context, tx *ent.Tx, batch []*pendingNotification) error {
	for _, p := range batch {
		p.reset()
	}
	seen, err := seenNotifications(ctx, tx, batch)
	if err != nil {
		return err
	}
	if err := checkTargets(ctx, tx, batch); err != nil {
		return err
	}
	for _, p := range batch {
		switch {
		case p.stale:
		case seen[p.n.ID]:
			s.log.InfoContext(p.ctx, "Apple notification seen before; ignored", "notification", p.n.ID, "type", p.n.Type)
		default:
			seen[p.n.ID] = true
			if err := s.recordNotification(p.ctx, tx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTargets marks stale the notifications whose token is no longer
// ACTIVE or no longer holds the secret they were authenticated with: one
// read for the whole batch, where a burst names one token.
func checkTargets(ctx context.Context, tx *ent.Tx, batch []*pendingNotification) error {
	var ids []int
	for _, p := range batch {
		if !slices.Contains(ids, p.tok.ID) {
			ids = append(ids, p.tok.ID)
		}
	}
	toks, err := tx.ServerToken.Query().
		Where(servertoken.IDIn(ids...), servertoken.StateEQ(servertoken.StateACTIVE)).
		Select(servertoken.FieldNotificationSecret).All(ctx)
	if err != nil {
		return err
	}
	for _, p := range batch {
		i := slices.IndexFunc(toks, func(t *ent.ServerToken) bool { return t.ID == p.tok.ID })
		p.stale = i < 0 || !bytes.Equal(toks[i].NotificationSecret, p.tok.sealed)
	}
	return nil
}

// seenNotifications says which of the batch's notification IDs are
// recorded already.
func seenNotifications(ctx context.Context, tx *ent.Tx, batch []*pendingNotification) (map[string]bool, error) {
	ids := make([]string, len(batch))
	for i, p := range batch {
		ids[i] = p.n.ID
	}
	have, err := tx.AppleNotification.Query().Where(applenotification.NotificationIDIn(ids...)).
		Select(applenotification.FieldNotificationID).Strings(ctx)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(batch))
	for _, id := range have {
		seen[id] = true
	}
	return seen, nil
}

// recordNotification applies one notification inside tx. It writes
// nothing when the notification must be delivered again (p.result says
// so).
func (s *Service) recordNotification(ctx context.Context, tx *ent.Tx, p *pendingNotification) error {
	n, tok := p.n, p.tok
	eff := &licenceEffects{}
	detail := fmt.Sprintf("%s %s", n.Type, n.ID)
	var apply func() error
	switch {
	case n.AssetManagement != nil:
		am := n.AssetManagement
		ev, err := tx.LicenceEvent.Query().Where(licenceevent.TokenID(tok.ID), licenceevent.EventID(am.EventID)).Only(ctx)
		if ent.IsNotFound(err) {
			// Apple may finish an event before Orchard has stored its
			// eventId; Apple delivers again.
			p.result = NotificationRetry
			return nil
		} else if err != nil {
			return err
		}
		apply = func() error {
			op, err := outcomeOperation(ctx, tx, ev.OperationID)
			if err != nil {
				return err
			}
			o := &outcome{kind: op.Kind, ev: ev, notice: true}
			noteOutcome(o, am)
			return s.applyOutcome(ctx, tx, op, o, eff)
		}
		detail += fmt.Sprintf(": event %s %s %s, %d assignments", am.EventID, am.Type, am.Result, len(am.Assignments))
	case n.AssetCount != nil:
		apply = func() error {
			ids, err := s.applyAssetCount(ctx, tx, tok, n.AssetCount, eff)
			if err != nil {
				return err
			}
			return s.raiseLicenceWarnings(ctx, tx, ids, eff)
		}
		detail += fmt.Sprintf(": %s (%s) %+d", n.AssetCount.AdamID, n.AssetCount.PricingParam, n.AssetCount.CountDelta)
	}
	if err := tx.AppleNotification.Create().SetNotificationID(n.ID).SetType(string(n.Type)).
		SetTokenID(tok.ID).SetReceivedAt(s.Now()).Exec(ctx); err != nil {
		return err
	}
	if apply != nil {
		if err := apply(); err != nil {
			return err
		}
	}
	p.eff = eff
	return s.auditWith(ctx, tx.Client(), "apple.notification", &tok.CustomerID, &tok.ID, nil, detail)
}

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
func (s *Service) applyAssetCount(ctx context.Context, tx *ent.Tx, tok *notifyTarget, c *apple.AssetCount, eff *licenceEffects) ([]int, error) {
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
