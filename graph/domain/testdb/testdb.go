// Package testdb opens a fresh, migrated database for a test: a SQLite file
// in the test's temp dir, and, when ORCHARD_TEST_DATABASE_URL names a
// PostgreSQL server, a schema of its own there, dropped when the test ends.
// The schema comes from the same migration files production applies.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver
	_ "github.com/mattn/go-sqlite3"    // SQLite driver

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/migrations"
	_ "github.com/orchard-msp/orchard/ent/runtime" // privacy policies and hooks
)

// EnvPostgres names the PostgreSQL server the tests may use.
const EnvPostgres = "ORCHARD_TEST_DATABASE_URL"

// DB is one test database.
type DB struct {
	Name   string // "sqlite" or "postgres"
	URL    string // an ORCHARD_DATABASE_URL for the same database
	Client *ent.Client
	SQL    *sql.DB
}

// Each runs fn once on SQLite and once more on PostgreSQL when
// ORCHARD_TEST_DATABASE_URL is set.
func Each(t *testing.T, fn func(t *testing.T, db *DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	if os.Getenv(EnvPostgres) != "" {
		t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
	}
}

// SQLite returns a migrated SQLite database in t's temp dir.
func SQLite(t testing.TB) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "orchard.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_fk=1&_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return open(t, &DB{Name: "sqlite", URL: "sqlite://" + path, SQL: db}, dialect.SQLite)
}

// Postgres returns a migrated database in a fresh schema on the server that
// ORCHARD_TEST_DATABASE_URL names, or skips t when it is unset.
func Postgres(t testing.TB) *DB {
	t.Helper()
	u := EmptyPostgres(t)
	db, err := sql.Open("pgx", u)
	if err != nil {
		t.Fatal(err)
	}
	return open(t, &DB{Name: "postgres", URL: u, SQL: db}, dialect.Postgres)
}

// EmptyPostgres creates a fresh, empty schema on the server that
// ORCHARD_TEST_DATABASE_URL names, dropped when t ends, and returns an
// ORCHARD_DATABASE_URL for it. It skips t when the variable is unset.
func EmptyPostgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skip(EnvPostgres + " is not set")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "orchard_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("creating schema on %s: %v", EnvPostgres, err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t testing.TB, db *DB, dia string) *DB {
	t.Helper()
	t.Cleanup(func() { db.SQL.Close() })
	if _, err := migrations.Up(context.Background(), db.SQL, dia); err != nil {
		t.Fatalf("migrating %s: %v", db.Name, err)
	}
	db.Client = ent.NewClient(ent.Driver(entsql.OpenDB(dia, db.SQL)))
	return db
}

// Counter counts the SQL statements that reach a database.
type Counter struct {
	dialect.Driver
	N atomic.Int64
}

// Exec implements dialect.Driver.
func (c *Counter) Exec(ctx context.Context, q string, args, v any) error {
	c.N.Add(1)
	return c.Driver.Exec(ctx, q, args, v)
}

// Query implements dialect.Driver.
func (c *Counter) Query(ctx context.Context, q string, args, v any) error {
	c.N.Add(1)
	return c.Driver.Query(ctx, q, args, v)
}

// Counting returns a client on db whose statements c counts.
func Counting(db *DB) (*ent.Client, *Counter) {
	dia := dialect.SQLite
	if db.Name == "postgres" {
		dia = dialect.Postgres
	}
	c := &Counter{Driver: entsql.OpenDB(dia, db.SQL)}
	return ent.NewClient(ent.Driver(c)), c
}
