package main

// The benchmark suite: `make bench` runs TestBenchmarkReport with
// ORCHARD_BENCH=docs/benchmarks.md and writes the report there. Every
// figure is measured against its baseline in the same run, because the
// machines here are shared and noisy. Without ORCHARD_BENCH (make test) each
// scenario runs once at a small size, as a smoke test of its correctness.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orchard-msp/orchard/ent"
	"github.com/orchard-msp/orchard/ent/app"
	"github.com/orchard-msp/orchard/ent/servertoken"
	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/modules/apple"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/httpapi"
	"github.com/orchard-msp/orchard/server/internal/servertest"
	"github.com/orchard-msp/orchard/server/store"
)

type benchRow struct {
	ID, Scenario, Figure, Baseline, Ratio, Target string
	Pass                                          bool
	Note                                          string
}

type bench struct {
	t    *testing.T
	full bool
}

// measure runs fn as a Go benchmark in full mode, once otherwise.
func (b *bench) measure(fn func()) testing.BenchmarkResult {
	if !b.full {
		fn()
		return testing.BenchmarkResult{N: 1, T: time.Nanosecond}
	}
	return testing.Benchmark(func(tb *testing.B) {
		tb.ReportAllocs()
		for tb.Loop() {
			fn()
		}
	})
}

// measurePair measures ours against base in full mode: five rounds, each
// running ours and then base for about 300 ms, keeping the round whose
// ratio is the median. This machine is a shared VM whose speed drifts over
// seconds (the same build's P2 baseline measured 8 to 13 ms/op in one
// hour); measured one after the other for a second each, the two sides
// could see different machines. Once otherwise.
func (b *bench) measurePair(ours, base func()) (o, bs testing.BenchmarkResult) {
	if !b.full {
		ours()
		base()
		one := testing.BenchmarkResult{N: 1, T: time.Nanosecond}
		return one, one
	}
	ours()
	base() // warm both up: caches, prepared statements, pools
	type round struct {
		ours, base testing.BenchmarkResult
		ratio      float64
	}
	rounds := make([]round, 5)
	for i := range rounds {
		r := &rounds[i]
		r.ours, r.base = runFor(ours, 300*time.Millisecond), runFor(base, 300*time.Millisecond)
		r.ratio = ns(r.ours) / ns(r.base)
	}
	slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(a.ratio, b.ratio) })
	return rounds[len(rounds)/2].ours, rounds[len(rounds)/2].base
}

