package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// childAPIKey runs `orchard apikey create` as a child process with env and
// returns the new admin key.
func childAPIKey(t *testing.T, env []string, name string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "apikey", "create", "--name", name)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("apikey create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// Two instances on one PostgreSQL: a warning raised on B reaches a
// subscriber on A, and when the job leader dies the other takes over.
func TestTwoInstancesOnPostgres(t *testing.T) {
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skip(testdb.EnvPostgres + " is not set")
	}
	db := testdb.Postgres(t)
	fake := appletest.New()
	defer fake.Close()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+t.TempDir(),
		"ORCHARD_DATABASE_URL="+db.URL, "ORCHARD_APPLE_URL="+fake.BaseURL(),
		"ORCHARD_SECRET_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "ORCHARD_EXPIRY_SCAN_INTERVAL=1s")

	key := childAPIKey(t, env, "multi")
	a, b := serveChild(t, env), serveChild(t, env)

	sub := subscriber(t, a.srv, key, "1", nil)
	time.Sleep(200 * time.Millisecond)

	cust := b.srv.createCustomer(key, "Shared")
	exp := time.Now().Add(4 * 24 * time.Hour)
	f := appletest.TokenFile("Shared", exp, "shared")
	fake.AddLocation(f, &appletest.Location{UID: "shared", Name: "Shared HQ", ExpiresAt: exp})
	var up uploadResult
	b.srv.upload(key, cust, f).decode(t, &up)
	if r := b.srv.action(key, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		t.Fatal(r.Raw)
	}
	w, err := sub.nextWarning(10 * time.Second)
	if err != nil {
		t.Fatalf("no warning reached instance A: %v", err)
	}
	if w.Data.TokenExpiryWarnings.Token.ID != up.UploadServerToken.Token.ID || w.Data.TokenExpiryWarnings.Level != "WARNING" {
		t.Fatalf("warning = %+v", w)
	}

	// Exactly one leads; kill it and the other takes over within a scan interval.
	waitFor(t, func() bool { return a.logged("now the job leader") || b.logged("now the job leader") })
	leaderInst, other := a, b
	if b.logged("now the job leader") {
		leaderInst, other = b, a
	}
	if other.logged("now the job leader") {
		t.Fatal("both instances lead")
	}
	killed := time.Now()
	_ = leaderInst.cmd.Process.Kill()
	waitFor(t, func() bool { return other.logged("now the job leader") })
	if d := time.Since(killed); d > 3*time.Second {
		t.Fatalf("took %v to hand over; want within about one scan interval (1s)", d)
	}
	t.Logf("job leadership handed over %v after the leader was killed", time.Since(killed))
}
