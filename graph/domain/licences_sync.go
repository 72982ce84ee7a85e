package domain

import (
	"context"
	"fmt"
	"slices"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/licenceassignment"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/modules/apple"
)

type assignmentKey struct{ adamID, pricing, target string }

func keyOf(a apple.Assignment) assignmentKey {
	t := "u:" + a.ClientUserID
	if a.SerialNumber != "" {
		t = "s:" + a.SerialNumber
	}
	return assignmentKey{a.AdamID, a.PricingParam, t}
}

// syncAssignments brings the token's assignments up to date: a full read
// the first time (or when Apple no longer knows the version), then only
// what changed since the last versionId. Apple lists no removals in an
// incremental read; Orchard's own operations remove theirs as they end.
func (s *Service) syncAssignments(ctx context.Context, tok *ent.ServerToken, secret []byte) error {
	got, err := s.apple.Assignments(ctx, secret, apple.AssignmentQuery{SinceVersionID: tok.AssignmentsVersion})
	if err != nil {
		return err
	}
	return withTx(ctx, s.client, func(tx *ent.Tx) error {
		apps, err := tx.App.Query().Where(app.TokenID(tok.ID)).Select(app.FieldID, app.FieldAdamID, app.FieldPricingParam).All(ctx)
		if err != nil {
			return err
		}
		appIDs := make(map[appKey]int, len(apps))
		for _, a := range apps {
			appIDs[appKey{a.AdamID, a.PricingParam}] = a.ID
		}
		want := make(map[assignmentKey]bool, len(got.Assignments))
		for _, a := range got.Assignments {
			want[keyOf(a)] = true
		}
		var existing []*ent.LicenceAssignment
		if got.Incremental {
			// Only the listed ones matter: read those back in slices.
			keys := make([]string, 0, len(want))
			for k := range want {
				keys = append(keys, k.target)
			}
			slices.Sort(keys)
			keys = slices.Compact(keys)
			for part := range slices.Chunk(keys, 500) {
				rows, err := tx.LicenceAssignment.Query().Where(licenceassignment.TokenID(tok.ID), licenceassignment.TargetIn(part...)).
					Select(licenceassignment.FieldID, licenceassignment.FieldAdamID, licenceassignment.FieldPricingParam, licenceassignment.FieldTarget).All(ctx)
				if err != nil {
					return err
				}
				existing = append(existing, rows...)
			}
		} else if existing, err = tx.LicenceAssignment.Query().Where(licenceassignment.TokenID(tok.ID)).
			Select(licenceassignment.FieldID, licenceassignment.FieldAdamID, licenceassignment.FieldPricingParam, licenceassignment.FieldTarget).All(ctx); err != nil {
			return err
		}
		have := make(map[assignmentKey]bool, len(existing))
		var gone []int
		for _, e := range existing {
			k := assignmentKey{e.AdamID, e.PricingParam, e.Target}
			have[k] = true
			if !got.Incremental && !want[k] {
				gone = append(gone, e.ID)
			}
		}
		for part := range slices.Chunk(gone, 500) {
			if _, err := tx.LicenceAssignment.Delete().Where(licenceassignment.IDIn(part...)).Exec(ctx); err != nil {
				return err
			}
		}
		var creates []*ent.LicenceAssignmentCreate
		for _, a := range got.Assignments {
			k := keyOf(a)
			if have[k] {
				continue
			}
			have[k] = true
			c := tx.LicenceAssignment.Create().SetTokenID(tok.ID).SetCustomerID(tok.CustomerID).
				SetAdamID(a.AdamID).SetPricingParam(a.PricingParam).SetTarget(k.target).SetCreatedAt(s.Now())
			if id, ok := appIDs[appKey{a.AdamID, a.PricingParam}]; ok {
				c.SetAppID(id)
			}
			if a.SerialNumber != "" {
				c.SetSerialNumber(a.SerialNumber)
			} else {
				c.SetClientUserID(a.ClientUserID)
			}
			creates = append(creates, c)
		}
		for part := range slices.Chunk(creates, 500) {
			if err := tx.LicenceAssignment.CreateBulk(part...).
				OnConflictColumns(licenceassignment.FieldTokenID, licenceassignment.FieldAdamID, licenceassignment.FieldPricingParam, licenceassignment.FieldTarget).
				DoNothing().Exec(ctx); err != nil {
				return err
			}
		}
		// Assignments recorded before their app was synced get it now.
		for k, id := range appIDs {
			if _, err := tx.LicenceAssignment.Update().
				Where(licenceassignment.TokenID(tok.ID), licenceassignment.AdamID(k.adamID), licenceassignment.PricingParam(k.pricing), licenceassignment.AppIDIsNil()).
				SetAppID(id).Save(ctx); err != nil {
				return err
			}
		}
		if err := tx.ServerToken.UpdateOneID(tok.ID).Where(servertoken.StateEQ(servertoken.StateACTIVE)).
			SetAssignmentsVersion(got.VersionID).Exec(ctx); err != nil && !ent.IsNotFound(err) {
			return fmt.Errorf("storing assignments version: %w", err)
		}
		return nil
	})
}
