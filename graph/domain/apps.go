package domain

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"
	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/predicate"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/fault"
)

// LicenceTotals sums the licence counts of a set of apps. Unlimited (free)
// assets are counted in Unlimited only.
type LicenceTotals struct {
	Total          int `json:"total"`
	Assigned       int `json:"assigned"`
	Available      int `json:"available"`
	Retired        int `json:"retired"`
	UnlimitedCount int `json:"unlimitedCount"`
}

// unlimitedTotal is the totalCount Apple reports for unlimited free assets
// when the unlimited parameter is omitted.
const unlimitedTotal = 2147483647

// AppCounts returns the number of apps under each token, in one query.
func (s *Service) AppCounts(ctx context.Context, tokenIDs []int) (map[int]int, error) {
	var rows []struct {
		TokenID int `json:"token_id"`
		N       int `json:"n"`
	}
	err := s.client.App.Query().Where(app.TokenIDIn(tokenIDs...)).
		GroupBy(app.FieldTokenID).
		Aggregate(ent.As(ent.Count(), "n")).
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("counting apps: %w", err)
	}
	out := make(map[int]int, len(tokenIDs))
	for _, r := range rows {
		out[r.TokenID] = r.N
	}
	return out, nil
}

// AppCount returns the number of apps bought under a token.
func (s *Service) AppCount(ctx context.Context, tokenID int) (int, error) {
	m, err := s.AppCounts(ctx, []int{tokenID})
	return m[tokenID], err
}

// TokenLicences sums the licences of each token's apps, in one query.
func (s *Service) TokenLicences(ctx context.Context, tokenIDs []int) (map[int]*LicenceTotals, error) {
	return s.licences(ctx, app.FieldTokenID, app.TokenIDIn(tokenIDs...), tokenIDs)
}

// CustomerLicences sums the licences of each customer's apps, in one query.
func (s *Service) CustomerLicences(ctx context.Context, customerIDs []int) (map[int]*LicenceTotals, error) {
	return s.licences(ctx, app.FieldCustomerID, app.CustomerIDIn(customerIDs...), customerIDs)
}

func (s *Service) licences(ctx context.Context, by string, where predicate.App, ids []int) (map[int]*LicenceTotals, error) {
	var rows []struct {
		TokenID    int  `json:"token_id"`
		CustomerID int  `json:"customer_id"`
		Unlimited  bool `json:"unlimited"`
		Total      int  `json:"total"`
		Assigned   int  `json:"assigned"`
		Available  int  `json:"available"`
		Retired    int  `json:"retired"`
		N          int  `json:"n"`
	}
	err := s.client.App.Query().Where(where).
		GroupBy(by, app.FieldUnlimited).
		Aggregate(
			ent.As(ent.Sum(app.FieldTotalCount), "total"),
			ent.As(ent.Sum(app.FieldAssignedCount), "assigned"),
			ent.As(ent.Sum(app.FieldAvailableCount), "available"),
			ent.As(ent.Sum(app.FieldRetiredCount), "retired"),
			ent.As(ent.Count(), "n"),
		).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("summing licences: %w", err)
	}
	out := make(map[int]*LicenceTotals, len(ids))
	for _, id := range ids {
		out[id] = &LicenceTotals{}
	}
	for _, r := range rows {
		owner := r.TokenID
		if by == app.FieldCustomerID {
			owner = r.CustomerID
		}
		t := out[owner]
		if t == nil {
			continue
		}
		t.Assigned += r.Assigned
		if r.Unlimited {
			t.UnlimitedCount += r.N
			continue
		}
		t.Total += r.Total
		t.Available += r.Available
		t.Retired += r.Retired
	}
	return out, nil
}

// platforms are Apple's names for the platforms an asset supports.
var platforms = map[string]string{"ios": "iOS", "macos": "macOS", "tvos": "tvOS", "watchos": "watchOS", "visionos": "visionOS"}

// OnPlatform returns a filter for apps that support platform (any case).
func OnPlatform(platform string) (predicate.App, error) {
	name, ok := platforms[strings.ToLower(strings.TrimSpace(platform))]
	if !ok {
		return nil, fault.New(fault.BadUserInput, "Unknown platform %q: use iOS, macOS, tvOS, watchOS or visionOS.", platform)
	}
	return func(s *sql.Selector) {
		s.Where(sqljson.ValueContains(s.C(app.FieldSupportedPlatforms), name))
	}, nil
}

