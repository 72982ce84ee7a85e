package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// heavyQuery has a complexity of about 130,000: under the 200,000 limit,
// above the 100 units (99,000 complexity) a key's bucket holds at 20/s.
const heavyQuery = `{ customers(first: 100) { edges { node { tokens(first: 100) { edges { node {
  id orgName locationName locationUID countryCode expiresAt daysUntilExpiry expiryStatus state appCount lastSyncedAt } } } } } } }`

// postQuery posts query with key and returns the raw HTTP response.
func postQuery(t *testing.T, url, key, query string, header http.Header) *http.Response {
	t.Helper()
	body := fmt.Sprintf(`{"query":%q}`, query)
	req, _ := http.NewRequest(http.MethodPost, url+"/graphql", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// An operation the complexity limit admits is answered on its first try,
// however much of the bucket it needs; the next one is told the real wait,
// and waiting that long is enough. No 429 makes net/http complain of a
// second WriteHeader.
func TestOperationAboveBucket(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "20"})
	key := s.key()

	first := s.gql(key, heavyQuery, nil)
	if first.Status != http.StatusOK || len(first.Errors) > 0 {
		t.Fatalf("first try of a heavy query: HTTP %d %s", first.Status, first.Raw)
	}
	resp := postQuery(t, s.URL, key, heavyQuery, nil)
	// It emptied the bucket (100 units); at 20 units/s a full one is 5 s away.
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("second try at once: HTTP %d, Retry-After %q; want 429 and 5", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	time.Sleep(5 * time.Second)
	if again := s.gql(key, heavyQuery, nil); again.Status != http.StatusOK || len(again.Errors) > 0 {
		t.Fatalf("after waiting Retry-After: HTTP %d %s", again.Status, again.Raw)
	}

	// Eleven aliased confirms can never fit the bucket of ten: a request to
	// fix, not to retry.
	key = s.key() // a full bucket again
	r := s.gql(key, aliasedConfirms(11), nil)
	if r.Status != http.StatusOK || r.code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["reason"] != "RATE_LIMIT_BURST_EXCEEDED" ||
		!strings.Contains(r.Errors[0].Message, "at most 10") {
		t.Fatalf("11 aliased confirms: HTTP %d %s", r.Status, r.Raw)
	}
	// Aliases still count one each: six and six overrun the ten.
	six := aliasedConfirms(6)
	if r := s.gql(key, six, nil); r.Status != http.StatusOK || r.code() == "RATE_LIMITED" {
		t.Fatalf("6 aliased confirms: HTTP %d %s", r.Status, r.Raw)
	}
	if r := s.gql(key, six, nil); r.Status != http.StatusTooManyRequests || r.code() != "RATE_LIMITED" {
		t.Fatalf("6 more aliased confirms at once: HTTP %d %s", r.Status, r.Raw)
	}
	if strings.Contains(s.Log.String(), "superfluous") {
		t.Fatalf("the server log has a superfluous WriteHeader:\n%s", s.Log)
	}
}

// aliasedConfirms is one request of n confirms (of a token that does not
// exist: the limits are decided before any resolver runs).
func aliasedConfirms(n int) string {
	var q strings.Builder
	q.WriteString("mutation {")
	for i := range n {
		fmt.Fprintf(&q, ` c%d: confirmServerToken(input: {tokenID: "b3JjaGFyZDox"}) { token { id } }`, i)
	}
	q.WriteString(" }")
	return q.String()
}

// Behind trusted proxies each client has its own bucket, named by
// X-Forwarded-For; anyone else's X-Forwarded-For is ignored.
func TestTrustedProxies(t *testing.T) {
	// At 1/s an address may send 25 requests at once.
	const burst = 25
	flood := func(t *testing.T, s *testServer, xff ...string) (limitedAt int) {
		t.Helper()
		for i := 1; i <= burst+5; i++ {
			h := http.Header{}
			for _, v := range xff {
				h.Add("X-Forwarded-For", v)
			}
			if postQuery(t, s.URL, "", "{ customers { totalCount } }", h).StatusCode == http.StatusTooManyRequests {
				return i
			}
		}
		return 0
	}

	t.Run("from a trusted proxy", func(t *testing.T) {
		s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "1", "ORCHARD_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"})
		// The client's own claim (left) is ignored; the proxy's entry counts.
		if n := flood(t, s, "198.51.100.7", "203.0.113.1, 10.1.2.3"); n != burst+1 {
			t.Fatalf("client 203.0.113.1 was limited at request %d; want %d", n, burst+1)
		}
		for _, xff := range [][]string{{"203.0.113.2"}, {"203.0.113.1, 203.0.113.2"}} {
			if st := postQuery(t, s.URL, "", "{ customers { totalCount } }", http.Header{"X-Forwarded-For": xff}).StatusCode; st == http.StatusTooManyRequests {
				t.Fatalf("another client (X-Forwarded-For %q) shared the flooded bucket", xff)
			}
		}
		// A forged entry left of the real client does not escape its bucket.
		if st := postQuery(t, s.URL, "", "{ customers { totalCount } }", http.Header{"X-Forwarded-For": {"192.0.2.99, 203.0.113.1"}}).StatusCode; st != http.StatusTooManyRequests {
			t.Fatalf("a forged X-Forwarded-For entry escaped the limit: HTTP %d", st)
		}
	})

	t.Run("from an untrusted client", func(t *testing.T) {
		s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "1", "ORCHARD_TRUSTED_PROXIES": "10.0.0.0/8"})
		for i := 1; i <= burst+5; i++ {
			// A new made-up client each time: all are still 127.0.0.1.
			h := http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", i)}}
			if postQuery(t, s.URL, "", "{ customers { totalCount } }", h).StatusCode == http.StatusTooManyRequests {
				if i != burst+1 {
					t.Fatalf("limited at request %d; want %d", i, burst+1)
				}
				return
			}
		}
		t.Fatal("a client rotating X-Forwarded-For was never limited")
	})
}

// A 429 decided inside GraphQL is written once: net/http logs
// "superfluous response.WriteHeader" for a second status.
func TestRateLimitedAnswerWritesOnce(t *testing.T) {
	s := startServer(t, map[string]string{"ORCHARD_RATE_LIMIT": "1"})
	key := s.key()
	for range 5 { // the key's whole bucket
		postQuery(t, s.URL, key, "{ customers { totalCount } }", nil)
	}
	resp := postQuery(t, s.URL, key, "{ customers { totalCount } }", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("HTTP %d, Retry-After %q; want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if strings.Contains(s.Log.String(), "superfluous") {
		t.Fatalf("the server log has a second WriteHeader:\n%s", s.Log)
	}
}
