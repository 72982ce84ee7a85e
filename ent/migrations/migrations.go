// Package migrations holds Orchard's versioned schema migrations, one set of
// goose files for SQLite and one for PostgreSQL, generated from ent/schema by
// `make generate` (see Generate), and applies them under a lock so that any
// number of processes may start on one database at once.
//
// A database made before versioned migrations existed, by ent's automatic
// Schema.Create, has Orchard's tables but no version table. Its schema is
// that of the first file (the baseline), so Up records the baseline as
// applied and carries on from there, keeping every row.
package migrations

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"entgo.io/ent/dialect"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

//go:embed sqlite postgres
var embedded embed.FS

// VersionTable is the table in which goose records the applied versions.
const VersionTable = "goose_db_version"

// File is one migration file.
type File struct {
	Version int64
	Name    string
}

// Status is where a database stands against the migration files compiled in.
type Status struct {
	Dialect string
	// Version is the last version applied; 0 for an empty database.
	Version int64
	// Unversioned is true for a database that Schema.Create made before
	// versioned migrations: Up adopts it (the baseline) without touching a row.
	Unversioned bool
	Applied     []File
	Pending     []File
	// Newer is true when the database has a version this binary does not
	// know: a newer Orchard migrated it.
	Newer bool
}

// Current reports whether the schema is the one this binary expects.
func (s *Status) Current() bool { return len(s.Pending) == 0 && !s.Unversioned }

type dialectInfo struct {
	goose goose.Dialect
	dir   string
	lock  func(ctx context.Context, db *sql.DB) (unlock func(), err error)
	// columns lists the tables and columns of the connected schema, "table.column".
	columns func(ctx context.Context, db *sql.DB) ([]string, error)
	// hasTable reports whether a table exists in the connected schema.
	hasTable func(ctx context.Context, db *sql.DB, name string) (bool, error)
}

