package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
)

// metrics keeps Orchard's counters and writes them in Prometheus's text
// format. It is small on purpose: a handful of series, no dependency.
type metrics struct {
	log *slog.Logger

	mu       sync.Mutex
	requests map[[3]string]*stat // method, route, status
	ops      map[[3]string]*stat // operation type, name, outcome
}

type stat struct {
	count int64
	sum   float64
}

// maxOperationNames bounds the distinct operation names kept; clients choose
// them, so the rest are counted as "other".
const maxOperationNames = 200

func newMetrics(log *slog.Logger) *metrics {
	return &metrics{log: log, requests: map[[3]string]*stat{}, ops: map[[3]string]*stat{}}
}

func observe(m map[[3]string]*stat, k [3]string, d time.Duration) {
	s := m[k]
	if s == nil {
		s = &stat{}
		m[k] = s
	}
	s.count++
	s.sum += d.Seconds()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the websocket upgrade reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func route(path string) string {
	switch {
	case path == "/graphql", path == "/healthz", path == "/readyz", path == "/metrics", path == "/", path == "/playground":
		return path
	case strings.HasPrefix(path, "/playground/"):
		return "/playground/"
	case strings.HasPrefix(path, "/console/"):
		return "/console/"
	}
	return "other"
}

// instrument counts and times every request and logs it (never its body).
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		d := time.Since(start)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rt := route(r.URL.Path)
		m.mu.Lock()
		observe(m.requests, [3]string{r.Method, rt, strconv.Itoa(sw.status)}, d)
		m.mu.Unlock()
		if rt == "/graphql" || sw.status >= 400 {
			attrs := []any{"method", r.Method, "path", rt, "status", sw.status, "duration_ms", d.Milliseconds()}
			if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
				info.mu.Lock()
				attrs = append(attrs, "request_id", info.id)
				if info.key != "" {
					attrs = append(attrs, "api_key", info.key)
				}
				info.mu.Unlock()
			}
			m.log.Info("http request", attrs...)
		}
	})
}

// graphqlResponses counts and times GraphQL operations by name.
func (m *metrics) graphqlResponses(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	start := time.Now()
	resp := next(ctx)
	if !graphql.HasOperationContext(ctx) {
		return resp
	}
	op := graphql.GetOperationContext(ctx)
	kind, name := "unknown", op.OperationName
	if op.Operation != nil {
		kind = string(op.Operation.Operation)
		if name == "" {
			name = op.Operation.Name
		}
	}
	if name == "" {
		name = "anonymous"
	}
	outcome := "ok"
	if resp != nil && len(resp.Errors) > 0 {
		outcome = "error"
	}
	m.mu.Lock()
	k := [3]string{kind, name, outcome}
	if _, known := m.ops[k]; !known && len(m.ops) >= maxOperationNames {
		k[1] = "other"
	}
	observe(m.ops, k, time.Since(start))
	m.mu.Unlock()
	return resp
}

// handler writes the metrics, including the expiry of every ACTIVE token
// read from the database at scrape time.
func (m *metrics) handler(client *ent.Client, svc *domain.Service, hub *domain.Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.writeCounters(w)
		ctx, cancel := context.WithTimeout(viewer.SystemContext(r.Context()), 5*time.Second)
		defer cancel()
		if err := writeTokenMetrics(ctx, w, client, svc); err != nil {
			m.log.Error("token metrics", "err", err)
		}
		fmt.Fprintf(w, "# HELP orchard_expiry_subscribers Open tokenExpiryWarnings subscriptions on this instance.\n# TYPE orchard_expiry_subscribers gauge\norchard_expiry_subscribers %d\n", hub.Subscribers())
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "# HELP orchard_go_goroutines Goroutines of this process.\n# TYPE orchard_go_goroutines gauge\norchard_go_goroutines %d\n", runtime.NumGoroutine())
		fmt.Fprintf(w, "# HELP orchard_go_heap_inuse_bytes Go heap in use.\n# TYPE orchard_go_heap_inuse_bytes gauge\norchard_go_heap_inuse_bytes %d\n", ms.HeapInuse)
		fmt.Fprintf(w, "# HELP orchard_go_stack_inuse_bytes Goroutine stacks in use.\n# TYPE orchard_go_stack_inuse_bytes gauge\norchard_go_stack_inuse_bytes %d\n", ms.StackInuse)
	})
}

func (m *metrics) writeCounters(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	writeStats(w, "orchard_http_requests", "HTTP requests by method, route and status.", []string{"method", "route", "status"}, m.requests)
	writeStats(w, "orchard_graphql_operations", "GraphQL operations by type, name and outcome.", []string{"type", "operation", "outcome"}, m.ops)
}

func writeStats(w io.Writer, name, help string, labels []string, m map[[3]string]*stat) {
	keys := make([][3]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [3]string) int {
		return strings.Compare(strings.Join(a[:], "\x00"), strings.Join(b[:], "\x00"))
	})
	fmt.Fprintf(w, "# HELP %s_total %s\n# TYPE %s_total counter\n", name, help, name)
	for _, k := range keys {
		fmt.Fprintf(w, "%s_total{%s} %d\n", name, labelSet(labels, k[:]), m[k].count)
	}
	fmt.Fprintf(w, "# HELP %s_duration_seconds Time spent on %s\n# TYPE %s_duration_seconds summary\n", name, strings.ToLower(help[:1])+help[1:], name)
	for _, k := range keys {
		fmt.Fprintf(w, "%s_duration_seconds_sum{%s} %g\n", name, labelSet(labels, k[:]), m[k].sum)
		fmt.Fprintf(w, "%s_duration_seconds_count{%s} %d\n", name, labelSet(labels, k[:]), m[k].count)
	}
}

func labelSet(names, values []string) string {
	parts := make([]string, len(names))
	for i := range names {
		parts[i] = names[i] + "=" + strconv.Quote(values[i])
	}
	return strings.Join(parts, ",")
}

func writeTokenMetrics(ctx context.Context, w io.Writer, client *ent.Client, svc *domain.Service) error {
	toks, err := client.ServerToken.Query().
		Select(servertoken.FieldState, servertoken.FieldExpiresAt, servertoken.FieldLocationName, servertoken.FieldCustomerID).
		WithCustomer(func(q *ent.CustomerQuery) { q.Select("name") }).
		All(ctx)
	if err != nil {
		return err
	}
	now := svc.Now()
	counts := map[[2]string]int{}
	fmt.Fprintf(w, "# HELP orchard_server_token_expiry_timestamp_seconds When each ACTIVE server token expires (Unix time).\n# TYPE orchard_server_token_expiry_timestamp_seconds gauge\n")
	for _, t := range toks {
		status := domain.StatusOf(t.ExpiresAt, now, svc.WarnDays())
		counts[[2]string{string(t.State), string(status)}]++
		if t.State != servertoken.StateACTIVE {
			continue
		}
		cust := ""
		if t.Edges.Customer != nil {
			cust = t.Edges.Customer.Name
		}
		fmt.Fprintf(w, "orchard_server_token_expiry_timestamp_seconds{%s} %d\n", labelSet([]string{"customer", "location"}, []string{cust, t.LocationName}), t.ExpiresAt.Unix())
	}
	fmt.Fprintf(w, "# HELP orchard_server_tokens Server tokens by state and expiry status.\n# TYPE orchard_server_tokens gauge\n")
	keys := make([][2]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) })
	for _, k := range keys {
		fmt.Fprintf(w, "orchard_server_tokens{%s} %d\n", labelSet([]string{"state", "expiry_status"}, k[:]), counts[k])
	}
	return nil
}
