package proxytest

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy"
)

// Config loads YAML text as a gatehouse config file (written to a temp
// file, so that it is read exactly as the binary reads one); any error
// fails the test.
func Config(t testing.TB, text string) *proxy.Config {
	t.Helper()
	cfg, err := proxy.LoadConfig(writeConfig(t, text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// NewHandler builds cfg in-process with proxy.New and closes it when the
// test ends (failing the test when the close runs out of its 10 s).
func NewHandler(t testing.TB, cfg *proxy.Config, opts proxy.HandlerOptions) *proxy.Handler {
	t.Helper()
	h, err := proxy.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close handler: %v", err)
		}
	})
	return h
}

// Issuer is a signing key served by a JWKS server; its issuer name is the
// server's URL.
type Issuer struct {
	Key  *jwkstest.Key
	JWKS *jwkstest.Server
	Name string
}

// NewIssuer makes a key of alg (RS256, ES256, ...) with kid "k1" and serves
// it until the test ends.
func NewIssuer(t testing.TB, alg string) *Issuer {
	k := jwkstest.NewKey(alg, "k1")
	s := jwkstest.NewServer(k)
	t.Cleanup(s.Close)
	return &Issuer{Key: k, JWKS: s, Name: s.URL}
}

// YAML is the `issuers` entry for i with the given audience, indented as
// a list item under `issuers:`.
func (i *Issuer) YAML(audience string) string {
	return "  - issuer: \"" + i.Name + "\"\n    audiences: [" + audience + "]\n    jwks_url: \"" + i.JWKS.URL + "\"\n"
}

// Token signs claims; iss (i.Name), sub ("123"), iat and exp (an hour
// ahead) are filled in when absent, and a nil value removes a claim.
func (i *Issuer) Token(claims map[string]any) string {
	c := map[string]any{"iss": i.Name, "sub": "123", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return i.Key.Sign(c)
}
