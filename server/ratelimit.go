package main

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/modules/fault"
)

// limiter is a set of token buckets, one per key (an API key or a client
// address): each holds up to burst tokens and refills at rate per second.
type limiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	takes   int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate, burst float64) *limiter {
	return &limiter{rate: rate, burst: burst, now: time.Now, buckets: map[string]*bucket{}}
}

// take spends cost tokens of key's bucket, or says how long until it could.
func (l *limiter) take(key string, cost float64) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if l.takes++; l.takes%10000 == 0 {
		l.sweep(now)
	}
	if b.tokens >= cost {
		b.tokens -= cost
		return true, 0
	}
	return false, time.Duration((cost - b.tokens) / l.rate * float64(time.Second))
}

// sweep forgets buckets that have been full for a while.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst && now.Sub(b.last) > 10*time.Minute {
			delete(l.buckets, k)
		}
	}
}

// rateLimits holds Orchard's limits. Requests are limited per client address
// before anything else runs, then GraphQL operations per API key, priced by
// their complexity, with a tighter limit on the mutations that call Apple
// and write tokens (alias batching counts each field).
type rateLimits struct {
	perAddress *limiter
	perKey     *limiter
	sensitive  *limiter
}

// sensitiveFields are the mutations that call Apple or take a location.
var sensitiveFields = map[string]bool{"uploadServerToken": true, "confirmServerToken": true, "claimServerToken": true}

// complexityPerUnit: an operation costs one unit plus one per this much
// complexity, so a page of 50 tokens with their apps costs a few units.
const complexityPerUnit = 1000

func newRateLimits(perSecond float64) *rateLimits {
	if perSecond <= 0 {
		return &rateLimits{}
	}
	return &rateLimits{
		// Many keys may share an address (a frontend's server), so the
		// address gets five keys' worth.
		perAddress: newLimiter(5*perSecond, 25*perSecond),
		perKey:     newLimiter(perSecond, 5*perSecond),
		sensitive:  newLimiter(perSecond/10, max(perSecond/2, 2)),
	}
}

type rateStateKey struct{}

// rateState carries a GraphQL-level refusal back to the HTTP layer, which
// answers it with 429 and Retry-After.
type rateState struct {
	mu         sync.Mutex
	retryAfter time.Duration
}

// middleware limits requests per client address and turns refusals made
// inside GraphQL into HTTP 429.
func (rl *rateLimits) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			addr = r.RemoteAddr
		}
		if ok, wait := rl.perAddress.take(addr, 1); !ok {
			tooMany(w, wait)
			return
		}
		st := &rateState{}
		rw := &rateWriter{ResponseWriter: w, st: st}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), rateStateKey{}, st)))
	})
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait, time.Second).Seconds()))))
	writeGraphQLError(w, http.StatusTooManyRequests, fault.New(fault.RateLimited, "%s", rateLimitedMessage))
}

const rateLimitedMessage = "Too many requests from this API key or address. Wait for the time in Retry-After, then try again."

type rateWriter struct {
	http.ResponseWriter
	st *rateState
}

func (w *rateWriter) WriteHeader(code int) {
	w.st.mu.Lock()
	wait := w.st.retryAfter
	w.st.mu.Unlock()
	if wait > 0 && code == http.StatusOK {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait, time.Second).Seconds()))))
		code = http.StatusTooManyRequests
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rateWriter) Write(b []byte) (int, error) {
	w.st.mu.Lock()
	limited := w.st.retryAfter > 0
	w.st.mu.Unlock()
	if limited {
		w.WriteHeader(http.StatusOK) // becomes 429; a no-op if already written
	}
	return w.ResponseWriter.Write(b)
}

func (w *rateWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ExtensionName implements graphql.HandlerExtension.
func (*rateLimits) ExtensionName() string { return "RateLimits" }

// Validate implements graphql.HandlerExtension.
func (*rateLimits) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationContext prices the operation once it is validated and its
// complexity known (this extension is added after the complexity limit).
func (rl *rateLimits) MutateOperationContext(ctx context.Context, op *graphql.OperationContext) *gqlerror.Error {
	v := viewer.FromContext(ctx)
	if v == nil || op.Operation == nil {
		return nil
	}
	key := "key:" + strconv.Itoa(v.KeyID)
	cost := 1.0
	if stats := extension.GetComplexityStats(ctx); stats != nil {
		cost += float64(stats.Complexity / complexityPerUnit)
	}
	ok, wait := rl.perKey.take(key, cost)
	if ok && op.Operation.Operation == ast.Mutation {
		n := 0
		for _, f := range graphql.CollectFields(op, op.Operation.SelectionSet, []string{"Mutation"}) {
			if sensitiveFields[f.Name] {
				n++
			}
		}
		if n > 0 {
			ok, wait = rl.sensitive.take(key, float64(n))
		}
	}
	if ok {
		return nil
	}
	if st, _ := ctx.Value(rateStateKey{}).(*rateState); st != nil {
		st.mu.Lock()
		st.retryAfter = wait
		st.mu.Unlock()
	}
	return &gqlerror.Error{Message: rateLimitedMessage, Extensions: map[string]any{"code": string(fault.RateLimited)}}
}
