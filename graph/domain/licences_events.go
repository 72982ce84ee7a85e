package domain

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/licenceassignment"
	"github.com/orchard-msp/orchard/ent/licenceevent"
	"github.com/orchard-msp/orchard/ent/licenceoperation"
	"github.com/orchard-msp/orchard/ent/schematype"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// pair is one unit of an event: an asset and a device or user, or for a
// revoke just the device or user (no asset).
type pair struct {
	AdamID, Pricing, Serial, User string
}

func (p pair) target() string {
	if p.Serial != "" {
		return "s:" + p.Serial
	}
	return "u:" + p.User
}

func (p pair) key() string {
	if p.AdamID == "" {
		return p.target()
	}
	return p.AdamID + "|" + p.Pricing + "|" + p.target()
}

func (p pair) asset() apple.AssetID { return apple.AssetID{AdamID: p.AdamID, PricingParam: p.Pricing} }

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (p pair) failure(code, msg string) schematype.LicenceFailure {
	return schematype.LicenceFailure{AdamID: strPtr(p.AdamID), PricingParam: strPtr(p.Pricing),
		SerialNumber: strPtr(p.Serial), ClientUserID: strPtr(p.User), Code: code, Message: msg}
}

func targetsOf(serials, users []string) []pair {
	out := make([]pair, 0, len(serials)+len(users))
	for _, sn := range serials {
		out = append(out, pair{Serial: sn})
	}
	for _, u := range users {
		out = append(out, pair{User: u})
	}
	return out
}

// eventPairs lists every pair an event asked for.
func eventPairs(kind licenceoperation.Kind, ev *ent.LicenceEvent) []pair {
	targets := targetsOf(ev.SerialNumbers, ev.ClientUserIds)
	if kind == licenceoperation.KindREVOKE {
		return targets
	}
	out := make([]pair, 0, len(ev.Assets)*len(targets))
	for _, a := range ev.Assets {
		for _, t := range targets {
			t.AdamID, t.Pricing = a.AdamID, a.PricingParam
			out = append(out, t)
		}
	}
	return out
}

