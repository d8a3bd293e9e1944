package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/jwks/revoke"
)

// benchRoutes are the 20 locations of examples/loadtest (every kind; the
// requests end on an exact, a prefix and a regex one), read from the file
// the load test embeds so that both measure the same policy.
var benchRoutes = func() string {
	b, err := os.ReadFile("../examples/loadtest/routes.yaml")
	if err != nil {
		panic(err)
	}
	return "\n" + string(b)
}()

var benchPaths = []string{"/api/v1/orders/42", "/api/v1/status", "/api/v1/users/1234", "/api/v2/items/7"}

const benchIssuer = "https://issuer.bench.example"

var benchBody = []byte(`{"id":42,"status":"shipped","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"total":"31.90"}` + "\n")

func benchUpstream(b *testing.B) *httptest.Server {
	ct, cl := []string{"application/json"}, []string{strconv.Itoa(len(benchBody))}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = ct
		w.Header()["Content-Length"] = cl
		_, _ = w.Write(benchBody)
	}))
	b.Cleanup(up.Close)
	return up
}

// benchHandler builds the pipeline of the load test's config in-process.
func benchHandler(b *testing.B, upstreamURL, jwksURL string) *Handler {
	return benchHandlerWith(b, upstreamURL, jwksURL, benchRoutes)
}

func benchHandlerWith(b *testing.B, upstreamURL, jwksURL, routes string) *Handler {
	b.Helper()
	dir := b.TempDir()
	cfgText := `listen: "127.0.0.1:0"
upstream: "` + upstreamURL + `"
issuers:
  - issuer: "` + benchIssuer + `"
    audiences: [bench-api]
    jwks_url: "` + jwksURL + `"
    algorithms: [RS256, ES256]
    required_claims: [sub]
token:
  cache_size: 10000
headers:
  X-Auth-Subject: sub
  X-Auth-Roles: roles
  X-Auth-Email: email
` + routes + `
audit:
  sink: file
  events: [allow, deny]
  file: "` + filepath.Join(dir, "audit.jsonl") + `"
`
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := New(context.Background(), cfg, HandlerOptions{Logger: log, Source: "gatehouse/bench", Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.Close(ctx)
	})
	return h
}

func benchClaims(n int) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": benchIssuer, "aud": "bench-api", "sub": "user-" + strconv.Itoa(n),
		"email": "user" + strconv.Itoa(n) + "@example.com", "roles": []string{"user", "reader"},
		"scope": "orders:read", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "jti-" + strconv.Itoa(n),
	}
}

// discardWriter is a reusable ResponseWriter, so that the benchmark
// measures the pipeline and not a recorder.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func newBenchRequest(path, authorization string) *http.Request {
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: path},
		RequestURI: path,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"Authorization": {authorization}, "Accept": {"application/json"}, "User-Agent": {"bench"}},
		Host:       "gatehouse.test",
		RemoteAddr: "127.0.0.1:40000",
		Body:       http.NoBody,
	}
}

