package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules/secrets/aesgcm"
	"github.com/orchard-msp/orchard/server/store"
)

// secretsRotate declares `orchard secrets rotate`: it seals every stored token
// under a new key while servers keep running.
//
// With the key file (the default), it writes a new key at the head of
// DATA_DIR/secret.key, keeping the old ones: running servers re-read the
// file within a second, seal new uploads with the new key and still open
// the old values. Then it re-seals every token. --drop-old removes the old
// keys afterwards. With ORCHARD_SECRET_KEY, put the new key first in that
// variable on every instance, then run rotate to re-seal under it.
func secretsRotate(fs *flag.FlagSet) action {
	dropOld := fs.Bool("drop-old", false, "with the key file: remove the old keys once every token is re-sealed (only when every server has re-read the file)")
	return func(ctx context.Context, c *call) error {
		return rotateSecrets(ctx, c.cfg, *dropOld, c.stdout, c.stderr)
	}
}

func rotateSecrets(ctx context.Context, cfg *Config, dropOld bool, stdout, stderr io.Writer) error {
	keyFile := filepath.Join(cfg.DataDir, "secret.key")
	var newKey string
	if cfg.SecretKey == "" {
		old, err := aesgcm.ReadKeyFile(keyFile)
		if err != nil {
			return err
		}
		newKey = aesgcm.NewKey()
		if err := aesgcm.WriteKeyFile(keyFile, append([]string{newKey}, old...)); err != nil {
			return fmt.Errorf("writing the new key: %w", err)
		}
		fmt.Fprintf(stderr, "new key added to %s; waiting for running servers to read it\n", keyFile)
		// Servers check the file once a second; after this, none seals
		// with an old key any more.
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	db, err := store.Open(ctx, cfg.storeOptions())
	if err != nil {
		return err
	}
	defer db.Close()
	log := newLogger(cfg.LogLevel, stderr)
	mods, err := loadModules(ctx, cfg, log)
	if err != nil {
		return err
	}
	svc := domain.New(db.Client, *mods, domain.Config{}, log)
	n, err := svc.ResealTokens(ctx)
	if err != nil {
		return fmt.Errorf("re-sealing (%d done; run rotate again to finish): %w", n, err)
	}
	if dropOld && newKey != "" {
		if err := aesgcm.WriteKeyFile(keyFile, []string{newKey}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "re-sealed %d server tokens\n", n)
	if !dropOld && newKey != "" {
		fmt.Fprintln(stderr, "old keys stay in the key file; once every server has restarted or run a minute, rotate again with --drop-old to remove them")
	}
	if cfg.SecretKey != "" {
		fmt.Fprintln(stderr, "tokens are sealed under the first key of ORCHARD_SECRET_KEY; the others can now be dropped from it:", strings.Count(cfg.SecretKey, ","), "old key(s)")
	}
	return nil
}
