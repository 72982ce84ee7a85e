package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent/migrations"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/server/httpapi"
)

// The API key and sealing key of the dumps in ent/migrations/testdata (see mkdump.go there).
const (
	baselineKey     = "orch_baseline-upgrade-test-key-000000000000000"
	baselineSealKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
)

// Eight servers started at the same moment on one empty PostgreSQL schema
// all become ready, and the schema is created once. Before versioned
// migrations three of four crashed on pg_type_typname_nsp_index.
func TestEightServersStartTogetherOnEmptyPostgres(t *testing.T) {
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skip(testdb.EnvPostgres + " is not set")
	}
	url := testdb.EmptyPostgres(t)
	const n = 8
	envs := make([][]string, n)
	for i := range n {
		envs[i] = append(os.Environ(), "ORCHARD_DATABASE_URL="+url, "ORCHARD_APPLE=simulator",
			"ORCHARD_SECRET_KEY="+baselineSealKey, "ORCHARD_DATA_DIR="+t.TempDir())
	}
	children := make([]*serveProc, n)
	began := time.Now()
	for i := range n {
		children[i] = startServe(t, envs[i])
	}
	for _, c := range children {
		c.waitUp("/readyz", 90*time.Second)
	}
	t.Logf("%d servers ready %v after the first start", n, time.Since(began).Round(time.Millisecond))

	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	files, _ := migrations.Files("postgres")
	var rows, distinct int
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT version_id) FROM goose_db_version`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != len(files)+1 || distinct != rows {
		t.Fatalf("goose_db_version holds %d rows (%d versions); want version 0 and each of the %d files once", rows, distinct, len(files))
	}
}

// On a fresh SQLite data dir, `apikey create` and `serve` started together
// both succeed, and the key works on that server.
func TestApikeyAndServeTogetherOnFreshSQLite(t *testing.T) {
	dir := t.TempDir()
	env := append(os.Environ(), "ORCHARD_DATA_DIR="+filepath.Join(dir, "data"), "ORCHARD_APPLE=simulator",
		"ORCHARD_SECRET_KEY="+baselineSealKey, "ORCHARD_DATABASE_URL=")
	srv := startServe(t, env)
	key := exec.Command(os.Args[0], "apikey", "create", "--name", "racer")
	key.Env = append(env, "ORCHARD_TEST_RUN_MAIN=1")
	var stderr bytes.Buffer
	key.Stderr = &stderr
	out, err := key.Output()
	if err != nil {
		t.Fatalf("apikey create: %v\n%s", err, stderr.String())
	}
	srv.waitUp("/readyz", 60*time.Second)
	s := srv.srv
	var v struct{ Customers struct{ TotalCount int } }
	s.gql(strings.TrimSpace(string(out)), `{ customers { totalCount } }`, nil).decode(t, &v)
	if v.Customers.TotalCount != 0 {
		t.Fatalf("customers = %+v", v)
	}
}

// loadBaselineDump fills a fresh database with the rows a database made by
// 055a1ad held, and returns its ORCHARD_DATABASE_URL.
func loadBaselineDump(t *testing.T, postgres bool) string {
	t.Helper()
	var url, driver, dsn, file string
	if postgres {
		url = testdb.EmptyPostgres(t)
		driver, dsn, file = "pgx", url, "postgres.sql"
	} else {
		path := filepath.Join(t.TempDir(), "data", "orchard.db")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		url = "sqlite://" + path
		driver, dsn, file = "sqlite3", "file:"+path+"?_fk=1", "sqlite.sql"
	}
	dump, err := os.ReadFile(filepath.Join("..", "ent", "migrations", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(string(dump)); err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	return url
}

// eachDatabase runs fn on SQLite and, when ORCHARD_TEST_DATABASE_URL is
// set, on PostgreSQL.
func eachDatabase(t *testing.T, fn func(t *testing.T, postgres bool)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, false) })
	if os.Getenv(testdb.EnvPostgres) != "" {
		t.Run("postgres", func(t *testing.T) { fn(t, true) })
	}
}

// A database made by 055a1ad's automatic migration is upgraded by serve at
// start, and the server answers with every customer, token, app and key it
// held.
func TestUpgradeDatabaseMadeByMain055a1ad(t *testing.T) {
	eachDatabase(t, func(t *testing.T, postgres bool) {
		url := loadBaselineDump(t, postgres)
		// The dump's PENDING upload was made on 2026-12-02: with the default
		// day to live, the cleanup job discarded it at start from the next
		// day on, and this test failed by the calendar.
		s := startServer(t, map[string]string{"ORCHARD_DATABASE_URL": url, "ORCHARD_SECRET_KEY": baselineSealKey,
			"ORCHARD_PENDING_TTL": "876000h"})
		var got struct {
			Customers struct {
				TotalCount int
				Edges      []struct {
					Node struct {
						ID     string
						Name   string
						Tokens struct {
							Edges []struct {
								Node struct {
									State, OrgName, LocationName, LocationUID string
									Apps                                      struct {
										TotalCount int
										Edges      []struct {
											Node struct{ AdamID, PricingParam string }
										}
									}
								}
							}
						}
					}
				}
			}
		}
		s.gql(baselineKey, `{ customers(first: 10, orderBy: {field: NAME}) { totalCount edges { node { id name
			tokens(first: 10) { edges { node { state orgName locationName locationUID apps(first: 10, orderBy: {field: ADAM_ID}) { totalCount edges { node { adamID pricingParam } } } } } } } } } }`, nil).decode(t, &got)
		if got.Customers.TotalCount != 2 {
			t.Fatalf("after the upgrade: %+v", got)
		}
		acme, globex := got.Customers.Edges[0].Node, got.Customers.Edges[1].Node
		if acme.Name != "Acme Dental" || globex.Name != "Globex Schools" || len(acme.Tokens.Edges) != 1 || len(globex.Tokens.Edges) != 1 {
			t.Fatalf("customers after the upgrade: %+v", got.Customers)
		}
		tok := acme.Tokens.Edges[0].Node
		if tok.State != "ACTIVE" || tok.LocationName != "Acme HQ" || tok.Apps.TotalCount != 2 ||
			fmt.Sprint(tok.Apps.Edges) != "[{{361309726 STDQ}} {{6446901002 PLUS}}]" {
			t.Fatalf("Acme's token after the upgrade: %+v", tok)
		}
		if g := globex.Tokens.Edges[0].Node; g.State != "PENDING" || g.LocationUID != "globex-east" {
			t.Fatalf("Globex's token after the upgrade: %+v", g)
		}
		// Global IDs still resolve, and new rows land in their type's range.
		var node struct{ Node struct{ Name string } }
		s.gql(baselineKey, `query($id: ID!) { node(id: $id) { ... on Customer { name } } }`, map[string]any{"id": acme.ID}).decode(t, &node)
		if node.Node.Name != "Acme Dental" {
			t.Fatalf("node(id:) after the upgrade = %+v", node)
		}
		id := s.createCustomer(baselineKey, "Initech")
		s.gql(baselineKey, `query($id: ID!) { node(id: $id) { ... on Customer { name } } }`, map[string]any{"id": id}).decode(t, &node)
		if node.Node.Name != "Initech" {
			t.Fatalf("node(id:) of a customer created after the upgrade = %+v", node)
		}
		// The revoked key of the dump stays revoked.
		if r := s.gql(baselineKey+"-scoped", `{ customers { totalCount } }`, nil); r.Status != http.StatusUnauthorized && r.code() != "UNAUTHENTICATED" {
			t.Fatalf("revoked key: %s", r.Raw)
		}
	})
}

// orchard migrate status on an empty, an old and a current database, and
// orchard migrate between them.
func TestMigrateStatus(t *testing.T) {
	files, _ := migrations.Files("sqlite3")
	baseline := files[0].Name
	eachDatabase(t, func(t *testing.T, postgres bool) {
		cmd := func(env map[string]string, args ...string) string {
			t.Helper()
			var out, errb bytes.Buffer
			if err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errb); err != nil {
				t.Fatalf("orchard %v: %v\n%s", args, err, errb.String())
			}
			return out.String()
		}
		want := func(out string, parts ...string) {
			t.Helper()
			for _, p := range parts {
				if !strings.Contains(out, p) {
					t.Fatalf("output lacks %q:\n%s", p, out)
				}
			}
		}

		// Empty.
		env := map[string]string{"ORCHARD_DATA_DIR": filepath.Join(t.TempDir(), "data")}
		if postgres {
			env["ORCHARD_DATABASE_URL"] = testdb.EmptyPostgres(t)
		}
		want(cmd(env, "migrate", "status"), "version:  none", fmt.Sprintf("pending:  %d", len(files)), baseline)
		if _, err := os.Stat(env["ORCHARD_DATA_DIR"]); !postgres && err == nil {
			t.Fatal("migrate status created the data dir")
		}
		want(cmd(env, "migrate"), "applied "+baseline, "state:    up to date")
		want(cmd(env, "migrate", "status"), fmt.Sprintf("version:  %d", files[len(files)-1].Version), "pending:  0", "state:    up to date")
		want(cmd(env, "migrate"), "nothing to apply")

		// Made by 055a1ad.
		old := map[string]string{"ORCHARD_DATABASE_URL": loadBaselineDump(t, postgres)}
		want(cmd(old, "migrate", "status"), "version:  none", "without versioned migrations", baseline)
		want(cmd(old, "migrate"), "adopting", "state:    up to date")
		want(cmd(old, "migrate", "status"), "pending:  0", "state:    up to date")
	})
}

// With ORCHARD_AUTO_MIGRATE=false every command refuses an out-of-date
// schema and says what to run; after orchard migrate they work.
func TestManualMigrationsRefuseOutOfDateSchema(t *testing.T) {
	env := map[string]string{"ORCHARD_DATA_DIR": filepath.Join(t.TempDir(), "data"), "ORCHARD_AUTO_MIGRATE": "false"}
	getenv := func(k string) string { return env[k] }
	var out, errb bytes.Buffer
	if err := os.MkdirAll(env["ORCHARD_DATA_DIR"], 0o700); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"apikey", "create", "--name", "early"}, getenv, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "run `orchard migrate`") || out.Len() > 0 {
		t.Fatalf("apikey create on an unmigrated database: %v, stdout %q", err, out.String())
	}
	if err := run(context.Background(), []string{"migrate"}, getenv, &out, &errb); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"apikey", "create", "--name", "later"}, getenv, &out, &errb); err != nil || !strings.HasPrefix(out.String(), httpapi.KeyPrefix) {
		t.Fatalf("apikey create after migrate: %v, %q", err, out.String())
	}
}

// migrate -h prints its usage, succeeds, and creates nothing.
func TestMigrateHelpTouchesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "-h"}, func(k string) string {
		return map[string]string{"ORCHARD_DATA_DIR": dir}[k]
	}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "orchard migrate") || !strings.Contains(out.String(), "ORCHARD_AUTO_MIGRATE") {
		t.Fatalf("usage = %q", out.String())
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("migrate -h created the data dir")
	}
}
