package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pkcs8(t *testing.T, k any) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

// rfc7638 computes the thumbprint by the RFC's recipe (required members,
// lexicographic order, no whitespace), independently of jwx.
func rfc7638(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	var s string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		s = `{"crv":"P-256","kty":"EC","x":"` + b64(raw[1:33]) + `","y":"` + b64(raw[33:]) + `"}`
	case *rsa.PublicKey:
		s = `{"e":"` + b64(big.NewInt(int64(k.E)).Bytes()) + `","kty":"RSA","n":"` + b64(k.N.Bytes()) + `"}`
	case ed25519.PublicKey:
		s = `{"crv":"Ed25519","kty":"OKP","x":"` + b64(k) + `"}`
	}
	sum := sha256.Sum256([]byte(s))
	return b64(sum[:])
}

func TestLoadPrivateKey(t *testing.T) {
	ec := testECKey(t)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		pem  []*pem.Block
		pub  crypto.PublicKey
	}{
		{"EC PKCS8", []*pem.Block{pkcs8(t, ec)}, ec.Public()},
		{"EC SEC1 after EC PARAMETERS", []*pem.Block{{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}, {Type: "EC PRIVATE KEY", Bytes: ecDER}}, ec.Public()},
		{"RSA PKCS1", []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}}, rsaKey.Public()},
		{"RSA PKCS8", []*pem.Block{pkcs8(t, rsaKey)}, rsaKey.Public()},
		{"Ed25519", []*pem.Block{pkcs8(t, ed)}, ed.Public()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, kid, err := LoadPrivateKey(writePEM(t, tt.pem...))
			if err != nil {
				t.Fatalf("LoadPrivateKey: %v", err)
			}
			if want := rfc7638(t, tt.pub); kid != want {
				t.Errorf("kid = %q, want the RFC 7638 thumbprint %q", kid, want)
			}
			if eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(tt.pub) {
				t.Error("loaded key is not the one written")
			}
		})
	}
}

func TestLoadPrivateKeyRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name, want string
		pem        []*pem.Block
	}{
		{"P-384", "P-256", []*pem.Block{pkcs8(t, p384)}},
		{"RSA 1024", "at least 2048", []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa1024)}}},
		{"encrypted", "encrypted", []*pem.Block{{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}}},
		{"public key only", "no PEM private key", []*pem.Block{{Type: "PUBLIC KEY", Bytes: []byte{1}}}},
		{"garbage DER", "key.pem", []*pem.Block{{Type: "PRIVATE KEY", Bytes: []byte("not DER")}}},
		{"no PEM", "no PEM private key", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := LoadPrivateKey(writePEM(t, tt.pem...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadPrivateKey = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, _, err := LoadPrivateKey(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("LoadPrivateKey of a missing file: no error")
	}
}

func TestNewRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ok := Config{TokenEndpoint: "https://idp.example/token", ClientID: "c", ClientSecret: "s"}
	tests := []struct {
		name, want string
		edit       func(c *Config)
	}{
		{"no client id", "client_id", func(c *Config) { c.ClientID = "" }},
		{"no credentials", "client secret or a private key", func(c *Config) { c.ClientSecret = "" }},
		{"both credentials", "both set", func(c *Config) { c.PrivateKey = testECKey(t) }},
		{"no endpoint or issuer", "token endpoint or issuer", func(c *Config) { c.TokenEndpoint = "" }},
		{"endpoint with userinfo", "userinfo", func(c *Config) { c.TokenEndpoint = "https://u:p@idp.example/token" }},
		{"endpoint not http", "scheme", func(c *Config) { c.TokenEndpoint = "ftp://idp.example/token" }},
		{"relative endpoint", "scheme", func(c *Config) { c.TokenEndpoint = "/token" }},
		{"bad issuer", "issuer", func(c *Config) { c.Issuer = "idp.example" }},
		{"P-384 key", "P-256", func(c *Config) { c.ClientSecret, c.PrivateKey = "", p384 }},
		{"negative max entries", "max entries", func(c *Config) { c.MaxEntries = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			c, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				if c != nil {
					c.Close()
				}
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	c, err := New(ok)
	if err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	c.Close()
}

func TestBadRequests(t *testing.T) {
	p, cfg := secretIdP(t)
	c := newClient(t, cfg)
	tests := []struct {
		name string
		r    Request
	}{
		{"exchange without subject", Request{Grant: TokenExchange}},
		{"client credentials with subject", Request{Grant: ClientCredentials, SubjectToken: "x"}},
		{"unknown grant", Request{Grant: "password"}},
		{"scope with a space", Request{Grant: ClientCredentials, Scopes: []string{"a b"}}},
		{"empty scope", Request{Grant: ClientCredentials, Scopes: []string{""}}},
		{"scope with a quote", Request{Grant: ClientCredentials, Scopes: []string{`a"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Token(t.Context(), tt.r); err == nil || errors.Is(err, ErrUnavailable) {
				t.Errorf("Token(%+v) = %v, want a request error (not ErrUnavailable)", tt.r, err)
			}
		})
	}
	if n := p.tokenHits.Load(); n != 0 {
		t.Errorf("IdP called %d times for bad requests", n)
	}
}
