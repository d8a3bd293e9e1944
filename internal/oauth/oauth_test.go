package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// secretIdP is an IdP checking client_secret_basic, with characters RFC 6749
// 2.3.1 makes clients form-urlencode.
func secretIdP(t *testing.T) (*testIdP, Config) {
	p := newTestIdP(t)
	p.clientID = "check:out+1"
	p.secret = "s3cr:et/&=+ %"
	return p, Config{TokenEndpoint: p.tokenURL(), ClientID: p.clientID, ClientSecret: p.secret}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestClientCredentials(t *testing.T) {
	p, cfg := secretIdP(t)
	clock := newFakeClock()
	cfg.Clock = clock.Now
	c := newClient(t, cfg)

	tok, err := c.Token(context.Background(), Request{Grant: ClientCredentials, Audience: "orders-api", Scopes: []string{"orders:write", "orders:read"}})
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken != "at-1" || !tok.Expiry.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("Token = %+v, want at-1 expiring in 1h", tok)
	}
	f := p.lastForm()
	want := map[string]string{"grant_type": "client_credentials", "audience": "orders-api", "scope": "orders:write orders:read"}
	for k, v := range want {
		if f.Get(k) != v {
			t.Errorf("IdP got %s=%q, want %q", k, f.Get(k), v)
		}
	}
	for _, k := range []string{"client_id", "client_secret", "subject_token", "client_assertion"} {
		if f.Has(k) {
			t.Errorf("IdP got %s in the body; client_secret_basic sends none", k)
		}
	}
}

func TestTokenExchangePrivateKeyJWT(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		key  crypto.Signer
		alg  jwa.SignatureAlgorithm
	}{
		{"ES256", ec, jwa.ES256},
		{"RS256", rsaKey, jwa.RS256},
		{"EdDSA", ed, jwa.EdDSA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestIdP(t)
			p.pub, p.alg = tt.key.Public(), tt.alg
			// No TokenEndpoint: discovered from the issuer.
			c := newClient(t, Config{Issuer: p.issuer, ClientID: p.clientID, PrivateKey: tt.key})
			const subject = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
			tok, err := c.Token(context.Background(), Request{Grant: TokenExchange, SubjectToken: subject, Audience: "orders-api", Scopes: []string{"orders:read"}})
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.AccessToken != "at-1" {
				t.Errorf("AccessToken = %q, want at-1", tok.AccessToken)
			}
			f := p.lastForm()
			want := map[string]string{
				"grant_type": string(TokenExchange), "subject_token": subject,
				"subject_token_type": tokenTypeAccessToken, "requested_token_type": tokenTypeAccessToken,
				"audience": "orders-api", "scope": "orders:read", "client_id": p.clientID,
			}
			for k, v := range want {
				if f.Get(k) != v {
					t.Errorf("IdP got %s=%q, want %q", k, f.Get(k), v)
				}
			}
			// A second request carries a new assertion (the IdP refuses a
			// replayed jti).
			if _, err := c.Token(context.Background(), Request{Grant: ClientCredentials, Audience: "payments"}); err != nil {
				t.Fatalf("second Token: %v", err)
			}
			if p.discHits.Load() != 1 {
				t.Errorf("discovery fetched %d times, want 1", p.discHits.Load())
			}
			p.mu.Lock()
			a := p.assertions[0]
			p.mu.Unlock()
			msg, err := jws.Parse([]byte(a))
			if err != nil {
				t.Fatal(err)
			}
			if kid, want := msg.Signatures()[0].ProtectedHeaders().KeyID(), rfc7638(t, tt.key.Public()); kid != want {
				t.Errorf("assertion kid = %q, want the RFC 7638 thumbprint %q", kid, want)
			}
			var cl struct{ Iat, Exp int64 }
			if err := json.Unmarshal(msg.Payload(), &cl); err != nil || cl.Exp-cl.Iat != 60 {
				t.Errorf("assertion lifetime = %d s (%v), want 60", cl.Exp-cl.Iat, err)
			}
		})
	}
}

