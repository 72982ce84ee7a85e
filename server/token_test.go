package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// `token inspect` counts whole days as the server's daysUntilExpiry does:
// floored, so a token expired a day and a half ago is -2, not -1.
func TestTokenInspectDaysMatchServer(t *testing.T) {
	for _, c := range []struct {
		name string
		in   time.Duration
		want int
	}{
		{"expired 36h ago", -36 * time.Hour, -2},
		{"expired 1h ago", -time.Hour, -1},
		{"expires in 36h", 36 * time.Hour, 1},
		{"expires in 10 days and 1h", 241 * time.Hour, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.vpptoken")
			exp := time.Now().Add(c.in).Truncate(time.Second)
			if err := os.WriteFile(path, appletest.TokenFile("Contoso Ltd", exp, "secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if err := run(t.Context(), []string{"token", "inspect", path}, func(string) string { return "" }, &out, &errOut); err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			var got struct {
				Days    int  `json:"daysUntilExpiry"`
				Expired bool `json:"expired"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("%q: %v", out.String(), err)
			}
			if got.Days != c.want || got.Expired != (c.in < 0) {
				t.Fatalf("daysUntilExpiry %d, expired %v; want %d, %v", got.Days, got.Expired, c.want, c.in < 0)
			}
		})
	}
}
