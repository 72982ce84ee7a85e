package ent

import (
	"database/sql"

	entsql "entgo.io/ent/dialect/sql"
	"testing"
)

// Typed holders serve every row; a holder an entity may keep as it is
// (sql.UnknownType, stored in selectValues) is new for each row.
func TestReuseScanners(t *testing.T) {
	calls := 0
	scan := reuseScanners(func(columns []string) ([]any, error) {
		calls++
		return []any{new(sql.NullInt64), new(sql.NullString), new([]byte), new(entsql.UnknownType)}, nil
	})
	cols := []string{"id", "name", "data", "extra"}
	first, _ := scan(cols)
	*first[1].(*sql.NullString) = sql.NullString{String: "row 1", Valid: true}
	keep := first[3]
	second, _ := scan(cols)
	if calls != 1 {
		t.Fatalf("scanValues called %d times for two rows", calls)
	}
	if first[0] != second[0] || first[1] != second[1] || first[2] != second[2] {
		t.Error("the typed holders were not reused")
	}
	if second[3] == keep {
		t.Error("the UnknownType holder of the first row was handed to the second")
	}
	if ns := *second[1].(*sql.NullString); ns.Valid || ns.String != "" {
		t.Errorf("the reused NullString still holds %+v", ns)
	}
	if _, _ = scan([]string{"id"}); calls != 2 {
		t.Error("other columns must get their own holders")
	}
	if reuseScanners(nil) != nil {
		t.Error("a spec without ScanValues must keep none")
	}
}
