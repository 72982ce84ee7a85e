// Package standard lists the modules compiled into the default orchard
// binary. Adding a module to the binary is one import line here.
package standard

import (
	// Apple clients: the real API and the offline simulator.
	_ "github.com/orchard-msp/orchard/modules/apple/appsandbooks"
	_ "github.com/orchard-msp/orchard/modules/apple/simulator"
	// Webhook notifications.
	_ "github.com/orchard-msp/orchard/modules/notify/webhook"
	// Brokers: within one process, and across instances over PostgreSQL.
	_ "github.com/orchard-msp/orchard/modules/pubsub/memory"
	_ "github.com/orchard-msp/orchard/modules/pubsub/postgres"
	// Sealing of server tokens at rest.
	_ "github.com/orchard-msp/orchard/modules/secrets/aesgcm"
	// The .vpptoken parser.
	_ "github.com/orchard-msp/orchard/modules/tokenfile/vpptoken"
)
