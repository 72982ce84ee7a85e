//go:build !unix

package migrations

import (
	"context"
	"database/sql"
)

// lockSQLite relies on SQLite's own locking where flock does not exist:
// processes that start together may then race on the first file, and the
// loser fails and can be started again.
func lockSQLite(context.Context, *sql.DB) (func(), error) { return func() {}, nil }
