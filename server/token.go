package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

// tokenInspect runs `orchard token inspect FILE`: offline, it never calls
// Apple and never prints the secret.
func tokenInspect(ctx context.Context, c *call) error {
	cfg, rest := c.cfg, c.args
	stdout := c.stdout
	info, err := os.Stat(rest[0])
	if err != nil {
		return err
	}
	if info.Size() > cfg.MaxUploadBytes {
		return fmt.Errorf("%s is %d bytes; a server token is at most %d", rest[0], info.Size(), cfg.MaxUploadBytes)
	}
	data, err := os.ReadFile(rest[0])
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(map[string]any{"maxBytes": cfg.MaxUploadBytes})
	p, err := modules.Load[tokenfile.Parser](ctx, "tokenfile.vpptoken", raw)
	if err != nil {
		return err
	}
	f, err := p.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %s (%s)", rest[0], fault.MessageOf(err), fault.CodeOf(err))
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	now := time.Now()
	return enc.Encode(map[string]any{
		"orgName":   f.OrgName,
		"expiresAt": f.ExpiresAt.Format(time.RFC3339),
		"expired":   !f.ExpiresAt.After(now),
		// The server's own count, so both say the same of an expired token.
		"daysUntilExpiry": domain.DaysUntil(f.ExpiresAt, now),
	})
}
