package domain

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/schematype"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// downloadPath is where a fresh server token comes from.
const downloadPath = "Apple Business Manager > Preferences > Payments and Billing > Apps and Books (Apple School Manager has the same path)"

// whereToDownload tells a technician where to get a fresh server token.
const whereToDownload = "Download a new one from " + downloadPath + "."

// UploadResult is what the wizard's review step shows.
type UploadResult struct {
	// Token is the stored upload, PENDING or CONFLICT.
	Token *ent.ServerToken
	// Conflict is the other MDM when Token is CONFLICT.
	Conflict *schematype.MDMInfo
	// Renews is the ACTIVE token that confirming would renew in place.
	Renews *ent.ServerToken
}

func (r *UploadResult) detach() {
	if r != nil {
		r.Token.Detach()
		r.Renews.Detach()
	}
}

// sealAAD binds a sealed token to its row and customer: a ciphertext copied
// into another row does not open.
func sealAAD(tokenID, customerID int) []byte {
	return []byte("orchard/server_token/v1|" + strconv.Itoa(tokenID) + "|" + strconv.Itoa(customerID))
}

// UploadServerToken is the wizard's upload step: it parses the file, asks
// Apple about its location and stores the token sealed as PENDING, or as
// CONFLICT when another MDM manages the location. Nothing else changes.
func (s *Service) UploadServerToken(ctx context.Context, customerID int, data []byte) (res *UploadResult, err error) {
	ctx = s.interactive(ctx)
	defer func() {
		if err != nil { // a success is recorded in its own transaction
			s.audit(ctx, "token.upload", &customerID, nil, err, "")
		}
	}()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	cust, err := s.client.Customer.Get(ctx, customerID)
	if err != nil {
		return nil, notFound(err, "customer")
	}
	file, err := s.parser.Parse(data)
	if err != nil {
		return nil, err
	}
	if !file.ExpiresAt.After(s.Now()) {
		return nil, fault.New(fault.TokenExpired, "This server token expired on %s. %s", file.ExpiresAt.Format("2 January 2006"), whereToDownload)
	}
	cfg, err := s.apple.ClientConfig(ctx, file.Secret)
	if err != nil {
		return nil, explainApple(err)
	}
	if cfg.LocationUID == "" {
		return nil, fault.New(fault.TokenInvalid, "Apple did not say which location this token belongs to. Try again later; if it persists, download the token again.")
	}

	res, err = inTx(ctx, s.client, func(tx *ent.Tx) (*UploadResult, error) {
		res := &UploadResult{}
		// Every token Orchard holds for this location, in one query: the
		// ACTIVE one (a renewal, or another customer's) and the mdmInfo.id
		// Orchard uses there.
		sys := viewer.SystemContext(ctx)
		same, err := tx.ServerToken.Query().
			Where(servertoken.LocationUID(cfg.LocationUID)).
			Order(ent.Desc(servertoken.FieldUpdatedAt)).
			Select(servertoken.FieldID, servertoken.FieldCustomerID, servertoken.FieldState, servertoken.FieldMdmID).
			All(sys)
		if err != nil {
			return nil, err
		}
		mdmID := uuid.NewString()
		if len(same) > 0 {
			mdmID = same[0].MdmID
		}
		for _, t := range same {
			if t.State != servertoken.StateACTIVE {
				continue
			}
			if t.CustomerID != cust.ID {
				return nil, ownedElsewhere(cfg.LocationName)
			}
			mdmID = t.MdmID
			if res.Renews, err = tx.ServerToken.Get(ctx, t.ID); err != nil {
				return nil, err
			}
		}
		state := servertoken.StatePENDING
		if other := otherMDM(cfg.MDMInfo, mdmID); other != nil {
			state = servertoken.StateCONFLICT
			res.Conflict = other
		}
		create := tx.ServerToken.Create().
			SetCreatedAt(s.Now()). // the pending TTL is counted on the service's clock
			SetCustomerID(cust.ID).
			SetState(state).
			SetOrgName(file.OrgName).
			SetLocationName(cfg.LocationName).
			SetLocationUID(cfg.LocationUID).
			SetCountryCode(cfg.CountryCode).
			SetDefaultPlatform(cfg.DefaultPlatform).
			SetWebsiteURL(cfg.WebsiteURL).
			SetExpiresAt(expiryOf(cfg.TokenExpiresAt, file.ExpiresAt)).
			SetFileExpiresAt(file.ExpiresAt).
			SetSealedToken([]byte{}).
			SetMdmID(mdmID)
		if cfg.MDMInfo != nil {
			create.SetManagedBy(toSchemaMDM(cfg.MDMInfo))
		}
		tok, err := create.Save(ctx)
		if err != nil {
			return nil, err
		}
		sealed, err := s.sealer.Seal(file.Secret, sealAAD(tok.ID, tok.CustomerID))
		if err != nil {
			return nil, fmt.Errorf("sealing token: %w", err)
		}
		if res.Token, err = tok.Update().SetSealedToken(sealed).Save(ctx); err != nil {
			return nil, err
		}
		return res, s.auditWith(ctx, tx.Client(), "token.upload", &cust.ID, &tok.ID, nil, "")
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "server token uploaded", "token", res.Token.ID, "customer", cust.ID, "state", res.Token.State, "location_uid", res.Token.LocationUID)
	return res, nil
}

// otherMDM returns the mdmInfo when it names an MDM other than Orchard's
// entry for this location.
func otherMDM(info *apple.MDMInfo, ours string) *schematype.MDMInfo {
	if info == nil || info.ID == "" || info.ID == ours {
		return nil
	}
	return toSchemaMDM(info)
}

func toSchemaMDM(info *apple.MDMInfo) *schematype.MDMInfo {
	if info == nil {
		return nil
	}
	return &schematype.MDMInfo{ID: info.ID, Name: info.Name, Metadata: info.Metadata}
}

func expiryOf(fromApple, fromFile time.Time) time.Time {
	if !fromApple.IsZero() {
		return fromApple.UTC()
	}
	return fromFile.UTC()
}

func ownedElsewhere(location string) error {
	return fault.New(fault.TokenOwnedByOtherCustomer,
		"The Apple location %q is already active under another customer. A location belongs to one customer: delete it there first, or upload this token for that customer.", location)
}

// DefaultInteractiveBudget is how long Apple may take, retries included,
// in an action a person waits for (Config.AppleInteractiveBudget).
const DefaultInteractiveBudget = 15 * time.Second

// interactive bounds the Apple calls of an action someone waits for in the
// wizard: they get an answer (APPLE_UNAVAILABLE, APPLE_RATE_LIMITED) within
// the interactive budget, while background syncs keep the client's longer
// retry budget.
func (s *Service) interactive(ctx context.Context) context.Context {
	d := s.cfg.AppleInteractiveBudget
	if d <= 0 {
		d = DefaultInteractiveBudget
	}
	return apple.WithBudget(ctx, d)
}

// explainApple gives Apple's verdicts on a token the wizard's words.
func explainApple(err error) error {
	switch fault.CodeOf(err) {
	case fault.TokenExpired:
		return fault.Wrap(err, fault.TokenExpired, "Apple says this server token has expired. %s", whereToDownload)
	case fault.TokenRevoked:
		return fault.Wrap(err, fault.TokenRevoked, "Apple has revoked this server token. %s", whereToDownload)
	case fault.TokenInvalid:
		return fault.Wrap(err, fault.TokenInvalid, "Apple does not accept this server token. Check that it is the latest one for this location; if in doubt, download a new one from %s.", downloadPath)
	}
	return err
}

// ConfirmServerToken is the wizard's last step for a PENDING token: it
// writes Orchard's mdmInfo to Apple and makes the token ACTIVE, or renews the
// ACTIVE token of the same customer and location in place.
func (s *Service) ConfirmServerToken(ctx context.Context, id int) (*ent.ServerToken, error) {
	return s.activate(ctx, id, false)
}

// ClaimServerToken takes a CONFLICT (or PENDING) token's location from the
// other MDM, then does what confirm does.
func (s *Service) ClaimServerToken(ctx context.Context, id int) (*ent.ServerToken, error) {
	return s.activate(ctx, id, true)
}

func (s *Service) activate(ctx context.Context, id int, claim bool) (tok *ent.ServerToken, err error) {
	ctx = s.interactive(ctx)
	action := "token.confirm"
	if claim {
		action = "token.claim"
	}
	var customerID *int
	defer func() {
		if err != nil { // a success is recorded in its own transaction
			s.audit(ctx, action, customerID, &id, err, "")
		}
	}()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	pending, err := s.client.ServerToken.Get(ctx, id)
	if err != nil {
		return nil, notFound(err, "server token")
	}
	customerID = &pending.CustomerID
	switch {
	case pending.State == servertoken.StateCONFLICT && !claim:
		return nil, conflictError(pending.ManagedBy)
	case pending.State != servertoken.StatePENDING && pending.State != servertoken.StateCONFLICT:
		return nil, fault.New(fault.InvalidState, "This token is %s; only an uploaded token waiting for review (PENDING or CONFLICT) can be confirmed or claimed.", pending.State)
	}
	secret, err := s.sealer.Open(pending.SealedToken, sealAAD(pending.ID, pending.CustomerID))
	if err != nil {
		return nil, fmt.Errorf("opening sealed token %d: %w", pending.ID, err)
	}
	ours := apple.MDMInfo{ID: pending.MdmID, Name: s.cfg.MDMName, Metadata: s.cfg.MDMMetadata}
	if !claim {
		// Another MDM may have taken the location since the upload.
		cfg, err := s.apple.ClientConfig(ctx, secret)
		if err != nil {
			return nil, explainApple(err)
		}
		if other := otherMDM(cfg.MDMInfo, pending.MdmID); other != nil {
			if _, uerr := s.client.ServerToken.UpdateOneID(id).
				Where(servertoken.StateEQ(servertoken.StatePENDING)).
				SetState(servertoken.StateCONFLICT).SetManagedBy(other).Save(ctx); uerr != nil && !ent.IsNotFound(uerr) {
				s.log.ErrorContext(ctx, "marking token as conflict", "token", id, "err", uerr)
			}
			return nil, conflictError(other)
		}
	}
	if _, err := s.apple.SetMDMInfo(ctx, secret, ours); err != nil {
		return nil, explainApple(err)
	}
	cfg, err := s.apple.ClientConfig(ctx, secret)
	if err != nil {
		return nil, explainApple(err)
	}
	if cfg.MDMInfo == nil || cfg.MDMInfo.ID != ours.ID {
		return nil, fault.New(fault.AppleUnavailable, "Apple did not keep Orchard's management information for this location. Nothing was changed in Orchard; try again in a few minutes.")
	}

	// Two confirms of one location can race; the unique index on ACTIVE
	// locations lets only one through, and the loser retries as a renewal.
	for attempt := 0; ; attempt++ {
		tok, err = s.commitActivation(ctx, action, pending, secret, cfg)
		if err == nil || attempt == 2 || !ent.IsConstraintError(err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	// The activation is committed: what follows only logs its failures, so
	// the answer never says the confirm failed when it did not.
	ctx = context.WithoutCancel(ctx)
	s.log.InfoContext(ctx, "server token active", "token", tok.ID, "customer", tok.CustomerID, "renewed", tok.ID != pending.ID)
	// A token already within a threshold is warned about at once.
	if len(s.cfg.WarnDays) > 0 && tok.ExpiresAt.Sub(s.Now()) <= days(s.cfg.WarnDays[0]) {
		if _, err := s.ScanExpiry(ctx); err != nil {
			s.log.ErrorContext(ctx, "expiry scan after activation", "err", err)
		}
	}
	// Apple's notifications follow licence work when Orchard is reachable;
	// without them Orchard polls, so a failure does not fail the confirm.
	_ = s.RegisterNotifications(ctx, tok.ID)
	if s.OnActivate != nil {
		s.OnActivate(tok.ID)
	}
	return tok, nil
}

func conflictError(other *schematype.MDMInfo) error {
	name := "another MDM"
	if other != nil && other.Name != "" {
		name = fmt.Sprintf("%q", other.Name)
		if other.Metadata != "" {
			name += fmt.Sprintf(" (%s)", other.Metadata)
		}
	}
	return fault.New(fault.TokenConflict, "This location is managed by %s. Claim it to move it to Orchard (the other MDM stops managing its licences), or cancel the upload.", name)
}

// commitActivation makes pending ACTIVE, or renews the ACTIVE token of the
// same customer and location with pending's secret and consumes pending.
func (s *Service) commitActivation(ctx context.Context, action string, pending *ent.ServerToken, secret []byte, cfg *apple.ClientConfig) (*ent.ServerToken, error) {
	return inTx(ctx, s.client, func(tx *ent.Tx) (*ent.ServerToken, error) {
		cur, err := tx.ServerToken.Get(ctx, pending.ID)
		if err != nil {
			return nil, notFound(err, "server token")
		}
		if cur.State != servertoken.StatePENDING && cur.State != servertoken.StateCONFLICT {
			return nil, fault.New(fault.InvalidState, "This upload was confirmed or cancelled meanwhile; it is now %s.", cur.State)
		}
		sys := viewer.SystemContext(ctx)
		active, err := tx.ServerToken.Query().
			Where(servertoken.LocationUID(pending.LocationUID), servertoken.StateEQ(servertoken.StateACTIVE)).
			Only(sys)
		if err != nil && !ent.IsNotFound(err) {
			return nil, err
		}
		if active != nil && active.CustomerID != pending.CustomerID {
			return nil, ownedElsewhere(pending.LocationName)
		}
		target := pending.ID
		if active != nil {
			target = active.ID
		}
		sealed, err := s.sealer.Seal(secret, sealAAD(target, pending.CustomerID))
		if err != nil {
			return nil, fmt.Errorf("sealing token: %w", err)
		}
		upd := tx.ServerToken.UpdateOneID(target).
			SetState(servertoken.StateACTIVE).
			SetSealedToken(sealed).
			SetOrgName(pending.OrgName).
			SetLocationName(cfg.LocationName).
			SetCountryCode(cfg.CountryCode).
			SetDefaultPlatform(cfg.DefaultPlatform).
			SetWebsiteURL(cfg.WebsiteURL).
			SetExpiresAt(expiryOf(cfg.TokenExpiresAt, pending.FileExpiresAt)).
			SetFileExpiresAt(pending.FileExpiresAt).
			SetMdmID(pending.MdmID).
			SetManagedBy(toSchemaMDM(cfg.MDMInfo)).
			SetLastErrorCode("").
			SetLastError("").
			ClearLastErrorAt()
		exp := expiryOf(cfg.TokenExpiresAt, pending.FileExpiresAt)
		if active != nil {
			if err := tx.ServerToken.DeleteOneID(pending.ID).Exec(ctx); err != nil {
				return nil, err
			}
		}
		if active == nil || !active.ExpiresAt.Equal(exp) {
			// A new token or a new expiry date: warnings start afresh.
			upd.ClearWarnedDays().ClearWarnedExpiry()
			armExpiry(upd, exp, s.cfg.WarnDays)
		}
		out, err := upd.Save(ctx)
		if err != nil {
			return nil, err
		}
		detail := ""
		if out.ID != pending.ID {
			detail = fmt.Sprintf("renewed in place from upload %d", pending.ID)
		}
		return out, s.auditWith(ctx, tx.Client(), action, &out.CustomerID, &out.ID, nil, detail)
	})
}

// CancelServerToken discards a PENDING or CONFLICT upload and returns it as it
// was. Nothing at Apple changes.
func (s *Service) CancelServerToken(ctx context.Context, id int) (tok *ent.ServerToken, err error) {
	defer func() { s.audit(ctx, "token.cancel", customerOf(tok), &id, err, "") }()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	return inTx(ctx, s.client, func(tx *ent.Tx) (*ent.ServerToken, error) {
		// The customer is loaded now: once the row is gone, the answer
		// can no longer find it through the token.
		tok, err := tx.ServerToken.Query().Where(servertoken.ID(id)).WithCustomer().Only(ctx)
		if err != nil {
			return nil, notFound(err, "server token")
		}
		if tok.State != servertoken.StatePENDING && tok.State != servertoken.StateCONFLICT {
			return nil, fault.New(fault.InvalidState, "Only an upload waiting for review (PENDING or CONFLICT) can be cancelled; this token is %s. Use deleteServerToken to remove it.", tok.State)
		}
		return tok, tx.ServerToken.DeleteOneID(id).Exec(ctx)
	})
}

// DeleteServerToken removes a token and its apps from Orchard.
func (s *Service) DeleteServerToken(ctx context.Context, id int) (err error) {
	var tok *ent.ServerToken
	defer func() { s.audit(ctx, "token.delete", customerOf(tok), &id, err, "") }()
	if _, err := requireWriter(ctx); err != nil {
		return err
	}
	return withTx(ctx, s.client, func(tx *ent.Tx) error {
		tok, err = tx.ServerToken.Get(ctx, id)
		if err != nil {
			return notFound(err, "server token")
		}
		return tx.ServerToken.DeleteOneID(id).Exec(ctx)
	})
}

// CleanupPending deletes uploads that were never confirmed within the TTL.
func (s *Service) CleanupPending(ctx context.Context) (int, error) {
	n, err := s.client.ServerToken.Delete().
		Where(
			servertoken.StateIn(servertoken.StatePENDING, servertoken.StateCONFLICT),
			servertoken.CreatedAtLT(s.Now().Add(-s.cfg.PendingTTL)),
		).Exec(viewer.SystemContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("deleting stale uploads: %w", err)
	}
	return n, nil
}

func customerOf(t *ent.ServerToken) *int {
	if t == nil {
		return nil
	}
	return &t.CustomerID
}
