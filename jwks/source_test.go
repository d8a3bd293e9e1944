package jwks

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func TestNextDelay(t *testing.T) {
	is := &Issuer{RefreshInterval: 15 * time.Minute, MinRefreshInterval: 30 * time.Second}
	errX := fmt.Errorf("down")
	tests := []struct {
		name     string
		r        fetchResult
		failures int
		jitter   float64
		want     time.Duration
	}{
		{"success, no max-age", fetchResult{}, 0, 0.5, 15 * time.Minute},
		{"max-age inside the bounds", fetchResult{maxAge: 5 * time.Minute, hasMaxAge: true}, 0, 0, 5 * time.Minute},
		{"max-age below min_refresh_interval", fetchResult{maxAge: time.Second, hasMaxAge: true}, 0, 0, 30 * time.Second},
		{"max-age 0 (no-cache)", fetchResult{maxAge: 0, hasMaxAge: true}, 0, 0, 30 * time.Second},
		{"max-age above refresh_interval", fetchResult{maxAge: 24 * time.Hour, hasMaxAge: true}, 0, 0, 15 * time.Minute},
		{"first failure, no jitter", fetchResult{err: errX}, 1, 0, 500 * time.Millisecond},
		{"first failure, full jitter", fetchResult{err: errX}, 1, 0.999999, 999999 * time.Microsecond},
		{"fourth failure", fetchResult{err: errX}, 4, 0, 4 * time.Second},
		{"many failures capped", fetchResult{err: errX}, 30, 0, 7*time.Minute + 30*time.Second},
		{"absurd failure count capped", fetchResult{err: errX}, 1000, 0, 7*time.Minute + 30*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nextDelay(is, tt.r, tt.failures, tt.jitter)
			if d := got - tt.want; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("nextDelay = %v, want %v", got, tt.want)
			}
		})
	}
}

// loopTimers replaces the refresh loops' timers (Options.timer): the test
// sees each delay a loop asks for and fires it, so the loop's schedule is
// checked without the wall clock.
type loopTimers struct{ asked chan loopTimer }

type loopTimer struct {
	d    time.Duration
	fire chan time.Time
}

func newLoopTimers() *loopTimers { return &loopTimers{asked: make(chan loopTimer, 64)} }

func (lt *loopTimers) timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := loopTimer{d: d, fire: make(chan time.Time, 1)}
	select {
	case lt.asked <- t:
	default: // nobody is looking any more; the loop still ends on stop
	}
	return t.fire, func() bool { return true }
}

// next is the next timer a loop asks for.
func (lt *loopTimers) next(t *testing.T) loopTimer {
	t.Helper()
	select {
	case x := <-lt.asked:
		return x
	case <-time.After(eventWait):
		t.Fatalf("no refresh loop asked for a timer within %v", eventWait)
		return loopTimer{}
	}
}

// eventWait bounds the wait for something a goroutine does next: generous,
// so that a loaded machine does not fail a test; never an assertion on
// how long it took.
const eventWait = 30 * time.Second

// TestRefreshLoop runs the real loop (run) with injected timers: it must act
// on nextDelay's answer, not only compute it.
func TestRefreshLoop(t *testing.T) {
	t.Run("backoff after a failed first fetch", func(t *testing.T) {
		k := jwkstest.NewKey("ES256", "k")
		srv := server(t, k)
		var calls atomic.Int64
		srv.SetHandler(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Write(jwkstest.JWKS(k))
		})
		lt := newLoopTimers()
		e := newEnv(t, jwksIssuer(srv.URL), func(o *Options) { o.timer = lt.timer }) // refresh_interval 15m
		if m := e.v.Missing(); len(m) != 1 {
			t.Fatalf("Missing() after a 503 = %q, want the issuer", m)
		}
		// nextDelay after one failure: 1s backoff with equal jitter.
		retry := lt.next(t)
		if retry.d < 500*time.Millisecond || retry.d >= time.Second {
			t.Errorf("retry after the failed fetch in %v, want a backoff in [500ms, 1s)", retry.d)
		}
		retry.fire <- time.Time{}
		waitFor(t, eventWait, "keys after the 503", func() bool { return len(e.v.Missing()) == 0 })
		if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
			t.Errorf("Verify after the retry: %v", err)
		}
		if next := lt.next(t); next.d != 15*time.Minute {
			t.Errorf("next refresh after the recovery in %v, want refresh_interval 15m", next.d)
		}
	})

	t.Run("max-age 0 refreshes every min_refresh_interval", func(t *testing.T) {
		k := jwkstest.NewKey("ES256", "k")
		srv := server(t, k)
		srv.SetCacheControl("max-age=0")
		lt := newLoopTimers()
		e := newEnv(t, jwksIssuer(srv.URL, "refresh_interval: 1h", "min_refresh_interval: 100ms"), func(o *Options) { o.timer = lt.timer })
		for i := 1; i <= 3; i++ {
			next := lt.next(t)
			// max-age 0 is raised to min_refresh_interval, not taken as
			// "refetch at once".
			if next.d != 100*time.Millisecond {
				t.Fatalf("delay after fetch %d = %v, want min_refresh_interval 100ms", i, next.d)
			}
			if n := srv.Fetches(); n != int64(i) {
				t.Fatalf("fetches before timer %d fired = %d, want %d", i, n, i)
			}
			next.fire <- time.Time{}
			waitFor(t, eventWait, fmt.Sprint(i+1, " fetches"), func() bool { return srv.Fetches() >= int64(i+1) })
		}
		if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})
}

