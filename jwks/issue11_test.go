package jwks

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// TestSubjectClaim: Result.Subject comes from the issuer's subject_claim
// (claim path rules), sub by default; a missing claim is no subject, never
// a refusal.
func TestSubjectClaim(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	entry := func(iss, subjectClaim string) string {
		s := "  - issuer: " + iss + "\n    audiences: [api]\n    jwks_url: " + srv.URL + "\n    required_claims: []\n"
		if subjectClaim != "" {
			s += "    subject_claim: " + subjectClaim + "\n"
		}
		return s
	}
	e := newEnv(t, entry("https://default", "")+entry("https://user", "user")+entry("https://nested", "profile.id")+
		entry("https://url", `"https://example.com/uid"`))
	tests := []struct {
		name, iss string
		extra     map[string]any
		want      string
	}{
		{"default sub", "https://default", nil, "user-1"},
		{"top-level user", "https://user", map[string]any{"user": "alice"}, "alice"},
		{"numeric userId style", "https://user", map[string]any{"user": 42}, "42"},
		{"user missing", "https://user", nil, ""},
		{"user an object", "https://user", map[string]any{"user": map[string]any{"a": 1}}, ""},
		{"nested path", "https://nested", map[string]any{"profile": map[string]any{"id": "p-7"}}, "p-7"},
		{"nested path missing", "https://nested", map[string]any{"profile": map[string]any{"name": "x"}}, ""},
		{"nested under a string", "https://nested", map[string]any{"profile": "flat"}, ""},
		{"exact name with dots wins", "https://url", map[string]any{"https://example.com/uid": "u-9"}, "u-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.claims(tt.iss)
			for k, v := range tt.extra {
				c[k] = v
			}
			res, err := e.verify(k.Sign(c))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Subject != tt.want {
				t.Errorf("Subject = %q, want %q", res.Subject, tt.want)
			}
		})
	}
}

// TestDetail: every refusal names its failed check for the audit event's
// data.detail (SPEC.md 15), and no detail holds token bytes.
func TestDetail(t *testing.T) {
	k := jwkstest.NewKey("RS256", "k")
	other := jwkstest.NewKey("RS256", "k")
	srv := server(t, k)
	e := newEnv(t, jwksIssuer(srv.URL, "required_claims: [sub, user]", "min_refresh_interval: 15m"), func(o *Options) { o.MaxTokenSize = 2048 })
	good := func(mod map[string]any) map[string]any {
		c := e.claims(issA)
		c["user"] = "alice"
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	now := e.clk.now().Unix()
	rs := map[string]any{"alg": "RS256", "kid": "k"}
	tests := []struct {
		name, tok, want string
	}{
		{"unknown kid", k.SignHeader(map[string]any{"alg": "RS256", "kid": "nope"}, good(nil)), "unknown key id"},
		{"signature", other.Sign(good(nil)), "signature"},
		{"audience", k.Sign(good(map[string]any{"aud": "elsewhere"})), "audience"},
		{"issuer", k.Sign(good(map[string]any{"iss": "https://unknown.example.com"})), "issuer"},
		{"expired", k.Sign(good(map[string]any{"exp": now - 3600})), "expired"},
		{"not yet valid", k.Sign(good(map[string]any{"nbf": now + 3600})), "not yet valid"},
		{"issued in the future", k.Sign(good(map[string]any{"iat": now + 3600})), "issued in the future"},
		{"algorithm not allowed", k.SignHeader(map[string]any{"alg": "RS384", "kid": "k"}, good(nil)), "algorithm not allowed"},
		{"malformed", "a.b", "malformed"},
		{"too large", strings.Repeat("a", 3000), "too large"},
		{"crit header", k.SignHeader(map[string]any{"alg": "RS256", "kid": "k", "crit": []string{"exp"}}, good(nil)), "crit header"},
		{"required claim user", k.SignHeader(rs, good(map[string]any{"user": nil})), "required claim user"},
		{"exp missing", k.Sign(good(map[string]any{"exp": nil})), "exp missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.verify(tt.tok)
			if err == nil {
				t.Fatal("Verify accepted the token")
			}
			if err.Detail != tt.want {
				t.Errorf("Detail = %q, want %q", err.Detail, tt.want)
			}
			if strings.Count(tt.tok, ".") == 2 && strings.Contains(err.Detail+err.Msg, tt.tok[strings.LastIndexByte(tt.tok, '.')+1:]) {
				t.Errorf("refusal holds token bytes: %q", err.Detail)
			}
		})
	}
	t.Run("keys unavailable", func(t *testing.T) {
		down := server(t, k)
		down.SetHandler(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
		e := newEnv(t, jwksIssuer(down.URL))
		if _, err := e.verify(k.Sign(e.claims(issA))); err == nil || err.Detail != "keys unavailable" {
			t.Errorf("Verify = %v, want detail %q", err, "keys unavailable")
		}
	})
}

// TestRefetch: Refetch fetches every remote issuer's keys now, at most once
// per min_refresh_interval, sharing that limit with the unknown-kid refetch,
// and does not need the caller to wait.
func TestRefetch(t *testing.T) {
	k1, k2 := jwkstest.NewKey("ES256", "k1"), jwkstest.NewKey("ES256", "k2")
	srv := server(t, k1)
	e := newEnv(t, jwksIssuer(srv.URL, "min_refresh_interval: 30s")+
		"  - issuer: https://file\n    audiences: [api]\n    jwks_file: testdata/jwks.json\n")
	if n := srv.Fetches(); n != 1 {
		t.Fatalf("fetches after New = %d, want 1", n)
	}
	srv.SetKeys(k1, k2)
	e.v.Refetch(context.Background())
	if n := srv.Fetches(); n != 2 {
		t.Fatalf("fetches after Refetch = %d, want 2", n)
	}
	if _, err := e.verify(k2.Sign(e.claims(issA))); err != nil {
		t.Errorf("the refetched key is not used: %v", err)
	}
	e.v.Refetch(context.Background())
	e.clk.advance(29 * time.Second)
	e.v.Refetch(context.Background())
	unknown := k1.SignHeader(map[string]any{"alg": "ES256", "kid": "k3"}, e.claims(issA))
	if _, err := e.verify(unknown); err != errUnknownKid {
		t.Errorf("unknown kid = %v, want %v", err, errUnknownKid)
	}
	if n := srv.Fetches(); n != 2 {
		t.Fatalf("fetches within min_refresh_interval of the last = %d, want 2 (Refetch and unknown kids share the limit)", n)
	}
	e.clk.advance(time.Second)
	// A cancelled context: Refetch returns at once, the fetch still happens.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.v.Refetch(ctx)
	waitFor(t, eventWait, "the refetch asked for with a cancelled context", func() bool { return srv.Fetches() == 3 })
	if got := testutil.ToFloat64(e.opts.Metrics.refetchTotal.WithLabelValues(issA)); got != 0 {
		t.Errorf("unknown-kid refetch counter = %v after Refetch only, want 0", got)
	}
}

// TestKeysChangedLog: every change of an issuer's key set is logged at info
// with the kids added and removed.
func TestKeysChangedLog(t *testing.T) {
	k1, k2 := jwkstest.NewKey("ES256", "k1"), jwkstest.NewKey("ES256", "k2")
	srv := server(t, k1)
	var buf syncBuf
	e := newEnv(t, jwksIssuer(srv.URL, "min_refresh_interval: 1s"), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, `msg="jwks keys changed"`) {
				out = append(out, l)
			}
		}
		return out
	}
	step := func(keys ...*jwkstest.Key) {
		srv.SetKeys(keys...)
		e.clk.advance(time.Second)
		e.v.Refetch(context.Background())
	}
	step(k1, k2) // k2 added
	step(k1, k2) // unchanged: no line
	step(k2)     // k1 removed
	got := lines()
	want := []string{"added=[k1] removed=[]", "added=[k2] removed=[]", "added=[] removed=[k1]"}
	if len(got) != len(want) {
		t.Fatalf("%d key change lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(got[i], "level=INFO") || !strings.Contains(got[i], "issuer="+issA) || !strings.Contains(got[i], w) {
			t.Errorf("line %d = %s, want INFO, the issuer and %s", i, got[i], w)
		}
	}
}

