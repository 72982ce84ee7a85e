// Package memory registers "pubsub.memory", a broker within one process. It
// takes no settings. Use it with SQLite, where there is one instance.
package memory

import (
	"context"
	"sync"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/pubsub"
)

func init() { modules.Register(&Broker{}) }

// bufferSize is how many messages a subscriber may fall behind before it
// starts losing them.
const bufferSize = 256

// Broker is an in-process pubsub.Broker.
type Broker struct {
	mu   sync.Mutex
	subs map[string]map[chan []byte]struct{}
}

// Interface guard.
var _ pubsub.Broker = (*Broker)(nil)

// ModuleInfo implements modules.Module.
func (*Broker) ModuleInfo() modules.Info {
	return modules.Info{ID: "pubsub.memory", New: func() modules.Module { return new(Broker) }}
}

// Publish implements pubsub.Broker.
func (b *Broker) Publish(_ context.Context, topic string, payload []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs[topic] {
		select {
		case ch <- payload:
		default: // a slow subscriber loses this message; the others do not wait
		}
	}
	return nil
}

// Subscribe implements pubsub.Broker.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan []byte, error) {
	ch := make(chan []byte, bufferSize)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[string]map[chan []byte]struct{}{}
	}
	if b.subs[topic] == nil {
		b.subs[topic] = map[chan []byte]struct{}{}
	}
	b.subs[topic][ch] = struct{}{}
	b.mu.Unlock()
	context.AfterFunc(ctx, func() {
		b.mu.Lock()
		delete(b.subs[topic], ch)
		close(ch)
		b.mu.Unlock()
	})
	return ch, nil
}
