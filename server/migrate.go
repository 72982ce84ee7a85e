package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/orchard-msp/orchard/ent/migrations"
)

const migrateUsage = `usage: orchard migrate [status] [configuration flags]

  orchard migrate          apply the pending schema migrations, under the migration lock
  orchard migrate status   say where the database stands: its version and the pending files

The database is the one serve uses (ORCHARD_DATABASE_URL, or orchard.db in
ORCHARD_DATA_DIR); "orchard serve -h" lists the configuration flags.
serve applies migrations itself unless ORCHARD_AUTO_MIGRATE=false.
`

// migrateCommand runs `orchard migrate` and `orchard migrate status`.
func migrateCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgArgs, rest := splitFlags(args, fs)
	for _, a := range rest {
		if a == "-h" || a == "-help" || a == "--help" || a == "help" {
			fmt.Fprint(stdout, migrateUsage)
			return nil
		}
	}
	status := false
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == "status":
		status = true
	default:
		fmt.Fprint(stderr, migrateUsage)
		return fmt.Errorf("unknown migrate arguments %q: use orchard migrate, or orchard migrate status", rest)
	}
	cfg, _, err := loadConfig("migrate", cfgArgs, getenv, stderr)
	if err != nil {
		return err
	}
	if !isPostgres(cfg.DatabaseURL) && status {
		// Status reads; it does not create a database to report on it.
		path := sqlitePath(cfg.DatabaseURL)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			files, err := migrations.Files("sqlite3")
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "database: %s (does not exist yet)\nversion:  none\npending:  %d\n", cfg.DatabaseURL, len(files))
			for _, f := range files {
				fmt.Fprintf(stdout, "  %s\n", f.Name)
			}
			return nil
		}
	}
	if !isPostgres(cfg.DatabaseURL) && !status {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
	}
	db, err := connectDatabase(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if !status {
		before, err := migrations.Inspect(ctx, db.writer, db.Dialect)
		if err != nil {
			return err
		}
		if before.Unversioned {
			fmt.Fprintln(stdout, "adopting a database made by an Orchard without versioned migrations as the baseline (no row changes)")
		}
		applied, err := migrations.Up(ctx, db.writer, db.Dialect)
		for _, f := range applied {
			fmt.Fprintf(stdout, "applied %s\n", f.Name)
		}
		if err != nil {
			return err
		}
		if len(applied) == 0 && !before.Unversioned {
			fmt.Fprintln(stdout, "nothing to apply: the schema is up to date")
		}
	}
	st, err := migrations.Inspect(ctx, db.writer, db.Dialect)
	if err != nil {
		return err
	}
	version := "none"
	if st.Version > 0 {
		version = fmt.Sprint(st.Version)
	}
	fmt.Fprintf(stdout, "database: %s\nversion:  %s\napplied:  %d\npending:  %d\n", redactURL(cfg.DatabaseURL), version, len(st.Applied), len(st.Pending))
	for _, f := range st.Pending {
		fmt.Fprintf(stdout, "  %s\n", f.Name)
	}
	switch {
	case st.Unversioned:
		fmt.Fprintln(stdout, "state:    made by an Orchard without versioned migrations; orchard migrate adopts it as the baseline, keeping every row")
	case st.Newer:
		fmt.Fprintln(stdout, "state:    migrated by a newer Orchard than this one")
	case len(st.Pending) > 0:
		fmt.Fprintln(stdout, "state:    out of date: run orchard migrate")
	default:
		fmt.Fprintln(stdout, "state:    up to date")
	}
	return nil
}