// SyncServerToken re-reads a token's health and apps from Apple now.
func (s *Service) SyncServerToken(ctx context.Context, id int) (tok *ent.ServerToken, err error) {
	ctx = s.interactive(ctx)
	defer func() { s.audit(ctx, "token.sync", customerOf(tok), &id, err, "") }()
	if _, err := requireWriter(ctx); err != nil {
		return nil, err
	}
	tok, err = s.client.ServerToken.Get(ctx, id)
	if err != nil {
		return nil, notFound(err, "server token")
	}
	if tok.State != servertoken.StateACTIVE {
		return tok, fault.New(fault.InvalidState, "Only an ACTIVE token can be synced; this one is %s. Upload a new token for this location, or claim it back.", tok.State)
	}
	if err := s.SyncToken(ctx, id); err != nil {
		return nil, err
	}
	// The sync is stored: from here on nothing may turn it into an error,
	// not even a client that went away.
	fresh, err := s.client.ServerToken.Get(context.WithoutCancel(ctx), id)
	if err != nil {
		s.log.ErrorContext(ctx, "reading a token back after its sync", "token", id, "err", err)
		return tok, nil
	}
	return fresh, nil
}

// SyncToken checks one ACTIVE token's health with Apple and, if it is still
// Orchard's, brings its apps up to date. Its outcome is stored on the token;
// the error is returned too.
func (s *Service) SyncToken(ctx context.Context, id int) error {
	// One sync of a token at a time in this process; across instances the
	// upsert in storeApps keeps concurrent syncs correct.
	unlock := s.syncLocks.lock(id)
	defer unlock()
	sys := viewer.SystemContext(ctx)
	tok, err := s.client.ServerToken.Get(sys, id)
	if err != nil {
		return notFound(err, "server token")
	}
	if tok.State != servertoken.StateACTIVE {
		return nil
	}
	secret, err := s.sealer.Open(tok.SealedToken, sealAAD(tok.ID, tok.CustomerID))
	if err != nil {
		return fmt.Errorf("opening sealed token %d: %w", tok.ID, err)
	}
	cfg, err := s.apple.ClientConfig(ctx, secret)
	if err != nil {
		return s.recordFailure(sys, tok, explainApple(err))
	}
	if other := otherMDM(cfg.MDMInfo, tok.MdmID); other != nil {
		err := conflictError(other)
		_, uerr := s.client.ServerToken.UpdateOneID(tok.ID).
			Where(servertoken.StateEQ(servertoken.StateACTIVE)).
			SetState(servertoken.StateCONFLICT).
			SetManagedBy(other).
			SetLastErrorCode(string(fault.TokenConflict)).
			SetLastError(fault.MessageOf(err)).
			SetLastErrorAt(s.Now()).
			Save(sys)
		if uerr != nil && !ent.IsNotFound(uerr) {
			return uerr
		}
		s.log.WarnContext(ctx, "another MDM took over a location", "token", tok.ID, "mdm", other.Name)
		return err
	}
	assets, err := s.apple.Assets(ctx, secret)
	if err != nil {
		return s.recordFailure(sys, tok, explainApple(err))
	}
	if err := s.storeApps(sys, tok, assets.Assets); err != nil {
		return fmt.Errorf("storing apps of token %d: %w", tok.ID, err)
	}
	s.fillMetadata(sys, tok, secret)
	if err := s.judgeTokenApps(sys, tok.ID); err != nil {
		s.log.ErrorContext(ctx, "judging licence warnings after a sync", "token", tok.ID, "err", err)
	}
	if err := s.syncAssignments(sys, tok, secret); err != nil {
		return s.recordFailure(sys, tok, explainApple(err))
	}

	exp := expiryOf(cfg.TokenExpiresAt, tok.FileExpiresAt)
	upd := s.client.ServerToken.UpdateOneID(tok.ID).
		Where(servertoken.StateEQ(servertoken.StateACTIVE)).
		SetLastSyncedAt(s.Now()).
		SetLocationName(cfg.LocationName).
		SetExpiresAt(exp).
		SetLastErrorCode("").
		SetLastError("").
		ClearLastErrorAt()
	if cfg.MDMInfo != nil {
		upd.SetManagedBy(toSchemaMDM(cfg.MDMInfo))
	}
	if !exp.Equal(tok.ExpiresAt) {
		upd.ClearWarnedDays().ClearWarnedExpiry()
		armExpiry(upd, exp, s.cfg.WarnDays)
	}
	if _, err := upd.Save(sys); err != nil && !ent.IsNotFound(err) {
		return err
	}
	return nil
}

