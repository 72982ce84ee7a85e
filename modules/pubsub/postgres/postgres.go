// Package postgres registers "pubsub.postgres", a broker over PostgreSQL's
// LISTEN and NOTIFY, so a warning raised on one Orchard instance reaches
// the subscribers of every instance that shares the database.
//
// Settings (JSON): "url", the PostgreSQL connection URL (the same database
// as ORCHARD_DATABASE_URL). It logs through the logger the host passes with
// modules.WithLogger.
//
// Channels are named after the topic and the connection's schema, so
// several Orchards (or test runs) on one server do not hear each other.
// Each subscription holds a dedicated connection that reconnects by itself;
// after a reconnect it delivers an empty message, which tells the listener
// that messages may have been missed and it should catch up from the
// database.
package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/pubsub"
)

func init() { modules.Register(&Broker{}) }

// maxPayload stays under PostgreSQL's 8000-byte NOTIFY limit.
const maxPayload = 7900

// Broker is a pubsub.Broker over LISTEN/NOTIFY.
type Broker struct {
	URL string `json:"url"`

	schema string
	mu     sync.Mutex
	pub    *pgx.Conn
	log    *slog.Logger
}

// Interface guards.
var (
	_ pubsub.Broker       = (*Broker)(nil)
	_ modules.Provisioner = (*Broker)(nil)
)

// ModuleInfo implements modules.Module.
func (*Broker) ModuleInfo() modules.Info {
	return modules.Info{ID: "pubsub.postgres", New: func() modules.Module { return new(Broker) }}
}

// Provision connects once to learn the schema and check the URL.
func (b *Broker) Provision(ctx context.Context) error {
	if b.URL == "" {
		return errors.New("url is required")
	}
	b.log = modules.Logger(ctx).With("module", "pubsub.postgres")
	conn, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&b.schema); err != nil {
		return err
	}
	return nil
}

// channel names a topic's channel.
func (b *Broker) channel(topic string) string { return Channel(b.schema, topic) }

// Channel returns the NOTIFY channel of a topic in a schema: a short,
// always-valid identifier.
func Channel(schema, topic string) string {
	sum := sha256.Sum256([]byte(schema + "\x00" + topic))
	return "orchard_" + hex.EncodeToString(sum[:8])
}

// Publish implements pubsub.Broker.
func (b *Broker) Publish(ctx context.Context, topic string, payload []byte) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("payload of %d bytes is over NOTIFY's limit", len(payload))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		if b.pub == nil || b.pub.IsClosed() {
			conn, err := pgx.Connect(ctx, b.URL)
			if err != nil {
				return fmt.Errorf("connecting to PostgreSQL: %w", err)
			}
			b.pub = conn
		}
		_, err := b.pub.Exec(ctx, "SELECT pg_notify($1, $2)", b.channel(topic), string(payload))
		if err == nil {
			return nil
		}
		b.pub.Close(ctx)
		b.pub = nil
		if attempt == 1 {
			return err
		}
	}
	return nil
}

// reconnectDelay bounds how fast a lost listener tries again.
const reconnectDelay = time.Second

// Subscribe implements pubsub.Broker.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan []byte, error) {
	conn, err := b.listen(ctx, topic)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 256)
	go func() {
		defer close(ch)
		for {
			err := b.receive(ctx, conn, ch)
			conn.Close(context.Background())
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("pubsub listener lost its connection; reconnecting", "err", err)
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(reconnectDelay):
				}
				if conn, err = b.listen(ctx, topic); err == nil {
					break
				}
			}
			// Messages may have passed while disconnected: say so.
			select {
			case ch <- []byte{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (b *Broker) listen(ctx context.Context, topic string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel(topic)}.Sanitize()); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

func (b *Broker) receive(ctx context.Context, conn *pgx.Conn, ch chan<- []byte) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		select {
		case ch <- []byte(n.Payload):
		default: // a listener that does not keep up loses messages, never blocks
		}
	}
}
