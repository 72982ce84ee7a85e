package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"

	"github.com/orchard-msp/orchard/ent"
	_ "github.com/orchard-msp/orchard/ent/runtime"
)

// database is an open ent client and what is needed to close it.
type database struct {
	Client  *ent.Client
	Dialect string
	// sqlite holds the two pools when the database is SQLite.
	sqlite *rwDriver
	ping   func(context.Context) error
	close  func() error
}

// Ping reports whether the database answers.
func (d *database) Ping(ctx context.Context) error { return d.ping(ctx) }

// Close checkpoints SQLite's WAL and closes every connection.
func (d *database) Close() error { return d.close() }

// sqlitePragmas are the settings every SQLite connection gets: WAL so
// readers never wait for the writer, synchronous=FULL because a confirmed
// token is a business event that must survive a power cut, a busy timeout
// below the operation timeout, foreign keys on, and write transactions that
// take the lock when they begin (no deadlocking lock upgrades).
const sqlitePragmas = "_fk=1&_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate&_stmt_cache_size=64"

// openDatabase opens and migrates the configured database.
func openDatabase(ctx context.Context, cfg *Config) (*database, error) {
	var db *database
	var err error
	switch {
	case !isPostgres(cfg.DatabaseURL):
		db, err = openSQLite(strings.TrimPrefix(cfg.DatabaseURL, "sqlite://"))
	default:
		db, err = openPostgres(cfg.DatabaseURL)
	}
	if err != nil {
		return nil, err
	}
	if err := db.Client.Schema.Create(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating the database schema: %w", err)
	}
	return db, nil
}

func openSQLite(path string) (*database, error) {
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
	return &database{
		Client:  ent.NewClient(ent.Driver(drv)),
		Dialect: dialect.SQLite,
		sqlite:  drv,
		ping:    reader.PingContext,
		close: func() error {
			// Fold the WAL back into the main file so a copy of orchard.db alone is complete.
			_, cerr := writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
			return errors.Join(cerr, reader.Close(), writer.Close())
		},
	}, nil
}

func openPostgres(dsn string) (*database, error) {
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
	return &database{
		Client:  ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, db))),
		Dialect: dialect.Postgres,
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