// runFor runs fn repeatedly for about d and reports it as a benchmark
// result, allocations included.
func runFor(fn func(), d time.Duration) testing.BenchmarkResult {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	n := 0
	for n == 0 || time.Since(start) < d {
		fn()
		n++
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return testing.BenchmarkResult{N: n, T: elapsed, MemAllocs: after.Mallocs - before.Mallocs, MemBytes: after.TotalAlloc - before.TotalAlloc}
}

func TestBenchmarkReport(t *testing.T) {
	out := os.Getenv("ORCHARD_BENCH")
	b := &bench{t: t, full: out != ""}
	var rows []benchRow
	for _, scenario := range onlyBenches([]func(*bench) []benchRow{
		benchTypename, benchNestedList, benchStatementCounts, benchWriters,
		benchLoopback, benchFanOut, benchHostile, benchSync, benchUploadConfirm, benchExpiryScan,
		benchLicenceAssign, benchNotificationBurst, benchAssignmentSync,
	}) {
		got := scenario(b)
		for _, r := range got {
			t.Logf("%s %s: %s (baseline %s, ratio %s, target %s) pass=%v %s", r.ID, r.Scenario, r.Figure, r.Baseline, r.Ratio, r.Target, r.Pass, r.Note)
		}
		rows = append(rows, got...)
	}
	if b.full {
		if err := os.WriteFile(out, []byte(renderReport(rows)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func renderReport(rows []benchRow) string {
	var w strings.Builder
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&w, "# Orchard benchmarks\n\nWritten by `make bench` (server/bench_test.go, TestBenchmarkReport). Each figure is measured in the same run as its baseline; where a ratio is taken (P1, P2, P5) the two sides are measured in alternating rounds, so that the drift of this shared machine's speed falls on both.\n\n")
	fmt.Fprintf(&w, "- machine: %s, %d cores (GOMAXPROCS %d), %s/%s, %s, host %s\n", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), host)
	fmt.Fprintf(&w, "- date: %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&w, "| id | scenario | figure | baseline | ratio | target | result | note |\n|---|---|---|---|---|---|---|---|\n")
	missed := map[string]bool{}
	for _, r := range rows {
		res := "pass"
		if !r.Pass {
			res = "**miss**"
			missed[r.ID] = true
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.ID, r.Scenario, r.Figure, r.Baseline, r.Ratio, r.Target, res, r.Note)
	}
	fmt.Fprintf(&w, "\nThe console's figures in a real browser (first load, 50 tokens, 100 apps) come from the browser test TestConsolePerformance, not from this run: see [docs/console/README.md](console/README.md#figures).\n")
	if len(missed) > 0 {
		fmt.Fprintf(&w, "\n## Why the misses\n\n")
		for _, id := range []string{"P1", "P2", "P5", "P6", "P8", "I3", "L1", "L2"} {
			if missed[id] {
				fmt.Fprintf(&w, "- **%s**: %s\n", id, missReasons[id])
			}
		}
	}
	return w.String()
}

// missReasons says, for each scenario that can miss, what the profile shows
// and what limits it. They are written once here from the profiles taken
// (go test ./server -run '^$' -bench 'Typename|NestedList|UploadConfirm' -cpuprofile …).
var missReasons = map[string]string{
	"P1": "the baseline decodes the body and writes a constant; gqlgen parses (cached), validates, runs its extension chain and builds a response object: about 93 allocations against 29, nearly all inside gqlgen's executor (memory profile: OperationContext, stats, the extension chain's closures, context values). Orchard's own share is small and was cut where it could be (loaders built only when used, no per-operation map unless fragments appear, no @defer group per object, a POST transport that writes data without re-encoding it, the answer's buffer from a pool: 102 → 93 allocations); what remains is the GraphQL engine's fixed cost, about 13 µs a request, which nothing short of replacing gqlgen's executor removes. Automatic persisted queries were considered and not kept: this request already skips parsing (the query cache), so sending a hash instead of 14 bytes of query saves nothing measurable, and APQ lets any client register documents (docs/hardening-and-performance.md B1).",
	"P2": "the executor rewrite (ent/gqlgen.go, graph/executor.go) took BenchmarkNestedList from 302,900 to 93,800 allocations and 16.0 to 6.0 MB a request: the @defer group only when a field is deferred; a plain loop for lists whose selection reaches no concurrent field, collecting each selection's fields once; objects without deferred fields written without gqlgen's map and field copies; plain struct fields marshalled without graphql.ResolveField's closures (scalars also without a FieldContext); and jsonPOST writes data without encoding/json's second pass. Then to 69,500 allocations and 5.2 MB: each object fills in one objectOut instead of a FieldSet, its values and a writer; String and Int fields are written from the object's own field rather than a closure each; the answer's buffer comes from a pool. Equivalence test: byte-identical answers, escapes included. Then to 51,200 allocations and 4.6 MB: ent's rows scan into one set of holders per query instead of a set per row (ent/template/scanners.tmpl; TestRowsKeepTheirOwnValues on both databases). Then to 42,200 and 4.0 MB: an edge's node whose selection holds only plain fields is written without a FieldContext of its own (graph.fieldsHeldOnly, with the fields ent/gqlgen.go lists in executor_direct_gen.go). Then to 33,400 and 3.5 MB: the elements of a list marshalled in a plain loop get their contexts in one allocation, their FieldContexts only if something below asks for one (graph.elementContext; the rewrite hands gqlgen's fc.Result over as a function), and their objects' objectOuts from one slab (P2 in alternating rounds on 2026-12-03: 1.65× and 1.65× before, 1.45× and 1.54× after, with the baseline at 8–9 ms that day). Before that last change, measured in alternating rounds, the ratio landed between about 1.65× and 2.1× from run to run on this machine (1.8–2.0× on the day of the scanner change, with the baseline at 5.7–6.7 ms). What remains (CPU profile at GOMAXPROCS=1): SQLite stepping through the same windowed query as the baseline (about a quarter of Orchard's CPU, the same milliseconds on both sides), allocation and GC (per row the driver's boxed values and strings, ent's App struct and its edge), and the 80 customer and token edges that still run on goroutines because entgql's edge methods take a context. Not done: entgql's AppConnection.build allocating each edge on its own (its template is entgql's whole pagination file).",
	"P5": "the cost of P2 seen over HTTP with each server on one core: Orchard's CPU per request is about twice the baseline's (P2's ratio, plus the API-key lookup and gqlgen's 80 goroutines a request interleaving with the other seven requests on one core, which also widens the p99). The row shows each server's CPU a request, read from /proc over its rounds: Orchard's is 1.9–2.0× the baseline's, so on one core its share of requests cannot be much above half. The executor rewrite and jsonPOST took it from 26% to about 41–46% of the baseline's requests/s and the p99 from 4.9× to about 2.5–3.2×; the later per-object, per-row and response-check savings to 49–53% and a p99 of 1.9–2.4× across runs; orchard serve runs the collector at GOGC=400 under a memory limit. On 2026-12-03 ten runs gave 53–65% of the baseline's requests/s and a p99 of 1.27–2.29× (the last three, back to back: 64%, 56%, 56% and 1.42×, 2.17×, 1.74×): both servers' p99 sits near twice their mean latency (eight requests sharing one core), so the p99 ratio follows the CPU ratio (1.6–1.9×) and lands on either side of 2× with the machine. A CPU profile of P2 on Orchard's side shows no single cost left to take: SQLite's cgo calls about 29% (the baseline makes the same), allocation and collection about 30% (BenchmarkNestedList, at go test's GOGC=100; orchard serve runs at 400), the rest spread over marshalling and scanning, none above 4%. Tried and not kept: holding answer buffers in a channel instead of a sync.Pool, which a collection empties (P2's answers grew a new buffer most of the time): 7% fewer bytes allocated per P2 answer (3.52 → 3.27 MB), no change in time that the runs could show. Letting only one or two queries run at a time made no clear difference (12–20 req/s either way over three alternating runs, before the rewrite), so that was not kept.",
	"P6": "the 10,000 figure sits near the 300 ms line: 225–291 ms in 15 of 16 unprofiled runs on the evening of 2026-12-03 and 375 ms in the other, in a slow spell (260–325 ms across nine runs earlier that day), the memory figure (26–29 KiB) well inside its target. The machine is saturated during the fan-out: the row's CPU figures show the server spending about 340 ms and the subscriber process about 160 ms within roughly 300 ms on two cores. A perf profile of the server (perf record -g over the fan-out) puts 43% of its samples in the kernel (one write system call per socket, with the loopback delivery to the reader it pays for), about 15% in the Go scheduler and channels, and the rest in gqlgen's per-event dispatch, coder/websocket's framing and the hub. Memory: Orchard's own graphql-transport-ws transport (server/httpapi/wstransport.go) keeps two goroutines per socket with one subscription instead of gqlgen's four, hijacks with 512-byte buffers instead of net/http's 4 KiB pair and keeps no request headers, against 60.6 KiB (33.0 heap, 27.5 stacks) for gqlgen's transport measured the same way. Latency, in order: identical subscriptions render a broadcast warning once and send the same bytes (graph.sharedEvents, domain.Fanout), where the selection used to run once per subscriber (~45 µs each); the hub raises a domain.EventSignal so the executor runs on a few pooled workers with grown stacks instead of regrowing each subscription's shrunk stack (a third of the server's CPU before); each message's time limit is kept by a watcher over the open sockets (two atomic stores per write) rather than by a context, for which coder/websocket armed a context.AfterFunc per message, or by a write deadline set and cleared around each message (6.5% of the server's samples over the fan-out in a perf profile, two runtime timer moves per message); each next message is built in one pooled buffer instead of a new one copied into an envelope; a subscription's sharing shape is worked out when it starts rather than on its first event; and the subscriber process reads without a deadline, the same AfterFunc per read on the measuring side. p99 went from 0.65–0.69 s to 0.37–0.48 s (2026-12-02) and 0.27–0.28 s in the two runs after the last of these changes on 2026-12-03; later that day 256, 266 and 282 ms. Tried and not kept: draining each subscription on the workers straight from the hub, so that its goroutine wakes once an event instead of three times (257–289 ms against 271–275 ms, server CPU unchanged at 320–350 ms); writing from the workers instead of each subscription's goroutine (no measurable difference); writing each message as one frame straight to the connection, past coder/websocket's Write, whose channel locks and buffer were about a tenth of the server's samples: in three alternating rounds the server's CPU fell or held (270–320 ms against 260–320 ms) but the subscriber process's rose (180–210 ms against 150–170 ms) and p99 was worse each time (261–292 ms against 225–263 ms). The fan-out is the two processes' CPU on two cores; the likeliest reading, not verified by a profile of the subscriber process, is that a server that writes faster hands that process its messages in smaller batches, each wake-up costing it more, so a saving on the server's side shows in its CPU figure before it shows in the p99. At 1,000 subscribers (make bench) the memory figure includes one-time costs spread over fewer sockets: 30–32 KiB.",
	"P8": "a token's first fetch must read page 0 alone (only it says how many pages there are), so its least possible time is one round trip above the floor (100 ms here, 1.25×). The row's baseline column measures the rest in the same run: a bare net/http client making the same requests and decoding nothing takes 1.34–1.36× the floor cold and 1.07–1.10× warm (2026-12-03), because the fake Apple answers five concurrent 108 KB pages in 21–25 ms rather than 20 on this loopback, round after round. Orchard's client adds about 5 ms to that: pages are read by a decoder made for Apple's page (decodePageFast: 0.12 ms and 22 allocations a 500-asset page, against segmentio's 0.27 ms and 3,016; anything unusual goes to segmentio, and FuzzDecodePage holds the two to the same answer), which also spares a second scan of each page for errorNumber, into pooled buffers. That took the cold fetch from 121–128 ms to 113–114 ms in alternating runs (1.42–1.43×), so a miss here is the loopback on a slow run. Tried earlier and not kept: sharing segmentio's repeated strings (allocations down, time not); one decoding goroutine instead of one per page; the fake Apple in a process of its own. Asking for pages 1–4 before page 0 answers would save the round trip but would send most tokens (one page) four requests Apple refuses with 9650, against its rate limits. Each figure is the median of five fetches, each a fresh client's for the cold one.",
	"L1": "Orchard's own time is the wall time less the time with an Apple call out, so it is mostly the settling of the ten events, one transaction each on SQLite's single writer, each writing 1,000 assignment rows. Each settle used to decode the operation's 10,000 serial numbers twice (a Get, and an UpdateOne that reads the row back) and its event's targets and results once more, about 40% of its CPU; it now reads only the operation's columns it needs and updates without reading back, and a round's leases are one transaction instead of ten. Orchard's own time went from 124–204 ms to 91–95 ms (alternating runs, 2026-12-03). Not done: inserting the assignments without first reading which exist (an insert that counts what it added), and settling events that end together in one transaction.",
	"L2": "the burst is bound by SQLite's one writer and its fsync per commit; group commit (notifications that queue during a commit share the next transaction) and a remembered location secret took p99 from about 35 ms to 10–13 ms on a quiet machine, so a miss here means the machine was busy (compare p50).",
	"I3": "an upload and a confirm each commit once with synchronous=FULL (docs/hardening-and-performance.md B5); an fsync cost about 0.25 ms here on one day (p50, 4 KiB, measured with a small Go program) and 0.66 ms on another (`dd if=/dev/zero of=FILE bs=4k count=2000 oflag=dsync`: 2,000 synchronous writes in 1.33 s), so the two commits alone take 0.5–1.3 ms, and the two transactions run eleven SQL statements through cgo plus the sealing and the parse; the figure varies between about 2 and 3.5 ms from run to run on this shared machine. Not done: dropping the re-read ent makes after each UpdateOne (two of the eleven statements).",
}

func ns(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(max(r.N, 1)) }

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// benchServer is the GraphQL handler as serve builds it, on a database.
type benchServer struct {
	client *ent.Client
	svc    *domain.Service
	gql    http.Handler
	admin  *viewer.Viewer
}

func newBenchServer(t *testing.T, client *ent.Client, mods domain.Modules) *benchServer {
	log := slog.New(slog.DiscardHandler)
	svc := domain.New(client, mods, domain.Config{WarnDays: []int{30, 14, 7, 3, 1}, MDMMetadata: "bench"}, log)
	gql := httpapi.NewGraphQL(httpapi.Options{Client: client, Service: svc, Hub: domain.NewHub(svc), MaxUploadBytes: 65536, OperationTimeout: time.Minute, Introspection: true, Log: log})
	return &benchServer{client: client, svc: svc, gql: gql, admin: &viewer.Viewer{KeyID: 1, Name: "bench", Role: viewer.Admin}}
}

func (s *benchServer) post(body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	s.gql.ServeHTTP(rec, req.WithContext(viewer.NewContext(req.Context(), s.admin)))
	return rec
}

// P1: the smallest query through gqlgen against a hand-written handler.
func benchTypename(b *bench) []benchRow {
	s := newBenchServer(b.t, testdb.SQLite(b.t).Client, domain.Modules{})
	body := []byte(`{"query":"{ __typename }"}`)
	if got := s.post(body).Body.String(); !strings.Contains(got, `"__typename":"Query"`) {
		b.t.Fatalf("P1: %s", got)
	}
	baseline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Query         string         `json:"query"`
			OperationName string         `json:"operationName"`
			Variables     map[string]any `json:"variables"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.Query != "{ __typename }" {
			http.Error(w, "bad", 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"__typename":"Query"}}`))
	})
	ours, base := b.measurePair(func() { s.post(body) }, func() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
		baseline.ServeHTTP(rec, req)
	})
	r := ns(ours) / ns(base)
	a := float64(ours.AllocsPerOp()) / float64(max(base.AllocsPerOp(), 1))
	return []benchRow{{
		ID: "P1", Scenario: "`{ __typename }` through the GraphQL handler vs a hand-written net/http handler",
		Figure:   fmt.Sprintf("%.0f ns/op, %d allocs", ns(ours), ours.AllocsPerOp()),
		Baseline: fmt.Sprintf("%.0f ns/op, %d allocs", ns(base), base.AllocsPerOp()),
		Ratio:    fmt.Sprintf("%.2f× time, %.2f× allocs", r, a), Target: "≤ 1.25× ns/op, ≤ 1.5× allocs",
		Pass: r <= 1.25 && a <= 1.5,
		Note: "in process, API-key check excluded on both sides; gqlgen parses, validates and walks the operation, which the baseline does not",
	}}
}

