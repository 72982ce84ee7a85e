package domain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/licenceevent"
	"github.com/orchard-msp/orchard/ent/licenceoperation"
	"github.com/orchard-msp/orchard/ent/schematype"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// LicenceConfig holds the licence settings (contract.md, "Configuration").
type LicenceConfig struct {
	// PublicURL is where Apple reaches this installation (ORCHARD_PUBLIC_URL);
	// empty: no notifications, polling only.
	PublicURL string
	// EventPoll is the least time between two status checks of one event
	// (ORCHARD_APPLE_EVENT_POLL).
	EventPoll time.Duration
	// NotifyWait is how long a notification is awaited before polling
	// starts (ORCHARD_APPLE_NOTIFY_WAIT).
	NotifyWait time.Duration
	// ResendAfter is how long an event may stay PENDING before it is sent
	// again; Apple says 10 minutes.
	ResendAfter time.Duration
	// WarnAvailable is the default low-licence threshold
	// (ORCHARD_LICENCE_WARN_AVAILABLE).
	WarnAvailable int
}

func (c LicenceConfig) withDefaults() LicenceConfig {
	if c.EventPoll <= 0 {
		c.EventPoll = 30 * time.Second
	}
	if c.NotifyWait <= 0 {
		c.NotifyWait = 5 * time.Minute
	}
	if c.ResendAfter <= 0 {
		c.ResendAfter = 10 * time.Minute
	}
	if c.WarnAvailable < 0 {
		c.WarnAvailable = 0
	}
	return c
}

// licenceState is the Service's licence machinery.
type licenceState struct {
	mu  sync.RWMutex
	cfg LicenceConfig
	set bool
	// kick, when set, asks the licence job to look at events now.
	kick func()
}

// SetLicenceConfig sets the licence settings; kick, when not nil, asks the
// licence job to run now (an operation left events to send).
func (s *Service) SetLicenceConfig(c LicenceConfig, kick func()) {
	s.lic.mu.Lock()
	defer s.lic.mu.Unlock()
	s.lic.cfg, s.lic.set, s.lic.kick = c.withDefaults(), true, kick
}

// LicenceSettings returns the licence settings in force.
func (s *Service) LicenceSettings() LicenceConfig {
	s.lic.mu.RLock()
	defer s.lic.mu.RUnlock()
	if !s.lic.set {
		return LicenceConfig{WarnAvailable: 5}.withDefaults()
	}
	return s.lic.cfg
}

func (s *Service) kickLicences() {
	s.lic.mu.RLock()
	kick := s.lic.kick
	s.lic.mu.RUnlock()
	if kick != nil {
		kick()
	}
}

// LicenceRequest is what assignLicences and unassignLicences ask for.
type LicenceRequest struct {
	TokenID       int
	Assets        []apple.AssetID
	SerialNumbers []string
	ClientUserIDs []string
}

// Limits of one operation: well above what a technician sends at once,
// well below what would hold the database for long.
const (
	maxOperationTargets = 10000
	maxOperationAssets  = 200
	// sendLease keeps the job off events an operation is sending itself;
	// if that instance dies, the job sends them when it runs out.
	sendLease = 2 * time.Minute
	// appleInFlight is Apple's own advice: at most five requests at once.
	appleInFlight = 5
	// maxSendFailures is how often an event that Apple could not be reached
	// for is tried before its pairs fail.
	maxSendFailures = 5
)

// AssignLicences assigns every asset to every device and user of req.
func (s *Service) AssignLicences(ctx context.Context, req LicenceRequest) (*ent.LicenceOperation, error) {
	return s.startOperation(ctx, licenceoperation.KindASSIGN, req)
}

// UnassignLicences takes every asset of req back from every device and user.
func (s *Service) UnassignLicences(ctx context.Context, req LicenceRequest) (*ent.LicenceOperation, error) {
	return s.startOperation(ctx, licenceoperation.KindUNASSIGN, req)
}

// RevokeLicences takes every revocable asset back from the devices and users.
func (s *Service) RevokeLicences(ctx context.Context, tokenID int, serialNumbers, clientUserIDs []string) (*ent.LicenceOperation, error) {
	return s.startOperation(ctx, licenceoperation.KindREVOKE, LicenceRequest{TokenID: tokenID, SerialNumbers: serialNumbers, ClientUserIDs: clientUserIDs})
}

func actionOf(kind licenceoperation.Kind) string {
	return "licence." + strings.ToLower(string(kind))
}

