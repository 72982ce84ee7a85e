package main

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orchard-msp/orchard/graph/domain/testdb"
	"github.com/orchard-msp/orchard/graph/relay"
	"github.com/orchard-msp/orchard/modules/apple/appletest"
	"github.com/orchard-msp/orchard/server/httpapi"
)

// scrapeResult is one GET /metrics, parsed as Prometheus parses it.
type scrapeResult struct {
	status   int
	body     string
	families map[string]*dto.MetricFamily
}

// scrape GETs /metrics with authorization (empty: none) and parses the
// answer when it is 200.
func scrape(t *testing.T, base, authorization string) scrapeResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := scrapeResult{status: resp.StatusCode, body: string(body)}
	if resp.StatusCode != http.StatusOK {
		return r
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if r.families, err = p.TextToMetricFamilies(strings.NewReader(r.body)); err != nil {
		t.Fatalf("/metrics does not parse as the Prometheus text format: %v\n%s", err, r.body)
	}
	return r
}

// series returns the metrics of family name whose labels include want.
func (r scrapeResult) series(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := r.families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// value is the value of the one gauge or counter of name with labels; NaN
// when there is none.
func (r scrapeResult) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	ms := r.series(name, labels)
	switch len(ms) {
	case 0:
		return math.NaN()
	case 1:
	default:
		t.Fatalf("%s%v matches %d series, want one", name, labels, len(ms))
	}
	if g := ms[0].GetGauge(); g != nil {
		return g.GetValue()
	}
	return ms[0].GetCounter().GetValue()
}

func labelValues(ms []*dto.Metric, name string) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				out[l.GetValue()] = true
			}
		}
	}
	return out
}

// seriesCount counts every series of the families whose names start with
// orchard_http or orchard_graphql (the ones requests can add to).
func (r scrapeResult) seriesCount() int {
	n := 0
	for name, f := range r.families {
		if strings.HasPrefix(name, "orchard_http") || strings.HasPrefix(name, "orchard_graphql") {
			n += len(f.GetMetric())
		}
	}
	return n
}

// Requests with invented methods, paths and operation names add no series
// once their "other" series exists.
func TestMetricsLabelsAreBounded(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	auth := "Bearer " + admin
	send := func(method, path string) {
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader("{}"))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	burst := func(from, to int) {
		for i := from; i < to; i++ {
			send(fmt.Sprintf("EVIL%d", i), "/graphql")
			send(fmt.Sprintf("EVIL%d", i), fmt.Sprintf("/nowhere/%d", i))
			send(http.MethodGet, fmt.Sprintf("/playground/x%d", i))
			send(http.MethodGet, fmt.Sprintf("/no-such-page-%d", i))
			send(http.MethodGet, fmt.Sprintf("/un//clean/%d", i)) // the mux redirects to the cleaned path
		}
	}
	scrape(t, s.URL, auth) // its own series exist from here on
	burst(0, 5)
	first := scrape(t, s.URL, auth)
	burst(5, 50)
	second := scrape(t, s.URL, auth)
	if a, b := first.seriesCount(), second.seriesCount(); a != b {
		t.Errorf("45 more invented methods and paths grew the request series from %d to %d", a, b)
	}
	t.Logf("request and operation series: %d after 5 invented methods and paths each, %d after 50", first.seriesCount(), second.seriesCount())
	reqs := second.series("orchard_http_requests_total", nil)
	for m := range labelValues(reqs, "method") {
		if m != "other" && !standardMethods[m] {
			t.Errorf("method label %q is not one of the fixed set", m)
		}
	}
	evil := 0.0
	for _, m := range second.series("orchard_http_requests_total", map[string]string{"method": "other", "route": "/graphql"}) {
		evil += m.GetCounter().GetValue()
	}
	if evil != 50 {
		t.Errorf(`orchard_http_requests_total{method="other",route="/graphql"} sums to %v, want 50`, evil)
	}
	routes := labelValues(reqs, "route")
	for r := range routes {
		if !map[string]bool{"/graphql": true, "/metrics": true, "/playground/": true, "/": true, "/healthz": true, "/readyz": true, "other": true}[r] {
			t.Errorf("route label %q is not a route of the handler", r)
		}
	}

	// Operation names are the client's choice: past the cap they are "other".
	for i := range httpapi.MaxOperationNames + 30 {
		s.gql(admin, fmt.Sprintf("query Op%d { customers { totalCount } }", i), nil)
	}
	s.gql(admin, "{ customers { totalCount } }", nil)
	ops := scrape(t, s.URL, auth)
	names := labelValues(ops.series("orchard_graphql_operations_total", nil), "operation")
	if len(names) > httpapi.MaxOperationNames+2 || !names["other"] || !names["anonymous"] || !names["Op0"] {
		t.Errorf("%d operation names (other: %v, anonymous: %v, Op0: %v); want at most %d with other, anonymous and Op0",
			len(names), names["other"], names["anonymous"], names["Op0"], httpapi.MaxOperationNames+2)
	}
	if got := ops.value(t, "orchard_graphql_operations_total", map[string]string{"type": "query", "operation": "other", "outcome": "ok"}); got != 30 {
		t.Errorf("operations counted as other = %v, want 30", got)
	}
	if n := len(ops.series("orchard_graphql_operation_duration_seconds", nil)); n > 2 {
		t.Errorf("the operation histogram has %d series for queries; names must not multiply it", n)
	}
}