// SyncInBackground is SyncToken for background work: a panic while syncing
// one token becomes that token's error instead of ending the process.
func (s *Service) SyncInBackground(ctx context.Context, id int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.ErrorContext(ctx, "token sync panicked", "token", id, "panic", v)
			err = fmt.Errorf("sync of token %d panicked: %v", id, v)
		}
	}()
	return s.SyncToken(ctx, id)
}

// recordFailure stores a failed check on the token and moves it to the state
// Apple's verdict implies: 9625 → REVOKED, 9622/9722/9601 → INVALID, 9621 →
// expired (its expiry date is set to now if Apple says so earlier).
func (s *Service) recordFailure(ctx context.Context, tok *ent.ServerToken, cause error) error {
	now := s.Now()
	upd := s.client.ServerToken.UpdateOneID(tok.ID).
		SetLastErrorCode(string(fault.CodeOf(cause))).
		SetLastError(fault.MessageOf(cause)).
		SetLastErrorAt(now)
	switch fault.CodeOf(cause) {
	case fault.TokenRevoked:
		upd.SetState(servertoken.StateREVOKED)
	case fault.TokenInvalid:
		upd.SetState(servertoken.StateINVALID)
	case fault.TokenExpired:
		if tok.ExpiresAt.After(now) {
			upd.SetExpiresAt(now).ClearWarnedDays().ClearWarnedExpiry().SetNextWarnAt(now)
		}
	}
	if _, err := upd.Save(ctx); err != nil && !ent.IsNotFound(err) {
		s.log.ErrorContext(ctx, "recording sync failure", "token", tok.ID, "err", err)
	}
	s.log.WarnContext(ctx, "token check failed", "token", tok.ID, "code", fault.CodeOf(cause), "err", cause)
	return cause
}

type appKey struct{ adamID, pricing string }