const nestedQuery = `{ customers(first: 20) { edges { node { name tokens(first: 10) { edges { node { locationName apps(first: 50) { edges { node { adamID name totalCount } } } } } } } } } }`

func seedNested(t *testing.T, client *ent.Client, customers, tokens, apps int) {
	ctx := viewer.SystemContext(context.Background())
	for c := range customers {
		cust := client.Customer.Create().SetName(fmt.Sprintf("Customer %03d", c)).SetNameKey(fmt.Sprintf("customer %03d", c)).SaveX(ctx)
		for k := range tokens {
			tok := client.ServerToken.Create().SetCustomerID(cust.ID).SetState(servertoken.StateACTIVE).SetOrgName("Org").
				SetLocationName(fmt.Sprintf("Location %d-%d", c, k)).SetLocationUID(fmt.Sprintf("%d-%d", c, k)).
				SetExpiresAt(time.Now().AddDate(1, 0, 0)).SetFileExpiresAt(time.Now().AddDate(1, 0, 0)).
				SetSealedToken([]byte{1}).SetMdmID("m").SaveX(ctx)
			bulk := make([]*ent.AppCreate, apps)
			for a := range apps {
				bulk[a] = client.App.Create().SetTokenID(tok.ID).SetCustomerID(cust.ID).SetAdamID(strconv.Itoa(400000000 + a)).
					SetName(fmt.Sprintf("App \"%d\"", a)).SetPricingParam("STDQ").SetProductType(app.ProductTypeAPP).
					SetTotalCount(100 + a).SetSupportedPlatforms([]string{"iOS"})
			}
			client.App.CreateBulk(bulk...).ExecX(ctx)
		}
	}
}

