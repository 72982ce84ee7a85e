// Package servertest holds what the tests of several server packages
// share: modules wired to an Apple fake, as serve would load them.
package servertest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/modules/pubsub"
	"github.com/orchard-msp/orchard/modules/secrets"
	"github.com/orchard-msp/orchard/modules/secrets/aesgcm"
	_ "github.com/orchard-msp/orchard/modules/standard"
	"github.com/orchard-msp/orchard/modules/tokenfile"
)

// Modules loads the default modules with the real Apps and Books client
// pointed at fake, a fresh encryption key and the in-memory broker.
func Modules(t testing.TB, fake *appletest.Server) domain.Modules {
	t.Helper()
	load := func(id modules.ID, cfg string) modules.Module {
		m, err := modules.Load[modules.Module](context.Background(), id, json.RawMessage(cfg))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return domain.Modules{
		Parser: load("tokenfile.vpptoken", "").(tokenfile.Parser),
		Apple:  load("apple.appsandbooks", `{"baseURL":"`+fake.BaseURL()+`","minBackoff":"5ms"}`).(apple.Client),
		Sealer: load("secrets.aesgcm", `{"keys":["`+aesgcm.NewKey()+`"]}`).(secrets.Sealer),
		Broker: load("pubsub.memory", "").(pubsub.Broker),
	}
}
