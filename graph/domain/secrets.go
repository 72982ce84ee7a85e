package domain

import (
	"context"
	"errors"
	"fmt"

	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/secrets"
)

// ResealTokens seals every stored token again under the sealer's newest key.
// Each row is rewritten with a conditional update, so a token renewed while
// this runs keeps its new secret. It goes over the table until no row needs
// it, and returns how many it rewrote.
func (s *Service) ResealTokens(ctx context.Context) (int, error) {
	rot, ok := s.sealer.(secrets.Rotator)
	if !ok {
		return 0, errors.New("the configured secrets module cannot rotate keys")
	}
	ctx = viewer.SystemContext(ctx)
	total := 0
	for pass := 0; pass < 5; pass++ {
		toks, err := s.client.ServerToken.Query().
			Select(servertoken.FieldID, servertoken.FieldCustomerID, servertoken.FieldSealedToken).
			All(ctx)
		if err != nil {
			return total, err
		}
		n := 0
		for _, t := range toks {
			if !rot.NeedsRotation(t.SealedToken) {
				continue
			}
			aad := sealAAD(t.ID, t.CustomerID)
			plain, err := s.sealer.Open(t.SealedToken, aad)
			if err != nil {
				return total, fmt.Errorf("token %d does not open with any configured key: %w", t.ID, err)
			}
			sealed, err := s.sealer.Seal(plain, aad)
			clear(plain)
			if err != nil {
				return total, err
			}
			done, err := s.client.ServerToken.Update().
				Where(servertoken.ID(t.ID), servertoken.SealedTokenEQ(t.SealedToken)).
				SetSealedToken(sealed).Save(ctx)
			if err != nil {
				return total, err
			}
			n += done
		}
		total += n
		if n == 0 {
			return total, nil
		}
	}
	return total, nil
}
