// Package pubsub defines the capability that carries small messages between
// the parts of Orchard, and between instances when there are several.
//
// Implementations live in subpackages and register as "pubsub.<name>":
// "pubsub.memory" within one process.
package pubsub

import (
	"context"

	"github.com/orchard-msp/orchard/modules"
)

// Namespace is the module namespace of brokers.
const Namespace = "pubsub"

// Broker delivers every message published on a topic to every subscriber of
// that topic. Payloads are small (a few hundred bytes); a listener loads the
// rest from the database.
type Broker interface {
	modules.Module
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe delivers the topic's messages on the returned channel until
	// ctx ends, then closes it. A subscriber that does not keep up loses
	// messages rather than slowing the publisher.
	Subscribe(ctx context.Context, topic string) (<-chan []byte, error)
}