// /metrics is client_golang's exposition: it parses, carries the standard
// go_* and process_* families, and names follow Prometheus's conventions.
func TestMetricsExposition(t *testing.T) {
	s := startServer(t, nil)
	auth := "Bearer " + s.key()
	s.gql(strings.TrimPrefix(auth, "Bearer "), "{ customers { totalCount } }", nil)
	r := scrape(t, s.URL, auth)
	if r.status != http.StatusOK {
		t.Fatalf("/metrics = %d %s", r.status, r.body)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"} {
		if r.families[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for name, f := range r.families {
		if strings.HasPrefix(name, "orchard_go_") {
			t.Errorf("%s duplicates the standard go_* family", name)
		}
		if strings.HasPrefix(name, "orchard_") && f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
	for _, name := range []string{"orchard_http_request_duration_seconds", "orchard_graphql_operation_duration_seconds", "orchard_websocket_duration_seconds"} {
		if f := r.families[name]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s is not a histogram: %v", name, f.GetType())
		}
	}

	if got := r.value(t, "orchard_http_requests_total", map[string]string{"method": "POST", "route": "/graphql", "status": "200"}); got != 1 {
		t.Errorf(`orchard_http_requests_total{method="POST",route="/graphql",status="200"} = %v, want 1`, got)
	}
	if got := r.value(t, "orchard_graphql_operations_total", map[string]string{"type": "query", "operation": "anonymous", "outcome": "ok"}); got != 1 {
		t.Errorf("anonymous queries = %v, want 1", got)
	}
}

func TestMetricsProtection(t *testing.T) {
	t.Run("admin key by default", func(t *testing.T) {
		s := startServer(t, nil)
		admin, viewerKey := s.key(), s.key("--role", "viewer")
		for _, c := range []struct {
			name, auth string
			want       int
		}{
			{"no header", "", http.StatusUnauthorized},
			{"not a key", "Bearer nonsense", http.StatusUnauthorized},
			{"unknown key", "Bearer orch_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", http.StatusUnauthorized},
			{"viewer key", "Bearer " + viewerKey, http.StatusForbidden},
			{"admin key", "Bearer " + admin, http.StatusOK},
		} {
			r := scrape(t, s.URL, c.auth)
			if r.status != c.want {
				t.Errorf("%s: /metrics = %d, want %d (%s)", c.name, r.status, c.want, r.body)
			}
			if r.status != http.StatusOK && strings.Contains(r.body, "orchard_") {
				t.Errorf("%s: a refused scrape shows metrics", c.name)
			}
		}
	})
	t.Run("metrics token", func(t *testing.T) {
		const token = "scrape-secret-0123456789abcdef"
		s := startServer(t, map[string]string{"ORCHARD_METRICS_TOKEN": token})
		admin := s.key()
		for _, c := range []struct {
			name, auth string
			want       int
		}{
			{"no header", "", http.StatusUnauthorized},
			{"wrong token", "Bearer " + token + "x", http.StatusUnauthorized},
			{"token without scheme", token, http.StatusUnauthorized},
			{"admin key instead", "Bearer " + admin, http.StatusUnauthorized},
			{"right token", "Bearer " + token, http.StatusOK},
			{"scheme in lower case", "bearer " + token, http.StatusOK},
		} {
			if r := scrape(t, s.URL, c.auth); r.status != c.want {
				t.Errorf("%s: /metrics = %d, want %d (%s)", c.name, r.status, c.want, r.body)
			}
		}
		if strings.Contains(s.Log.String(), token) {
			t.Error("the log shows the metrics token")
		}
	})
	t.Run("short token refused at start", func(t *testing.T) {
		_, _, err := loadConfig("serve", nil, func(k string) string {
			if k == "ORCHARD_METRICS_TOKEN" {
				return "short"
			}
			return ""
		}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "ORCHARD_METRICS_TOKEN") {
			t.Fatalf("err = %v, want one naming ORCHARD_METRICS_TOKEN", err)
		}
	})
}

// The token gauges match a known set of tokens, labelled by IDs: two
// locations with one name are two series, and no name appears.
func TestMetricsTokenGauges(t *testing.T) {
	s := startServer(t, nil)
	admin := s.key()
	auth := "Bearer " + admin
	acme, globex := s.createCustomer(admin, "Acme Secret Name"), s.createCustomer(admin, "Globex Secret Name")
	now := time.Now()
	type tok struct {
		customer, uid string
		exp           time.Time
		confirm       bool
	}
	toks := []tok{
		{acme, "loc-a", now.AddDate(0, 0, 20), true},    // ACTIVE, EXPIRING_SOON
		{globex, "loc-b", now.AddDate(0, 0, 200), true}, // ACTIVE, VALID; same location name as loc-a
		{globex, "loc-c", now.AddDate(0, 0, 300), true}, // ACTIVE, VALID
		{acme, "loc-d", now.AddDate(0, 0, 100), false},  // PENDING, VALID
	}
	ids := map[string]string{} // location uid → token ID
	for i, tk := range toks {
		f := appletest.TokenFile("Org", tk.exp, fmt.Sprintf("secret-%d", i))
		s.Fake.AddLocation(f, &appletest.Location{UID: tk.uid, Name: "Head Office", ExpiresAt: tk.exp})
		var up uploadResult
		s.upload(admin, tk.customer, f).decode(t, &up)
		ids[tk.uid] = up.UploadServerToken.Token.ID
		if tk.confirm {
			if r := s.action(admin, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
				t.Fatal(r.Raw)
			}
		}
	}

	var r scrapeResult
	waitFor(t, func() bool { r = scrape(t, s.URL, auth); return r.value(t, "orchard_leader", nil) == 1 })
	want := map[[2]string]float64{
		{"ACTIVE", "EXPIRING_SOON"}: 1,
		{"ACTIVE", "VALID"}:         2,
		{"PENDING", "VALID"}:        1,
	}
	for _, m := range r.series("orchard_server_tokens", nil) {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		k := [2]string{labels["state"], labels["expiry_status"]}
		if got := m.GetGauge().GetValue(); got != want[k] {
			t.Errorf("orchard_server_tokens%v = %v, want %v", k, got, want[k])
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("orchard_server_tokens lacks %v", want)
	}
	if n := len(r.series("orchard_server_token_expiry_timestamp_seconds", nil)); n != 3 {
		t.Errorf("%d expiry series, want one per ACTIVE token (3)", n)
	}
	for _, tk := range toks[:3] {
		got := r.value(t, "orchard_server_token_expiry_timestamp_seconds", map[string]string{"token_id": ids[tk.uid], "location_uid": tk.uid})
		if got != float64(tk.exp.Unix()) {
			t.Errorf("expiry of %s = %v, want %d", tk.uid, got, tk.exp.Unix())
		}
		ms := r.series("orchard_server_token_expiry_timestamp_seconds", map[string]string{"token_id": ids[tk.uid]})
		if len(ms) == 1 && !labelValues(ms, "customer_id")[tk.customer] {
			t.Errorf("expiry of %s has customer_id %v, want %s", tk.uid, labelValues(ms, "customer_id"), tk.customer)
		}
	}
	if _, err := relay.Decode(ids["loc-a"]); err != nil {
		t.Fatalf("token IDs are not GraphQL IDs: %v", err)
	}
	for _, secret := range []string{"Acme Secret Name", "Globex Secret Name", "Head Office", admin} {
		if strings.Contains(r.body, secret) {
			t.Errorf("/metrics shows %q", secret)
		}
	}
	if got := r.value(t, "orchard_scrape_error", nil); got != 0 {
		t.Errorf("orchard_scrape_error = %v, want 0", got)
	}
}

// A websocket held open is timed in its own histogram, not among the
// request durations.
func TestMetricsWebsocketLifetimeApart(t *testing.T) {
	s := startServer(t, nil)
	key := s.key()
	auth := "Bearer " + key
	sub := subscriber(t, s, key, "1", nil)
	waitFor(t, func() bool { return scrape(t, s.URL, auth).value(t, "orchard_websockets_open", nil) == 1 })
	const held = 1500 * time.Millisecond
	time.Sleep(held)
	sub.conn.CloseNow()
	var r scrapeResult
	upgrade := map[string]string{"method": "GET", "route": "/graphql", "status": "101"}
	waitFor(t, func() bool {
		r = scrape(t, s.URL, auth)
		// The socket is counted closed before its handler returns and the
		// request is counted, so wait for both.
		return r.value(t, "orchard_websockets_open", nil) == 0 && r.value(t, "orchard_http_requests_total", upgrade) >= 1
	})
	ws := r.families["orchard_websocket_duration_seconds"].GetMetric()
	if len(ws) != 1 || ws[0].GetHistogram().GetSampleCount() != 1 || ws[0].GetHistogram().GetSampleSum() < held.Seconds() {
		t.Fatalf("orchard_websocket_duration_seconds = %v, want one sample of at least %v", ws, held)
	}
	if got := r.value(t, "orchard_http_requests_total", upgrade); got != 1 {
		t.Errorf("the upgrade counted %v times, want 1", got)
	}
	for _, m := range r.series("orchard_http_request_duration_seconds", nil) {
		h := m.GetHistogram()
		if h.GetSampleSum() >= held.Seconds() {
			t.Errorf("request durations %v sum to %vs: the websocket's lifetime is among them", m.GetLabel(), h.GetSampleSum())
		}
	}
	if ms := r.series("orchard_http_request_duration_seconds", map[string]string{"method": "GET", "route": "/graphql"}); len(ms) > 0 {
		t.Errorf("the upgrade has a request duration: %v", ms)
	}
}

// With two instances on one PostgreSQL, only the job leader exports the
// token gauges, so their sum counts each token once; when it dies the
// other takes over.
func TestMetricsLeaderOnlyOnPostgres(t *testing.T) {
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skip(testdb.EnvPostgres + " is not set")
	}
	db := testdb.Postgres(t)
	fake := appletest.New()
	defer fake.Close()
	const token = "two-instances-metrics-token"
	env := append(os.Environ(), "ORCHARD_TEST_RUN_MAIN=1", "ORCHARD_DATA_DIR="+t.TempDir(),
		"ORCHARD_DATABASE_URL="+db.URL, "ORCHARD_APPLE_URL="+fake.BaseURL(), "ORCHARD_METRICS_TOKEN="+token,
		"ORCHARD_SECRET_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "ORCHARD_EXPIRY_SCAN_INTERVAL=1s")
	key := childAPIKey(t, env, "metrics")
	a, b := serveChild(t, env), serveChild(t, env)

	cust := a.srv.createCustomer(key, "Shared")
	exp := time.Now().AddDate(0, 0, 90)
	f := appletest.TokenFile("Shared", exp, "shared-metrics")
	fake.AddLocation(f, &appletest.Location{UID: "shared-metrics", Name: "Shared HQ", ExpiresAt: exp})
	var up uploadResult
	a.srv.upload(key, cust, f).decode(t, &up)
	if r := a.srv.action(key, "confirmServerToken", up.UploadServerToken.Token.ID); len(r.Errors) > 0 {
		t.Fatal(r.Raw)
	}

	active := map[string]string{"state": "ACTIVE", "expiry_status": "VALID"}
	sum := func(rs ...scrapeResult) (leaders, tokens, expiries float64) {
		for _, r := range rs {
			leaders += r.value(t, "orchard_leader", nil)
			if v := r.value(t, "orchard_server_tokens", active); !math.IsNaN(v) {
				tokens += v
			}
			expiries += float64(len(r.series("orchard_server_token_expiry_timestamp_seconds", nil)))
		}
		return
	}
	var ra, rb scrapeResult
	waitFor(t, func() bool {
		ra, rb = scrape(t, a.srv.URL, "Bearer "+token), scrape(t, b.srv.URL, "Bearer "+token)
		leaders, _, _ := sum(ra, rb)
		return leaders == 1
	})
	if leaders, tokens, expiries := sum(ra, rb); leaders != 1 || tokens != 1 || expiries != 1 {
		t.Fatalf("summed over both instances: %v leaders, %v ACTIVE tokens, %v expiry series; want 1 each", leaders, tokens, expiries)
	}
	leaderInst, other, otherScrape := a, b, rb
	if rb.value(t, "orchard_leader", nil) == 1 {
		leaderInst, other, otherScrape = b, a, ra
	}
	if otherScrape.families["orchard_server_tokens"] != nil || otherScrape.families["orchard_server_token_expiry_timestamp_seconds"] != nil {
		t.Error("the instance that does not lead exports the token gauges")
	}
	if otherScrape.families["go_goroutines"] == nil || otherScrape.families["orchard_http_requests_total"] == nil {
		t.Error("the instance that does not lead lacks its own process and request metrics")
	}

	_ = leaderInst.cmd.Process.Kill()
	var r scrapeResult
	waitFor(t, func() bool {
		r = scrape(t, other.srv.URL, "Bearer "+token)
		return r.value(t, "orchard_leader", nil) == 1
	})
	if got := r.value(t, "orchard_server_tokens", active); got != 1 {
		t.Errorf("the new leader exports %v ACTIVE tokens, want 1", got)
	}
}

// standardMethods are the methods of RFC 9110 and PATCH, the only ones
// the method label may name.
var standardMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}
