// Package notify defines the capability that pushes events out of Orchard,
// such as expiry warnings to a webhook.
//
// Implementations live in subpackages and register as "notify.<name>".
package notify

import (
	"context"

	"github.com/orchard-msp/orchard/modules"
)

// Namespace is the module namespace of notifiers.
const Namespace = "notify"

// Delivery is one event to push. ID is stable across retries, so a receiver
// can drop duplicates.
type Delivery struct {
	ID      string
	Event   string
	Payload []byte // JSON
}

// Notifier pushes deliveries. An error means "try again later".
type Notifier interface {
	modules.Module
	Notify(ctx context.Context, d Delivery) error
}
