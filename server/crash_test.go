package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/store"
)

// burst starts a child server, uploads n tokens, confirms them all at once
// and sends sig after the first few answers. It returns the tokens whose
// confirm was acknowledged, the data dir, and how the process ended.
func burst(t *testing.T, sig syscall.Signal, n int) (acked []string, dir string, exitErr error, internal int) {
	t.Helper()
	fake := appletest.New()
	t.Cleanup(fake.Close)
	dir = t.TempDir()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+dir,
		"ORCHARD_APPLE_URL="+fake.BaseURL(), "ORCHARD_RATE_LIMIT=0", "ORCHARD_LOG_LEVEL=warn")
	key := childAPIKey(t, env, "crash")
	in := serveChild(t, env)
	s := in.srv
	cust := s.createCustomer(key, "Crash")
	exp := time.Now().AddDate(1, 0, 0)
	var ids []string
	for i := range n {
		f := appletest.TokenFile("C", exp, "crash-"+strconv.Itoa(i))
		fake.AddLocation(f, &appletest.Location{UID: "c" + strconv.Itoa(i), Name: "C", ExpiresAt: exp})
		var up uploadResult
		s.upload(key, cust, f).decode(t, &up)
		ids = append(ids, up.UploadServerToken.Token.ID)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	signalled := make(chan struct{})
	var once sync.Once
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.tryAction(key, "confirmServerToken", id)
			if err != nil {
				return // the connection died with the server: not acknowledged
			}
			mu.Lock()
			defer mu.Unlock()
			if len(r.Errors) == 0 {
				acked = append(acked, id)
				if len(acked) == n/4 {
					once.Do(func() {
						_ = in.cmd.Process.Signal(sig)
						close(signalled)
					})
				}
			} else if r.code() == "INTERNAL" {
				internal++
			}
		}()
	}
	wg.Wait()
	once.Do(func() { _ = in.cmd.Process.Signal(sig); close(signalled) })
	select {
	case <-in.exited:
		exitErr = in.err
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end within 10 s of the signal")
	}
	return acked, dir, exitErr, internal
}

// checkDatabase reopens the data dir and checks its integrity and that every
// acknowledged confirm is there.
func checkDatabase(t *testing.T, dir string, acked []string) {
	t.Helper()
	cfg := &Config{DatabaseURL: "sqlite://" + filepath.Join(dir, "orchard.db")}
	db, err := store.Open(context.Background(), cfg.storeOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	writer, _ := db.SQLitePools()
	var ok string
	if err := writer.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	sys := viewer.SystemContext(context.Background())
	for _, gid := range acked {
		id, _ := relay.Decode(gid)
		tok, err := db.Client.ServerToken.Get(sys, id)
		if err != nil || tok.State != servertoken.StateACTIVE {
			t.Errorf("acknowledged confirm of %s lost: %v", gid, err)
		}
	}
}

func TestCrashDuringConfirms(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	t.Run("SIGKILL", func(t *testing.T) {
		acked, dir, _, internal := burst(t, syscall.SIGKILL, 60)
		if len(acked) == 0 {
			t.Fatal("no confirm was acknowledged before the kill")
		}
		if internal > 0 {
			t.Fatalf("%d confirms failed internally", internal)
		}
		checkDatabase(t, dir, acked)
		t.Logf("%d acknowledged confirms survived SIGKILL", len(acked))
	})
	t.Run("SIGTERM", func(t *testing.T) {
		acked, dir, exitErr, internal := burst(t, syscall.SIGTERM, 60)
		if exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", exitErr)
		}
		if internal > 0 {
			t.Fatalf("%d confirms failed internally during shutdown", internal)
		}
		checkDatabase(t, dir, acked)
		t.Logf("%d confirms acknowledged; clean exit", len(acked))
	})
}
