package apple

import (
	"context"
	"time"
)

type budgetKey struct{}

// WithBudget limits the Apple calls made under the returned context to d
// from now, retries included, when that is sooner than a limit ctx already
// carries. A person waiting in the wizard gets an answer within d; a
// background sync, which sets none, keeps the client's own retry budget.
//
// Unlike a context deadline, the budget does not cancel the work around
// the calls: the client gives up in time and says why (APPLE_UNAVAILABLE or
// APPLE_RATE_LIMITED), and the caller can still record the outcome.
func WithBudget(ctx context.Context, d time.Duration) context.Context {
	deadline := time.Now().Add(d)
	if prev, ok := BudgetDeadline(ctx); ok && prev.Before(deadline) {
		return ctx
	}
	return context.WithValue(ctx, budgetKey{}, deadline)
}

// BudgetDeadline is the time by which Apple calls under ctx must be done,
// if WithBudget set one.
func BudgetDeadline(ctx context.Context) (time.Time, bool) {
	d, ok := ctx.Value(budgetKey{}).(time.Time)
	return d, ok
}