// failurePairs lists the pairs of ev an Apple failure applies to: the
// assets and devices or users it names, all of the event's where it names
// none.
func failurePairs(kind licenceoperation.Kind, ev *ent.LicenceEvent, f apple.ErrorInfo) []pair {
	in := func(list []string, v string) bool { return slices.Contains(list, v) }
	var out []pair
	for _, p := range eventPairs(kind, ev) {
		if len(f.SerialNumbers)+len(f.ClientUserIDs) > 0 && !(p.Serial != "" && in(f.SerialNumbers, p.Serial) || p.User != "" && in(f.ClientUserIDs, p.User)) {
			continue
		}
		if p.AdamID != "" && len(f.Assets) > 0 && !slices.Contains(f.Assets, p.asset()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

type pairFailure struct {
	p         pair
	code, msg string
}

// outcome is what is learnt about an event at once: from a status check, a
// notification or a refused request.
type outcome struct {
	kind licenceoperation.Kind
	ev   *ent.LicenceEvent
	done []pair
	fail []pairFailure
	// rest settles every pair not reported yet: done when restOK, failed
	// with restCode otherwise.
	rest              bool
	restOK            bool
	restCode, restMsg string
	// removed are assignments Apple reports taken back by a revoke.
	removed []pair
	notice  bool
}

func (o *outcome) ok(p pair) { o.done = append(o.done, p) }
func (o *outcome) failed(p pair, code, msg string) {
	o.fail = append(o.fail, pairFailure{p, code, msg})
}

// licenceEffects is what to tell others once a transaction committed.
type licenceEffects struct {
	ops      map[int]int // operation → customer
	warnings []licenceWarningMessage
	sync     []int // tokens whose apps should be re-read
}

func (e *licenceEffects) op(id, customer int) {
	if e.ops == nil {
		e.ops = map[int]int{}
	}
	e.ops[id] = customer
}

// publish tells subscribers and webhooks, never waiting on them.
func (s *Service) publishEffects(ctx context.Context, e *licenceEffects) {
	ctx = context.WithoutCancel(ctx)
	for id, customer := range e.ops {
		s.publishOperation(ctx, id, customer)
	}
	for _, w := range e.warnings {
		s.publishLicenceWarning(ctx, w)
	}
	if len(e.warnings) > 0 && s.OnOutbox != nil {
		s.OnOutbox()
	}
	for _, id := range e.sync {
		if s.OnActivate != nil {
			s.OnActivate(id)
		}
	}
}

// settle applies what fill reports about event evID in one transaction:
// pairs done or failed (each counted once however often it is reported),
// the assignments and app counts they change, and the end of the event and
// of its operation.
func (s *Service) settle(ctx context.Context, evID int, fill func(o *outcome)) {
	ctx = viewer.SystemContext(ctx)
	eff := &licenceEffects{}
	err := withTx(ctx, s.client, func(tx *ent.Tx) error {
		ev, err := tx.LicenceEvent.Get(ctx, evID)
		if err != nil {
			return err
		}
		op, err := outcomeOperation(ctx, tx, ev.OperationID)
		if err != nil {
			return err
		}
		o := &outcome{kind: op.Kind, ev: ev}
		fill(o)
		return s.applyOutcome(ctx, tx, op, o, eff)
	})
	if err != nil {
		s.log.ErrorContext(ctx, "recording a licence event's outcome", "event", evID, "err", err)
		return
	}
	s.publishEffects(ctx, eff)
}

// outcomeOperation reads what applying an event's outcome needs of its
// operation. The operation's targets are left out: for 10,000 devices they
// are a JSON column of 10,000 strings, which every settle would decode for
// nothing.
func outcomeOperation(ctx context.Context, tx *ent.Tx, id int) (*ent.LicenceOperation, error) {
	return tx.LicenceOperation.Query().Where(licenceoperation.ID(id)).
		Select(licenceoperation.FieldKind, licenceoperation.FieldCustomerID, licenceoperation.FieldTokenID, licenceoperation.FieldRequested).
		Only(ctx)
}

func terminal(st licenceevent.State) bool {
	return st == licenceevent.StateCOMPLETE || st == licenceevent.StateFAILED
}

func (s *Service) applyOutcome(ctx context.Context, tx *ent.Tx, op *ent.LicenceOperation, o *outcome, eff *licenceEffects) error {
	ev := o.ev
	results := maps.Clone(ev.Results)
	if results == nil {
		results = map[string]int{}
	}
	wanted := map[string]bool{}
	for _, p := range eventPairs(o.kind, ev) {
		wanted[p.key()] = true
	}
	var done []pair
	failures := slices.Clone(ev.Failures)
	for _, f := range o.fail {
		k := f.p.key()
		if _, seen := results[k]; seen || !wanted[k] {
			continue
		}
		results[k] = -1
		failures = append(failures, f.p.failure(f.code, f.msg))
	}
	for _, p := range o.done {
		k := p.key()
		if _, seen := results[k]; seen || !wanted[k] {
			continue
		}
		results[k] = 0
		done = append(done, p)
	}
	if o.rest {
		for _, p := range eventPairs(o.kind, ev) {
			if _, seen := results[p.key()]; seen {
				continue
			}
			if o.restOK {
				results[p.key()] = 0
				done = append(done, p)
			} else {
				results[p.key()] = -1
				failures = append(failures, p.failure(o.restCode, o.restMsg))
			}
		}
	}
	delta, err := s.applyAssignments(ctx, tx, op, o.kind, done, o.removed)
	if err != nil {
		return err
	}
	changedApps, err := s.applyCounts(ctx, tx, op.TokenID, delta)
	if err != nil {
		return err
	}
	if len(done) == 0 && len(failures) == len(ev.Failures) && len(results) == len(ev.Results) {
		// Nothing new about the event itself (a repeated report, or a
		// revoke's later notification that only listed assignments).
		return s.raiseLicenceWarnings(ctx, tx, changedApps, eff)
	}
	completed := ev.Completed + len(done)
	// Update, not UpdateOne: UpdateOne reads the row back, and an event's
	// targets and results are large JSON columns.
	upd := tx.LicenceEvent.Update().Where(licenceevent.ID(ev.ID)).SetResults(results).SetCompleted(completed).SetFailures(failures)
	if o.notice {
		upd.SetNotifiedAt(s.Now())
	}
	if !terminal(ev.State) && len(results) >= ev.Requested {
		state := licenceevent.StateCOMPLETE
		if completed == 0 && ev.Requested > 0 {
			state = licenceevent.StateFAILED
		}
		upd.SetState(state)
	}
	if err := upd.Exec(ctx); err != nil {
		return err
	}
	if err := s.rollUp(ctx, tx, op, eff); err != nil {
		return err
	}
	return s.raiseLicenceWarnings(ctx, tx, changedApps, eff)
}

// rollUp brings an operation's count and status up to date with its events.
func (s *Service) rollUp(ctx context.Context, tx *ent.Tx, op *ent.LicenceOperation, eff *licenceEffects) error {
	evs, err := tx.LicenceEvent.Query().Where(licenceevent.OperationID(op.ID)).
		Order(ent.Asc(licenceevent.FieldID)).
		Select(licenceevent.FieldState, licenceevent.FieldCompleted, licenceevent.FieldFailures).All(ctx)
	if err != nil {
		return err
	}
	completed, finished := 0, true
	var failures []schematype.LicenceFailure
	for _, e := range evs {
		completed += e.Completed
		failures = append(failures, e.Failures...)
		finished = finished && terminal(e.State)
	}
	// Update, not UpdateOne, which would read the operation back with its
	// targets; an operation no longer PENDING is left as it is.
	upd := tx.LicenceOperation.Update().
		Where(licenceoperation.ID(op.ID), licenceoperation.StatusEQ(licenceoperation.StatusPENDING)).
		SetCompleted(completed)
	if finished {
		status := licenceoperation.StatusCOMPLETE
		switch {
		case len(failures) > 0 && completed == 0:
			status = licenceoperation.StatusFAILED
		case len(failures) > 0:
			status = licenceoperation.StatusPARTIAL
		}
		if failures == nil {
			failures = []schematype.LicenceFailure{}
		}
		upd.SetStatus(status).SetFailures(failures).SetCompletedAt(s.Now())
		var outcome error
		if status != licenceoperation.StatusCOMPLETE {
			outcome = fault.New(fault.Code(status), "%d of %d failed", len(failures), op.Requested)
		}
		detail := fmt.Sprintf("operation %d ended %s: %d of %d done, %d failed", op.ID, status, completed, op.Requested, len(failures))
		if err := s.auditWith(ctx, tx.Client(), actionOf(op.Kind)+".end", &op.CustomerID, &op.TokenID, outcome, detail); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "licence operation ended", "operation", op.ID, "status", status, "completed", completed, "failed", len(failures))
	}
	if err := upd.Exec(ctx); err != nil {
		return err
	}
	eff.op(op.ID, op.CustomerID)
	return nil
}

// applyAssignments makes the token's assignments reflect done pairs and
// returns how each asset's assigned count changed.
func (s *Service) applyAssignments(ctx context.Context, tx *ent.Tx, op *ent.LicenceOperation, kind licenceoperation.Kind, done, removed []pair) (map[apple.AssetID]int, error) {
	delta := map[apple.AssetID]int{}
	byAsset := func(ps []pair) map[apple.AssetID][]string {
		m := map[apple.AssetID][]string{}
		for _, p := range ps {
			m[p.asset()] = append(m[p.asset()], p.target())
		}
		return m
	}
	remove := func(ps []pair) error {
		for a, targets := range byAsset(ps) {
			for part := range slices.Chunk(targets, 500) {
				n, err := tx.LicenceAssignment.Delete().Where(licenceassignment.TokenID(op.TokenID),
					licenceassignment.AdamID(a.AdamID), licenceassignment.PricingParam(a.PricingParam),
					licenceassignment.TargetIn(part...)).Exec(ctx)
				if err != nil {
					return err
				}
				delta[a] -= n
			}
		}
		return nil
	}
	switch kind {
	case licenceoperation.KindASSIGN:
		for a, targets := range byAsset(done) {
			added, err := s.addAssignments(ctx, tx, op.TokenID, op.CustomerID, a, targets)
			if err != nil {
				return nil, err
			}
			delta[a] += added
		}
	case licenceoperation.KindUNASSIGN:
		if err := remove(done); err != nil {
			return nil, err
		}
	case licenceoperation.KindREVOKE:
		if err := remove(removed); err != nil {
			return nil, err
		}
		var targets []string
		for _, p := range done {
			targets = append(targets, p.target())
		}
		for part := range slices.Chunk(targets, 500) {
			gone, err := tx.LicenceAssignment.Query().
				Where(licenceassignment.TokenID(op.TokenID), licenceassignment.TargetIn(part...)).
				Select(licenceassignment.FieldID, licenceassignment.FieldAdamID, licenceassignment.FieldPricingParam).All(ctx)
			if err != nil {
				return nil, err
			}
			ids := make([]int, len(gone))
			for i, g := range gone {
				ids[i] = g.ID
				delta[apple.AssetID{AdamID: g.AdamID, PricingParam: g.PricingParam}]--
			}
			if _, err := tx.LicenceAssignment.Delete().Where(licenceassignment.IDIn(ids...)).Exec(ctx); err != nil {
				return nil, err
			}
		}
	}
	return delta, nil
}

// addAssignments records asset a as assigned to targets ("s:SERIAL",
// "u:USER") and returns how many were new.
func (s *Service) addAssignments(ctx context.Context, tx *ent.Tx, tokenID, customerID int, a apple.AssetID, targets []string) (int, error) {
	appRow, err := tx.App.Query().Where(app.TokenID(tokenID), app.AdamID(a.AdamID), app.PricingParam(a.PricingParam)).
		Select(app.FieldID).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return 0, err
	}
	var appID *int
	if appRow != nil {
		appID = &appRow.ID
	}
	added := 0
	for part := range slices.Chunk(targets, 500) {
		have, err := tx.LicenceAssignment.Query().Where(licenceassignment.TokenID(tokenID),
			licenceassignment.AdamID(a.AdamID), licenceassignment.PricingParam(a.PricingParam),
			licenceassignment.TargetIn(part...)).Select(licenceassignment.FieldTarget).Strings(ctx)
		if err != nil {
			return 0, err
		}
		var creates []*ent.LicenceAssignmentCreate
		for _, t := range part {
			if slices.Contains(have, t) {
				continue
			}
			c := tx.LicenceAssignment.Create().SetTokenID(tokenID).SetCustomerID(customerID).SetNillableAppID(appID).
				SetAdamID(a.AdamID).SetPricingParam(a.PricingParam).SetTarget(t).SetCreatedAt(s.Now())
			if sn, ok := strings.CutPrefix(t, "s:"); ok {
				c.SetSerialNumber(sn)
			} else {
				c.SetClientUserID(strings.TrimPrefix(t, "u:"))
			}
			creates = append(creates, c)
		}
		if len(creates) == 0 {
			continue
		}
		if err := tx.LicenceAssignment.CreateBulk(creates...).
			OnConflictColumns(licenceassignment.FieldTokenID, licenceassignment.FieldAdamID, licenceassignment.FieldPricingParam, licenceassignment.FieldTarget).
			DoNothing().Exec(ctx); err != nil {
			return 0, err
		}
		added += len(creates)
	}
	return added, nil
}

// applyCounts moves licences between an app's available and assigned
// counts, and returns the apps that changed.
func (s *Service) applyCounts(ctx context.Context, tx *ent.Tx, tokenID int, delta map[apple.AssetID]int) ([]int, error) {
	var changed []int
	for a, d := range delta {
		if d == 0 {
			continue
		}
		row, err := tx.App.Query().Where(app.TokenID(tokenID), app.AdamID(a.AdamID), app.PricingParam(a.PricingParam)).Only(ctx)
		if ent.IsNotFound(err) {
			continue // not synced yet: the next sync brings its counts
		} else if err != nil {
			return nil, err
		}
		// Added in SQL, not set from the row read above: events of one
		// operation settle at once, and on PostgreSQL (read committed) a
		// value computed from an earlier read would lose the other's change.
		upd := tx.App.UpdateOneID(row.ID).AddAssignedCount(d)
		if !row.Unlimited {
			upd.AddAvailableCount(-d)
		}
		if err := upd.Exec(ctx); err != nil {
			return nil, err
		}
		// Apple's counts are never negative; one Orchard read before a
		// purchase or refund stays at 0 until the next sync.
		clamp := tx.App.Update().Where(app.ID(row.ID), app.AssignedCountLT(0)).SetAssignedCount(0)
		if d > 0 {
			clamp = tx.App.Update().Where(app.ID(row.ID), app.AvailableCountLT(0)).SetAvailableCount(0)
		}
		if _, err := clamp.Save(ctx); err != nil {
			return nil, err
		}
		changed = append(changed, row.ID)
	}
	return changed, nil
}

// statusOutcome reads Apple's event status into an outcome.
func statusOutcome(st *apple.EventStatus) func(o *outcome) {
	return func(o *outcome) {
		for _, f := range st.Failures {
			code, msg := fmt.Sprint(f.Number), failureMessage(f.Number, f.Message)
			for _, p := range failurePairs(o.kind, o.ev, f.ErrorInfo) {
				o.failed(p, code, msg)
			}
		}
		o.rest, o.restOK = true, st.State == apple.EventComplete
		o.restCode, o.restMsg = "FAILED", "Apple reported the request as failed without naming a reason. Try the operation again."
	}
}

// RunLicenceEvents does the licence work that is due: sends events no one
// sent, asks Apple how pending ones stand (at most every EventPoll, after
// NotifyWait when notifications are registered) and resends those still
// pending after ResendAfter. It returns how many events it looked at.
// Several instances may run it: each event is leased first.
func (s *Service) RunLicenceEvents(ctx context.Context) int {
	ctx = viewer.SystemContext(ctx)
	now := s.Now()
	due, err := s.client.LicenceEvent.Query().
		Where(licenceevent.StateIn(licenceevent.StateUNSENT, licenceevent.StatePENDING), licenceevent.NextCheckAtLTE(now)).
		Order(ent.Asc(licenceevent.FieldNextCheckAt)).Limit(100).All(ctx)
	if err != nil {
		s.log.ErrorContext(ctx, "reading due licence events", "err", err)
		return 0
	}
	secrets := map[int][]byte{}
	tokens := map[int]*ent.ServerToken{}
	defer func() {
		for _, sec := range secrets {
			clear(sec)
		}
	}()
	// The leases are taken in one transaction, in ID order so that two
	// instances leasing the same events lock them in the same order: one
	// commit for the round rather than one per event.
	slices.SortFunc(due, func(a, b *ent.LicenceEvent) int { return cmp.Compare(a.ID, b.ID) })
	var leased []*ent.LicenceEvent
	err = withTx(ctx, s.client, func(tx *ent.Tx) error {
		leased = leased[:0]
		for _, ev := range due {
			n, err := tx.LicenceEvent.Update().
				Where(licenceevent.ID(ev.ID), licenceevent.StateEQ(ev.State), licenceevent.NextCheckAtEQ(ev.NextCheckAt)).
				SetNextCheckAt(now.Add(sendLease)).Save(ctx)
			if err != nil {
				return err
			}
			if n == 1 { // otherwise another instance has it
				leased = append(leased, ev)
			}
		}
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "leasing due licence events", "err", err)
		return 0
	}
	sem := make(chan struct{}, appleInFlight)
	var wg sync.WaitGroup
	for _, ev := range leased {
		tok, ok := tokens[ev.TokenID]
		if !ok {
			tok, err = s.client.ServerToken.Get(ctx, ev.TokenID)
			if err != nil {
				continue
			}
			tokens[ev.TokenID] = tok
			if tok.State == servertoken.StateACTIVE {
				if secrets[tok.ID], err = s.sealer.Open(tok.SealedToken, sealAAD(tok.ID, tok.CustomerID)); err != nil {
					s.log.ErrorContext(ctx, "opening sealed token for licences", "token", tok.ID, "err", err)
					continue
				}
			}
		}
		if tok.State != servertoken.StateACTIVE {
			msg := fmt.Sprintf("The token became %s before Apple finished; Apple's outcome is unknown. Sync the token once it is ACTIVE again to see its assignments.", tok.State)
			s.settle(ctx, ev.ID, func(o *outcome) {
				o.rest, o.restCode, o.restMsg = true, string(fault.InvalidState), msg
			})
			continue
		}
		secret := secrets[tok.ID]
		if secret == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.checkEvent(ctx, tok, secret, ev)
		}()
	}
	wg.Wait()
	return len(leased)
}

