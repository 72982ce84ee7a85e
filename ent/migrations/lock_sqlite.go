//go:build unix

package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockSQLite takes an exclusive lock on DATABASE-migrate.lock, beside the
// database file. SQLite serialises single writes, but not the sequence of
// reading the version, then applying a file: two processes could both find
// a file pending. The kernel drops the lock if the process dies.
func lockSQLite(ctx context.Context, db *sql.DB) (func(), error) {
	var seq int
	var name, path string
	if err := db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &path); err != nil {
		return nil, fmt.Errorf("finding the database file: %w", err)
	}
	if path == "" {
		return func() {}, nil // in memory: private to this process
	}
	f, err := os.OpenFile(path+"-migrate.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the migration lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("taking the migration lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the migration lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
