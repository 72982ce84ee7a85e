package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://orchard:s3cret@db.example:5432/orchard?sslmode=require":    "postgres://…@db.example:5432/orchard?sslmode=require",
		"postgres://orchard:p@ss@db.example/orchard":                           "postgres://…@db.example/orchard",
		"postgres://db.example/orchard?user=orchard&password=s3cret&x=1":       "postgres://db.example/orchard?user=orchard&password=…&x=1",
		"postgres://db.example/orchard?sslmode=disable&PASSWORD=s3cret":        "postgres://db.example/orchard?sslmode=disable&PASSWORD=…",
		"host=db.example user=orchard password=s3cret dbname=orchard":          "host=db.example user=orchard password=… dbname=orchard",
		"host=db.example password='se cret \\' x' dbname=orchard":              "host=db.example password=… dbname=orchard",
		"sqlite:///var/lib/orchard/orchard.db":                                 "sqlite:///var/lib/orchard/orchard.db",
		"postgres://db.example/orchard?sslmode=disable":                        "postgres://db.example/orchard?sslmode=disable",
		"postgres://orchard@db.example/orchard?sslmode=disable&password=x%20y": "postgres://…@db.example/orchard?sslmode=disable&password=…",
	} {
		got := RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q; want %q", in, got, want)
		}
		for _, secret := range []string{"s3cret", "p@ss", "se cret", "x%20y"} {
			if strings.Contains(got, secret) {
				t.Errorf("RedactURL(%q) = %q still shows %q", in, got, secret)
			}
		}
	}
}

// Open migrates an empty database once; a second Open finds nothing to do,
// and with ManualMigrate an empty database is refused with the command
// that fixes it.
func TestOpenMigratesOnce(t *testing.T) {
	urls := map[string]func(t *testing.T) string{
		"sqlite": func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "data", "orchard.db") },
	}
	if os.Getenv(testdb.EnvPostgres) != "" {
		urls["postgres"] = func(t *testing.T) string { return testdb.EmptyPostgres(t) }
	}
	for name, newURL := range urls {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			url := newURL(t)
			if _, err := Open(ctx, Options{URL: url, ManualMigrate: true}); err == nil || !strings.Contains(err.Error(), "orchard migrate") {
				t.Fatalf("ManualMigrate on an empty database: %v; want a refusal naming `orchard migrate`", err)
			}
			db, err := Open(ctx, Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			if len(db.Migrated) == 0 {
				t.Fatal("the first Open applied no migration")
			}
			st, err := db.Inspect(ctx)
			if err != nil || !st.Current() {
				t.Fatalf("after Open: %+v, %v; want current", st, err)
			}
			if err := db.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			if n, err := db.Client.Customer.Query().Count(viewer.SystemContext(ctx)); err != nil || n != 0 {
				t.Fatalf("customers in a new database: %d, %v", n, err)
			}
			db.Close()
			again, err := Open(ctx, Options{URL: url, ManualMigrate: true})
			if err != nil {
				t.Fatalf("ManualMigrate on a current database: %v", err)
			}
			defer again.Close()
			if len(again.Migrated) != 0 {
				t.Fatalf("the second Open applied %v", again.Migrated)
			}
			writer, reader := again.SQLitePools()
			if (writer != nil) != (name == "sqlite") || (reader != nil) != (name == "sqlite") {
				t.Fatalf("SQLitePools on %s: %v, %v", name, writer, reader)
			}
		})
	}
}