// BenchmarkServeHTTP runs Handler.ServeHTTP of the load test's config
// (20 routes, 3 claim headers, audit to a file) against a loopback
// upstream, beside a bare httputil.ReverseProxy on the same upstream.
func BenchmarkServeHTTP(b *testing.B) {
	up := benchUpstream(b)
	rs := jwkstest.NewKey("RS256", "rs-1")
	es := jwkstest.NewKey("ES256", "es-1")
	js := jwkstest.NewServer(rs, es)
	b.Cleanup(js.Close)

	run := func(b *testing.B, h http.Handler, token func(i int) string, want int) {
		b.ReportAllocs()
		w := &discardWriter{h: http.Header{}}
		b.ResetTimer()
		cpu0 := processCPU()
		for i := 0; i < b.N; i++ {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, newBenchRequest(benchPaths[i%len(benchPaths)], token(i)))
			if w.code != want {
				b.Fatalf("status %d, want %d", w.code, want)
			}
		}
		// CPU time of the whole test process (gatehouse, the loopback
		// upstream, the client side) per request: on a shared machine
		// ns/op is mostly waiting for a core, this is the work.
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	}

	b.Run("baseline", func(b *testing.B) {
		target, _ := url.Parse(up.URL)
		rp := &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		}
		tok := "Bearer " + rs.Sign(benchClaims(0))
		run(b, rp, func(int) string { return tok }, http.StatusOK)
	})
	b.Run("one-rs256", func(b *testing.B) {
		h := benchHandler(b, up.URL, js.URL)
		tok := "Bearer " + rs.Sign(benchClaims(0))
		run(b, h, func(int) string { return tok }, http.StatusOK)
	})
	// The same with a `when` on every route the requests end on (SPEC.md
	// 13): the target is >= 0.97x one-rs256.
	b.Run("one-rs256-when", func(b *testing.B) {
		routes := strings.ReplaceAll(benchRoutes, "    roles: { any: [user", "    when: \"'user' in claims.roles\"\n    roles: { any: [user")
		if strings.Count(routes, "when:") < 4 {
			b.Fatal("the when rewrite missed the benchmark's routes")
		}
		h := benchHandlerWith(b, up.URL, js.URL, routes)
		tok := "Bearer " + rs.Sign(benchClaims(0))
		run(b, h, func(int) string { return tok }, http.StatusOK)
	})
	// upstream_assertion on (SPEC.md 11): the target is >= 0.9x
	// one-rs256. The token repeats, so after the first request the
	// assertion comes from the token's memo; assertion-sign shows what a
	// signature costs inside the pipeline (BenchmarkAssertionSign alone).
	for _, kind := range []string{"ec", "ed25519"} {
		b.Run("one-rs256-assertion-"+kind, func(b *testing.B) {
			keyFile := assertionKeyFile(b, b.TempDir(), kind)
			routes := benchRoutes + "\nupstream_assertion:\n  issuer: bench\n  key_file: \"" + keyFile + "\"\n  claims: [roles]\n"
			h := benchHandlerWith(b, up.URL, js.URL, routes)
			tok := "Bearer " + rs.Sign(benchClaims(0))
			run(b, h, func(int) string { return tok }, http.StatusOK)
		})
	}
	// The same with 100,000 revocations in force (none names the token):
	// the check on every cache hit (SPEC.md 12). The feed points at a port
	// nothing listens on; the store is filled directly.
	b.Run("one-rs256-revocation", func(b *testing.B) {
		h := benchHandlerWith(b, up.URL, js.URL, benchRoutes+"\nrevocation:\n  rabbitmq:\n    url: \"amqp://guest:guest@127.0.0.1:1/\"\n")
		es := make([]revoke.Entry, 0, 100000)
		until := time.Now().Add(time.Hour)
		for i := range 100000 {
			es = append(es, revoke.Entry{Kind: revoke.Kind(i % 3), Issuer: benchIssuer, Value: "revoked-" + strconv.Itoa(i), Before: time.Now().Unix() - 3600, Until: until})
		}
		h.parts.revocations.Apply(es...)
		tok := "Bearer " + rs.Sign(benchClaims(0))
		run(b, h, func(int) string { return tok }, http.StatusOK)
	})
	// The same with an egress listener configured: every allowed request
	// registers its token for propagate and ends its entry (SPEC.md 11).
	b.Run("one-rs256-egress", func(b *testing.B) {
		h := benchHandlerWith(b, up.URL, js.URL, benchRoutes+benchEgress(up.URL))
		tok := "Bearer " + rs.Sign(benchClaims(0))
		run(b, h, func(int) string { return tok }, http.StatusOK)
	})
	for _, k := range []*jwkstest.Key{rs, es} {
		b.Run("cold-"+strings.ToLower(k.Alg), func(b *testing.B) {
			h := benchHandler(b, up.URL, js.URL)
			toks := make([]string, b.N)
			for i := range toks {
				toks[i] = "Bearer " + k.Sign(benchClaims(i))
			}
			run(b, h, func(i int) string { return toks[i] }, http.StatusOK)
		})
	}
	b.Run("badsig-rs256", func(b *testing.B) {
		h := benchHandler(b, up.URL, js.URL)
		wrong := rs.Sign(benchClaims(-1))
		hdr, sig := wrong[:strings.IndexByte(wrong, '.')], wrong[strings.LastIndexByte(wrong, '.'):]
		toks := make([]string, b.N)
		for i := range toks {
			p, _ := json.Marshal(benchClaims(i))
			toks[i] = "Bearer " + hdr + "." + base64.RawURLEncoding.EncodeToString(p) + sig
		}
		run(b, h, func(i int) string { return toks[i] }, http.StatusUnauthorized)
	})
}

// processCPU is the user+system CPU time this process has used, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func benchEgress(upstreamURL string) string {
	return `
egress:
  listen: "127.0.0.1:0"
  routes:
    - host: orders
      upstream: "` + upstreamURL + `"
      token: propagate
`
}

// BenchmarkEgress sends the app's outbound calls through the egress
// listener's handler while their inbound request is in flight: propagate
// (lookup by X-Request-Id, Authorization set), beside a bare
// httputil.ReverseProxy forward to the same upstream.
func BenchmarkEgress(b *testing.B) {
	up := benchUpstream(b)
	rs := jwkstest.NewKey("RS256", "rs-1")
	js := jwkstest.NewServer(rs)
	b.Cleanup(js.Close)
	call := func() *http.Request {
		r := newBenchRequest("/orders/42", "Bearer app-own")
		r.Host = "orders"
		r.Header["X-Request-Id"] = []string{"inbound-1"}
		return r
	}
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		w := &discardWriter{h: http.Header{}}
		for b.Loop() {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, call())
			if w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
		}
	}
	b.Run("baseline", func(b *testing.B) {
		target, _ := url.Parse(up.URL)
		rp := &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		}
		run(b, rp)
	})
	b.Run("propagate", func(b *testing.B) {
		h := benchHandlerWith(b, up.URL, js.URL, benchRoutes+benchEgress(up.URL))
		res := &jwks.Result{Expiry: time.Now().Add(time.Hour)}
		slot := h.inbound.begin("inbound-1", nil, rs.Sign(benchClaims(0)), res)
		defer h.inbound.end(slot, 0)
		run(b, h.Egress())
	})
}

// BenchmarkCachedTokenMemory sends 10,000 distinct valid tokens through the
// pipeline (token.cache_size 10000) and reports the live heap each one
// leaves behind: the figure behind the 40 MiB peak-RSS target of the
// 10,000-token load. ES256 keeps the minting short; what stays cached does
// not depend on the algorithm.
func BenchmarkCachedTokenMemory(b *testing.B) {
	const n = 10000
	up := benchUpstream(b)
	es := jwkstest.NewKey("ES256", "es-1")
	js := jwkstest.NewServer(es)
	b.Cleanup(js.Close)
	toks := make([]string, n)
	for i := range toks {
		toks[i] = "Bearer " + es.Sign(benchClaims(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		h := benchHandler(b, up.URL, js.URL)
		w := &discardWriter{h: http.Header{}}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i, tok := range toks {
			clear(w.h)
			h.ServeHTTP(w, newBenchRequest(benchPaths[i%len(benchPaths)], tok))
			if w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "live-B/token")
		runtime.KeepAlive(h)
	}
}
