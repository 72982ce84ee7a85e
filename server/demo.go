package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/orchard-msp/orchard/ent/apikey"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/apple/simulator"
	"github.com/orchard-msp/orchard/server/httpapi"
	"github.com/orchard-msp/orchard/server/store"
)

// demoCommand declares `orchard demo`, which writes a sample token file for every branch of the wizard,
// creates an admin key and serves with the Apple simulator, so a newcomer can
// try everything without an Apple account.
func demoCommand(fs *flag.FlagSet) action {
	dir := fs.String("dir", "", "`DIR` to write the sample token files to (default DATA_DIR/demo-tokens)")
	return func(ctx context.Context, c *call) error { return demo(ctx, c.cfg, *dir, c.stdout, c.stderr) }
}

func demo(ctx context.Context, cfg *Config, dir string, stdout, stderr io.Writer) error {
	cfg.Apple = "simulator"
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "demo-tokens")
	}
	if err := writeDemoTokens(dir, time.Now()); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.storeOptions())
	if err != nil {
		return err
	}
	key, hash := httpapi.NewAPIKey()
	_, err = db.Client.APIKey.Create().SetName("demo admin").SetRole(apikey.RoleAdmin).
		SetCustomerIds([]int{}).SetHash(hash).SetPrefix(key[:len(httpapi.KeyPrefix)+6]).Save(viewer.SystemContext(ctx))
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("creating the demo key: %w", err)
	}
	fmt.Fprintln(stdout, key)
	// The guide is for the person who ran the demo: stdout, with the key.
	// stderr is the server's JSON log.
	fmt.Fprintf(stdout, `
Orchard demo: the Apple simulator answers instead of Apple.
  console:             http://%s/   (sign in with the key, then "Upload server token")
  admin key (above):   %s
  sample token files:  %s   (one per branch of the wizard)
  Playground:          http://%s/playground
See README.md, "The console", for a walk-through.

`, cfg.Listen, key, dir, cfg.Listen)
	return serve(ctx, cfg, stderr, nil)
}

// demoTokens are the sample files: one per branch of the wizard.
func demoTokens(now time.Time) map[string][]byte {
	year := now.AddDate(1, 0, 0)
	return map[string][]byte{
		"valid.vpptoken":              simulator.ScenarioToken("Contoso Ltd", year, "location=Contoso HQ;uid=1001;country=GB;apps=40"),
		"renewal.vpptoken":            simulator.ScenarioToken("Contoso Ltd", year.AddDate(0, 1, 0), "location=Contoso HQ;uid=1001;country=GB;apps=42"),
		"many-apps.vpptoken":          simulator.ScenarioToken("Fabrikam Inc", year, "location=Fabrikam Schools;uid=1002;country=US;apps=1200"),
		"other-mdm.vpptoken":          simulator.ScenarioToken("Northwind Traders", year, "location=Northwind Main;uid=1003;mdm=Jamf Pro"),
		"expiring-in-5-days.vpptoken": simulator.ScenarioToken("Tailspin Toys", now.Add(5*24*time.Hour+time.Hour), "location=Tailspin Toys;uid=1004;apps=5"),
		"revoked.vpptoken":            simulator.ScenarioToken("Litware", year, "location=Litware;uid=1005;state=revoked"),
		"rejected-by-apple.vpptoken":  simulator.ScenarioToken("Proseware", year, "location=Proseware;uid=1006;state=invalid"),
		"rate-limited.vpptoken":       simulator.ScenarioToken("Adventure Works", year, "location=Adventure Works;uid=1007;state=ratelimited"),
		"expired.vpptoken":            simulator.ScenarioToken("Wide World Importers", now.AddDate(0, 0, -3), "location=Wide World;uid=1008"),
		"garbage.vpptoken":            []byte("this is not a server token\n"),
		"ade_token_smime.p7m":         []byte("Content-Type: application/pkcs7-mime; name=smime.p7m; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFmMIIBYgIBADBKMD0xCzAJBgNVBAYTAlVT\r\n"),
	}
}

func writeDemoTokens(dir string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var errs []error
	for name, data := range demoTokens(now) {
		errs = append(errs, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	return errors.Join(errs...)
}