var dialects = map[string]*dialectInfo{
	dialect.SQLite: {
		goose: goose.DialectSQLite3,
		dir:   "sqlite",
		lock:  lockSQLite,
		columns: func(ctx context.Context, db *sql.DB) ([]string, error) {
			return strings1(ctx, db, `SELECT m.name || '.' || p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table'`)
		},
		hasTable: func(ctx context.Context, db *sql.DB, name string) (bool, error) {
			var n int
			err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
			return n > 0, err
		},
	},
	dialect.Postgres: {
		goose: goose.DialectPostgres,
		dir:   "postgres",
		lock:  lockPostgres,
		columns: func(ctx context.Context, db *sql.DB) ([]string, error) {
			return strings1(ctx, db, `SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = current_schema()`)
		},
		hasTable: func(ctx context.Context, db *sql.DB, name string) (bool, error) {
			var ok bool
			err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1)`, name).Scan(&ok)
			return ok, err
		},
	},
}

func lookup(name string) (*dialectInfo, error) {
	d, ok := dialects[name]
	if !ok {
		return nil, fmt.Errorf("no migrations for the %q dialect (there are: sqlite3, postgres)", name)
	}
	return d, nil
}

// Files lists the migration files of a dialect, oldest first.
func Files(dialectName string) ([]File, error) {
	d, err := lookup(dialectName)
	if err != nil {
		return nil, err
	}
	return d.files()
}

func (d *dialectInfo) fsys() fs.FS {
	sub, err := fs.Sub(embedded, d.dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

func (d *dialectInfo) files() ([]File, error) {
	names, err := fs.Glob(d.fsys(), "*.sql")
	if err != nil {
		return nil, err
	}
	var out []File
	for _, n := range names {
		v, err := goose.NumericComponent(n)
		if err != nil {
			return nil, fmt.Errorf("migration file %s: %w", n, err)
		}
		out = append(out, File{Version: v, Name: n})
	}
	slices.SortFunc(out, func(a, b File) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

func (d *dialectInfo) provider(db *sql.DB) (*goose.Provider, error) {
	return goose.NewProvider(d.goose, db, d.fsys(),
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
		goose.WithTableName(VersionTable),
	)
}

// Up brings the database up to the last migration file and returns the
// files it applied. It holds a lock meanwhile (a PostgreSQL advisory lock
// per schema; a file lock beside a SQLite database), so processes that
// start together apply each file once and the others wait, then find
// nothing left to do.
func Up(ctx context.Context, db *sql.DB, dialectName string) ([]File, error) {
	d, err := lookup(dialectName)
	if err != nil {
		return nil, err
	}
	unlock, err := d.lock(ctx, db)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.adopt(ctx, db); err != nil {
		return nil, err
	}
	p, err := d.provider(db)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	var applied []File
	for _, r := range results {
		if r.Error == nil {
			applied = append(applied, File{Version: r.Source.Version, Name: baseName(r.Source.Path)})
		}
	}
	if err != nil {
		return applied, fmt.Errorf("applying migrations: %w", err)
	}
	return applied, nil
}

// Inspect says where the database stands. It only reads.
func Inspect(ctx context.Context, db *sql.DB, dialectName string) (*Status, error) {
	d, err := lookup(dialectName)
	if err != nil {
		return nil, err
	}
	files, err := d.files()
	if err != nil {
		return nil, err
	}
	st := &Status{Dialect: dialectName}
	versioned, err := d.hasTable(ctx, db, VersionTable)
	if err != nil {
		return nil, fmt.Errorf("reading the migration state: %w", err)
	}
	if !versioned {
		// Nothing is recorded; goose would create its table on a status
		// call, so the files are all pending without asking it.
		st.Pending = files
		if st.Unversioned, err = d.unversioned(ctx, db); err != nil {
			return nil, err
		}
		return st, nil
	}
	p, err := d.provider(db)
	if err != nil {
		return nil, err
	}
	all, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the migration state: %w", err)
	}
	for _, m := range all {
		f := File{Version: m.Source.Version, Name: baseName(m.Source.Path)}
		if m.State == goose.StateApplied {
			st.Applied = append(st.Applied, f)
		} else {
			st.Pending = append(st.Pending, f)
		}
	}
	if st.Version, err = p.GetDBVersion(ctx); err != nil {
		return nil, fmt.Errorf("reading the migration state: %w", err)
	}
	st.Newer = len(files) > 0 && st.Version > files[len(files)-1].Version
	return st, nil
}

// unversioned reports whether the database holds tables of the baseline
// but no version table: Schema.Create made it.
func (d *dialectInfo) unversioned(ctx context.Context, db *sql.DB) (bool, error) {
	want, err := d.baseline()
	if err != nil {
		return false, err
	}
	for table := range want {
		ok, err := d.hasTable(ctx, db, table)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// adopt records the baseline as applied on a database that Schema.Create
// made, after checking that it has every table and column the baseline
// creates. Called under the lock.
func (d *dialectInfo) adopt(ctx context.Context, db *sql.DB) error {
	if ok, err := d.hasTable(ctx, db, VersionTable); err != nil || ok {
		return err
	}
	if ok, err := d.unversioned(ctx, db); err != nil || !ok {
		return err
	}
	want, err := d.baseline()
	if err != nil {
		return err
	}
	have, err := d.columns(ctx, db)
	if err != nil {
		return err
	}
	var missing []string
	for table, cols := range want {
		for _, c := range cols {
			if !slices.Contains(have, table+"."+c) {
				missing = append(missing, table+"."+c)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("the database has Orchard's tables but not the schema of the first versioned migration (missing %s): "+
			"it was last used by an older Orchard; start that older Orchard's last release before versioned migrations once, so it completes its own schema, then run orchard migrate", strings.Join(missing, ", "))
	}
	files, err := d.files()
	if err != nil {
		return err
	}
	store, err := database.NewStore(d.goose, VersionTable)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := store.CreateVersionTable(ctx, tx); err != nil {
		return fmt.Errorf("creating %s: %w", VersionTable, err)
	}
	// Version 0 is the row goose writes when it creates the table itself.
	for _, v := range []int64{0, files[0].Version} {
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
			return fmt.Errorf("recording the baseline: %w", err)
		}
	}
	return tx.Commit()
}

var (
	createTable = regexp.MustCompile("(?s)CREATE TABLE [`\"](\\w+)[`\"] \\((.*?)\\);\n")
	columnDef   = regexp.MustCompile("(?:^|, )[`\"](\\w+)[`\"] ")
)

// baseline returns the tables and columns the first file creates.
func (d *dialectInfo) baseline() (map[string][]string, error) {
	files, err := d.files()
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no migration files are compiled in")
	}
	body, err := fs.ReadFile(d.fsys(), files[0].Name)
	if err != nil {
		return nil, err
	}
	tables := map[string][]string{}
	for _, m := range createTable.FindAllStringSubmatch(string(body), -1) {
		for _, c := range columnDef.FindAllStringSubmatch(m[2], -1) {
			tables[m[1]] = append(tables[m[1]], c[1])
		}
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("%s creates no table", files[0].Name)
	}
	return tables, nil
}

// lockPostgres takes an advisory lock keyed by the schema, on a connection
// of its own, and waits for it as long as ctx allows. PostgreSQL releases
// it if the process dies.
func lockPostgres(ctx context.Context, db *sql.DB) (func(), error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var schema string
	if err := conn.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the current schema: %w", err)
	}
	sum := sha256.Sum256([]byte("orchard migrations\x00" + schema))
	key := int64(binary.BigEndian.Uint64(sum[:8]))
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		conn.Close()
		return nil, fmt.Errorf("waiting for the migration lock: %w", err)
	}
	return func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key)
		conn.Close()
	}, nil
}

func strings1(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}