// storeApps makes the token's App rows match Apple's list in one
// transaction, writing only what changed.
func (s *Service) storeApps(ctx context.Context, tok *ent.ServerToken, assets []apple.Asset) error {
	return withTx(ctx, s.client, func(tx *ent.Tx) error {
		existing, err := tx.App.Query().Where(app.TokenID(tok.ID)).All(ctx)
		if err != nil {
			return err
		}
		have := make(map[appKey]*ent.App, len(existing))
		for _, a := range existing {
			have[appKey{a.AdamID, a.PricingParam}] = a
		}
		seen := make(map[appKey]bool, len(assets))
		var creates []*ent.AppCreate
		for _, as := range assets {
			k := appKey{as.AdamID, as.PricingParam}
			if seen[k] {
				continue
			}
			seen[k] = true
			unlimited := as.Unlimited || as.TotalCount == unlimitedTotal
			total, avail := as.TotalCount, as.AvailableCount
			if unlimited {
				total, avail = 0, 0
			}
			platforms := as.SupportedPlatforms
			if platforms == nil {
				platforms = []string{}
			}
			kind := app.ProductTypeAPP
			if strings.EqualFold(as.ProductType, "Book") {
				kind = app.ProductTypeBOOK
			}
			cur, ok := have[k]
			if !ok {
				creates = append(creates, tx.App.Create().
					SetTokenID(tok.ID).SetCustomerID(tok.CustomerID).
					SetAdamID(as.AdamID).SetPricingParam(as.PricingParam).
					SetProductType(kind).
					SetTotalCount(total).SetAssignedCount(as.AssignedCount).
					SetAvailableCount(avail).SetRetiredCount(as.RetiredCount).
					SetUnlimited(unlimited).SetSupportedPlatforms(platforms))
				continue
			}
			if cur.TotalCount == total && cur.AssignedCount == as.AssignedCount && cur.AvailableCount == avail &&
				cur.RetiredCount == as.RetiredCount && cur.Unlimited == unlimited && cur.ProductType == kind &&
				slices.Equal(cur.SupportedPlatforms, platforms) {
				continue
			}
			if err := tx.App.UpdateOne(cur).
				SetProductType(kind).
				SetTotalCount(total).SetAssignedCount(as.AssignedCount).
				SetAvailableCount(avail).SetRetiredCount(as.RetiredCount).
				SetUnlimited(unlimited).SetSupportedPlatforms(platforms).Exec(ctx); err != nil {
				return err
			}
		}
		for chunk := range slices.Chunk(creates, 500) {
			// Another sync of the same token (another instance, or the first
			// sync racing a manual one) may have inserted some rows since
			// they were read: take its values rather than fail.
			err := tx.App.CreateBulk(chunk...).
				OnConflictColumns(app.FieldTokenID, app.FieldAdamID, app.FieldPricingParam).
				UpdateNewValues().
				Exec(ctx)
			if err != nil {
				return err
			}
		}
		var gone []int
		for k, a := range have {
			if !seen[k] {
				gone = append(gone, a.ID)
			}
		}
		for chunk := range slices.Chunk(gone, 500) {
			if _, err := tx.App.Delete().Where(app.IDIn(chunk...)).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}

// metadataRefresh is how long looked-up names, bundle IDs and icons are
// trusted before the sync asks again. Names rarely change.
const metadataRefresh = 30 * 24 * time.Hour

// metaCache remembers metadata per adamID and storefront across tokens, so
// the same app bought by many customers is looked up once.
type metaCache = expirable.LRU[string, *apple.Metadata]

func newMetaCache() *metaCache {
	return expirable.NewLRU[string, *apple.Metadata](100000, nil, metadataRefresh)
}

// fillMetadata looks up names, bundle IDs and icons for the token's apps
// that have none or old ones, batched, through the cache. Metadata is nice
// to have: a failure is logged, never returned, and leaves the fields null.
func (s *Service) fillMetadata(ctx context.Context, tok *ent.ServerToken, secret []byte) {
	stale, err := s.client.App.Query().
		Where(app.TokenID(tok.ID), app.Or(app.MetadataAtIsNil(), app.MetadataAtLT(s.Now().Add(-metadataRefresh)))).
		Select(app.FieldID, app.FieldAdamID).All(ctx)
	if err != nil || len(stale) == 0 {
		return
	}
	storefront := strings.ToLower(tok.CountryCode)
	found := map[string]*apple.Metadata{}
	var ask []string
	for _, a := range stale {
		if _, dup := found[a.AdamID]; dup {
			continue
		}
		m, ok := s.meta.Get(a.AdamID + "|" + storefront)
		found[a.AdamID] = m
		if !ok {
			ask = append(ask, a.AdamID)
		}
	}
	if len(ask) > 0 {
		slices.Sort(ask)
		meta, err := s.apple.Metadata(ctx, secret, storefront, tok.DefaultPlatform, ask)
		if err != nil {
			s.log.WarnContext(ctx, "app metadata lookup failed; names stay empty", "token", tok.ID, "err", err)
			return
		}
		for _, id := range ask {
			var m *apple.Metadata
			if v, ok := meta[id]; ok {
				m = &v
			}
			// Unknown to the store is remembered too, so it is not asked every sync.
			s.meta.Add(id+"|"+storefront, m)
			found[id] = m
		}
	}
	now := s.Now()
	err = withTx(ctx, s.client, func(tx *ent.Tx) error {
		for _, a := range stale {
			// Update, not UpdateOne: one statement, without reading the row back.
			upd := tx.App.Update().Where(app.ID(a.ID)).SetMetadataAt(now)
			if m := found[a.AdamID]; m != nil {
				upd.SetName(m.Name)
				if m.BundleID != "" {
					upd.SetBundleID(m.BundleID)
				}
				if m.IconURL != "" {
					upd.SetIconURL(m.IconURL)
				}
			}
			if err := upd.Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.WarnContext(ctx, "storing app metadata", "token", tok.ID, "err", err)
	}
}

// SyncDue syncs every ACTIVE token last synced before olderThan, a few at a
// time; one token's failure never stops the others.
func (s *Service) SyncDue(ctx context.Context, olderThan time.Time, workers int) (synced, failed int) {
	sys := viewer.SystemContext(ctx)
	ids, err := s.client.ServerToken.Query().
		Where(servertoken.StateEQ(servertoken.StateACTIVE),
			servertoken.Or(servertoken.LastSyncedAtIsNil(), servertoken.LastSyncedAtLT(olderThan))).
		IDs(sys)
	if err != nil {
		s.log.ErrorContext(ctx, "listing tokens to sync", "err", err)
		return 0, 0
	}
	type result struct{ err error }
	jobs := make(chan int)
	results := make(chan result, len(ids))
	for range max(workers, 1) {
		go func() {
			for id := range jobs {
				results <- result{s.SyncInBackground(ctx, id)}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, id := range ids {
			select {
			case jobs <- id:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range ids {
		select {
		case r := <-results:
			if r.err != nil {
				failed++
			} else {
				synced++
			}
		case <-ctx.Done():
			return synced, failed
		}
	}
	return synced, failed
}

// keyedMutex serialises work per key.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[int]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key int) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[int]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