func TestObserve(t *testing.T) {
	p, cfg := secretIdP(t)
	var mu sync.Mutex
	got := map[string]int{}
	var negative, hits int
	cfg.Observe = func(g Grant, result string, took time.Duration) {
		mu.Lock()
		got[string(g)+" "+result]++
		if took < 0 {
			negative++
		}
		mu.Unlock()
	}
	cfg.Hit = func(g Grant) {
		mu.Lock()
		got[string(g)+" hit"]++
		hits++
		mu.Unlock()
	}
	c := newClient(t, cfg)
	ctx := context.Background()
	if _, err := c.Token(ctx, Request{Grant: ClientCredentials}); err != nil {
		t.Fatal(err)
	}
	c.Token(ctx, Request{Grant: ClientCredentials}) // cache hit: Hit, not Observe
	p.set(func(p *testIdP) { p.secret = "rotated" })
	if _, err := c.Token(ctx, Request{Grant: TokenExchange, SubjectToken: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Token with a wrong secret: %v, want ErrUnavailable", err)
	}
	p.srv.Close()
	if _, err := c.Token(ctx, Request{Grant: ClientCredentials, Audience: "b"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Token with the IdP down: %v, want ErrUnavailable", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{"client_credentials ok": 1, "client_credentials hit": 1, string(TokenExchange) + " error": 1, "client_credentials unavailable": 1}
	if negative > 0 || hits != 1 {
		t.Errorf("%d negative durations, %d hits (want 0 and 1)", negative, hits)
	}
	if len(got) != len(want) {
		t.Errorf("Observe calls = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Observe %q called %d times, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

func TestCacheHit(t *testing.T) {
	p, cfg := secretIdP(t)
	c := newClient(t, cfg)
	ctx := context.Background()
	r := Request{Grant: TokenExchange, SubjectToken: "inbound-1", Audience: "orders", Scopes: []string{"b", "a"}}
	for i := range 50 {
		tok, err := c.Token(ctx, r)
		if err != nil || tok.AccessToken != "at-1" {
			t.Fatalf("call %d: Token = %+v, %v; want at-1", i, tok, err)
		}
	}
	// Scope order does not matter.
	if tok, _ := c.Token(ctx, Request{Grant: TokenExchange, SubjectToken: "inbound-1", Audience: "orders", Scopes: []string{"a", "b"}}); tok.AccessToken != "at-1" {
		t.Errorf("same scopes sorted: %q, want the cached at-1", tok.AccessToken)
	}
	// A digest the caller computed is the same key as the token's own.
	digest := sha256.Sum256([]byte("inbound-1"))
	if tok, _ := c.Token(ctx, Request{Grant: TokenExchange, SubjectToken: "inbound-1", SubjectDigest: &digest, Audience: "orders", Scopes: []string{"a", "b"}}); tok.AccessToken != "at-1" {
		t.Errorf("same request with SubjectDigest: %q, want the cached at-1", tok.AccessToken)
	}
	if n := p.tokenHits.Load(); n != 1 {
		t.Fatalf("IdP called %d times for 52 identical requests, want 1", n)
	}
	// Every part of the key tells requests apart.
	others := []Request{
		{Grant: TokenExchange, SubjectToken: "inbound-2", Audience: "orders", Scopes: []string{"a", "b"}},
		{Grant: TokenExchange, SubjectToken: "inbound-1", Audience: "payments", Scopes: []string{"a", "b"}},
		{Grant: TokenExchange, SubjectToken: "inbound-1", Audience: "orders", Scopes: []string{"a"}},
		{Grant: TokenExchange, SubjectToken: "inbound-1", Audience: "orders"},
		{Grant: ClientCredentials, Audience: "orders", Scopes: []string{"a", "b"}},
	}
	for i, o := range others {
		tok, err := c.Token(ctx, o)
		if err != nil {
			t.Fatalf("Token(%+v): %v", o, err)
		}
		if tok.AccessToken == "at-1" {
			t.Errorf("Token(%+v) = the cached at-1; want its own", o)
		}
		if n := p.tokenHits.Load(); n != int64(i+2) {
			t.Errorf("after %+v: IdP called %d times, want %d", o, n, i+2)
		}
	}
	// The cache keeps no subject token.
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if strings.Contains(k, "inbound-") {
			t.Errorf("cache key %q holds the subject token", k)
		}
	}
}

// countingCtx counts calls of Done: Token reaches its select, i.e. waits
// for a fetch, exactly once per call. It tells the test every caller is
// waiting without a sleep or a hook in the code.
type countingCtx struct {
	context.Context
	n *atomic.Int64
}

func (c countingCtx) Done() <-chan struct{} {
	c.n.Add(1)
	return c.Context.Done()
}

func TestConcurrentCallsOneRequest(t *testing.T) {
	p, cfg := secretIdP(t)
	gate := make(chan struct{})
	p.set(func(p *testIdP) { p.gate = gate })
	c := newClient(t, cfg)
	const callers = 32
	var waiting atomic.Int64
	ctx := countingCtx{context.Background(), &waiting}
	r := Request{Grant: TokenExchange, SubjectToken: "inbound", Audience: "orders"}
	var wg sync.WaitGroup
	toks := make([]Token, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = c.Token(ctx, r)
		}()
	}
	waitFor(t, "every caller waiting", func() bool { return waiting.Load() == callers })
	close(gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || toks[i].AccessToken != "at-1" {
			t.Errorf("caller %d: %+v, %v; want at-1", i, toks[i], errs[i])
		}
	}
	if n := p.tokenHits.Load(); n != 1 {
		t.Errorf("IdP called %d times for %d concurrent identical calls, want 1", n, callers)
	}
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	p, cfg := secretIdP(t)
	gate := make(chan struct{})
	p.set(func(p *testIdP) { p.gate = gate })
	c := newClient(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r := Request{Grant: ClientCredentials}
	done := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx, r)
		done <- err
	}()
	waitFor(t, "the request at the IdP", func() bool { return p.tokenHits.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want ErrUnavailable and context.Canceled", err)
	}
	close(gate)
	// The fetch went on and its result is cached for the next caller.
	waitFor(t, "the fetch to be cached", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.entries) == 1
	})
	if tok, err := c.Token(context.Background(), r); err != nil || tok.AccessToken != "at-1" || p.tokenHits.Load() != 1 {
		t.Errorf("after the fetch: %+v, %v, %d IdP calls; want the cached at-1 and 1 call", tok, err, p.tokenHits.Load())
	}
}

func TestRefreshBeforeExpiry(t *testing.T) {
	p, cfg := secretIdP(t)
	p.expiresIn = 100
	clock := newFakeClock()
	cfg.Clock = clock.Now
	c := newClient(t, cfg)
	ctx := context.Background()
	r := Request{Grant: ClientCredentials, Audience: "orders"}
	if tok, err := c.Token(ctx, r); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("first: %+v, %v", tok, err)
	}
	clock.Add(89 * time.Second) // before exp − 10 %
	if tok, _ := c.Token(ctx, r); tok.AccessToken != "at-1" || p.tokenHits.Load() != 1 {
		t.Fatalf("at 89 s: %q after %d IdP calls, want the cached at-1 and 1 call", tok.AccessToken, p.tokenHits.Load())
	}
	clock.Add(2 * time.Second) // 91 s: past exp − 10 %, before exp
	if tok, _ := c.Token(ctx, r); tok.AccessToken != "at-1" {
		t.Fatalf("at 91 s: %q, want at-1 at once while the refresh runs", tok.AccessToken)
	}
	waitFor(t, "the refreshed token", func() bool {
		tok, _ := c.Token(ctx, r)
		return tok.AccessToken == "at-2"
	})
	if n := p.tokenHits.Load(); n != 2 {
		t.Errorf("IdP called %d times, want 2 (one refresh)", n)
	}
	tok, _ := c.Token(ctx, r)
	if want := clock.Now().Add(100 * time.Second); !tok.Expiry.Equal(want) {
		t.Errorf("refreshed Expiry = %v, want %v", tok.Expiry, want)
	}
}

func TestExpiredFetchesSynchronously(t *testing.T) {
	p, cfg := secretIdP(t)
	p.expiresIn = 100
	clock := newFakeClock()
	cfg.Clock = clock.Now
	c := newClient(t, cfg)
	r := Request{Grant: ClientCredentials}
	c.Token(context.Background(), r)
	clock.Add(100 * time.Second) // exactly exp: no longer valid
	if tok, err := c.Token(context.Background(), r); err != nil || tok.AccessToken != "at-2" {
		t.Errorf("at exp: %+v, %v; want a new at-2", tok, err)
	}
}

func TestIdPDownServesValidCachedToken(t *testing.T) {
	p, cfg := secretIdP(t)
	p.expiresIn = 100
	clock := newFakeClock()
	cfg.Clock = clock.Now
	c := newClient(t, cfg)
	ctx := context.Background()
	r := Request{Grant: ClientCredentials}
	c.Token(ctx, r)
	p.set(func(p *testIdP) {
		p.respond = func(w http.ResponseWriter, _ *http.Request, _ int64) {
			oauthError(w, 503, "temporarily_unavailable", "")
		}
	})
	clock.Add(95 * time.Second)
	if tok, err := c.Token(ctx, r); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("IdP down, token valid: %+v, %v; want at-1", tok, err)
	}
	waitFor(t, "the failed refresh", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return p.tokenHits.Load() == 2 && len(c.inflight) == 0
	})
	// Backed off: the next calls neither wait nor ask the IdP again.
	for range 10 {
		if tok, err := c.Token(ctx, r); err != nil || tok.AccessToken != "at-1" {
			t.Fatalf("IdP down, token valid, backing off: %+v, %v", tok, err)
		}
	}
	if n := p.tokenHits.Load(); n != 2 {
		t.Errorf("IdP called %d times during the backoff, want 2", n)
	}
	clock.Add(5 * time.Second) // exp
	tok, err := c.Token(ctx, r)
	if !errors.Is(err, ErrUnavailable) || tok.AccessToken != "" {
		t.Fatalf("IdP down, token expired: %+v, %v; want ErrUnavailable", tok, err)
	}
	if !strings.Contains(err.Error(), "503 temporarily_unavailable") {
		t.Errorf("error %q does not say what the IdP did", err)
	}
}