// nestedBaseline answers nestedQuery with database/sql and encoding/json.
func nestedBaseline(db *sql.DB) http.Handler {
	type appNode struct {
		AdamID     string  `json:"adamID"`
		Name       *string `json:"name"`
		TotalCount int     `json:"totalCount"`
	}
	type appEdge struct {
		Node appNode `json:"node"`
	}
	type tokenNode struct {
		LocationName string `json:"locationName"`
		Apps         struct {
			Edges []appEdge `json:"edges"`
		} `json:"apps"`
	}
	type tokenEdge struct {
		Node *tokenNode `json:"node"`
	}
	type custNode struct {
		Name   string `json:"name"`
		Tokens struct {
			Edges []tokenEdge `json:"edges"`
		} `json:"tokens"`
	}
	type custEdge struct {
		Node *custNode `json:"node"`
	}
	type response struct {
		Data struct {
			Customers struct {
				Edges []custEdge `json:"edges"`
			} `json:"customers"`
		} `json:"data"`
	}
	in := func(ids []int) (string, []any) {
		args := make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
		return strings.TrimSuffix(strings.Repeat("?,", len(ids)), ","), args
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Query string `json:"query"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		var resp response
		resp.Data.Customers.Edges = []custEdge{}
		custs := map[int]*custNode{}
		var custIDs []int
		rows, err := db.Query(`SELECT id, name FROM customers ORDER BY id LIMIT 20`)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		for rows.Next() {
			var id int
			n := &custNode{}
			_ = rows.Scan(&id, &n.Name)
			n.Tokens.Edges = []tokenEdge{}
			custs[id] = n
			custIDs = append(custIDs, id)
			resp.Data.Customers.Edges = append(resp.Data.Customers.Edges, custEdge{Node: n})
		}
		rows.Close()
		marks, args := in(custIDs)
		toks := map[int]*tokenNode{}
		var tokIDs []int
		rows, _ = db.Query(`SELECT id, customer_id, location_name FROM (SELECT id, customer_id, location_name, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY id) AS rn FROM server_tokens WHERE customer_id IN (`+marks+`)) WHERE rn <= 10 ORDER BY customer_id, id`, args...)
		for rows.Next() {
			var id, cid int
			n := &tokenNode{}
			_ = rows.Scan(&id, &cid, &n.LocationName)
			n.Apps.Edges = []appEdge{}
			toks[id] = n
			tokIDs = append(tokIDs, id)
			custs[cid].Tokens.Edges = append(custs[cid].Tokens.Edges, tokenEdge{Node: n})
		}
		rows.Close()
		marks, args = in(tokIDs)
		rows, _ = db.Query(`SELECT token_id, adam_id, name, total_count FROM (SELECT token_id, adam_id, name, total_count, id, ROW_NUMBER() OVER (PARTITION BY token_id ORDER BY id) AS rn FROM apps WHERE token_id IN (`+marks+`)) WHERE rn <= 50 ORDER BY token_id, id`, args...)
		for rows.Next() {
			var tid int
			var a appNode
			_ = rows.Scan(&tid, &a.AdamID, &a.Name, &a.TotalCount)
			toks[tid].Apps.Edges = append(toks[tid].Apps.Edges, appEdge{Node: a})
		}
		rows.Close()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// P2: a nested list of 3,000 apps, against hand-written SQL and JSON.
func benchNestedList(b *bench) []benchRow {
	db := testdb.SQLite(b.t)
	seedNested(b.t, db.Client, 20, 3, 50)
	s := newBenchServer(b.t, db.Client, domain.Modules{})
	body, _ := json.Marshal(map[string]string{"query": nestedQuery})
	base := nestedBaseline(db.SQL)
	baseRun := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		base.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
		return rec
	}
	got, want := s.post(body).Body.Bytes(), bytes.TrimSpace(baseRun().Body.Bytes())
	if !bytes.Equal(got, want) {
		b.t.Fatalf("P2: the baseline's JSON differs from Orchard's:\n%.300s\n%.300s", got, want)
	}
	if n := strings.Count(string(got), `"adamID"`); n != 3000 {
		b.t.Fatalf("P2: %d app nodes, want 3000", n)
	}
	ours, baseline := b.measurePair(func() { s.post(body) }, func() { baseRun() })
	r := ns(ours) / ns(baseline)
	return []benchRow{{
		ID: "P2", Scenario: "`customers(first: 20) { tokens { apps(first: 50) } }`, 3,000 app nodes, SQLite, vs hand-written database/sql + encoding/json (byte-identical JSON)",
		Figure:   fmtDur(time.Duration(ns(ours))) + "/op",
		Baseline: fmtDur(time.Duration(ns(baseline))) + "/op",
		Ratio:    fmt.Sprintf("%.2f×", r), Target: "≤ 2× (stretch 1.5×)", Pass: r <= 2,
		Note: "both run 3 SELECTs (entgql eager-loads each level with a window function)",
	}}
}

// P3: statements for P2's query at 1, 10 and 100 customers.
func benchStatementCounts(b *bench) []benchRow {
	var rows []benchRow
	open := map[string]func(testing.TB) *testdb.DB{"sqlite": testdb.SQLite}
	if os.Getenv(testdb.EnvPostgres) != "" {
		open["postgres"] = testdb.Postgres
	}
	for _, name := range []string{"sqlite", "postgres"} {
		if open[name] == nil {
			rows = append(rows, benchRow{ID: "P3", Scenario: "SQL statements of P2's query on " + name, Figure: "not run", Note: testdb.EnvPostgres + " unset"})
			continue
		}
		var counts []int64
		for _, customers := range []int{1, 10, 100} {
			db := open[name](b.t)
			client, c := testdb.Counting(db)
			seedNested(b.t, client, customers, 2, 5)
			s := newBenchServer(b.t, client, domain.Modules{})
			q := strings.NewReplacer("customers(first: 20)", "customers(first: 100)", "tokens(first: 10)", "tokens(first: 2)", "apps(first: 50)", "apps(first: 5)").Replace(nestedQuery)
			body, _ := json.Marshal(map[string]string{"query": q})
			c.N.Store(0)
			if rec := s.post(body); strings.Contains(rec.Body.String(), `"errors"`) {
				b.t.Fatalf("P3: %s", rec.Body.String())
			}
			counts = append(counts, c.N.Load())
		}
		same := counts[0] == counts[1] && counts[1] == counts[2]
		rows = append(rows, benchRow{
			ID: "P3", Scenario: "SQL statements of P2's query at 1, 10 and 100 customers, " + name,
			Figure: fmt.Sprintf("%d, %d, %d", counts[0], counts[1], counts[2]), Baseline: "—", Ratio: "—",
			Target: "identical counts", Pass: same,
		})
		if !same {
			b.t.Errorf("P3 on %s: statement counts %v differ", name, counts)
		}
	}
	return rows
}

// openServerDB opens SQLite the way serve does: one writer, a reader pool.
func openServerDB(t *testing.T) *store.DB {
	cfg := &Config{DatabaseURL: "sqlite://" + t.TempDir() + "/orchard.db"}
	db, err := store.Open(context.Background(), cfg.storeOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// P4: 256 concurrent confirms on SQLite, and a 256-way race for one location.
func benchWriters(b *bench) []benchRow {
	n := 256
	if !b.full {
		n = 16
	}
	fake := appletest.New()
	defer fake.Close()
	db := openServerDB(b.t)
	svc := domain.New(db.Client, servertest.Modules(b.t, fake), domain.Config{WarnDays: []int{30}, MDMMetadata: "bench"}, nil)
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})
	cust, err := svc.CreateCustomer(admin, "Writers")
	if err != nil {
		b.t.Fatal(err)
	}
	exp := time.Now().AddDate(1, 0, 0)
	race := &appletest.Location{UID: "race", Name: "Race", ExpiresAt: exp}
	var distinct, same []int
	for i := range n {
		f := appletest.TokenFile("W", exp, "w"+strconv.Itoa(i))
		fake.AddLocation(f, &appletest.Location{UID: "w" + strconv.Itoa(i), Name: "W", ExpiresAt: exp})
		res, err := svc.UploadServerToken(admin, cust.ID, f)
		if err != nil {
			b.t.Fatal(err)
		}
		distinct = append(distinct, res.Token.ID)
		g := appletest.TokenFile("R", exp, "r"+strconv.Itoa(i))
		fake.AddLocation(g, race)
		res, err = svc.UploadServerToken(admin, cust.ID, g)
		if err != nil {
			b.t.Fatal(err)
		}
		same = append(same, res.Token.ID)
	}
	run := func(ids []int) (locked, internal int, d time.Duration) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		start := time.Now()
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := svc.ConfirmServerToken(admin, id)
				if err == nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if strings.Contains(err.Error(), "database is locked") || strings.Contains(err.Error(), "SQLITE_BUSY") {
					locked++
				}
				if fault := strings.Contains(err.Error(), "INTERNAL") || !strings.Contains(err.Error(), "_"); fault {
					internal++
				}
			}()
		}
		wg.Wait()
		return locked, internal, time.Since(start)
	}
	locked1, internal1, d1 := run(distinct)
	locked2, internal2, d2 := run(same)
	active, _ := db.Client.ServerToken.Query().Where(servertoken.LocationUID("race"), servertoken.StateEQ(servertoken.StateACTIVE)).Count(viewer.SystemContext(context.Background()))
	return []benchRow{
		{ID: "P4", Scenario: fmt.Sprintf("%d concurrent confirms of different locations, SQLite", n),
			Figure: fmt.Sprintf("%d \"database is locked\", %d other failures, %s in all", locked1, internal1, fmtDur(d1)), Baseline: "—", Ratio: "—",
			Target: "0 \"database is locked\"", Pass: locked1 == 0 && internal1 == 0, Note: "each confirm also calls the fake Apple over HTTP three times"},
		{ID: "P4", Scenario: fmt.Sprintf("%d-way race to confirm one location, SQLite", n),
			Figure: fmt.Sprintf("%d ACTIVE token, %d \"database is locked\", %s", active, locked2, fmtDur(d2)), Baseline: "—", Ratio: "—",
			Target: "exactly 1 winner", Pass: active == 1 && locked2 == 0 && internal2 == 0,
			Note: "the first confirm activates; the others renew that token in place (the contract's renewal), so one ACTIVE token remains"},
	}
}

// P5: P2 over loopback HTTP, against the hand-written endpoint. Orchard
// (the real `orchard serve`) and the baseline each run as their own process
// with GOMAXPROCS=1 pinned to the first CPU; the load generator, this
// process, is pinned to the second while it runs.
func benchLoopback(b *bench) []benchRow {
	dir := b.t.TempDir()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+dir, "ORCHARD_LOG_LEVEL=warn",
		"ORCHARD_RATE_LIMIT=0", "ORCHARD_APPLE=simulator", "GOMAXPROCS=1")
	key := childAPIKey(b.t, env, "p5") // creates and migrates the database
	db, err := store.Open(context.Background(), store.Options{URL: "sqlite://" + filepath.Join(dir, "orchard.db")})
	if err != nil {
		b.t.Fatal(err)
	}
	seedNested(b.t, db.Client, 20, 3, 50)
	// Synced just now, so the server's app-sync job leaves the fixture alone.
	db.Client.ServerToken.Update().SetLastSyncedAt(time.Now()).ExecX(viewer.SystemContext(context.Background()))
	if err := db.Close(); err != nil {
		b.t.Fatal(err)
	}
	ours := serveChild(b.t, env)
	base := serveChild(b.t, append(env, envBenchBaseline+"=1"))

	pinned := pinForLoad(ours.cmd.Process.Pid, base.cmd.Process.Pid)
	defer pinned.undo()

	body, _ := json.Marshal(map[string]string{"query": nestedQuery})
	// Three rounds of 1.5 s against each server in turn, each side's
	// requests pooled over its rounds: the machine's speed drifts, and both
	// sides then see the same mix of it.
	dur, rounds := 1500*time.Millisecond, 3
	if !b.full {
		dur, rounds = 100*time.Millisecond, 1
	}
	request := func(url, auth string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		return req
	}
	type loadResult struct {
		lat  []time.Duration
		took time.Duration
		cpu  time.Duration // the server process's, over its rounds
	}
	load := func(into *loadResult, pid int, url, auth string) {
		cpu0 := processCPU(pid)
		defer func() { into.cpu += processCPU(pid) - cpu0 }()
		var mu sync.Mutex
		var failed atomic.Int64
		began := time.Now()
		deadline := began.Add(dur)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				client := &http.Client{}
				for time.Now().Before(deadline) {
					start := time.Now()
					resp, err := client.Do(request(url, auth))
					if err != nil {
						failed.Add(1)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failed.Add(1)
						continue
					}
					mu.Lock()
					into.lat = append(into.lat, time.Since(start))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		// Requests started before the deadline finish after it: count them
		// over the whole time taken, not over dur.
		into.took += time.Since(began)
		if n := failed.Load(); n > 0 {
			b.t.Fatalf("P5: %d requests to %s failed", n, url)
		}
	}
	summary := func(r *loadResult, url string) (float64, time.Duration) {
		if len(r.lat) == 0 {
			b.t.Fatalf("P5: no request to %s was answered", url)
		}
		slices.Sort(r.lat)
		return float64(len(r.lat)) / r.took.Seconds(), r.lat[len(r.lat)*99/100]
	}
	fetch := func(url, auth string) []byte {
		resp, err := http.DefaultClient.Do(request(url, auth))
		if err != nil {
			b.t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return bytes.TrimSpace(out)
	}
	if got, want := fetch(ours.srv.URL+"/graphql", key), fetch(base.srv.URL+"/graphql", ""); !bytes.Equal(got, want) {
		b.t.Fatalf("P5: the two servers answer differently:\n%.300s\n%.300s", got, want)
	}
	var oursLoad, baseLoad loadResult
	for range rounds {
		load(&oursLoad, ours.cmd.Process.Pid, ours.srv.URL+"/graphql", key)
		load(&baseLoad, base.cmd.Process.Pid, base.srv.URL+"/graphql", "")
	}
	rps, p99 := summary(&oursLoad, ours.srv.URL)
	brps, bp99 := summary(&baseLoad, base.srv.URL)
	share, tail := rps/max(brps, 1), float64(p99)/float64(max(bp99, 1))
	cpuEach := func(r *loadResult) string {
		if r.cpu <= 0 {
			return "CPU not readable"
		}
		return fmtDur(r.cpu/time.Duration(len(r.lat))) + " CPU a request"
	}
	return []benchRow{{
		ID: "P5", Scenario: "P2 over loopback HTTP, 8 client connections, `orchard serve` vs the hand-written endpoint, each in its own process",
		Figure:   fmt.Sprintf("%.0f req/s, p99 %s, %s", rps, fmtDur(p99), cpuEach(&oursLoad)),
		Baseline: fmt.Sprintf("%.0f req/s, p99 %s, %s", brps, fmtDur(bp99), cpuEach(&baseLoad)),
		Ratio:    fmt.Sprintf("%.0f%% of its req/s, %.2f× p99", share*100, tail),
		Target:   "≥ 50% of its requests/s; p99 ≤ 2×", Pass: share >= 0.5 && tail <= 2,
		Note: pinned.note + "; Orchard checks the API key on every request, the baseline has none",
	}}
}

// processCPU is the CPU time all of process pid's threads have used so
// far (user and system, from /proc/<pid>/stat, in the kernel's 100 Hz
// ticks), or 0 where it cannot be read.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis start with the
	// state (field 3); utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * 10 * time.Millisecond
}

// envBenchBaseline makes the test binary, run as a child, serve P5's
// hand-written endpoint instead of Orchard.
const envBenchBaseline = "ORCHARD_TEST_BENCH_BASELINE"

// serveBenchBaseline serves nestedBaseline on ORCHARD_LISTEN from the
// SQLite database in ORCHARD_DATA_DIR, through the same read-only pool
// Orchard reads with, until the process is killed.
func serveBenchBaseline() error {
	db, err := store.OpenSQLite(filepath.Join(os.Getenv("ORCHARD_DATA_DIR"), "orchard.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	_, reader := db.SQLitePools()
	mux := http.NewServeMux()
	mux.Handle("POST /graphql", nestedBaseline(reader))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {})
	return http.ListenAndServe(os.Getenv("ORCHARD_LISTEN"), mux)
}

// pinning says where P5's processes run, and puts this one back.
type pinning struct {
	note string
	undo func()
}

// pinForLoad pins the servers to the first CPU this process may use and
// this process, the load generator, to the second. Where that cannot be
// done (one CPU, or a sandbox that refuses sched_setaffinity) everything
// runs unpinned and the note says why.
func pinForLoad(servers ...int) pinning {
	none := func(why string) pinning { return pinning{note: "not pinned: " + why, undo: func() {}} }
	mask, err := threadAffinity(0)
	if err != nil {
		return none(err.Error())
	}
	cpus := mask.allowedCPUs()
	if len(cpus) < 2 {
		return none("fewer than two CPUs")
	}
	undo := func() {
		for _, pid := range append(servers, os.Getpid()) {
			_ = pinProcess(pid, mask)
		}
	}
	for _, pid := range servers {
		if err := pinProcess(pid, maskOf(cpus[0])); err != nil {
			undo()
			return none(err.Error())
		}
	}
	if err := pinProcess(os.Getpid(), maskOf(cpus[1])); err != nil {
		undo()
		return none(err.Error())
	}
	return pinning{
		note: fmt.Sprintf("servers pinned to CPU %d (GOMAXPROCS=1), load generator to CPU %d", cpus[0], cpus[1]),
		undo: func() { _ = pinProcess(os.Getpid(), mask) },
	}
}

// processRSS reads a process's resident memory.
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// P6: one warning to N websocket subscribers of a server in its own process.
func benchFanOut(b *bench) []benchRow {
	n := 1000
	if v, _ := strconv.Atoi(os.Getenv("ORCHARD_BENCH_SUBSCRIBERS")); v > 0 {
		n = v
	}
	if !b.full {
		n = 20
	}
	fake := appletest.New()
	defer fake.Close()
	dir := b.t.TempDir()
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+dir,
		"ORCHARD_APPLE_URL="+fake.BaseURL(), "ORCHARD_LOG_LEVEL=warn", "ORCHARD_RATE_LIMIT=0")
	key := childAPIKey(b.t, env, "fanout")
	server := serveChild(b.t, env)
	defer server.stop()
	s, cmd, listen := server.srv, server.cmd, strings.TrimPrefix(server.srv.URL, "http://")
	admin := key
	cust := s.createCustomer(admin, "Fan-out")
	// Memory is read after a collection: orchard serve runs at GOGC=400, so
	// between collections the heap holds up to four times its live size in
	// garbage (of the upgrades and subscribes, here). When nothing else
	// triggers one, the runtime collects every two minutes.
	if b.full {
		waitForGC(b.t, s.URL, admin, time.Now())
	}
	before, heapBefore, stackBefore := processRSS(cmd.Process.Pid), goMemStat(b.t, s.URL, admin, "heap"), goMemStat(b.t, s.URL, admin, "stack")
	grBefore := scrape(b.t, s.URL, "Bearer "+admin).value(b.t, "go_goroutines", nil)

	// The subscribers live in a process of their own (runBenchSubscribers).
	fleet := exec.Command(os.Args[0], "-test.run", "^$")
	// The fleet is a measuring instrument: it runs without the collector,
	// so its pauses do not land in the latencies.
	fleet.Env = append(os.Environ(), "GOGC=off", envBenchSubscribers+"="+strconv.Itoa(n),
		"ORCHARD_TEST_BENCH_WS=ws://"+listen+"/graphql", "ORCHARD_TEST_BENCH_KEY="+admin)
	fleet.Stderr = os.Stderr
	stdout, err := fleet.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := fleet.Start(); err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = fleet.Process.Kill(); _ = fleet.Wait() }()
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			b.t.Fatalf("P6: the subscriber process ended early: %v", lines.Err())
		}
		if l := lines.Text(); !strings.HasPrefix(l, "error") {
			return l
		}
		b.t.Fatalf("P6: subscriber process: %s", lines.Text())
		return ""
	}
	if l := next(); l != "ready" {
		b.t.Fatalf("P6: subscriber process said %q, want ready", l)
	}
	// Every subscribe has reached the hub; then let the server settle.
	deadline := time.Now().Add(2 * time.Minute)
	for scrape(b.t, s.URL, "Bearer "+admin).value(b.t, "orchard_expiry_subscribers", nil) < float64(n) {
		if time.Now().After(deadline) {
			b.t.Fatalf("P6: fewer than %d subscriptions after two minutes", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if b.full {
		waitForGC(b.t, s.URL, admin, time.Now())
	}
	after, heapAfter, stackAfter := processRSS(cmd.Process.Pid), goMemStat(b.t, s.URL, admin, "heap"), goMemStat(b.t, s.URL, admin, "stack")
	grAfter := scrape(b.t, s.URL, "Bearer "+admin).value(b.t, "go_goroutines", nil)
	perSub := (after - before) / int64(n)
	heapPerSub, stackPerSub := (heapAfter-heapBefore)/int64(n), (stackAfter-stackBefore)/int64(n)
	goPerSub := heapPerSub + stackPerSub
	grPerSub := (grAfter - grBefore) / float64(n)

	exp := time.Now().Add(3*24*time.Hour + time.Hour)
	f := appletest.TokenFile("Fan", exp, "fan")
	fake.AddLocation(f, &appletest.Location{UID: "fan", Name: "Fan", ExpiresAt: exp})
	var up uploadResult
	s.upload(admin, cust, f).decode(b.t, &up)
	profiling := os.Getenv(envBenchProfile) != ""
	if profiling {
		_ = cmd.Process.Signal(syscall.SIGUSR1)
		time.Sleep(100 * time.Millisecond)
	}
	srvCPU, fleetCPU := processCPU(cmd.Process.Pid), processCPU(fleet.Process.Pid)
	if r := s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		b.t.Fatal(r.Raw)
	}
	lat := make([]time.Duration, 0, n)
	for {
		l := next()
		if l == "done" {
			break
		}
		v, err := strconv.ParseInt(strings.TrimPrefix(l, "lat "), 10, 64)
		if err != nil {
			b.t.Fatalf("P6: subscriber process said %q", l)
		}
		lat = append(lat, time.Duration(v))
	}
	srvCPU, fleetCPU = processCPU(cmd.Process.Pid)-srvCPU, processCPU(fleet.Process.Pid)-fleetCPU
	if profiling {
		_ = cmd.Process.Signal(syscall.SIGUSR2)
		time.Sleep(time.Second)
	}
	if len(lat) != n {
		b.t.Fatalf("P6: %d of %d subscribers got the warning", len(lat), n)
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	target := 250 * time.Millisecond
	if n >= 10000 {
		target = 300 * time.Millisecond
	}
	const perSubTarget = 32 << 10
	return []benchRow{{
		ID: "P6", Scenario: fmt.Sprintf("one warning to %d websocket subscribers (server in its own process)", n),
		Figure: fmt.Sprintf("p99 %s, max %s (CPU from the confirm to the last arrival: server %s, subscriber process %s); per idle subscription %.1f KiB of Go heap and stacks (%.1f heap, %.1f stacks), %.1f KiB of RSS, %.2f goroutines",
			fmtDur(p99), fmtDur(lat[len(lat)-1]), fmtDur(srvCPU), fmtDur(fleetCPU), float64(goPerSub)/1024, float64(heapPerSub)/1024, float64(stackPerSub)/1024, float64(perSub)/1024, grPerSub),
		Baseline: "—", Ratio: "—",
		Target: fmt.Sprintf("p99 ≤ %s; ≤ %d KiB per idle subscription", fmtDur(target), perSubTarget>>10),
		Pass:   p99 <= target && goPerSub <= perSubTarget,
		Note:   "memory and goroutines from the server's /metrics after a garbage collection (Go heap in use plus goroutine stacks; RSS also counts the allocator's and GC's slack); latency from the warning's issuedAt (stamped by the server when it raises it) to its arrival at each client; clients in a process of their own (the test binary run again); set ORCHARD_BENCH_SUBSCRIBERS=10000 for the large run",
	}}
}

// waitForGC waits until a server has collected garbage after since.
func waitForGC(t *testing.T, base, adminKey string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		last := scrape(t, base, "Bearer "+adminKey).value(t, "go_memstats_last_gc_time_seconds", nil)
		if last > float64(since.UnixNano())/1e9 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the server has not collected garbage in three minutes")
		}
		time.Sleep(time.Second)
	}
}

// goMemStat reads the Go heap ("heap") or the goroutine stacks ("stack")
// in use from a server's /metrics.
func goMemStat(t *testing.T, base, adminKey, which string) int64 {
	r := scrape(t, base, "Bearer "+adminKey)
	return int64(r.value(t, "go_memstats_"+which+"_inuse_bytes", nil))
}

// P7: hostile documents are refused quickly and without SQL.
func benchHostile(b *bench) []benchRow {
	db := testdb.SQLite(b.t)
	client, c := testdb.Counting(db)
	s := newBenchServer(b.t, client, domain.Modules{})
	aliases := make([]string, 10000)
	for i := range aliases {
		aliases[i] = fmt.Sprintf("a%d: customers(first: 1) { totalCount }", i)
	}
	depth := strings.Repeat("customer { tokens(first: 1) { edges { node { ", 12) + "id" + strings.Repeat(" } } } }", 12)
	docs := map[string]string{
		"100k directives": "{ __typename " + strings.Repeat("@include(if: true) ", 100000) + "}",
		"depth 50":        "{ tokens(first: 1) { edges { node { " + depth + " } } } }",
		"10k aliases":     "{ " + strings.Join(aliases, " ") + " }",
		"1 MB query":      "{ customers(first: 1) { totalCount } } #" + strings.Repeat("x", 1<<20),
	}
	var rows []benchRow
	for _, name := range []string{"100k directives", "depth 50", "10k aliases", "1 MB query"} {
		body, _ := json.Marshal(map[string]string{"query": docs[name]})
		c.N.Store(0)
		rec := s.post(body)
		if !strings.Contains(rec.Body.String(), `"errors"`) && name != "1 MB query" {
			b.t.Fatalf("P7 %s was accepted: %.200s", name, rec.Body.String())
		}
		sqlCount := c.N.Load()
		res := b.measure(func() { s.post(body) })
		d := time.Duration(ns(res))
		outcome := "refused"
		if !strings.Contains(rec.Body.String(), `"errors"`) {
			outcome = "answered"
		}
		rows = append(rows, benchRow{
			ID: "P7", Scenario: "hostile document: " + name,
			Figure: fmt.Sprintf("%s in %s, %d SQL", outcome, fmtDur(d), sqlCount), Baseline: "—", Ratio: "—",
			Target: "rejected < 5 ms, 0 SQL", Pass: outcome == "refused" && d < 5*time.Millisecond && sqlCount == 0,
		})
	}
	return rows
}

// P8: syncing 10,000 assets in 20 pages from an Apple that takes 20 ms a page.
func benchSync(b *bench) []benchRow {
	assets, latency := 10000, 20*time.Millisecond
	if !b.full {
		assets = 1000
	}
	fake := appletest.New()
	defer fake.Close()
	fake.PageSize = assets / 20
	fake.Latency = latency
	db := openServerDB(b.t)
	mods := servertest.Modules(b.t, fake)
	svc := domain.New(db.Client, mods, domain.Config{WarnDays: []int{30}, MDMMetadata: "bench"}, nil)
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})
	cust, _ := svc.CreateCustomer(admin, "Sync")
	exp := time.Now().AddDate(1, 0, 0)
	f := appletest.TokenFile("Sync", exp, "sync")
	loc := &appletest.Location{UID: "sync", Name: "Sync", ExpiresAt: exp, Assets: appletest.MakeAssets(assets)}
	fake.AddLocation(f, loc)
	res, err := svc.UploadServerToken(admin, cust.ID, f)
	if err != nil {
		b.t.Fatal(err)
	}
	tok, err := svc.ConfirmServerToken(admin, res.Token.ID)
	if err != nil {
		b.t.Fatal(err)
	}
	// The fetch is measured five times each way, alternating with a bare
	// client making the same requests, and the medians are kept: one fetch
	// is one sample of this shared machine's timers and loopback. A cold
	// fetch is a fresh client's (nothing remembered, no connections); a warm
	// one is the same client's second, which knows the page count.
	const rounds = 5
	var cold, warm, bareCold, bareWarm []time.Duration
	timed := func(into *[]time.Duration, fetch func() error) {
		start := time.Now()
		if err := fetch(); err != nil {
			b.t.Fatalf("P8 fetch: %v", err)
		}
		*into = append(*into, time.Since(start))
	}
	for range rounds {
		c := servertest.Modules(b.t, fake).Apple
		for _, into := range []*[]time.Duration{&cold, &warm} {
			timed(into, func() error {
				got, err := c.Assets(context.Background(), f)
				if err == nil && len(got.Assets) != assets {
					err = fmt.Errorf("%d assets, want %d", len(got.Assets), assets)
				}
				return err
			})
		}
		bare := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		timed(&bareCold, func() error { return bareFetch(bare, fake.BaseURL(), f, 20, false) })
		timed(&bareWarm, func() error { return bareFetch(bare, fake.BaseURL(), f, 20, true) })
		bare.CloseIdleConnections()
	}
	fetch, warmFetch := median(cold), median(warm)
	floor := time.Duration(20/5) * latency
	bareNote := func(d time.Duration) string {
		return fmt.Sprintf("; a bare net/http client making the same requests and decoding nothing: %s (%.2f×)", fmtDur(d), float64(d)/float64(floor))
	}
	// The service's client has not read this token yet, so the sync's
	// fetch is a cold one.
	start := time.Now()
	if err := svc.SyncToken(admin, tok.ID); err != nil {
		b.t.Fatal(err)
	}
	total := time.Since(start)
	n, _ := svc.AppCount(admin, tok.ID)
	if n != assets {
		b.t.Fatalf("P8: %d apps stored", n)
	}
	start = time.Now()
	if err := svc.SyncToken(admin, tok.ID); err != nil {
		b.t.Fatal(err)
	}
	again := time.Since(start)
	// The write: the sync's time less its Apple round trips (config, pages
	// and the metadata lookups, all at the fake's latency).
	write := total - fetch - latency - time.Duration((assets+99)/100/5+1)*latency
	return []benchRow{
		{ID: "P8", Scenario: fmt.Sprintf("fetch %d assets (20 pages) from an Apple answering each page in %s, page count known from the last sync", assets, latency),
			Figure: fmtDur(warmFetch) + " (median of 5)", Baseline: "paging floor " + fmtDur(floor) + " (20 pages ÷ 5 in flight × 20 ms)" + bareNote(median(bareWarm)),
			Ratio: fmt.Sprintf("%.2f×", float64(warmFetch)/float64(floor)), Target: "≤ 1.5× the paging floor",
			Pass: warmFetch <= floor*3/2, Note: "every page is asked for at once, five in flight; each decoded while the next request is out"},
		{ID: "P8", Scenario: "the same fetch the first time a token is read",
			Figure: fmtDur(fetch) + " (median of 5)", Baseline: "paging floor " + fmtDur(floor) + bareNote(median(bareCold)),
			Ratio: fmt.Sprintf("%.2f×", float64(fetch)/float64(floor)), Target: "≤ 1.5× the paging floor",
			Pass: fetch <= floor*3/2, Note: "page 0 must come first: only it says how many pages there are, so one round trip more"},
		{ID: "P8", Scenario: fmt.Sprintf("first sync of %d assets, all of it", assets),
			Figure: fmtDur(total), Baseline: "—", Ratio: "—", Target: "the write of 10,000 rows < 1 s",
			Pass: write < time.Second, Note: fmt.Sprintf("includes client config, the fetch, the metadata lookups (batches of 100, 5 at a time) and the write; the write alone ≈ %s", fmtDur(max(write, 0)))},
		{ID: "P8", Scenario: "re-sync of the unchanged token", Figure: fmtDur(again), Baseline: "—", Ratio: "—",
			Target: "writes nothing but the sync time", Pass: true, Note: "TestSync/UnchangedWritesNothing asserts no App row is rewritten"},
	}
}

// bareFetch reads n asset pages the way the simplest client would, each
// body read and nothing decoded: page 0 and then the rest, or with ahead
// every page at once, five in flight either way. It is what the fake Apple
// and this machine's loopback cost on their own.
func bareFetch(c *http.Client, base string, token []byte, n int, ahead bool) error {
	get := func(i int) error {
		u := base + "/assets"
		if i > 0 {
			u += "?pageIndex=" + strconv.Itoa(i)
		}
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+string(token))
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("page %d: HTTP %d", i, resp.StatusCode)
		}
		return nil
	}
	first := 0
	if !ahead {
		if err := get(0); err != nil {
			return err
		}
		first = 1
	}
	sem := make(chan struct{}, 5)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := first; i < n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := get(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// timedApple adds up the time spent waiting on Apple.
type timedApple struct {
	apple.Client
	spent atomic.Int64
}

func (a *timedApple) track(start time.Time) { a.spent.Add(int64(time.Since(start))) }

func (a *timedApple) ClientConfig(ctx context.Context, token []byte) (*apple.ClientConfig, error) {
	defer a.track(time.Now())
	return a.Client.ClientConfig(ctx, token)
}

func (a *timedApple) SetMDMInfo(ctx context.Context, token []byte, info apple.MDMInfo) (*apple.ClientConfig, error) {
	defer a.track(time.Now())
	return a.Client.SetMDMInfo(ctx, token, info)
}

// Orchard's own share of upload + confirm: parse, seal, store.
func benchUploadConfirm(b *bench) []benchRow {
	fake := appletest.New()
	defer fake.Close()
	db := openServerDB(b.t)
	mods := servertest.Modules(b.t, fake)
	ta := &timedApple{Client: mods.Apple}
	mods.Apple = ta
	svc := domain.New(db.Client, mods, domain.Config{WarnDays: []int{30}, MDMMetadata: "bench"}, nil)
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})
	cust, _ := svc.CreateCustomer(admin, "Uploads")
	exp := time.Now().AddDate(1, 0, 0)
	n := 300
	if !b.full {
		n = 5
	}
	files := make([][]byte, n)
	for i := range files {
		files[i] = appletest.TokenFile("U", exp, "u"+strconv.Itoa(i))
		fake.AddLocation(files[i], &appletest.Location{UID: "u" + strconv.Itoa(i), Name: "U", ExpiresAt: exp})
	}
	ta.spent.Store(0)
	start := time.Now()
	for _, f := range files {
		res, err := svc.UploadServerToken(admin, cust.ID, f)
		if err != nil {
			b.t.Fatal(err)
		}
		if _, err := svc.ConfirmServerToken(admin, res.Token.ID); err != nil {
			b.t.Fatal(err)
		}
	}
	total := time.Since(start)
	own := (total - time.Duration(ta.spent.Load())) / time.Duration(n)
	return []benchRow{{
		ID: "I3", Scenario: "upload + confirm, Orchard's own share (parse, seal, store, audit; Apple's time subtracted)",
		Figure: fmtDur(own) + " per token", Baseline: fmt.Sprintf("total %s per token with a loopback Apple", fmtDur(total/time.Duration(n))), Ratio: "—",
		Target: "< 2 ms", Pass: own < 2*time.Millisecond, Note: "SQLite with synchronous=FULL: each confirm commits to disk",
	}}
}

// The expiry scan over many tokens of which few are due.
func benchExpiryScan(b *bench) []benchRow {
	total, due := 100000, 100
	if !b.full {
		total, due = 2000, 10
	}
	db := openServerDB(b.t)
	ctx := viewer.SystemContext(context.Background())
	cust := db.Client.Customer.Create().SetName("Many").SetNameKey("many").SaveX(ctx)
	now := time.Now()
	for start := 0; start < total; start += 1000 {
		bulk := make([]*ent.ServerTokenCreate, 0, 1000)
		for i := start; i < min(start+1000, total); i++ {
			exp := now.AddDate(0, 0, 200)
			next := exp.Add(-30 * 24 * time.Hour)
			if i%(total/due) == 0 {
				exp = now.Add(20 * 24 * time.Hour) // within 30 days: due
				next = now.Add(-time.Hour)
			}
			bulk = append(bulk, db.Client.ServerToken.Create().SetCustomerID(cust.ID).SetState(servertoken.StateACTIVE).
				SetOrgName("O").SetLocationUID("l"+strconv.Itoa(i)).SetExpiresAt(exp).SetFileExpiresAt(exp).
				SetSealedToken([]byte{1}).SetMdmID("m").SetNextWarnAt(next))
		}
		db.Client.ServerToken.CreateBulk(bulk...).ExecX(ctx)
	}
	svc := domain.New(db.Client, domain.Modules{}, domain.Config{WarnDays: []int{30, 14, 7, 3, 1}}, nil)
	start := time.Now()
	n, err := svc.ScanExpiry(context.Background())
	d := time.Since(start)
	if err != nil || n != due {
		b.t.Fatalf("scan raised %d (%v), want %d", n, err, due)
	}
	start = time.Now()
	if n, _ := svc.ScanExpiry(context.Background()); n != 0 {
		b.t.Fatalf("second scan raised %d", n)
	}
	idle := time.Since(start)
	return []benchRow{{
		ID: "I5", Scenario: fmt.Sprintf("expiry scan over %d tokens, %d near a threshold, SQLite", total, due),
		Figure: fmt.Sprintf("%s (raising %d); %s when none is due", fmtDur(d), due, fmtDur(idle)), Baseline: "—", Ratio: "—",
		Target: "< 50 ms", Pass: d < 50*time.Millisecond, Note: "reads only due tokens through the next_warn_at index; each warning is its own durable transaction",
	}}
}

// BenchmarkNestedList is P2's Orchard side alone, for profiling:
// go test ./server -run '^$' -bench NestedList -cpuprofile cpu.out
func BenchmarkNestedList(b *testing.B) {
	t := &testing.T{}
	db := testdb.SQLite(b)
	seedNested(t, db.Client, 20, 3, 50)
	s := newBenchServer(t, db.Client, domain.Modules{})
	body, _ := json.Marshal(map[string]string{"query": nestedQuery})
	b.ReportAllocs()
	for b.Loop() {
		s.post(body)
	}
}

// BenchmarkUploadConfirm is I3 alone, for profiling.
func BenchmarkUploadConfirm(b *testing.B) {
	t := &testing.T{}
	fake := appletest.New()
	defer fake.Close()
	cfg := &Config{DatabaseURL: "sqlite://" + b.TempDir() + "/orchard.db"}
	db, err := store.Open(context.Background(), cfg.storeOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	svc := domain.New(db.Client, servertest.Modules(t, fake), domain.Config{WarnDays: []int{30}, MDMMetadata: "bench"}, nil)
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{KeyID: 1, Role: viewer.Admin})
	cust, _ := svc.CreateCustomer(admin, "Uploads")
	exp := time.Now().AddDate(1, 0, 0)
	i := 0
	for b.Loop() {
		i++
		f := appletest.TokenFile("U", exp, "u"+strconv.Itoa(i))
		fake.AddLocation(f, &appletest.Location{UID: "u" + strconv.Itoa(i), Name: "U", ExpiresAt: exp})
		res, err := svc.UploadServerToken(admin, cust.ID, f)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := svc.ConfirmServerToken(admin, res.Token.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTypename is P1's Orchard side alone, for profiling.
func BenchmarkTypename(b *testing.B) {
	s := newBenchServer(&testing.T{}, testdb.SQLite(b).Client, domain.Modules{})
	body := []byte(`{"query":"{ __typename }"}`)
	b.ReportAllocs()
	for b.Loop() {
		s.post(body)
	}
}

// median is the middle of ds (the upper middle for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
