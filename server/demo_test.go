package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Every sample file of `make demo` behaves as the README's table says, with
// the Apple simulator.
func TestDemoTokens(t *testing.T) {
	dir := t.TempDir()
	if err := writeDemoTokens(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, map[string]string{"ORCHARD_APPLE": "simulator"})
	key := s.key()
	c := s.createCustomer(key, "Demo")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, want := range map[string]string{
		"revoked.vpptoken":           "TOKEN_REVOKED",
		"rejected-by-apple.vpptoken": "TOKEN_INVALID",
		"rate-limited.vpptoken":      "APPLE_RATE_LIMITED",
		"expired.vpptoken":           "TOKEN_EXPIRED",
		"garbage.vpptoken":           "INVALID_TOKEN_FILE",
		"ade_token_smime.p7m":        "WRONG_TOKEN_KIND",
	} {
		if r := s.upload(key, c, read(name)); r.code() != want {
			t.Errorf("%s: got %s, want %s", name, r.Raw, want)
		}
	}
	var up uploadResult
	s.upload(key, c, read("other-mdm.vpptoken")).decode(t, &up)
	if up.UploadServerToken.Token.State != "CONFLICT" || up.UploadServerToken.Conflict.Name != "Jamf Pro" {
		t.Errorf("other-mdm: %+v", up)
	}
	s.upload(key, c, read("valid.vpptoken")).decode(t, &up)
	if r := s.action(key, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		t.Fatal(r.Raw)
	}
	validID := up.UploadServerToken.Token.ID
	s.upload(key, c, read("renewal.vpptoken")).decode(t, &up)
	if up.UploadServerToken.Renews == nil || up.UploadServerToken.Renews.ID != validID {
		t.Errorf("renewal does not name the valid token: %+v", up)
	}
	s.upload(key, c, read("many-apps.vpptoken")).decode(t, &up)
	manyID := up.UploadServerToken.Token.ID
	s.action(key, "confirmServerToken", manyID)
	waitFor(t, func() bool {
		var out struct{ Node struct{ AppCount int } }
		s.gql(key, `query($id: ID!) { node(id: $id) { ... on ServerToken { appCount } } }`, map[string]any{"id": manyID}).decode(t, &out)
		return out.Node.AppCount == 1200
	})
	s.upload(key, c, read("expiring-in-5-days.vpptoken")).decode(t, &up)
	var conf struct{ ConfirmServerToken struct{ Token tokenView } }
	s.gql(key, `mutation($t: ID!) { confirmServerToken(input: {tokenID: $t}) { token { id expiryStatus daysUntilExpiry } } }`, map[string]any{"t": up.UploadServerToken.Token.ID}).decode(t, &conf)
	if got := conf.ConfirmServerToken.Token; got.ExpiryStatus != "EXPIRING_SOON" || got.DaysUntilExpiry != 5 {
		t.Errorf("expiring-in-5-days: %+v", got)
	}
}
