package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDiscoveryFetchedOnce(t *testing.T) {
	p, cfg := secretIdP(t)
	cfg.TokenEndpoint, cfg.Issuer = "", p.issuer
	c := newClient(t, cfg)
	for i := range 5 {
		if _, err := c.Token(context.Background(), Request{Grant: ClientCredentials, Audience: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.discHits.Load(); n != 1 {
		t.Errorf("discovery fetched %d times for 5 token requests, want 1", n)
	}
}

func TestDiscoveryFailureBacksOff(t *testing.T) {
	p, cfg := secretIdP(t)
	cfg.TokenEndpoint, cfg.Issuer = "", p.issuer
	clock := newFakeClock()
	cfg.Clock = clock.Now
	var observed atomic.Int64
	cfg.Observe = func(g Grant, result string, _ time.Duration) {
		if result == ResultUnavailable {
			observed.Add(1)
		}
	}
	p.set(func(p *testIdP) { p.discovery = func(w http.ResponseWriter) { w.WriteHeader(404) } })
	c := newClient(t, cfg)
	r := Request{Grant: ClientCredentials}
	for range 3 {
		_, err := c.Token(context.Background(), r)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "openid-configuration answered 404") {
			t.Fatalf("discovery down: %v, want ErrUnavailable naming the 404", err)
		}
	}
	if n := p.discHits.Load(); n != 1 {
		t.Errorf("discovery fetched %d times within its backoff, want 1", n)
	}
	if n := observed.Load(); n != 3 {
		t.Errorf("Observe(unavailable) called %d times, want 3 (one per attempt)", n)
	}
	p.set(func(p *testIdP) { p.discovery = nil })
	clock.Add(backoffMax) // past any backoff
	if tok, err := c.Token(context.Background(), r); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("after the backoff: %+v, %v", tok, err)
	}
	if n := p.discHits.Load(); n != 2 {
		t.Errorf("discovery fetched %d times, want 2", n)
	}
}

func TestDiscoveryRefuses(t *testing.T) {
	tests := []struct {
		name, want string
		doc        func(p *testIdP) any
	}{
		{"another issuer", "names another issuer", func(p *testIdP) any {
			return map[string]any{"issuer": "https://evil.example", "token_endpoint": p.tokenURL()}
		}},
		{"issuer with a trailing slash", "names another issuer", func(p *testIdP) any {
			return map[string]any{"issuer": p.issuer + "/", "token_endpoint": p.tokenURL()}
		}},
		{"no token endpoint", "token_endpoint", func(p *testIdP) any { return map[string]any{"issuer": p.issuer} }},
		{"token endpoint with userinfo", "userinfo", func(p *testIdP) any {
			return map[string]any{"issuer": p.issuer, "token_endpoint": "http://u:p@127.0.0.1/token"}
		}},
		{"token endpoint not a string", "token_endpoint has the wrong JSON type", func(p *testIdP) any {
			return map[string]any{"issuer": p.issuer, "token_endpoint": 7}
		}},
		{"not an object", "not a JSON object", func(p *testIdP) any { return []string{"x"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, cfg := secretIdP(t)
			cfg.TokenEndpoint, cfg.Issuer = "", p.issuer
			doc := tt.doc(p)
			p.set(func(p *testIdP) {
				p.discovery = func(w http.ResponseWriter) {
					w.Header().Set("Content-Type", "application/json")
					json.NewEncoder(w).Encode(doc)
				}
			})
			c := newClient(t, cfg)
			_, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Token = %v, want ErrUnavailable containing %q", err, tt.want)
			}
			if p.tokenHits.Load() != 0 {
				t.Error("a token request went out after a refused discovery document")
			}
		})
	}
}

// TestDiscoveryNoDowngrade: an https issuer's discovery document cannot send
// the client secret over plain http.
func TestDiscoveryNoDowngrade(t *testing.T) {
	var tokenHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { tokenHits.Add(1) }))
	defer plain.Close()
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "token_endpoint": plain.URL + "/token"})
	}))
	defer srv.Close()
	hc := srv.Client()
	hc.Timeout = 10 * time.Second
	c := newClient(t, Config{Issuer: srv.URL, ClientID: "c", ClientSecret: "s", HTTPClient: hc})
	_, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "must be https") {
		t.Errorf("Token = %v, want ErrUnavailable saying https", err)
	}
	if tokenHits.Load() != 0 {
		t.Error("the client secret went to a plain http endpoint")
	}
}
