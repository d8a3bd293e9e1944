// Package jwkstest provides signing keys, a signer and a JWKS HTTP server for
// tests, demos and load tests, in the manner of net/http/httptest: keys are
// generated fresh in memory (never committed) and every helper panics on
// error so callers stay short. It is ordinary non-test code and does not
// import package testing.
package jwkstest

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
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Key is a signing key with its algorithm and key id.
type Key struct {
	Alg string
	Kid string
	// Private is the private key (*rsa.PrivateKey, *ecdsa.PrivateKey,
	// ed25519.PrivateKey) or, for HMAC, the secret ([]byte).
	Private any
}

// NewKey generates a key for alg (RS256/384/512, PS256/384/512,
// ES256/384/512, EdDSA, HS256/384/512). RSA keys are 2048 bits; HMAC
// secrets are printable and as long as the hash output (RFC 7518 3.2). It panics on
// error.
func NewKey(alg, kid string) *Key {
	var priv any
	var err error
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "HS256", "HS384", "HS512":
		// Printable (base64url text) so the secret fits an environment variable.
		n := map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}[alg]
		b := make([]byte, n)
		_, err = rand.Read(b)
		priv = []byte(base64.RawURLEncoding.EncodeToString(b)[:n])
	default:
		panic(fmt.Sprintf("jwkstest: unsupported alg %q", alg))
	}
	if err != nil {
		panic(fmt.Sprintf("jwkstest: generate %s key: %v", alg, err))
	}
	return &Key{Alg: alg, Kid: kid, Private: priv}
}

// Sign returns a compact JWS of claims with the header {alg, kid, typ: JWT}
// (kid left out when empty).
func (k *Key) Sign(claims map[string]any) string {
	h := map[string]any{"alg": k.Alg, "typ": "JWT"}
	if k.Kid != "" {
		h["kid"] = k.Kid
	}
	return k.SignHeader(h, claims)
}

// SignHeader returns a compact JWS with exactly the given protected header
// (nothing added), signed with k's algorithm.
func (k *Key) SignHeader(header, claims map[string]any) string {
	hb, err := json.Marshal(header)
	if err != nil {
		panic(fmt.Sprintf("jwkstest: marshal header: %v", err))
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("jwkstest: marshal claims: %v", err))
	}
	return k.SignRaw(hb, cb)
}

// SignRaw signs the given header and payload bytes as they are (for tests
// that need JSON no encoder would write, such as duplicate keys).
func (k *Key) SignRaw(header, payload []byte) string {
	input := b64(header) + "." + b64(payload)
	return input + "." + b64(k.SignInput([]byte(input)))
}

// SignInput returns the raw signature of a JWS signing input.
func (k *Key) SignInput(input []byte) []byte {
	s, err := jws.NewSigner(jwa.SignatureAlgorithm(k.Alg))
	if err != nil {
		panic(fmt.Sprintf("jwkstest: signer %s: %v", k.Alg, err))
	}
	sig, err := s.Sign(input, k.Private)
	if err != nil {
		panic(fmt.Sprintf("jwkstest: sign %s: %v", k.Alg, err))
	}
	return sig
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Public returns the public key (*rsa.PublicKey, *ecdsa.PublicKey,
// ed25519.PublicKey) or, for HMAC, the secret.
func (k *Key) Public() any {
	if s, ok := k.Private.(crypto.Signer); ok {
		return s.Public()
	}
	return k.Private
}

// PublicJWK returns the JWK JSON object of the public key with kid, alg and
// use "sig"; for HMAC keys the oct key with its secret.
func (k *Key) PublicJWK() map[string]any {
	jk, err := jwk.FromRaw(k.Public())
	if err != nil {
		panic(fmt.Sprintf("jwkstest: jwk from key: %v", err))
	}
	if k.Kid != "" {
		_ = jk.Set(jwk.KeyIDKey, k.Kid)
	}
	_ = jk.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(k.Alg))
	_ = jk.Set(jwk.KeyUsageKey, "sig")
	b, err := json.Marshal(jk)
	if err != nil {
		panic(fmt.Sprintf("jwkstest: marshal jwk: %v", err))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("jwkstest: unmarshal jwk: %v", err))
	}
	return m
}

// PublicPEM returns the public key as an SPKI "PUBLIC KEY" PEM block. It
// panics for HMAC keys.
func (k *Key) PublicPEM() []byte {
	if _, ok := k.Private.([]byte); ok {
		panic("jwkstest: HMAC keys have no PEM form")
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		panic(fmt.Sprintf("jwkstest: marshal public key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Secret returns the HMAC secret (nil for public-key algorithms).
func (k *Key) Secret() []byte {
	b, _ := k.Private.([]byte)
	return b
}

// JWKS returns the {"keys":[...]} document of the keys' public JWKs.
func JWKS(keys ...*Key) []byte {
	list := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		list = append(list, k.PublicJWK())
	}
	b, err := json.Marshal(map[string]any{"keys": list})
	if err != nil {
		panic(fmt.Sprintf("jwkstest: marshal jwks: %v", err))
	}
	return b
}

// Server is a JWKS server on 127.0.0.1. It answers every GET with the
// current key set, an ETag (answering 304 to a matching If-None-Match) and
// the Cache-Control value set with SetCacheControl. SetHandler replaces the
// behaviour for fault injection. Every request is counted.
type Server struct {
	URL string // base URL; the JWKS is served on every path

	srv     *httptest.Server
	fetches atomic.Int64

	mu           sync.Mutex
	body         []byte
	etag         string
	cacheControl string
	handler      http.HandlerFunc
}

// NewServer starts a JWKS server serving keys.
func NewServer(keys ...*Key) *Server {
	s := &Server{}
	s.SetKeys(keys...)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	h, body, etag, cc := s.handler, s.body, s.etag, s.cacheControl
	s.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	w.Header().Set("ETag", etag)
	if cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// SetKeys replaces the served key set (a rotation).
func (s *Server) SetKeys(keys ...*Key) { s.SetBody(JWKS(keys...)) }

// SetBody serves body as the JWKS document (with a fresh ETag).
func (s *Server) SetBody(body []byte) {
	sum := sha256.Sum256(body)
	s.mu.Lock()
	s.body = body
	s.etag = `"` + hex.EncodeToString(sum[:8]) + `"`
	s.mu.Unlock()
}

// SetCacheControl sets the Cache-Control header of normal answers ("" for none).
func (s *Server) SetCacheControl(v string) {
	s.mu.Lock()
	s.cacheControl = v
	s.mu.Unlock()
}

// SetHandler makes h answer every request instead of the key set (500,
// garbage, huge or slow answers); nil restores the normal behaviour.
// Requests are still counted.
func (s *Server) SetHandler(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

// Fetches returns the number of requests served so far.
func (s *Server) Fetches() int64 { return s.fetches.Load() }

// Close shuts the server down, blocking until outstanding requests finish.
// A handler set with SetHandler must return for Close to return.
func (s *Server) Close() { s.srv.Close() }
