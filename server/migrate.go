package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/orchard-msp/orchard/ent/migrations"
	"github.com/orchard-msp/orchard/server/store"
)

// migrateUp runs `orchard migrate`: apply the pending files under the
// migration lock, then say where the database stands.
func migrateUp(ctx context.Context, c *call) error { return migrate(ctx, c, false) }

// migrateStatus runs `orchard migrate status`; it only reads.
func migrateStatus(ctx context.Context, c *call) error { return migrate(ctx, c, true) }

func migrate(ctx context.Context, c *call, status bool) error {
	cfg, stdout := c.cfg, c.stdout
	if !store.IsPostgres(cfg.DatabaseURL) && status {
		// Status reads; it does not create a database to report on it.
		path := store.SQLitePath(cfg.DatabaseURL)
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
	if !store.IsPostgres(cfg.DatabaseURL) && !status {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
	}
	db, err := store.Connect(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if !status {
		before, err := db.Inspect(ctx)
		if err != nil {
			return err
		}
		if before.Unversioned {
			fmt.Fprintln(stdout, "adopting a database made by an Orchard without versioned migrations as the baseline (no row changes)")
		}
		applied, err := db.Up(ctx)
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
	st, err := db.Inspect(ctx)
	if err != nil {
		return err
	}
	version := "none"
	if st.Version > 0 {
		version = fmt.Sprint(st.Version)
	}
	fmt.Fprintf(stdout, "database: %s\nversion:  %s\napplied:  %d\npending:  %d\n", store.RedactURL(cfg.DatabaseURL), version, len(st.Applied), len(st.Pending))
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