func TestIdPDownWithoutCache(t *testing.T) {
	tests := []struct {
		name, want string
		down       func(p *testIdP)
	}{
		{"connection refused", "token request to", func(p *testIdP) { p.srv.Close() }},
		{"500", "answered 500", func(p *testIdP) {
			p.respond = func(w http.ResponseWriter, _ *http.Request, _ int64) { w.WriteHeader(500) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, cfg := secretIdP(t)
			c := newClient(t, cfg)
			p.set(tt.down)
			tok, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
			if !errors.Is(err, ErrUnavailable) || tok != (Token{}) {
				t.Fatalf("Token = %+v, %v; want ErrUnavailable", tok, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestSlowIdPTimesOut(t *testing.T) {
	p, cfg := secretIdP(t)
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	p.set(func(p *testIdP) { p.gate = gate })
	cfg.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
	c := newClient(t, cfg)
	_, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("slow IdP: %v, want ErrUnavailable saying it timed out", err)
	}
}

func TestLRUBound(t *testing.T) {
	p, cfg := secretIdP(t)
	cfg.MaxEntries = 3
	c := newClient(t, cfg)
	ctx := context.Background()
	get := func(aud string) string {
		t.Helper()
		tok, err := c.Token(ctx, Request{Grant: ClientCredentials, Audience: aud})
		if err != nil {
			t.Fatalf("Token(%s): %v", aud, err)
		}
		return tok.AccessToken
	}
	a := get("a") // at-1
	get("b")
	get("c")
	if get("a") != a { // a is now the most recently used; b the least
		t.Fatal("a was not cached")
	}
	get("d") // evicts b
	for i := range 100 {
		get(fmt.Sprintf("x%d", i))
		c.mu.Lock()
		n, m := len(c.entries), c.lru.Len()
		c.mu.Unlock()
		if n > 3 || m != n {
			t.Fatalf("cache holds %d entries (list %d), bound 3", n, m)
		}
	}
	hits := p.tokenHits.Load()
	get("x99")
	if p.tokenHits.Load() != hits {
		t.Error("the most recent entry was evicted")
	}
	get("a")
	if p.tokenHits.Load() != hits+1 {
		t.Error("an old entry survived 100 newer ones in a cache of 3")
	}

	// The least recently used goes first.
	c2 := newClient(t, cfg)
	for _, aud := range []string{"a", "b", "c", "a", "d"} {
		c2.Token(ctx, Request{Grant: ClientCredentials, Audience: aud})
	}
	hits = p.tokenHits.Load()
	for _, aud := range []string{"a", "c", "d"} {
		c2.Token(ctx, Request{Grant: ClientCredentials, Audience: aud})
	}
	if p.tokenHits.Load() != hits {
		t.Error("a, c or d was evicted; b was the least recently used")
	}
	c2.Token(ctx, Request{Grant: ClientCredentials, Audience: "b"})
	if p.tokenHits.Load() != hits+1 {
		t.Error("b was not evicted")
	}
}

func TestClose(t *testing.T) {
	p, cfg := secretIdP(t)
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	p.set(func(p *testIdP) { p.gate = gate })
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
		done <- err
	}()
	waitFor(t, "the request at the IdP", func() bool { return p.tokenHits.Load() == 1 })
	c.Close() // cancels the blocked fetch and waits for it
	if err := <-done; !errors.Is(err, ErrUnavailable) {
		t.Errorf("Token cut by Close: %v, want ErrUnavailable", err)
	}
	if _, err := c.Token(context.Background(), Request{Grant: ClientCredentials}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Token after Close: %v, want ErrUnavailable", err)
	}
}

// BenchmarkTokenCached is the egress hot path: a cache hit for an exchange
// (a ~900-byte inbound token is hashed on every call) and for client
// credentials.
func BenchmarkTokenCached(b *testing.B) {
	p := newTestIdP(b)
	p.secret = "s"
	c, err := New(Config{TokenEndpoint: p.tokenURL(), ClientID: p.clientID, ClientSecret: p.secret})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	subject := fakeJWT(map[string]any{"sub": "alice", "pad": strings.Repeat("x", 800)})
	cases := []struct {
		name string
		r    Request
	}{
		{"exchange", Request{Grant: TokenExchange, SubjectToken: subject, Audience: "orders-api", Scopes: []string{"orders:read", "orders:write"}}},
		{"exchange_unsorted_scopes", Request{Grant: TokenExchange, SubjectToken: subject, Audience: "orders-api", Scopes: []string{"orders:write", "orders:read"}}},
		{"client_credentials", Request{Grant: ClientCredentials, Audience: "orders-api", Scopes: []string{"orders:read"}}},
	}
	digest := sha256.Sum256([]byte(subject))
	cases = append(cases, struct {
		name string
		r    Request
	}{"exchange_digest_given", Request{Grant: TokenExchange, SubjectToken: subject, SubjectDigest: &digest, Audience: "orders-api", Scopes: []string{"orders:read", "orders:write"}}})
	ctx := context.Background()
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := c.Token(ctx, bc.r); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Token(ctx, bc.r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestConcurrentMixedLoad runs hits, misses, refreshes and evictions at once
// (for -race): every call gets a token, and a token is never served for
// another key.
func TestConcurrentMixedLoad(t *testing.T) {
	p, cfg := secretIdP(t)
	p.expiresIn = 100
	clock := newFakeClock()
	cfg.Clock = clock.Now
	cfg.MaxEntries = 5
	// Each token names its audience, so a crossed key shows.
	p.set(func(p *testIdP) {
		p.respond = func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"%s-%d","token_type":"Bearer","expires_in":100}`, r.PostForm.Get("audience"), n)
		}
	})
	c := newClient(t, cfg)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				aud := fmt.Sprintf("aud%d", (g*7+i)%12)
				if i%50 == 0 {
					clock.Add(30 * time.Second)
				}
				tok, err := c.Token(context.Background(), Request{Grant: ClientCredentials, Audience: aud})
				if err != nil || !strings.HasPrefix(tok.AccessToken, aud+"-") {
					t.Errorf("Token(%s) = %+v, %v", aud, tok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 5 {
		t.Errorf("cache holds %d entries, bound 5", len(c.entries))
	}
}
