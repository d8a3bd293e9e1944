package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// throttleWorld is an in-process gatehouse with limits.failed_auth on,
// rate 0.01/s (one token per 100s) and burst 3, on a clock the test moves.
type throttleWorld struct {
	h       *proxy.Handler
	iss     *proxytest.Issuer
	metrics *proxy.Metrics
	audit   *proxytest.SyncBuffer
	clock   atomic.Int64 // unix nanoseconds
	user    string       // a valid token without role admin
	unknown string       // a well-signed token whose kid the JWKS does not have
}

var throttleT0 = time.Unix(1_900_000_000, 0)

func newThrottleWorld(t *testing.T) *throttleWorld {
	t.Helper()
	w := &throttleWorld{iss: proxytest.NewIssuer(t, "ES256"), metrics: proxy.NewMetrics("test"), audit: &proxytest.SyncBuffer{}}
	w.clock.Store(throttleT0.UnixNano())
	up := proxytest.NewUpstream(t)
	cfg := proxytest.Config(t, `listen: "127.0.0.1:0"
upstream: "`+up.URL+`"
issuers:
`+w.iss.YAML("api")+`
trusted_proxies: ["10.0.0.0/8"]
limits:
  failed_auth: { rate: 0.01, burst: 3, clients: 16 }
routes:
  - location: "/open/"
    auth: none
  - location: "/api/"
  - location: "/admin/"
    roles: { any: [admin] }
audit:
  sink: stdout
`)
	w.h = proxytest.NewHandler(t, cfg, proxy.HandlerOptions{Metrics: w.metrics, Stdout: w.audit, Now: w.now})
	claims := map[string]any{"aud": "api", "iat": throttleT0.Unix(), "exp": throttleT0.Add(24 * time.Hour).Unix()}
	w.user = w.iss.Token(claims)
	other := jwkstest.NewKey("ES256", "unknown-kid")
	claims["iss"] = w.iss.Name
	claims["sub"] = "123"
	w.unknown = other.Sign(claims)
	return w
}

func (w *throttleWorld) now() time.Time { return time.Unix(0, w.clock.Load()) }

func (w *throttleWorld) advance(d time.Duration) { w.clock.Add(int64(d)) }

// do sends one request from peer (HOST:PORT) with the given token ("" none)
// and X-Forwarded-For ("" none).
func (w *throttleWorld) do(peer, path, token, xff string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", path, nil)
	r.RemoteAddr = peer
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if xff != "" {
		r.Header.Set("X-Forwarded-For", xff)
	}
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, r)
	return rec
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var b struct{ Error string }
	if rec.Code != 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
			t.Fatalf("answer %d body %q: %v", rec.Code, rec.Body, err)
		}
	}
	return b.Error
}

// expect checks status, error code and Retry-After ("" for none).
func expect(t *testing.T, what string, rec *httptest.ResponseRecorder, status int, code, retry string) {
	t.Helper()
	if got := errorCode(t, rec); rec.Code != status || got != code {
		t.Errorf("%s: answer %d %q, want %d %q", what, rec.Code, got, status, code)
	}
	if got := rec.Header().Get("Retry-After"); got != retry {
		t.Errorf("%s: Retry-After %q, want %q", what, got, retry)
	}
	if status == 429 && rec.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("%s: a 429 with WWW-Authenticate %q", what, rec.Header().Get("WWW-Authenticate"))
	}
}

const (
	clientA = "192.0.2.1:40000"
	clientB = "198.51.100.7:40000"
	proxyP  = "10.1.2.3:40000" // in trusted_proxies
)

