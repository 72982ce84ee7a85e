package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules"
	"github.com/orchard-msp/orchard/modules/pubsub"
	_ "github.com/orchard-msp/orchard/modules/pubsub/memory"
)

func TestBroker(t *testing.T) {
	b, err := modules.Load[pubsub.Broker](context.Background(), "pubsub.memory", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fast, _ := b.Subscribe(ctx, "t")
	slow, _ := b.Subscribe(ctx, "t")
	other, _ := b.Subscribe(ctx, "other")

	// The slow subscriber never reads; publishing must not wait for it.
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			_ = b.Publish(ctx, "t", []byte{byte(i)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a subscriber that does not read blocked the publisher")
	}
	if got := <-fast; len(got) != 1 || got[0] != 0 {
		t.Fatalf("first message = %v", got)
	}
	select {
	case m := <-other:
		t.Fatalf("another topic received %v", m)
	default:
	}
	_ = slow
	cancel()
	deadline := time.After(2 * time.Second)
	for range other {
		select {
		case <-deadline:
			t.Fatal("channel not closed after the context ended")
		default:
		}
	}
}
