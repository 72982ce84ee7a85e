package httpapi

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestClientAddr(t *testing.T) {
	rl := newRateLimits(1, netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"))
	for _, c := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no proxy", "192.0.2.1:5000", nil, "192.0.2.1"},
		{"untrusted peer's header ignored", "192.0.2.1:5000", []string{"203.0.113.9"}, "192.0.2.1"},
		{"trusted peer, one hop", "10.0.0.1:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"right-most untrusted wins", "10.0.0.1:5000", []string{"198.51.100.1, 203.0.113.9, 10.2.2.2"}, "203.0.113.9"},
		{"several header lines", "10.0.0.1:5000", []string{"198.51.100.1", "203.0.113.9", "10.2.2.2"}, "203.0.113.9"},
		{"entry with a port", "10.0.0.1:5000", []string{"203.0.113.9:4711"}, "203.0.113.9"},
		{"IPv6 proxy and client", "[2001:db8::1]:443", []string{"2001:db9::5"}, "2001:db9::5"},
		{"only proxies", "10.0.0.1:5000", []string{"10.9.9.9, 10.8.8.8"}, "10.9.9.9"},
		{"garbage from a proxy", "10.0.0.1:5000", []string{"203.0.113.9, nonsense"}, "10.0.0.1"},
		{"trusted peer, no header", "10.0.0.1:5000", nil, "10.0.0.1"},
		{"mapped IPv4 peer", "[::ffff:10.0.0.1]:5000", []string{"203.0.113.9"}, "203.0.113.9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/graphql", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := rl.clientAddr(r); got != c.want {
				t.Fatalf("clientAddr = %q; want %q", got, c.want)
			}
		})
	}
}

// Retry-After is the time the bucket needs, rounded up to whole seconds.
func TestLimiterWait(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLimiter(2, 10)
	l.now = func() time.Time { return now }
	if ok, _ := l.take("k", 7); !ok {
		t.Fatal("7 of 10 refused")
	}
	ok, wait := l.take("k", 10) // 3 left, 7 missing at 2/s
	if ok || wait != 3500*time.Millisecond || retryAfter(wait) != "4" {
		t.Fatalf("take(10) with 3 left = %v, %v (Retry-After %s); want refused, 3.5s, 4", ok, wait, retryAfter(wait))
	}
	now = now.Add(3500 * time.Millisecond)
	if ok, _ := l.take("k", 10); !ok {
		t.Fatal("refused after waiting the time it was told")
	}
	// A cost above the bucket is a full bucket, payable once it refills.
	if ok, wait := l.take("k", 500); ok || wait != 5*time.Second {
		t.Fatalf("take(500) on an empty bucket = %v, %v; want refused, 5s", ok, wait)
	}
	now = now.Add(5 * time.Second)
	if ok, _ := l.take("k", 500); !ok {
		t.Fatal("a cost above the bucket was refused on a full bucket")
	}
}
