//go:build ignore

// migrategen keeps the migration files in ent/migrations in step with
// ent/schema: it replays each dialect's files on an empty development
// database, compares the result with ent/schema, and writes the difference
// as a new file. `make generate` runs it after entc; `-check` writes nothing
// and fails when a file is missing (`make check-migrations`, CI).
//
// SQLite replays in memory. PostgreSQL needs a server: the first of
// ORCHARD_DEV_DATABASE_URL and ORCHARD_TEST_DATABASE_URL that is set; the
// files are replayed in a throwaway schema there.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"

	"github.com/orchard-msp/orchard/ent/migrations"
)

func init() {
	// Atlas opens PostgreSQL through the driver named "postgres" (lib/pq's
	// name); Orchard speaks pgx.
	sql.Register("postgres", stdlib.GetDefaultDriver())
}

func main() {
	check := flag.Bool("check", false, "write nothing; exit 1 when ent/schema and the migration files disagree")
	name := flag.String("name", "changes", "what the new file is called after its version, e.g. add_licences")
	dir := flag.String("dir", "ent/migrations", "the directory that holds sqlite/ and postgres/")
	flag.Parse()
	if err := run(*check, *name, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "migrategen:", err)
		os.Exit(1)
	}
}

func run(check bool, name, dir string) error {
	ctx := context.Background()
	version := time.Now()
	stale := false
	for _, d := range []string{dialect.SQLite, dialect.Postgres} {
		dev, cleanup, err := devDatabase(d)
		if err != nil {
			return err
		}
		if dev == "" {
			if check {
				return fmt.Errorf("%s: cannot check the PostgreSQL migrations without a server: set ORCHARD_DEV_DATABASE_URL (or ORCHARD_TEST_DATABASE_URL)", d)
			}
			fmt.Fprintln(os.Stderr, "migrategen: PostgreSQL migrations NOT checked: set ORCHARD_DEV_DATABASE_URL (or ORCHARD_TEST_DATABASE_URL) to a server")
			continue
		}
		target := filepath.Join(dir, map[string]string{dialect.SQLite: "sqlite", dialect.Postgres: "postgres"}[d])
		if check {
			// Work on a copy, so a check leaves the tree as it was.
			tmp, err := os.MkdirTemp("", "migrategen-")
			if err != nil {
				cleanup()
				return err
			}
			defer os.RemoveAll(tmp)
			if err := os.CopyFS(tmp, os.DirFS(target)); err != nil {
				cleanup()
				return err
			}
			target = tmp
		}
		file, err := migrations.Generate(ctx, d, dev, target, version, name)
		cleanup()
		switch {
		case err != nil:
			return err
		case file != "" && check:
			stale = true
			fmt.Fprintf(os.Stderr, "migrategen: %s: ent/schema has changes that no migration file holds\n", d)
		case file != "":
			fmt.Fprintf(os.Stderr, "migrategen: wrote %s\n", filepath.Join(target, file))
		}
	}
	if stale {
		return fmt.Errorf("the migration files are out of date: run make generate and commit ent/migrations")
	}
	return nil
}

// devDatabase returns the URL of an empty database of dialect d, or ""
// when no PostgreSQL server is configured.
func devDatabase(d string) (string, func(), error) {
	if d == dialect.SQLite {
		return "sqlite://migrategen?mode=memory&cache=shared&_fk=1", func() {}, nil
	}
	base := os.Getenv("ORCHARD_DEV_DATABASE_URL")
	if base == "" {
		base = os.Getenv("ORCHARD_TEST_DATABASE_URL")
	}
	if base == "" {
		return "", func() {}, nil
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "orchard_migrategen_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("creating a scratch schema on the development database: %w", err)
	}
	drop := func() {
		_, _ = admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	}
	u, err := url.Parse(base)
	if err != nil {
		drop()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}
