package appsandbooks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/modules/fault"
)

// A caller's budget ends the retries early with the right code; without one
// (a background sync) the client's own, longer budget applies.
func TestRetryBudgetFromContext(t *testing.T) {
	fake, token, _ := setup(t)
	c := newClient(t, fake, `,"retryBudget":"1500ms","minBackoff":"20ms","maxBackoff":"100ms"`)
	failAlways := func(f appletest.Failure) {
		fake.ClearFailures()
		for range 500 {
			fake.Fail(f)
		}
	}

	t.Run("background keeps the long budget", func(t *testing.T) {
		failAlways(appletest.Failure{Status: 500})
		start := time.Now()
		_, err := c.ClientConfig(t.Context(), token)
		if took := time.Since(start); fault.CodeOf(err) != fault.AppleUnavailable || took < time.Second {
			t.Fatalf("gave up after %v with %v; want APPLE_UNAVAILABLE after about 1.5s", took, err)
		}
	})
	t.Run("interactive 500s", func(t *testing.T) {
		failAlways(appletest.Failure{Status: 500})
		start := time.Now()
		_, err := c.ClientConfig(apple.WithBudget(t.Context(), 300*time.Millisecond), token)
		if took := time.Since(start); fault.CodeOf(err) != fault.AppleUnavailable || took > 400*time.Millisecond {
			t.Fatalf("gave up after %v with %v; want APPLE_UNAVAILABLE within the 300ms budget", took, err)
		}
	})
	t.Run("Retry-After beyond the budget", func(t *testing.T) {
		failAlways(appletest.Failure{Status: 429, ErrorNumber: 9646, RetryAfter: "120"})
		start := time.Now()
		_, err := c.ClientConfig(apple.WithBudget(t.Context(), time.Second), token)
		if took := time.Since(start); fault.CodeOf(err) != fault.AppleRateLimited || took > 300*time.Millisecond {
			t.Fatalf("gave up after %v with %v; want APPLE_RATE_LIMITED at once", took, err)
		}
		if msg := fault.MessageOf(err); !strings.Contains(msg, "2 minutes") {
			t.Fatalf("message %q does not say how long Apple asks to wait", msg)
		}
	})
	t.Run("one slow attempt is cut by the budget", func(t *testing.T) {
		fake.ClearFailures()
		fake.Latency = 3 * time.Second // the client's attempt timeout is 2s; the last use of fake
		start := time.Now()
		_, err := c.ClientConfig(apple.WithBudget(t.Context(), 400*time.Millisecond), token)
		if took := time.Since(start); fault.CodeOf(err) != fault.AppleUnavailable || took > 700*time.Millisecond {
			t.Fatalf("gave up after %v with %v; want APPLE_UNAVAILABLE within the 400ms budget", took, err)
		}
	})
	t.Run("a budget never lengthens an earlier one", func(t *testing.T) {
		ctx := apple.WithBudget(context.Background(), time.Second)
		first, _ := apple.BudgetDeadline(ctx)
		later, _ := apple.BudgetDeadline(apple.WithBudget(ctx, time.Hour))
		if !later.Equal(first) {
			t.Fatalf("a second, longer budget moved the deadline from %v to %v", first, later)
		}
	})
}
