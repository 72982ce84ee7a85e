package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"

	"github.com/orchard-msp/orchard/ent/migrations"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

// empty is a function that opens a new connection pool on one fresh,
// empty database, as many times as a test asks.
type empty struct {
	dialect string
	dir     string // the files' directory under ent/migrations
	url     string // an Atlas dev URL for Generate
	open    func(t *testing.T) *sql.DB
}

// eachDialect runs fn on a fresh SQLite file and, when
// ORCHARD_TEST_DATABASE_URL is set, on a fresh PostgreSQL schema.
func eachDialect(t *testing.T, fn func(t *testing.T, e empty)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "orchard.db")
		fn(t, empty{dialect: dialect.SQLite, dir: "sqlite", url: "sqlite://dev?mode=memory&cache=shared&_fk=1", open: func(t *testing.T) *sql.DB {
			db, err := sql.Open("sqlite3", "file:"+path+"?_fk=1&_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			t.Cleanup(func() { db.Close() })
			return db
		}})
	})
	if os.Getenv(testdb.EnvPostgres) == "" {
		return
	}
	t.Run("postgres", func(t *testing.T) {
		u := testdb.EmptyPostgres(t)
		fn(t, empty{dialect: dialect.Postgres, dir: "postgres", url: testdb.EmptyPostgres(t), open: func(t *testing.T) *sql.DB {
			db, err := sql.Open("pgx", u)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}})
	})
}

