package httpapi

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
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
// No operation costs more than a full bucket: a price above it could never
// be paid, and the client would be told to retry forever.
func (l *limiter) take(key string, cost float64) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	cost = min(cost, l.burst)
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

// capacity is the largest whole cost one request may have; unlimited when
// the limiter is off.
func (l *limiter) capacity() int {
	if l == nil || l.rate <= 0 {
		return math.MaxInt
	}
	return int(l.burst)
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
	// trusted are the proxies whose X-Forwarded-For names the client.
	trusted []netip.Prefix
}

// sensitiveFields are the mutations that call Apple or take a location.
var sensitiveFields = map[string]bool{
	"uploadServerToken": true, "confirmServerToken": true, "claimServerToken": true,
	"assignLicences": true, "unassignLicences": true, "revokeLicences": true,
}

// complexityPerUnit: an operation costs one unit plus one per this much
// complexity, so a page of 50 tokens with their apps costs a few units.
const complexityPerUnit = 1000

// newRateLimits builds the limits for perSecond requests per key (0: none);
// requests from the trusted proxies are counted against the client their
// X-Forwarded-For names.
func newRateLimits(perSecond float64, trusted ...netip.Prefix) *rateLimits {
	if perSecond <= 0 {
		return &rateLimits{trusted: trusted}
	}
	return &rateLimits{
		// Many keys may share an address (a frontend's server), so the
		// address gets five keys' worth.
		perAddress: newLimiter(5*perSecond, 25*perSecond),
		perKey:     newLimiter(perSecond, 5*perSecond),
		sensitive:  newLimiter(perSecond/10, max(perSecond/2, 2)),
		trusted:    trusted,
	}
}

// clientAddr is the address a request is counted against: its peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For entry
// that is not itself a trusted proxy. Entries left of that one are the
// client's own claims, which anyone can forge.
func (rl *rateLimits) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || rl == nil || !rl.isTrusted(peer) {
		return host
	}
	hops := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop, ok := parseHop(parts[j])
			if !ok {
				// A trusted proxy wrote something unreadable: count the
				// request against the last hop known for sure.
				return client.String()
			}
			client = hop
			if !rl.isTrusted(hop) {
				return hop.String()
			}
		}
	}
	return client.String()
}

func (rl *rateLimits) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range rl.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one X-Forwarded-For entry: an address, with or without a
// port (some proxies add one).
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
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
		if ok, wait := rl.perAddress.take(rl.clientAddr(r), 1); !ok {
			tooMany(w, wait)
			return
		}
		st := &rateState{}
		rw := &rateWriter{ResponseWriter: w, st: st}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), rateStateKey{}, st)))
	})
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", retryAfter(wait))
	writeGraphQLError(w, http.StatusTooManyRequests, fault.New(fault.RateLimited, "%s", rateLimitedMessage))
}

// retryAfter is the wait in whole seconds, rounded up: a client that waits
// that long finds its bucket refilled enough.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(wait, time.Second).Seconds())))
}

// reasonOverBurst marks the refusal of a request that no wait would let
// through, so clients can tell it from RATE_LIMITED.
const reasonOverBurst = "RATE_LIMIT_BURST_EXCEEDED"

const rateLimitedMessage = "Too many requests from this API key or address. Wait for the time in Retry-After, then try again."

type rateWriter struct {
	http.ResponseWriter
	st *rateState
	// wroteHeader: gqlgen writes the status itself and then the body, so
	// Write must not send a second one (net/http logs "superfluous
	// response.WriteHeader" for it).
	wroteHeader bool
}

func (w *rateWriter) WriteHeader(code int) {
	if w.wroteHeader {
		w.ResponseWriter.WriteHeader(code) // informational (1xx) or a caller's bug; net/http judges
		return
	}
	if code >= 200 {
		w.wroteHeader = true
	}
	w.st.mu.Lock()
	wait := w.st.retryAfter
	w.st.mu.Unlock()
	if wait > 0 && code == http.StatusOK {
		w.Header().Set("Retry-After", retryAfter(wait))
		code = http.StatusTooManyRequests
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rateWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK) // becomes 429 when the operation was refused
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
	n := 0
	if op.Operation.Operation == ast.Mutation {
		for _, f := range graphql.CollectFields(op, op.Operation.SelectionSet, []string{"Mutation"}) {
			if sensitiveFields[f.Name] {
				n++
			}
		}
	}
	// More Apple-bound mutations than a full bucket holds would be refused
	// however long the client waited: say so once, as a request to fix.
	if most := rl.sensitive.capacity(); n > most {
		return &gqlerror.Error{
			Message:    fmt.Sprintf("This request holds %d uploads, confirms or claims; this server's rate limit takes at most %d in one request. Send them in smaller batches.", n, most),
			Extensions: map[string]any{"code": string(fault.BadUserInput), "reason": reasonOverBurst},
		}
	}
	cost := 1.0
	if stats := extension.GetComplexityStats(ctx); stats != nil {
		cost += float64(stats.Complexity / complexityPerUnit)
	}
	ok, wait := rl.perKey.take(key, cost)
	if ok && n > 0 {
		ok, wait = rl.sensitive.take(key, float64(n))
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
