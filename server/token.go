package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/fault"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

// tokenCommand runs `orchard token inspect FILE`: offline, it never calls
// Apple and never prints the secret.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "inspect" {
		return errors.New("usage: orchard token inspect FILE")
	}
	cfg, rest, err := loadConfig("token inspect", args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("usage: orchard token inspect FILE")
	}
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
	p, err := modules.Load[tokenfile.Parser](context.Background(), "tokenfile.vpptoken", raw)
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