// waitFor polls cond until it holds, failing the test after limit (a
// generous bound on an event, not a timing assertion).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("no %s within %v", what, limit)
		case <-tick.C:
		}
	}
}

func TestMaxAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"public, max-age=300", 300 * time.Second, true},
		{"MAX-AGE=60", 60 * time.Second, true},
		{"max-age=abc", 0, false},
		{"no-store", 0, true},
		{"max-age=99999999999999", 365 * 24 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h := http.Header{}
			if tt.in != "" {
				h.Set("Cache-Control", tt.in)
			}
			got, ok := maxAge(h)
			if got != tt.want || ok != tt.ok {
				t.Errorf("maxAge(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestRotation: the IdP publishes a new key and signs with it at once; the
// first token with the new kid triggers one refetch and is accepted.
func TestRotation(t *testing.T) {
	k1, k2 := jwkstest.NewKey("RS256", "k1"), jwkstest.NewKey("ES256", "k2")
	srv := server(t, k1)
	e := newEnv(t, jwksIssuer(srv.URL))
	if n := srv.Fetches(); n != 1 {
		t.Fatalf("fetches after New = %d, want 1", n)
	}
	old := k1.Sign(e.claims(issA))
	if _, err := e.verify(old); err != nil {
		t.Fatal(err)
	}
	srv.SetKeys(k1, k2)
	if _, err := e.verify(k2.Sign(e.claims(issA))); err != nil {
		t.Fatalf("token with the new kid refused: %v", err)
	}
	if n := srv.Fetches(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
	// k1 retired: the cached token dies with it at the next refresh.
	srv.SetKeys(k2)
	e.src(0).refresh(context.Background())
	if _, err := e.verify(old); err != errUnknownKid {
		t.Errorf("token of a retired key = %v, want %v", err, errUnknownKid)
	}
	if got := testutil.ToFloat64(e.opts.Metrics.keys.WithLabelValues(issA)); got != 1 {
		t.Errorf("gatehouse_jwks_keys = %v, want 1", got)
	}
}

// TestUnknownKidBurst: 1,000 concurrent requests with a new kid make exactly one fetch.
func TestUnknownKidBurst(t *testing.T) {
	k1, k2 := jwkstest.NewKey("ES256", "k1"), jwkstest.NewKey("ES256", "k2")
	srv := server(t, k1)
	e := newEnv(t, jwksIssuer(srv.URL))
	srv.SetKeys(k1, k2)
	// Distinct tokens so that the token cache does not answer.
	toks := make([]string, 1000)
	for i := range toks {
		c := e.claims(issA)
		c["jti"] = fmt.Sprint(i)
		toks[i] = k2.Sign(c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(toks))
	start := make(chan struct{})
	for _, tok := range toks {
		wg.Go(func() {
			<-start
			if _, err := e.v.Verify(context.Background(), tok); err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Verify = %v", err)
		break
	}
	if n := srv.Fetches(); n != 2 {
		t.Errorf("fetches = %d, want exactly 2 (start + one refetch)", n)
	}
}

// TestUnknownKidFlood: random kids refetch at most once per min_refresh_interval.
func TestUnknownKidFlood(t *testing.T) {
	k := jwkstest.NewKey("RS256", "k")
	srv := server(t, k)
	e := newEnv(t, jwksIssuer(srv.URL, "min_refresh_interval: 30s"))
	flood := func(n int) {
		for i := range n {
			h := map[string]any{"alg": "RS256", "kid": fmt.Sprintf("random-%d-%d", i, time.Now().UnixNano())}
			if _, err := e.verify(k.SignHeader(h, e.claims(issA))); err != errUnknownKid {
				t.Fatalf("random kid = %v, want %v", err, errUnknownKid)
			}
		}
	}
	flood(50)
	if n := srv.Fetches(); n != 2 {
		t.Fatalf("fetches after the first flood = %d, want 2", n)
	}
	e.clk.advance(29 * time.Second)
	flood(50)
	if n := srv.Fetches(); n != 2 {
		t.Fatalf("fetches 29s later = %d, want 2", n)
	}
	e.clk.advance(time.Second)
	flood(50)
	if n := srv.Fetches(); n != 3 {
		t.Fatalf("fetches 30s later = %d, want 3", n)
	}
}

// TestStaleKeys: the JWKS is down for hours; known keys are accepted until
// max_stale, then the issuer answers keys_unavailable.
func TestStaleKeys(t *testing.T) {
	k := jwkstest.NewKey("RS256", "k")
	srv := server(t, k)
	var logs strings.Builder
	var logMu sync.Mutex
	e := newEnv(t, jwksIssuer(srv.URL, "max_stale: 24h"), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil))
	})
	staleLogs := func() int {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), "older than max_stale")
	}
	srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	src := e.src(0)
	for h := 1; h <= 23; h++ {
		e.clk.advance(time.Hour)
		if r := src.refresh(context.Background()); r.err == nil {
			t.Fatal("refresh against a 500 succeeded")
		}
		c := e.claims(issA)
		c["jti"] = fmt.Sprint(h)
		if _, err := e.verify(k.Sign(c)); err != nil {
			t.Fatalf("after %dh down: %v", h, err)
		}
	}
	long := e.claims(issA)
	long["exp"] = e.clk.now().Add(48 * time.Hour).Unix()
	cached := k.Sign(long)
	if _, err := e.verify(cached); err != nil {
		t.Fatal(err)
	}
	e.clk.advance(time.Hour + time.Second)
	if _, err := e.verify(k.Sign(e.claims(issA))); err != errKeysUnavailable {
		t.Errorf("after max_stale = %v, want %v", err, errKeysUnavailable)
	}
	if _, err := e.verify(cached); err != errKeysUnavailable {
		t.Errorf("cached token after max_stale = %v, want %v", err, errKeysUnavailable)
	}
	if got := testutil.ToFloat64(e.opts.Metrics.refreshTotal.WithLabelValues(issA, "error")); got != 23 {
		t.Errorf("refresh errors = %v, want 23", got)
	}
	// The crossing is logged once, at the next failed refresh, not at each.
	if n := staleLogs(); n != 0 {
		t.Errorf("logged staleness %d times before any refresh past max_stale", n)
	}
	for range 2 {
		src.refresh(context.Background())
	}
	if n := staleLogs(); n != 1 {
		t.Errorf("logged staleness %d times over two failed refreshes past max_stale, want 1", n)
	}
	// Recovery brings the issuer back.
	srv.SetHandler(nil)
	if r := src.refresh(context.Background()); r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := e.verify(cached); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

// TestBadAnswersKeepKeys: garbage, oversized, slow, empty and over-full
// answers fail the refresh and never replace good keys.
func TestBadAnswersKeepKeys(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	many := make([]*jwkstest.Key, 65)
	for i := range many {
		many[i] = jwkstest.NewKey("EdDSA", fmt.Sprint("m", i))
	}
	enc := k.PublicJWK()
	enc["use"] = "enc"
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>oops</html>")) }},
		{"not a JWKS", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"kty":"RSA"}`)) }},
		{"empty key list", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keys":[]}`)) }},
		{"only broken keys", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[{"kty":"RSA","kid":"x","n":"!!"},{"kty":"nope"}]}`))
		}},
		{"only use enc", func(w http.ResponseWriter, r *http.Request) { w.Write(mustJSON(map[string]any{"keys": []any{enc}})) }},
		{"65 signing keys", func(w http.ResponseWriter, r *http.Request) { w.Write(jwkstest.JWKS(many...)) }},
		{"2 MiB", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 2<<20) + `]}`))
		}},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, k)
			e := newEnv(t, jwksIssuer(srv.URL))
			srv.SetHandler(tt.h)
			// The slow answer ends with this context; the others fail on their own.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if r := e.src(0).refresh(ctx); r.err == nil {
				t.Fatal("refresh succeeded")
			}
			if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
				t.Errorf("good key lost: %v", err)
			}
			srv.SetHandler(nil)
		})
	}
}

func TestSkippedKeys(t *testing.T) {
	good := jwkstest.NewKey("RS256", "good")
	encK := jwkstest.NewKey("RS256", "enc")
	enc := encK.PublicJWK()
	enc["use"] = "enc"
	doc := mustJSON(map[string]any{"keys": []any{good.PublicJWK(), enc, map[string]any{"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"}}})
	srv := server(t)
	srv.SetBody(doc)
	e := newEnv(t, jwksIssuer(srv.URL))
	if _, err := e.verify(good.Sign(e.claims(issA))); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(encK.Sign(e.claims(issA))); err != errUnknownKid {
		t.Errorf("token of a use:enc key = %v, want %v", err, errUnknownKid)
	}
	m := e.opts.Metrics.skippedTotal
	if a, b := testutil.ToFloat64(m.WithLabelValues(issA, skipEnc)), testutil.ToFloat64(m.WithLabelValues(issA, skipParse)); a < 1 || b < 1 {
		t.Errorf("skipped use_enc = %v, unparseable = %v; want >= 1 each", a, b)
	}
}

func TestETagAndCacheControl(t *testing.T) {
	k := jwkstest.NewKey("EdDSA", "k")
	srv := server(t, k)
	srv.SetCacheControl("max-age=120")
	var inm []string
	var mu sync.Mutex
	e := newEnv(t, jwksIssuer(srv.URL))
	srv.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inm = append(inm, r.Header.Get("If-None-Match"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=120")
		w.WriteHeader(http.StatusNotModified)
	})
	before := e.src(0).set.Load()
	r := e.src(0).refresh(context.Background())
	if r.err != nil || !r.hasMaxAge || r.maxAge != 2*time.Minute {
		t.Fatalf("refresh on 304 = %+v", r)
	}
	if len(inm) != 1 || inm[0] == "" {
		t.Errorf("If-None-Match sent = %q, want the ETag", inm)
	}
	if e.src(0).set.Load() != before {
		t.Error("304 replaced the key set")
	}
	if got := testutil.ToFloat64(e.opts.Metrics.refreshTotal.WithLabelValues(issA, "success")); got != 2 {
		t.Errorf("refresh successes = %v, want 2", got)
	}
	if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
		t.Error(err)
	}
}

func TestDiscovery(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	keys := server(t, k)
	var issuer string
	disc := server(t)
	disc.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Write(mustJSON(map[string]any{"issuer": issuer, "jwks_uri": keys.URL + "/jwks"}))
	})
	cfg := "  - issuer: " + issA + "\n    audiences: [api]\n    discovery_url: " + disc.URL + "/.well-known/openid-configuration\n"

	issuer = issA
	e := newEnv(t, cfg)
	if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
		t.Errorf("via discovery: %v", err)
	}

	issuer = "https://impostor.example.com"
	e2 := newEnv(t, cfg)
	if _, err := e2.verify(k.Sign(e2.claims(issA))); err != errKeysUnavailable {
		t.Errorf("discovery with a wrong issuer: %v, want %v", err, errKeysUnavailable)
	}
	if m := e2.v.Missing(); len(m) != 1 || m[0] != issA {
		t.Errorf("Missing() = %q", m)
	}
}

func TestPublicKeyURL(t *testing.T) {
	k := jwkstest.NewKey("PS256", "")
	srv := server(t)
	srv.SetBody(k.PublicPEM())
	e := newEnv(t, "  - issuer: "+issA+"\n    audiences: [api]\n    public_key_url: "+srv.URL+"/key.pem\n")
	if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
		t.Error(err)
	}
}

// TestFirstFetchFails: an unreachable JWKS is not an error of New; the issuer
// answers keys_unavailable and shows in Missing until keys arrive.
func TestFirstFetchFails(t *testing.T) {
	k := jwkstest.NewKey("RS256", "k")
	srv := server(t, k)
	srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	e := newEnv(t, jwksIssuer(srv.URL)+"  - audiences: any\n    jwks_url: "+srv.URL+"\n")
	if m := e.v.Missing(); strings.Join(m, "|") != issA+"|(no iss)" {
		t.Errorf("Missing() = %q", m)
	}
	if _, err := e.verify(k.Sign(e.claims(issA))); err != errKeysUnavailable {
		t.Errorf("Verify = %v, want %v", err, errKeysUnavailable)
	}
	srv.SetHandler(nil)
	e.src(0).refresh(context.Background())
	if _, err := e.verify(k.Sign(e.claims(issA))); err != nil {
		t.Errorf("after keys arrived: %v", err)
	}
	if m := e.v.Missing(); len(m) != 1 {
		t.Errorf("Missing() = %q", m)
	}
}

// TestReloadSharesKeyCache: an unchanged issuer keeps its key cache (no
// refetch) and its cached tokens; a changed one gets a fresh cache, and its
// cached tokens are checked again under the new config; Close of the old
// verifier leaves the shared loop running and Close of the last stops it.
func TestReloadSharesKeyCache(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	other := server(t, k)
	e := newEnv(t, jwksIssuer(srv.URL)+"  - issuer: https://b\n    audiences: [api]\n    jwks_url: "+other.URL+"\n")
	tok := k.Sign(e.claims(issA))
	r1, verr := e.verify(tok)
	if verr != nil {
		t.Fatal(verr)
	}
	tokB := k.Sign(e.claims("https://b")) // aud api
	if _, verr := e.verify(tokB); verr != nil {
		t.Fatal(verr)
	}
	if _, ok := e.v.cache.get(digestOf(tokB)); !ok {
		t.Fatal("token of issuer B not cached")
	}
	opts := e.opts
	// B no longer accepts aud api: its cached token must not be served.
	opts.Issuers = issuers(t, jwksIssuer(srv.URL)+"  - issuer: https://b\n    audiences: [more]\n    jwks_url: "+other.URL+"\n")
	v2, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if n := srv.Fetches(); n != 1 {
		t.Errorf("unchanged issuer fetched %d times, want 1", n)
	}
	if n := other.Fetches(); n != 2 {
		t.Errorf("changed issuer fetched %d times, want 2", n)
	}
	if v2.issuers[0] != e.v.issuers[0] || v2.issuers[1] == e.v.issuers[1] {
		t.Error("key caches not shared as expected")
	}
	r2, err := v2.Verify(context.Background(), tok)
	if err != nil || r2 != r1 {
		t.Errorf("cached token after reload = %p, %v; want the same result %p", r2, err, r1)
	}
	if v2.cache != e.v.cache {
		t.Fatal("token cache not shared across the reload")
	}
	if _, err := v2.Verify(context.Background(), tokB); err != errAudience {
		t.Errorf("cached token of the changed issuer after reload = %v, want %v", err, errAudience)
	}
	if _, err := e.v.Verify(context.Background(), tokB); err != nil {
		t.Errorf("the old verifier refuses the token of its own issuer B: %v", err)
	}
	oldB := e.v.issuers[1]
	e.v.Close()
	e.v.Close() // idempotent
	select {
	case <-oldB.done:
	default:
		t.Error("loop of the replaced issuer still running after Close")
	}
	shared := v2.issuers[0]
	select {
	case <-shared.done:
		t.Fatal("shared loop stopped by the old verifier's Close")
	default:
	}
	if _, err := v2.Verify(context.Background(), tok); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(e.opts.Metrics.keys); n != 2 {
		t.Errorf("gatehouse_jwks_keys series while both issuers run = %d, want 2", n)
	}
	v2.Close()
	select {
	case <-shared.done:
	default:
		t.Error("shared loop still running after the last Close")
	}
	if n := testutil.CollectAndCount(e.opts.Metrics.keys); n != 0 {
		t.Errorf("gatehouse_jwks_keys series after the last Close = %d, want 0", n)
	}
}

// TestCAFile: an https JWKS signed by a private CA is trusted through the
// issuer's ca_file, and only through it.
func TestCAFile(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwkstest.JWKS(k)) }))
	t.Cleanup(tlsSrv.Close)
	ca := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	with := newEnv(t, jwksIssuer(tlsSrv.URL, "ca_file: "+ca))
	if _, err := with.verify(k.Sign(with.claims(issA))); err != nil {
		t.Errorf("with ca_file: %v", err)
	}
	without := newEnv(t, jwksIssuer(tlsSrv.URL))
	if _, err := without.verify(k.Sign(without.claims(issA))); err != errKeysUnavailable {
		t.Errorf("without ca_file: %v, want %v", err, errKeysUnavailable)
	}
}

// TestCloseLeavesNoGoroutine: after Close of the last verifier, the refresh
// loops and their idle HTTP connections are gone.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	before := runtime.NumGoroutine()
	e := newEnv(t, jwksIssuer(srv.URL)+"  - issuer: https://disc.example.com\n    audiences: any\n    discovery_url: "+srv.URL+"\n")
	v2, err := New(context.Background(), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.v.Close()
	v2.Close()
	waitGoroutines(t, before)
}

// waitGoroutines waits (bounded by eventWait) for the goroutine count to
// come back to before, and shows every stack when it does not.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.NewTimer(eventWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		select {
		case <-deadline.C:
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left over (before: %d):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		case <-tick.C:
		}
	}
}

// TestKeyFetchRedirects: a key URL configured with TLS is never fetched
// over plain http, neither through a redirect nor through the discovery
// document's jwks_uri; https redirects are followed, a bounded number.
func TestKeyFetchRedirects(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		if r.URL.Path == "/.well-known/openid-configuration" {
			w.Write(mustJSON(map[string]any{"issuer": issA, "jwks_uri": "http://" + r.Host + "/jwks"}))
			return
		}
		w.Write(jwkstest.JWKS(k))
	}))
	t.Cleanup(plain.Close)
	var tlsURL string
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/jwks":
			w.Write(jwkstest.JWKS(k))
		case "/moved":
			http.Redirect(w, r, tlsURL+"/jwks", http.StatusFound)
		case "/to-plain":
			http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, tlsURL+"/loop", http.StatusFound)
		case "/.well-known/openid-configuration":
			w.Write(mustJSON(map[string]any{"issuer": issA, "jwks_uri": plain.URL + "/jwks"}))
		}
	}))
	t.Cleanup(tlsSrv.Close)
	tlsURL = tlsSrv.URL
	ca := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	discovery := func(u string) string {
		return "  - issuer: " + issA + "\n    audiences: [api]\n    discovery_url: " + u + "\n    ca_file: " + ca + "\n"
	}
	tests := []struct {
		name string
		cfg  string
		want *Error
	}{
		{"https redirect to https", jwksIssuer(tlsURL+"/moved", "ca_file: "+ca), nil},
		{"https redirect to http", jwksIssuer(tlsURL+"/to-plain", "ca_file: "+ca), errKeysUnavailable},
		{"redirect loop", jwksIssuer(tlsURL+"/loop", "ca_file: "+ca), errKeysUnavailable},
		{"https discovery naming an http jwks_uri", discovery(tlsURL + "/.well-known/openid-configuration"), errKeysUnavailable},
		// Control: plain http throughout is the operator's choice (a local IdP).
		{"http discovery naming an http jwks_uri", discovery(plain.URL + "/.well-known/openid-configuration"), nil},
	}
	// A caller's own client gets the same policy, on a copy.
	t.Run("caller's client, https redirect to http", func(t *testing.T) {
		plainBefore := plainHits.Load()
		client := tlsSrv.Client()
		e := newEnv(t, jwksIssuer(tlsURL+"/to-plain"), func(o *Options) { o.HTTPClient = client })
		if _, err := e.verify(k.Sign(e.claims(issA))); err != errKeysUnavailable {
			t.Errorf("verify: %v, want %v", err, errKeysUnavailable)
		}
		if plainHits.Load() != plainBefore {
			t.Errorf("the plain http server was asked %d times", plainHits.Load()-plainBefore)
		}
		if client.CheckRedirect != nil {
			t.Error("the caller's client was modified")
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plainBefore := plainHits.Load()
			e := newEnv(t, tt.cfg)
			if _, err := e.verify(k.Sign(e.claims(issA))); err != tt.want {
				t.Errorf("verify: %v, want %v", err, tt.want)
			}
			if tt.want != nil && plainHits.Load() != plainBefore {
				t.Errorf("the plain http server was asked %d times", plainHits.Load()-plainBefore)
			}
		})
	}
}

// digestOf is the token cache key of tok.
func digestOf(tok string) *[sha256.Size]byte {
	h := sha256.Sum256([]byte(tok))
	return &h
}

// writerFunc adapts a function to io.Writer.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