// cleanTargets trims, drops duplicates and refuses empty entries.
func cleanTargets(in []string, what string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, v := range in {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, fault.New(fault.BadUserInput, "A %s is empty. Remove it from the list and try again.", what)
		}
		if len(v) > 255 {
			return nil, fault.New(fault.BadUserInput, "The %s %.20q… is longer than 255 characters.", what, v)
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out, nil
}

// checkRequest validates req against the token before Apple is called.
func (s *Service) checkRequest(ctx context.Context, kind licenceoperation.Kind, tok *ent.ServerToken, req *LicenceRequest) error {
	if tok.State != servertoken.StateACTIVE {
		return fault.New(fault.InvalidState, "Licences can only be managed on an ACTIVE token; this one is %s. Upload a current token for this location, or claim it back.", tok.State)
	}
	var err error
	if req.SerialNumbers, err = cleanTargets(req.SerialNumbers, "serial number"); err != nil {
		return err
	}
	if req.ClientUserIDs, err = cleanTargets(req.ClientUserIDs, "client user ID"); err != nil {
		return err
	}
	n := len(req.SerialNumbers) + len(req.ClientUserIDs)
	switch {
	case n == 0:
		return fault.New(fault.BadUserInput, "Name at least one device (serialNumbers) or user (clientUserIDs).")
	case n > maxOperationTargets:
		return fault.New(fault.BadUserInput, "One operation can name at most %d devices and users; this one names %d. Split it.", maxOperationTargets, n)
	}
	if kind == licenceoperation.KindREVOKE {
		req.Assets = nil
		return nil
	}
	if len(req.Assets) == 0 {
		return fault.New(fault.BadUserInput, "Name at least one asset (adamID and pricingParam).")
	}
	if len(req.Assets) > maxOperationAssets {
		return fault.New(fault.BadUserInput, "One operation can name at most %d assets; this one names %d. Split it.", maxOperationAssets, len(req.Assets))
	}
	var assets []apple.AssetID
	seen := map[apple.AssetID]bool{}
	for _, a := range req.Assets {
		a.AdamID, a.PricingParam = strings.TrimSpace(a.AdamID), strings.ToUpper(strings.TrimSpace(a.PricingParam))
		if a.PricingParam == "" {
			a.PricingParam = "STDQ"
		}
		if a.AdamID == "" {
			return fault.New(fault.BadUserInput, "An asset has no adamID. Use the adamID shown on the token's apps.")
		}
		if a.PricingParam != "STDQ" && a.PricingParam != "PLUS" {
			return fault.New(fault.BadUserInput, "pricingParam %q of asset %s is not STDQ or PLUS.", a.PricingParam, a.AdamID)
		}
		if !seen[a] {
			seen[a] = true
			assets = append(assets, a)
		}
	}
	req.Assets = assets
	ids := make([]string, len(assets))
	for i, a := range assets {
		ids[i] = a.AdamID
	}
	held, err := s.client.App.Query().
		Where(app.TokenID(tok.ID), app.AdamIDIn(ids...)).
		Select(app.FieldAdamID, app.FieldPricingParam).All(viewer.SystemContext(ctx))
	if err != nil {
		return err
	}
	have := map[apple.AssetID]bool{}
	for _, a := range held {
		have[apple.AssetID{AdamID: a.AdamID, PricingParam: a.PricingParam}] = true
	}
	var missing []string
	for _, a := range assets {
		if !have[a] {
			missing = append(missing, a.AdamID+" ("+a.PricingParam+")")
		}
	}
	if len(missing) > 0 {
		return fault.New(fault.BadUserInput, "This token holds no licences of %s. Check the adamID and pricingParam against the token's apps; if the purchase is new, sync the token first.", strings.Join(missing, ", "))
	}
	return nil
}

// chunk is one Apple request of an operation.
type chunk struct {
	assets  []apple.AssetID
	serials []string
	users   []string
}

// split cuts a request into the fewest requests Apple's limits allow.
// Devices and users go in separate requests, each list cut to its limit,
// for each slice of assets.
func split(kind licenceoperation.Kind, req LicenceRequest, lim apple.Limits) []chunk {
	maxS, maxU := lim.MaxSerialNumbers, lim.MaxClientUserIDs
	if kind == licenceoperation.KindREVOKE {
		maxS, maxU = lim.MaxRevokeSerialNumbers, lim.MaxRevokeClientUserIDs
	}
	assetSlices := [][]apple.AssetID{nil}
	if kind != licenceoperation.KindREVOKE {
		assetSlices = slices.Collect(slices.Chunk(req.Assets, max(lim.MaxAssets, 1)))
	}
	var out []chunk
	for _, as := range assetSlices {
		for sn := range slices.Chunk(req.SerialNumbers, max(maxS, 1)) {
			out = append(out, chunk{assets: as, serials: sn})
		}
		for u := range slices.Chunk(req.ClientUserIDs, max(maxU, 1)) {
			out = append(out, chunk{assets: as, users: u})
		}
	}
	return out
}

func (c chunk) requested() int {
	if c.assets == nil {
		return len(c.serials) + len(c.users)
	}
	return len(c.assets) * (len(c.serials) + len(c.users))
}

func toRefs(in []apple.AssetID) []schematype.AssetRef {
	out := make([]schematype.AssetRef, len(in))
	for i, a := range in {
		out[i] = schematype.AssetRef{AdamID: a.AdamID, PricingParam: a.PricingParam}
	}
	return out
}

func fromRefs(in []schematype.AssetRef) []apple.AssetID {
	out := make([]apple.AssetID, len(in))
	for i, a := range in {
		out[i] = apple.AssetID{AdamID: a.AdamID, PricingParam: a.PricingParam}
	}
	return out
}

func (s *Service) startOperation(ctx context.Context, kind licenceoperation.Kind, req LicenceRequest) (op *ent.LicenceOperation, err error) {
	var tok *ent.ServerToken
	defer func() {
		if err != nil { // a started operation is recorded in its own transaction
			s.audit(ctx, actionOf(kind), customerOf(tok), &req.TokenID, err, "")
		}
	}()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	if tok, err = s.client.ServerToken.Get(ctx, req.TokenID); err != nil {
		return nil, notFound(err, "server token")
	}
	if err := s.checkRequest(ctx, kind, tok, &req); err != nil {
		return nil, err
	}
	lim := apple.DefaultLimits
	if sc, err := s.apple.ServiceConfig(ctx); err == nil {
		lim = sc.Limits
	} else {
		s.log.WarnContext(ctx, "service config unavailable; using Apple's published limits", "err", err)
	}
	chunks := split(kind, req, lim)
	requested := 0
	for _, c := range chunks {
		requested += c.requested()
	}
	sys := viewer.SystemContext(ctx)
	var events []*ent.LicenceEvent
	err = withTx(sys, s.client, func(tx *ent.Tx) error {
		var err error
		op, err = tx.LicenceOperation.Create().
			SetTokenID(tok.ID).SetCustomerID(tok.CustomerID).
			SetKind(kind).SetRequested(requested).
			SetAssets(toRefs(req.Assets)).SetSerialNumbers(req.SerialNumbers).SetClientUserIds(req.ClientUserIDs).
			SetCreatedAt(s.Now()).
			Save(sys)
		if err != nil {
			return err
		}
		creates := make([]*ent.LicenceEventCreate, len(chunks))
		for i, c := range chunks {
			creates[i] = tx.LicenceEvent.Create().
				SetOperationID(op.ID).SetTokenID(tok.ID).SetCustomerID(tok.CustomerID).
				SetAssets(toRefs(c.assets)).SetSerialNumbers(nonNil(c.serials)).SetClientUserIds(nonNil(c.users)).
				SetRequested(c.requested()).SetNextCheckAt(s.Now().Add(sendLease))
		}
		for part := range slices.Chunk(creates, 500) {
			evs, err := tx.LicenceEvent.CreateBulk(part...).Save(sys)
			if err != nil {
				return err
			}
			events = append(events, evs...)
		}
		detail := fmt.Sprintf("%d assets × %d devices and %d users: %d pairs in %d Apple requests",
			len(req.Assets), len(req.SerialNumbers), len(req.ClientUserIDs), requested, len(chunks))
		if kind == licenceoperation.KindREVOKE {
			detail = fmt.Sprintf("%d devices and %d users in %d Apple requests", len(req.SerialNumbers), len(req.ClientUserIDs), len(chunks))
		}
		return s.auditWith(ctx, tx.Client(), actionOf(kind), &tok.CustomerID, &tok.ID, nil, detail)
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "licence operation started", "operation", op.ID, "kind", kind, "token", tok.ID, "pairs", requested, "requests", len(events))
	s.publishOperation(ctx, op.ID, op.CustomerID)
	s.sendEvents(sys, tok, events)
	// The caller reads the operation as it stands now, within its scope.
	return s.client.LicenceOperation.Get(ctx, op.ID)
}

func nonNil(in []string) []string {
	if in == nil {
		return []string{}
	}
	return in
}

// sendEvents hands the events to Apple, at most five at a time.
func (s *Service) sendEvents(ctx context.Context, tok *ent.ServerToken, events []*ent.LicenceEvent) {
	secret, err := s.sealer.Open(tok.SealedToken, sealAAD(tok.ID, tok.CustomerID))
	if err != nil {
		s.log.ErrorContext(ctx, "opening sealed token for licences", "token", tok.ID, "err", err)
		return
	}
	defer clear(secret)
	notified := tok.NotificationURL != ""
	sem := make(chan struct{}, appleInFlight)
	var wg sync.WaitGroup
	for _, ev := range events {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.sendEvent(ctx, secret, notified, ev)
		}()
	}
	wg.Wait()
}

// kindOf returns the operation kind of an event.
func (s *Service) kindOf(ctx context.Context, ev *ent.LicenceEvent) (licenceoperation.Kind, error) {
	op, err := s.client.LicenceOperation.Query().Where(licenceoperation.ID(ev.OperationID)).
		Select(licenceoperation.FieldKind).Only(ctx)
	if err != nil {
		return "", err
	}
	return op.Kind, nil
}

// callApple sends one event's request.
func (s *Service) callApple(ctx context.Context, secret []byte, kind licenceoperation.Kind, ev *ent.LicenceEvent) (*apple.EventReceipt, error) {
	switch kind {
	case licenceoperation.KindASSIGN:
		return s.apple.AssociateAssets(ctx, secret, apple.ManageAssets{Assets: fromRefs(ev.Assets), SerialNumbers: ev.SerialNumbers, ClientUserIDs: ev.ClientUserIds})
	case licenceoperation.KindUNASSIGN:
		return s.apple.DisassociateAssets(ctx, secret, apple.ManageAssets{Assets: fromRefs(ev.Assets), SerialNumbers: ev.SerialNumbers, ClientUserIDs: ev.ClientUserIds})
	}
	return s.apple.RevokeAssets(ctx, secret, apple.RevokeAssets{SerialNumbers: ev.SerialNumbers, ClientUserIDs: ev.ClientUserIds})
}

// retryable reports whether a failed send should be tried again later.
func retryable(err error) bool {
	switch fault.CodeOf(err) {
	case fault.AppleUnavailable, fault.AppleRateLimited:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// sendEvent sends (or resends) one event and records the outcome.
func (s *Service) sendEvent(ctx context.Context, secret []byte, notified bool, ev *ent.LicenceEvent) {
	kind, err := s.kindOf(ctx, ev)
	if err != nil {
		s.log.ErrorContext(ctx, "reading licence operation", "event", ev.ID, "err", err)
		return
	}
	sent := s.Now()
	receipt, err := s.callApple(ctx, secret, kind, ev)
	if err != nil && s.resplit(ctx, secret, notified, kind, ev, err, sent) {
		return
	}
	now := s.Now()
	if err == nil {
		wait := s.LicenceSettings().EventPoll
		if notified {
			wait = s.LicenceSettings().NotifyWait
		}
		upd := s.client.LicenceEvent.Update().
			Where(licenceevent.ID(ev.ID), licenceevent.StateIn(licenceevent.StateUNSENT, licenceevent.StatePENDING)).
			SetState(licenceevent.StatePENDING).SetEventID(receipt.EventID).
			SetSentAt(now).SetNextCheckAt(now.Add(wait))
		if ev.State == licenceevent.StatePENDING { // a resend starts the count afresh
			upd.AddResends(1).SetResults(map[string]int{}).SetCompleted(0).SetFailures([]schematype.LicenceFailure{})
		}
		if err := upd.Exec(ctx); err != nil {
			s.log.ErrorContext(ctx, "recording licence event", "event", ev.ID, "err", err)
		}
		return
	}
	if retryable(err) && ev.SendFailures+1 < maxSendFailures && ctx.Err() == nil {
		s.log.WarnContext(ctx, "Apple did not take a licence request; it is sent again later", "event", ev.ID, "err", err)
		if err := s.client.LicenceEvent.UpdateOneID(ev.ID).AddSendFailures(1).
			SetNextCheckAt(now.Add(s.LicenceSettings().EventPoll)).Exec(ctx); err != nil {
			s.log.ErrorContext(ctx, "recording licence event", "event", ev.ID, "err", err)
		}
		return
	}
	// Apple refused the request as a whole: every pair of it fails.
	s.log.WarnContext(ctx, "Apple refused a licence request", "event", ev.ID, "err", err)
	code, msg := refusal(err)
	s.settle(ctx, ev.ID, func(o *outcome) {
		for _, p := range eventPairs(kind, ev) {
			o.failed(p, code, msg)
		}
	})
}

// tooLarge reports whether Apple refused a request as larger than its
// limits allow (assets, users, serial numbers).
func tooLarge(err error) bool {
	var ae *apple.Error
	return errors.As(err, &ae) && ae.Number >= 9700 && ae.Number <= 9702
}

// resplit answers Apple refusing ev as too large: Apple may shrink its
// limits within the 5 minutes Orchard keeps them, so the limits are read
// again and, when they now cut ev into several requests, ev is replaced by
// those and they are sent. It reports false when that does not apply (the
// refusal was about something else, or fresh limits would not cut ev), and
// the pairs then fail as refused. Each round needs strictly smaller
// requests, so this ends.
func (s *Service) resplit(ctx context.Context, secret []byte, notified bool, kind licenceoperation.Kind, ev *ent.LicenceEvent, err error, sent time.Time) bool {
	r, ok := s.apple.(apple.ServiceConfigRefresher)
	if !tooLarge(err) || !ok {
		return false
	}
	sc, rerr := r.RefreshServiceConfig(ctx, sent)
	if rerr != nil {
		s.log.WarnContext(ctx, "re-reading Apple's limits after a refusal", "event", ev.ID, "err", rerr)
		return false
	}
	chunks := split(kind, LicenceRequest{Assets: fromRefs(ev.Assets), SerialNumbers: ev.SerialNumbers, ClientUserIDs: ev.ClientUserIds}, sc.Limits)
	if len(chunks) < 2 {
		return false
	}
	var events []*ent.LicenceEvent
	terr := withTx(ctx, s.client, func(tx *ent.Tx) error {
		// Only an event no one settled meanwhile is replaced; its pairs
		// move to the new events, so the operation's count stays.
		n, err := tx.LicenceEvent.Delete().
			Where(licenceevent.ID(ev.ID), licenceevent.StateIn(licenceevent.StateUNSENT, licenceevent.StatePENDING)).Exec(ctx)
		if err != nil || n == 0 {
			return errors.Join(err, errEventSettled)
		}
		creates := make([]*ent.LicenceEventCreate, len(chunks))
		for i, c := range chunks {
			creates[i] = tx.LicenceEvent.Create().
				SetOperationID(ev.OperationID).SetTokenID(ev.TokenID).SetCustomerID(ev.CustomerID).
				SetAssets(toRefs(c.assets)).SetSerialNumbers(nonNil(c.serials)).SetClientUserIds(nonNil(c.users)).
				SetRequested(c.requested()).SetNextCheckAt(s.Now().Add(sendLease))
		}
		events, err = tx.LicenceEvent.CreateBulk(creates...).Save(ctx)
		return err
	})
	if errors.Is(terr, errEventSettled) {
		return true
	} else if terr != nil {
		s.log.ErrorContext(ctx, "cutting a refused licence request again", "event", ev.ID, "err", terr)
		return false
	}
	s.log.InfoContext(ctx, "Apple's limits shrank; the request is cut again", "event", ev.ID, "requests", len(events),
		"max_serial_numbers", sc.Limits.MaxSerialNumbers, "max_client_user_ids", sc.Limits.MaxClientUserIDs, "max_assets", sc.Limits.MaxAssets)
	for _, e := range events {
		s.sendEvent(ctx, secret, notified, e)
	}
	return true
}

// errEventSettled: the event ended or was replaced while it was handled.
var errEventSettled = errors.New("licence event already settled")

// refusal turns an error from Apple into a failure code and a sentence for
// the technician.
func refusal(err error) (code, message string) {
	var ae *apple.Error
	if errors.As(err, &ae) {
		return fmt.Sprint(ae.Number), failureMessage(ae.Number, ae.Message)
	}
	switch c := fault.CodeOf(err); c {
	case fault.Internal:
		return string(c), "Orchard could not send this request to Apple. Try the operation again; if it keeps failing, check Orchard's log."
	default:
		return string(c), fault.MessageOf(explainApple(err))
	}
}

// failureMessage says what an Apple error number means for a pair and
// what to do about it.
func failureMessage(number int, appleMessage string) string {
	switch number {
	case 9709:
		return "No licence of this asset is left. Buy more in Apple Business Manager or unassign it elsewhere, then assign again."
	case 9610:
		return "Apple has no licence of this asset assigned here, so there was nothing to take back. Sync the token to refresh its assignments."
	case 9609:
		return "Apple knows no registered user with this clientUserId at the location. Register the user first, then try again."
	case 9707:
		return "This asset cannot be assigned to devices. Assign it to users instead."
	case 9700, 9701, 9702:
		return "Apple refused the request as too large for its current limits. Try again; Orchard re-reads the limits every 5 minutes."
	}
	if appleMessage == "" {
		appleMessage = "no reason given"
	}
	return fmt.Sprintf("Apple refused this (error %d: %s). Check the asset and the device or user, then try again.", number, appleMessage)
}
