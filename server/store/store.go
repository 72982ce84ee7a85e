// Package store opens Orchard's database, SQLite or PostgreSQL, and keeps
// its schema at the version this binary was built for: it applies the
// versioned migrations of ent/migrations under the migration lock and
// says where a database stands. Everything else reaches the data through
// the ent client it hands out.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/migrations"
	_ "github.com/orchard-msp/orchard/ent/runtime"
)

// DB is an open ent client and what is needed to close it.
type DB struct {
	Client  *ent.Client
	Dialect string
	// sqlite holds the two pools when the database is SQLite.
	sqlite *rwDriver
	// writer is the pool that may change the schema: SQLite's single
	// writer, or the PostgreSQL pool.
	writer *sql.DB
	// Migrated lists the migration files applied when it was opened.
	Migrated []migrations.File
	ping     func(context.Context) error
	close    func() error
}

// Ping reports whether the database answers.
func (d *DB) Ping(ctx context.Context) error { return d.ping(ctx) }

// Close checkpoints SQLite's WAL and closes every connection.
func (d *DB) Close() error { return d.close() }

// sqlitePragmas are the settings every SQLite connection gets: WAL so
// readers never wait for the writer, synchronous=FULL because a confirmed
// token is a business event that must survive a power cut, a busy timeout
// below the operation timeout, foreign keys on, and write transactions that
// take the lock when they begin (no deadlocking lock upgrades).
const sqlitePragmas = "_fk=1&_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate&_stmt_cache_size=64"

// Options say which database to open and how.
type Options struct {
	// URL is sqlite://PATH or postgres://… (ORCHARD_DATABASE_URL).
	URL string
	// ManualMigrate leaves migrations to `orchard migrate`
	// (ORCHARD_AUTO_MIGRATE=false): Open then refuses an out-of-date schema.
	ManualMigrate bool
}

// Open opens the configured database and makes sure its schema is
// the one this binary was built for. With ORCHARD_AUTO_MIGRATE (the
// default) it applies the pending migrations under the migration lock, so
// commands and servers that start together do not race; without, it
// refuses an out-of-date schema and leaves `orchard migrate` to the
// operator.
func Open(ctx context.Context, opts Options) (*DB, error) {
	db, err := Connect(opts.URL)
	if err != nil {
		return nil, err
	}
	if !opts.ManualMigrate {
		db.Migrated, err = migrations.Up(ctx, db.writer, db.Dialect)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("migrating the database schema: %w", err)
		}
		return db, nil
	}
	st, err := migrations.Inspect(ctx, db.writer, db.Dialect)
	if err != nil {
		db.Close()
		return nil, err
	}
	if !st.Current() {
		db.Close()
		return nil, fmt.Errorf("the database schema is out of date (%s) and ORCHARD_AUTO_MIGRATE=false leaves migrations to you: run `orchard migrate` with the same configuration, then start again", describePending(st))
	}
	return db, nil
}

// describePending says in a few words what a migration would do.
func describePending(st *migrations.Status) string {
	names := make([]string, len(st.Pending))
	for i, f := range st.Pending {
		names[i] = f.Name
	}
	s := fmt.Sprintf("%d migration(s) pending: %s", len(names), strings.Join(names, ", "))
	if st.Unversioned {
		s += "; the database was made by an Orchard without versioned migrations and will be adopted as the baseline, keeping every row"
	}
	return s
}

// Connect opens the database at url as it is, without migrating it.
func Connect(url string) (*DB, error) {
	if !IsPostgres(url) {
		return OpenSQLite(SQLitePath(url))
	}
	return openPostgres(url)
}

// Up applies the pending migrations under the migration lock and returns
// the files it applied.
func (d *DB) Up(ctx context.Context) ([]migrations.File, error) {
	return migrations.Up(ctx, d.writer, d.Dialect)
}

// Inspect says where the database's schema stands; it only reads.
func (d *DB) Inspect(ctx context.Context) (*migrations.Status, error) {
	return migrations.Inspect(ctx, d.writer, d.Dialect)
}

// SQLitePools returns SQLite's single writer and its pool of read-only
// connections, both nil for PostgreSQL. Tests and the benchmark baseline
// read through them; the server goes through Client.
func (d *DB) SQLitePools() (writer, reader *sql.DB) {
	if d.sqlite == nil {
		return nil, nil
	}
	return d.sqlite.Driver.DB(), d.sqlite.reader.DB()
}

// IsPostgres reports whether a database URL names PostgreSQL.
func IsPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// SQLitePath is the file a sqlite:// URL names.
func SQLitePath(databaseURL string) string { return strings.TrimPrefix(databaseURL, "sqlite://") }

// OpenSQLite opens the SQLite file at path as it is, creating it and its
// directory when missing.
func OpenSQLite(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlite:// needs a file path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the database directory: %w", err)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + sqlitePragmas
	writer, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	// SQLite has one writer at a time; one connection makes writers queue
	// in Go instead of failing with "database is locked".
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	if err := writer.Ping(); err != nil {
		writer.Close()
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		writer.Close()
		return nil, err
	}
	reader, err := sql.Open("sqlite3", dsn+"&_query_only=1")
	if err != nil {
		writer.Close()
		return nil, err
	}
	readers := max(2, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(readers)
	reader.SetMaxIdleConns(readers)

	drv := &rwDriver{
		Driver: entsql.OpenDB(dialect.SQLite, writer),
		reader: entsql.OpenDB(dialect.SQLite, reader),
	}
	return &DB{
		Client:  ent.NewClient(ent.Driver(drv)),
		Dialect: dialect.SQLite,
		sqlite:  drv,
		writer:  writer,
		ping:    reader.PingContext,
		close: func() error {
			// Fold the WAL back into the main file so a copy of orchard.db alone is complete.
			_, cerr := writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
			return errors.Join(cerr, reader.Close(), writer.Close())
		},
	}, nil
}

func openPostgres(dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return &DB{
		Client:  ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, db))),
		Dialect: dialect.Postgres,
		writer:  db,
		ping:    db.PingContext,
		close:   db.Close,
	}, nil
}

// rwDriver sends reads outside transactions to a pool of read-only SQLite
// connections and everything else to the single writer. With WAL, a reader
// sees every transaction committed before it started.
type rwDriver struct {
	*entsql.Driver // the writer
	reader         *entsql.Driver
}

// Query implements dialect.Driver. ent also runs INSERT … RETURNING
// through Query, so only plain SELECTs go to the readers.
func (d *rwDriver) Query(ctx context.Context, query string, args, v any) error {
	if isSelect(query) {
		return d.reader.Query(ctx, query, args, v)
	}
	return d.Driver.Query(ctx, query, args, v)
}

func isSelect(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

// Close implements dialect.Driver.
func (d *rwDriver) Close() error {
	return errors.Join(d.reader.Close(), d.Driver.Close())
}

// passwordParam finds a password given as a URL query parameter
// (?password=…) or in a key/value DSN (password=… or password='…').
var passwordParam = regexp.MustCompile(`(?i)(\bpassword=)('(?:[^'\\]|\\.)*'|[^&\s]*)`)

// RedactURL hides the credentials of a database URL or DSN, for logs.
func RedactURL(s string) string {
	if j := strings.Index(s, "://"); j > 0 {
		authority := s[j+3:]
		if end := strings.IndexAny(authority, "/?#"); end >= 0 {
			authority = authority[:end]
		}
		if i := strings.LastIndex(authority, "@"); i >= 0 {
			s = s[:j+3] + "…" + s[j+3+i:]
		}
	}
	return passwordParam.ReplaceAllString(s, "${1}…")
}
