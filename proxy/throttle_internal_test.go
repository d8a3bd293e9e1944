package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ratelimit"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// TestThrottleSurvivesReload: handlers built one after another from
// configs with the same limits.failed_auth share one table (a reload keeps
// every client's bucket); a changed section gets a new one; the table is
// dropped when its last handler retires.
func TestThrottleSurvivesReload(t *testing.T) {
	srv := jwkstest.NewServer(jwkstest.NewKey("ES256", "k1"))
	defer srv.Close()
	config := func(route, failedAuth string) *Config {
		c, err := ParseConfig("gatehouse.yaml", []byte(`listen: ":8080"
upstream: "http://127.0.0.1:3000"
issuers:
  - issuer: "https://auth.test"
    audiences: [api]
    jwks_url: "`+srv.URL+`"
routes:
  - location: "`+route+`"
limits:
  failed_auth: `+failedAuth+`
audit:
  sink: none
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p := newParts(func(string, error) {})
	d := deps{metrics: NewMetrics(""), log: slog.New(slog.DiscardHandler), now: time.Now, source: "test", stdout: io.Discard}
	ctx := context.Background()
	handler := func(c *Config) *Handler {
		h, err := build(ctx, c, d, p)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h1 := handler(config("/a/", "{ rate: 1, burst: 1 }"))
	h1.throttle.Fail(netip.MustParseAddr("192.0.2.1"), time.Now())
	h2 := handler(config("/b/", "{ rate: 1, burst: 1 }"))
	h3 := handler(config("/b/", "{ rate: 2, burst: 1 }"))
	if h2.throttle != h1.throttle {
		t.Error("a reload with the same failed_auth section got a new table")
	}
	if h2.throttle.Len() != 1 {
		t.Errorf("table after reload holds %d clients, want 1", h2.throttle.Len())
	}
	if h3.throttle == h1.throttle {
		t.Error("a changed failed_auth section kept the old table")
	}
	h1.retire(ctx)
	if n := p.throttles.Len(); n != 2 {
		t.Errorf("after the first retire: %d tables, want 2", n)
	}
	h2.retire(ctx)
	h3.retire(ctx)
	if n := p.throttles.Len(); n != 0 {
		t.Errorf("after every retire: %d tables, want 0", n)
	}
}

// TestRetryAfter: whole seconds, rounded up, at least 1.
func TestRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		wait time.Duration
		want string
	}{
		{1, "1"}, {time.Second, "1"}, {time.Second + 1, "2"}, {99*time.Second + 500*time.Millisecond, "100"},
	} {
		if got := retryAfter(tt.wait); got != tt.want {
			t.Errorf("retryAfter(%v) = %q, want %q", tt.wait, got, tt.want)
		}
	}
}

// BenchmarkFailedAuthCheck is what limits.failed_auth adds to a request
// that is not throttled: finding the client IP and asking the table, for a
// client that is in the table (it failed once) and is allowed. Sub-
// benchmarks: a direct peer, a client behind a trusted proxy, and the
// direct peer from every core at once (one mutex for the whole table).
func BenchmarkFailedAuthCheck(b *testing.B) {
	now := time.Unix(1_900_000_000, 0)
	setup := func(trusted []netip.Prefix, remote, xff string) (*Handler, *http.Request) {
		h := &Handler{cfg: &Config{TrustedProxies: trusted}, throttle: ratelimit.New(10, 20, 65536)}
		r := httptest.NewRequest("GET", "/api/x", nil)
		r.RemoteAddr = remote
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		// Fill the table, so the lookup is in a full-sized map.
		for i := range 65535 {
			h.throttle.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
		}
		o := outcome{start: now}
		h.throttle.Fail(clientAddr(r.RemoteAddr, r.Header["X-Forwarded-For"], trusted), now)
		if h.throttled(nil, r, &o) {
			b.Fatal("throttled")
		}
		return h, r
	}
	b.Run("peer", func(b *testing.B) {
		h, r := setup(nil, "192.0.2.1:40000", "")
		o := outcome{start: now}
		b.ReportAllocs()
		for b.Loop() {
			if h.throttled(nil, r, &o) {
				b.Fatal("throttled")
			}
		}
	})
	b.Run("trusted_proxy", func(b *testing.B) {
		h, r := setup([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "10.9.9.9:40000", "203.0.113.1, 192.0.2.1")
		o := outcome{start: now}
		b.ReportAllocs()
		for b.Loop() {
			if h.throttled(nil, r, &o) {
				b.Fatal("throttled")
			}
		}
	})
	b.Run("peer_parallel", func(b *testing.B) {
		h, r := setup(nil, "192.0.2.1:40000", "")
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			o := outcome{start: now}
			for pb.Next() {
				if h.throttled(nil, r, &o) {
					b.Fatal("throttled")
				}
			}
		})
	})
}