// checkEvent sends, resends or asks about one leased event.
func (s *Service) checkEvent(ctx context.Context, tok *ent.ServerToken, secret []byte, ev *ent.LicenceEvent) {
	cfg := s.LicenceSettings()
	notified := tok.NotificationURL != ""
	if ev.State == licenceevent.StateUNSENT {
		s.sendEvent(ctx, secret, notified, ev)
		return
	}
	// Apple's advice: resend only what its status still calls PENDING after
	// the window; an event that ended unheard is settled, not sent twice.
	st, err := s.apple.EventStatus(ctx, secret, ev.EventID)
	var ae *apple.Error
	switch {
	case errors.As(err, &ae) && ae.Number == 9708:
		// Apple does not know the event: send it again.
		s.sendEvent(ctx, secret, notified, ev)
		return
	case err == nil && !st.Done() && ev.SentAt != nil && s.Now().Sub(*ev.SentAt) >= cfg.ResendAfter:
		s.log.InfoContext(ctx, "licence event still pending at Apple; sending it again", "event", ev.ID, "apple_event", ev.EventID)
		s.sendEvent(ctx, secret, notified, ev)
		return
	case err != nil || !st.Done():
		if err != nil {
			s.log.WarnContext(ctx, "licence event status check failed", "event", ev.ID, "err", err)
		}
		if uerr := s.client.LicenceEvent.UpdateOneID(ev.ID).AddChecks(1).
			SetNextCheckAt(s.Now().Add(cfg.EventPoll)).Exec(ctx); uerr != nil {
			s.log.ErrorContext(ctx, "recording licence event check", "event", ev.ID, "err", uerr)
		}
		return
	}
	s.settle(ctx, ev.ID, statusOutcome(st))
}
