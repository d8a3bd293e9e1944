package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
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
			if p.discHits.Load() != 1 {
				t.Errorf("discovery fetched %d times, want 1", p.discHits.Load())
			}
		})
	}
}

func TestObserve(t *testing.T) {
	p, cfg := secretIdP(t)
	var mu sync.Mutex
	got := map[string]int{}
	cfg.Observe = func(g Grant, result string) {
		mu.Lock()
		got[string(g)+" "+result]++
		mu.Unlock()
	}
	c := newClient(t, cfg)
	ctx := context.Background()
	if _, err := c.Token(ctx, Request{Grant: ClientCredentials}); err != nil {
		t.Fatal(err)
	}
	c.Token(ctx, Request{Grant: ClientCredentials}) // cache hit: not observed
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
	want := map[string]int{"client_credentials ok": 1, string(TokenExchange) + " error": 1, "client_credentials unavailable": 1}
	if len(got) != len(want) {
		t.Errorf("Observe calls = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Observe %q called %d times, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