func versionRows(t *testing.T, db *sql.DB) []int64 {
	t.Helper()
	rows, err := db.Query(`SELECT version_id FROM ` + migrations.VersionTable + ` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// The committed files describe ent/schema exactly: replaying them and
// diffing against ent/schema finds nothing (what make check-migrations
// checks), and a directory that lacks them gets a file that creates the
// tables, so a forgotten migration cannot go unnoticed.
func TestFilesMatchSchema(t *testing.T) {
	eachDialect(t, func(t *testing.T, e empty) {
		if e.dialect == dialect.Postgres {
			registerPostgresForAtlas()
		}
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(e.dir)); err != nil {
			t.Fatal(err)
		}
		name, err := migrations.Generate(context.Background(), e.dialect, e.url, dir, time.Now(), "changes")
		if err != nil {
			t.Fatal(err)
		}
		if name != "" {
			body, _ := os.ReadFile(filepath.Join(dir, name))
			t.Fatalf("ent/schema has changes no migration file holds; run make generate:\n%s", body)
		}

		bare := t.TempDir()
		name, err = migrations.Generate(context.Background(), e.dialect, e.url, bare, time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), "everything")
		if err != nil {
			t.Fatal(err)
		}
		if name != "20300102030405_everything.sql" {
			t.Fatalf("new file = %q", name)
		}
		body, _ := os.ReadFile(filepath.Join(bare, name))
		for _, table := range []string{"customers", "server_tokens", "apps", "api_keys"} {
			if !strings.Contains(string(body), "CREATE TABLE `"+table+"`") && !strings.Contains(string(body), `CREATE TABLE "`+table+`"`) {
				t.Errorf("the generated file does not create %s:\n%s", table, body)
			}
		}
	})
}

var registerOnce sync.Once

// registerPostgresForAtlas gives pgx the driver name Atlas opens.
func registerPostgresForAtlas() {
	registerOnce.Do(func() {
		db, _ := sql.Open("pgx", "")
		sql.Register("postgres", db.Driver())
	})
}

func TestUpOnEmptyDatabase(t *testing.T) {
	eachDialect(t, func(t *testing.T, e empty) {
		ctx := context.Background()
		db := e.open(t)
		files, err := migrations.Files(e.dialect)
		if err != nil || len(files) == 0 {
			t.Fatalf("files = %v, %v", files, err)
		}
		st, err := migrations.Inspect(ctx, db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != 0 || st.Unversioned || st.Current() || len(st.Pending) != len(files) {
			t.Fatalf("empty database: %+v", st)
		}
		if ok := tableExists(t, db, migrations.VersionTable); ok {
			t.Fatal("Inspect created the version table; it must only read")
		}
		applied, err := migrations.Up(ctx, db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != len(files) {
			t.Fatalf("applied %v, want %v", applied, files)
		}
		st, err = migrations.Inspect(ctx, db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Current() || st.Version != files[len(files)-1].Version || len(st.Applied) != len(files) {
			t.Fatalf("after Up: %+v", st)
		}
		again, err := migrations.Up(ctx, db, e.dialect)
		if err != nil || len(again) != 0 {
			t.Fatalf("second Up applied %v, %v", again, err)
		}
		// The global ID ranges that node(id:) relies on: each table's IDs
		// start in its own 2^32 block.
		var id int64
		err = db.QueryRow(`INSERT INTO customers (created_at, updated_at, name, name_key) VALUES (CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'A', 'a') RETURNING id`).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		if id>>32 != 3 {
			t.Fatalf("first customer id = %d, want one in the customers range (3<<32)", id)
		}
	})
}

// Eight processes' worth of connection pools migrate one empty database at
// once: every one succeeds, and each file is applied once.
func TestConcurrentUp(t *testing.T) {
	eachDialect(t, func(t *testing.T, e empty) {
		const n = 8
		dbs := make([]*sql.DB, n)
		for i := range dbs {
			dbs[i] = e.open(t)
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = migrations.Up(context.Background(), dbs[i], e.dialect)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Up %d: %v", i, err)
			}
		}
		files, _ := migrations.Files(e.dialect)
		want := []int64{0}
		for _, f := range files {
			want = append(want, f.Version)
		}
		if got := versionRows(t, dbs[0]); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("version rows = %v, want %v (each file once)", got, want)
		}
	})
}

// A database made by 055a1ad's Schema.Create (the committed dump) is
// adopted as the baseline, and every row survives byte for byte.
func TestAdoptsDatabaseMadeBySchemaCreate(t *testing.T) {
	eachDialect(t, func(t *testing.T, e empty) {
		ctx := context.Background()
		db := e.open(t)
		loadDump(t, db, e.dir)
		cols := map[string][]string{}
		before := snapshot(t, db, cols)
		if len(before) < 9 {
			t.Fatalf("the dump holds %d rows; want the rows of every table", len(before))
		}
		st, err := migrations.Inspect(ctx, db, e.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Unversioned || st.Current() {
			t.Fatalf("status of a Schema.Create database: %+v", st)
		}
		if _, err := migrations.Up(ctx, db, e.dialect); err != nil {
			t.Fatal(err)
		}
		st, err = migrations.Inspect(ctx, db, e.dialect)
		if err != nil || !st.Current() || st.Unversioned {
			t.Fatalf("after Up: %+v, %v", st, err)
		}
		after := snapshot(t, db, cols)
		if strings.Join(before, "\n") != strings.Join(after, "\n") {
			t.Fatalf("rows changed:\nbefore %v\nafter  %v", before, after)
		}
		// The sequences carry on after the dumped rows, in the type's range.
		var maxID, id int64
		if err := db.QueryRow(`SELECT max(id) FROM customers`).Scan(&maxID); err != nil {
			t.Fatal(err)
		}
		err = db.QueryRow(`INSERT INTO customers (created_at, updated_at, name, name_key) VALUES (CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'New', 'new') RETURNING id`).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		if id != maxID+1 {
			t.Fatalf("new customer id = %d after %d", id, maxID)
		}
	})
}

// A database that has Orchard's tables but misses a column of the baseline
// is not adopted: the error names the column and what to do.
func TestRefusesIncompleteOldDatabase(t *testing.T) {
	eachDialect(t, func(t *testing.T, e empty) {
		db := e.open(t)
		loadDump(t, db, e.dir)
		if _, err := db.Exec(`ALTER TABLE apps DROP COLUMN icon_url`); err != nil {
			t.Fatal(err)
		}
		_, err := migrations.Up(context.Background(), db, e.dialect)
		if err == nil || !strings.Contains(err.Error(), "apps.icon_url") || !strings.Contains(err.Error(), "orchard migrate") {
			t.Fatalf("Up = %v; want a refusal naming apps.icon_url", err)
		}
		if tableExists(t, db, migrations.VersionTable) {
			t.Fatal("the refused database got a version table")
		}
	})
}

func loadDump(t *testing.T, db *sql.DB, dir string) {
	t.Helper()
	dump, err := os.ReadFile(filepath.Join("testdata", dir+".sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(string(dump)); err != nil {
		t.Fatalf("loading the dump: %v", err)
	}
}

// snapshot lists every row of the baseline's tables as text, reading the
// columns cols names (all, when cols is empty, which it then fills), so
// that columns later migrations add do not count as a change.
func snapshot(t *testing.T, db *sql.DB, cols map[string][]string) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"customers", "server_tokens", "apps", "api_keys", "audit_events", "webhook_deliveries"} {
		list := "*"
		if c, ok := cols[table]; ok {
			list = strings.Join(c, ", ")
		}
		rows, err := db.Query(fmt.Sprintf(`SELECT %s FROM %s ORDER BY id`, list, table))
		if err != nil {
			t.Fatal(err)
		}
		names, _ := rows.Columns()
		cols[table] = names
		for rows.Next() {
			vals := make([]any, len(names))
			ptrs := make([]any, len(names))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %v", table, vals))
		}
		rows.Close()
	}
	return out
}

func tableExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	// Only SQLite has sqlite_master; only PostgreSQL has current_schema().
	q := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`
	if _, err := db.Exec(`SELECT current_schema()`); err == nil {
		q = `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`
	}
	var n int
	if err := db.QueryRow(q, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}