// TestPoolLifetime: two verifiers of one pool holding an unchanged issuer
// share one key cache and one refresh loop; the first Close leaves it
// running, the last stops it and drops the issuer's metric series, and the
// goroutine count comes back.
func TestPoolLifetime(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	before := runtime.NumGoroutine()
	lt := newLoopTimers()
	e := newEnv(t, jwksIssuer(srv.URL), func(o *Options) { o.timer = lt.timer })
	lt.next(t) // the loop waits for its next refresh
	v2, err := New(context.Background(), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-lt.asked:
		t.Fatalf("a second refresh loop runs (asked for %v)", x.d)
	default:
	}
	if n := srv.Fetches(); n != 1 {
		t.Errorf("fetches = %d, want 1 (one key cache)", n)
	}
	if e.v.issuers[0] != v2.issuers[0] || e.v.cache != v2.cache {
		t.Fatal("the verifiers do not share the key cache and the token cache")
	}
	src := v2.issuers[0]
	e.v.Close()
	select {
	case <-src.done:
		t.Fatal("the first Close stopped the shared loop")
	default:
	}
	if _, err := v2.Verify(context.Background(), k.Sign(e.claims(issA))); err != nil {
		t.Errorf("Verify after the first Close: %v", err)
	}
	if n := testutil.CollectAndCount(e.opts.Metrics.keys); n != 1 {
		t.Errorf("gatehouse_jwks_keys series = %d, want 1", n)
	}
	v2.Close()
	select {
	case <-src.done:
	default:
		t.Error("the last Close left the loop running")
	}
	if n := testutil.CollectAndCount(e.opts.Metrics.keys); n != 0 {
		t.Errorf("gatehouse_jwks_keys series after the last Close = %d, want 0", n)
	}
	if n := e.opts.Pool.sources.Len(); n != 0 {
		t.Errorf("pool holds %d key caches after the last Close", n)
	}
	waitGoroutines(t, before)
}