// TestFailedAuthThrottle: SPEC.md 12 limits.failed_auth, in-process.
func TestFailedAuthThrottle(t *testing.T) {
	w := newThrottleWorld(t)

	// Burst: three 401s are answered as 401s, the fourth request is a 429
	// whatever it carries, on every route.
	for i := range 3 {
		expect(t, "failure "+string(rune('1'+i)), w.do(clientA, "/api/x", "", ""), 401, "missing_token", "")
	}
	fetches := w.iss.JWKS.Fetches()
	expect(t, "unknown kid, throttled", w.do(clientA, "/api/x", w.unknown, ""), 429, "too_many_requests", "100")
	expect(t, "valid token, throttled", w.do(clientA, "/api/x", w.user, ""), 429, "too_many_requests", "100")
	expect(t, "auth: none, throttled", w.do(clientA, "/open/x", "", ""), 429, "too_many_requests", "100")
	expect(t, "unmatched path, throttled", w.do(clientA, "/elsewhere", "", ""), 429, "too_many_requests", "100")

	// No token of a throttled client is parsed: an unknown kid would make
	// the verifier refetch the JWKS (once per min_refresh_interval, 30s),
	// and 31s later it still does not. Retry-After counts down, rounded up.
	w.advance(31 * time.Second)
	expect(t, "unknown kid, throttled, 31s later", w.do(clientA, "/api/x", w.unknown, ""), 429, "too_many_requests", "69")
	if got := w.iss.JWKS.Fetches(); got != fetches {
		t.Errorf("JWKS fetches %d -> %d while throttled: a token was looked at", fetches, got)
	}
	// The same token from another client does make the verifier fetch:
	// the assertion above can fail.
	expect(t, "unknown kid, client B", w.do(clientB, "/api/x", w.unknown, ""), 401, "invalid_token", "")
	if got := w.iss.JWKS.Fetches(); got <= fetches {
		t.Errorf("JWKS fetches %d -> %d for an unknown kid: the control did not refetch", fetches, got)
	}
	expect(t, "client B, valid token", w.do(clientB, "/api/x", w.user, ""), 200, "", "")

	// trusted_proxies: behind a trusted peer, X-Forwarded-For names the
	// client; an untrusted peer's X-Forwarded-For is not believed.
	expect(t, "A behind the proxy", w.do(proxyP, "/api/x", w.user, "192.0.2.1"), 429, "too_many_requests", "69")
	expect(t, "another client behind the proxy", w.do(proxyP, "/api/x", w.user, "203.0.113.9"), 200, "", "")
	expect(t, "untrusted peer claiming A", w.do("192.0.2.50:1", "/api/x", w.user, "192.0.2.1"), 200, "", "")
	expect(t, "A, spoofing another client", w.do(clientA, "/api/x", w.user, "203.0.113.9"), 429, "too_many_requests", "69")

	// Refill: 100s after the burst one token is back: one 401, then 429.
	w.advance(69 * time.Second)
	expect(t, "after refill", w.do(clientA, "/api/x", "", ""), 401, "missing_token", "")
	expect(t, "after refill, again", w.do(clientA, "/api/x", "", ""), 429, "too_many_requests", "100")

	// Allowed requests and 403s take no token: with a full bucket (300s
	// later), ten of each, then still three 401s before the 429.
	w.advance(300 * time.Second)
	for range 10 {
		expect(t, "allowed", w.do(clientA, "/api/x", w.user, ""), 200, "", "")
		expect(t, "403", w.do(clientA, "/admin/x", w.user, ""), 403, "insufficient_scope", "")
	}
	for range 3 {
		expect(t, "full bucket", w.do(clientA, "/api/x", w.unknown, ""), 401, "invalid_token", "")
	}
	expect(t, "full bucket emptied", w.do(clientA, "/api/x", "", ""), 429, "too_many_requests", "100")

	// IPv6 counts by /64.
	for range 3 {
		expect(t, "v6 failure", w.do("[2001:db8::1]:1", "/api/x", "", ""), 401, "missing_token", "")
	}
	expect(t, "same /64", w.do("[2001:db8::2]:1", "/api/x", "", ""), 429, "too_many_requests", "100")
	expect(t, "other /64", w.do("[2001:db8:0:1::1]:1", "/api/x", "", ""), 401, "missing_token", "")

	// gRPC: the trailers-only rendering, grpc-status 8 RESOURCE_EXHAUSTED.
	r := httptest.NewRequest("POST", "/api/svc/Method", nil)
	r.RemoteAddr, r.ProtoMajor, r.ProtoMinor, r.Proto = clientA, 2, 0, "HTTP/2.0"
	r.Header.Set("Content-Type", "application/grpc")
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, r)
	if got := rec.Header().Get("Grpc-Status"); got != "8" || rec.Header().Get("Retry-After") != "100" {
		t.Errorf("gRPC: grpc-status %q Retry-After %q, want 8 and 100", got, rec.Header().Get("Retry-After"))
	}

	reg := w.metrics.Registry
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "/api/", "decision": "deny", "reason": "too_many_requests"}); got != 9 {
		t.Errorf("requests_total /api/ too_many_requests = %v, want 9", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "default", "reason": "too_many_requests"}); got != 1 {
		t.Errorf("requests_total default too_many_requests = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "/open/", "reason": "too_many_requests"}); got != 1 {
		t.Errorf("requests_total /open/ too_many_requests = %v, want 1", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(w.audit.String()), "\n") {
		var ev struct {
			Data struct {
				Decision, Reason, Detail, ClientIP string
				Status                             int
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if ev.Data.Reason != "too_many_requests" {
			continue
		}
		n++
		if d := ev.Data; d.Decision != "deny" || d.Status != 429 || d.Detail != "failed-auth rate" {
			t.Errorf("audit event %+v, want deny 429 detail %q", d, "failed-auth rate")
		}
	}
	if n != 11 {
		t.Errorf("%d too_many_requests audit events, want 11", n)
	}
}

// TestFailedAuthOff: without limits.failed_auth nothing is throttled.
func TestFailedAuthOff(t *testing.T) {
	p := newInProcess(t, "", nil)
	for i := range 100 {
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/x", nil))
		if rec.Code != 401 {
			t.Fatalf("request %d: %d, want 401", i+1, rec.Code)
		}
	}
}

// TestFailedAuthProcess: the real binary answers 429 with Retry-After.
func TestFailedAuthProcess(t *testing.T) {
	iss := proxytest.NewIssuer(t, "ES256")
	up := proxytest.NewUpstream(t)
	g := proxytest.StartProcess(t, `listen: "127.0.0.1:0"
upstream: "`+up.URL+`"
issuers:
`+iss.YAML("api")+`
limits:
  failed_auth: { rate: 0.001, burst: 2 }
routes:
  - location: "/"
audit:
  sink: none
`)
	get := func() *http.Response {
		res, err := http.Get(g.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	for i := range 2 {
		if res := get(); res.StatusCode != 401 {
			t.Fatalf("request %d: %d, want 401", i+1, res.StatusCode)
		}
	}
	res := get()
	// One token per 1000s: the wait is just under 1000s, rounded up.
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "1000" {
		t.Fatalf("third request: %d Retry-After %q, want 429 and 1000", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}
}

// TestFailedAuthConfig: decoding limits.failed_auth, its defaults and its
// errors with their positions.
func TestFailedAuthConfig(t *testing.T) {
	const head = `listen: ":8080"
upstream: "http://127.0.0.1:3000"
issuers:
  - issuer: "https://auth.test"
    audiences: [api]
    jwks_url: "https://auth.test/jwks"
routes:
  - location: "/"
limits:
`
	tests := []struct {
		name, limits string
		want         *proxy.FailedAuth
		err          string
	}{
		{"absent", "  max_body_bytes: 0\n", nil, ""},
		{"null", "  failed_auth:\n", nil, ""},
		{"defaults", "  failed_auth: {}\n", &proxy.FailedAuth{Rate: 10, Burst: 20, Clients: 65536}, ""},
		{"given", "  failed_auth: { rate: 0.5, burst: 1, clients: 10 }\n", &proxy.FailedAuth{Rate: 0.5, Burst: 1, Clients: 10}, ""},
		{"rate 0", "  failed_auth: { rate: 0 }\n", nil, "gatehouse.yaml:10:24: limits.failed_auth.rate must be more than 0 and at most 1e+06, got 0"},
		{"rate negative", "  failed_auth:\n    rate: -1\n", nil, "gatehouse.yaml:11:11: limits.failed_auth.rate must be more than 0"},
		{"rate text", "  failed_auth:\n    rate: fast\n", nil, `gatehouse.yaml:11:11: limits.failed_auth.rate: expected a number, got "fast"`},
		{"rate NaN", "  failed_auth:\n    rate: .nan\n", nil, `gatehouse.yaml:11:11: limits.failed_auth.rate: expected a number, got ".nan"`},
		{"burst 0", "  failed_auth:\n    burst: 0\n", nil, "gatehouse.yaml:11:12: must be at least 1, got 0"},
		{"clients 0", "  failed_auth:\n    clients: 0\n", nil, "gatehouse.yaml:11:14: must be at least 1, got 0"},
		{"clients huge", "  failed_auth:\n    clients: 100000000\n", nil, "gatehouse.yaml:11:14: limits.failed_auth.clients must be at most 2097152"},
		{"unknown key", "  failed_auth:\n    per: ip\n", nil, "gatehouse.yaml:11:5:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := proxy.ParseConfig("gatehouse.yaml", []byte(head+tt.limits))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseConfig error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Limits.FailedAuth
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Errorf("FailedAuth = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestFailedAuthExample: the commented limits.failed_auth block of
// config.example.yaml, uncommented, loads and says the defaults.
func TestFailedAuthExample(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	on := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "  # failed_auth:"):
			on = true
		case on && !strings.HasPrefix(l, "  #   "):
			on = false
		}
		if on {
			l = strings.Replace(l, "# ", "", 1)
			if strings.TrimSpace(strings.SplitN(l, "#", 2)[0]) == "" {
				continue // a comment's continuation line
			}
		}
		out = append(out, l)
	}
	text := strings.Join(out, "\n")
	if !strings.Contains(text, "\n  failed_auth:") {
		t.Fatal("config.example.yaml has no commented limits.failed_auth block")
	}
	cfg, err := proxy.ParseConfig("config.example.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Limits.FailedAuth, (proxy.FailedAuth{Rate: 10, Burst: 20, Clients: 65536}); got == nil || *got != want {
		t.Errorf("FailedAuth = %+v, want %+v", got, want)
	}
}
