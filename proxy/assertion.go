package proxy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks"
)

// The upstream assertion (SPEC.md 11): a short-lived JWT gatehouse signs
// for every allowed request with a verified token, so that the app, or a
// second gatehouse in front of another service, can check that a request
// came through this sidecar and for whom. The public keys are served on
// the admin listener as a JWKS (admin.go).

const (
	defaultAssertionHeader = "X-Gatehouse-Assertion"
	defaultAssertionTTL    = 60 * time.Second
	maxAssertionTTL        = 5 * time.Minute
)

// AssertionConfig is the `upstream_assertion` section; nil in Config when
// the section is absent (off).
type AssertionConfig struct {
	Header          string        // canonical; default X-Gatehouse-Assertion
	Issuer          string        // the assertion's iss
	KeyFile         string        // signs
	PreviousKeyFile string        // "" or published only, during a rotation
	TTL             time.Duration // exp - iat; default 60s, at most 5m
	// Claims are claim paths of the verified token (the rules of
	// roles_claim); each appears in the assertion under the name as listed.
	Claims []string

	key, previous *assertionKey // read at load, so -t and reload see a bad file
	at            *yaml.Node    // where a conflict with another section is reported
}

// assertionKey is one loaded private key with what the JWS header and the
// JWKS need.
type assertionKey struct {
	alg    jwa.SignatureAlgorithm
	signer crypto.Signer
	kid    string  // RFC 7638 thumbprint, base64url
	public jwk.Key // with kid, alg and use set
}

// assertionReserved are the claims gatehouse sets itself: listing them in
// `claims` would let the token's value replace the assertion's own.
var assertionReserved = []string{"iss", "aud", "iat", "exp", "nbf", "jti", "gatehouse_request_id"}

func decodeAssertion(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	if yamlpos.IsNull(n) {
		return
	}
	m := d.Map(n, "header", "issuer", "key_file", "previous_key_file", "ttl", "claims")
	a := &AssertionConfig{Header: defaultAssertionHeader, TTL: defaultAssertionTTL, at: n}
	ok := true
	if hn := m.Get("header"); d.String(hn, &a.Header) {
		a.at = hn
		switch {
		case !validHeaderName(a.Header):
			d.Errorf(hn, "upstream_assertion.header: invalid header name %q", a.Header)
			ok = false
		case reservedHeader(a.Header):
			d.Errorf(hn, "upstream_assertion.header: %q cannot carry the assertion", a.Header)
			ok = false
		}
		a.Header = canonicalHeader(a.Header)
	}
	if in := d.Require(m, "issuer"); in != nil && d.String(in, &a.Issuer) && a.Issuer == "" {
		d.Errorf(in, "upstream_assertion.issuer must not be empty")
	}
	if kn := d.Require(m, "key_file"); kn != nil && d.String(kn, &a.KeyFile) {
		k, err := loadAssertionKey(a.KeyFile)
		if err != nil {
			d.Errorf(kn, "upstream_assertion.key_file: %v", err)
			ok = false
		}
		a.key = k
	} else {
		ok = false
	}
	if pn := m.Get("previous_key_file"); d.String(pn, &a.PreviousKeyFile) && a.PreviousKeyFile != "" {
		k, err := loadAssertionKey(a.PreviousKeyFile)
		if err != nil {
			d.Errorf(pn, "upstream_assertion.previous_key_file: %v", err)
			ok = false
		}
		a.previous = k
	}
	if tn := m.Get("ttl"); d.Duration(tn, &a.TTL) {
		switch {
		case a.TTL < time.Second:
			d.Errorf(tn, "upstream_assertion.ttl must be at least 1s, got %s", a.TTL)
		case a.TTL > maxAssertionTTL:
			d.Errorf(tn, "upstream_assertion.ttl must be at most %s, got %s", maxAssertionTTL, a.TTL)
		}
	}
	if cn := m.Get("claims"); d.Strings(cn, &a.Claims) {
		elems := d.Seq(cn)
		for i, name := range a.Claims {
			if name == "" {
				d.Errorf(elems[i], "upstream_assertion.claims: empty claim name")
				continue
			}
			for _, r := range assertionReserved {
				if name == r {
					d.Errorf(elems[i], "upstream_assertion.claims: %q is set by gatehouse itself and cannot be copied from the token", name)
				}
			}
			for _, prev := range a.Claims[:i] {
				if prev == name {
					d.Errorf(elems[i], "upstream_assertion.claims: %q listed twice", name)
				}
			}
		}
	}
	if ok && a.key != nil && a.previous != nil && a.key.kid == a.previous.kid {
		d.Errorf(m.Get("previous_key_file"), "upstream_assertion.previous_key_file: the same key as key_file")
	}
	c.Assertion = a
}

// checkAssertionHeader refuses an assertion header that the config also
// reads a token from or injects a claim into: the strip that protects the
// assertion would remove the token before it is read, or two values would
// fight over one header.
func checkAssertionHeader(d *yamlpos.Decoder, c *Config) {
	a := c.Assertion
	if a == nil {
		return
	}
	hn := a.at
	for _, s := range c.Token.Sources {
		if s.Kind == SourceHeader && foldEqual(s.Name, foldName(a.Header)) {
			d.Errorf(hn, "upstream_assertion.header: %q is also a token source (token.sources); choose another header", a.Header)
		}
	}
	for _, h := range c.Headers {
		if foldEqual(h.Name, foldName(a.Header)) {
			d.Errorf(hn, "upstream_assertion.header: %q is also an injected claim header (headers)", a.Header)
		}
	}
}

// loadAssertionKey reads a PEM private key: EC P-256 (ES256) or Ed25519
// (EdDSA), PKCS#8 or SEC 1, through the one PEM key reader egress uses
// too (oauth.LoadPrivateKey, whose kid is the RFC 7638 thumbprint).
// Anything else is refused with what was found.
func loadAssertionKey(file string) (*assertionKey, error) {
	signer, kid, err := oauth.LoadPrivateKey(file)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe // "open FILE: no such file or directory", as -t reports any unreadable file
		}
		return nil, err
	}
	k := &assertionKey{signer: signer, kid: kid}
	switch signer.(type) {
	case *ecdsa.PrivateKey: // oauth.LoadPrivateKey took P-256 only
		k.alg = jwa.ES256
	case ed25519.PrivateKey:
		k.alg = jwa.EdDSA
	case *rsa.PrivateKey:
		return nil, fmt.Errorf("%s: an RSA key; use an EC P-256 (ES256) or Ed25519 (EdDSA) key", file)
	default:
		return nil, fmt.Errorf("%s: a %T key; use an EC P-256 (ES256) or Ed25519 (EdDSA) key", file, signer)
	}
	pub, err := jwk.FromRaw(k.signer.Public())
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	for _, kv := range [][2]any{{jwk.KeyIDKey, k.kid}, {jwk.AlgorithmKey, k.alg}, {jwk.KeyUsageKey, "sig"}} {
		if err := pub.Set(kv[0].(string), kv[1]); err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
	}
	k.public = pub
	return k, nil
}

// assertionSigner is one config's assertion: the key that signs, the JWKS
// the admin listener serves, and the signature counter.
type assertionSigner struct {
	cfg    *AssertionConfig
	header string
	hdrs   jws.Headers // protected header: typ and kid
	jwks   []byte      // the JWKS document, current key first
	etag   string
	signed prometheus.Counter
}

func newAssertionSigner(a *AssertionConfig, m *Metrics) (*assertionSigner, error) {
	s := &assertionSigner{cfg: a, header: a.Header, signed: m.assertionsSigned}
	s.hdrs = jws.NewHeaders()
	if err := s.hdrs.Set(jws.TypeKey, "JWT"); err != nil {
		return nil, err
	}
	if err := s.hdrs.Set(jws.KeyIDKey, a.key.kid); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	for _, k := range []*assertionKey{a.key, a.previous} {
		if k != nil {
			if err := set.AddKey(k.public); err != nil {
				return nil, err
			}
		}
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	s.jwks = doc
	sum := sha256.Sum256(doc)
	s.etag = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
	return s, nil
}

// assertionAudience is the aud of assertions for an upstream URL: its host
// without the port. A unix socket has no host: the app in the same pod is
// "localhost".
func assertionAudience(upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil || u.Hostname() == "" {
		return "localhost"
	}
	return u.Hostname()
}

// assertionSet is what one verified token has had signed under one signer:
// one entry per audience (bounded by the config's upstreams). It is
// immutable; a new signature replaces the whole set. It lives in the token
// cache's Result.Memo, so it is bounded by token.cache_size and dies with
// the cached token.
type assertionSet struct {
	signer  *assertionSigner
	entries []assertionEntry
}

type assertionEntry struct {
	aud     string
	value   []string // the header value, shared read-only between requests
	refresh time.Time
}

// set puts the assertion for res and aud in h. A token seen again within
// three quarters of the ttl reuses what was signed for it (at most one
// signature per token, audience and window): the signature, not the map
// lookup, is what costs. gatehouse_request_id therefore names the request
// the assertion was signed for; the current one is X-Request-Id.
func (s *assertionSigner) set(h http.Header, res *jwks.Result, aud, requestID string, now time.Time) error {
	m := memoOf(res)
	old := m.assertions.Load()
	if old != nil && old.signer == s {
		for i := range old.entries {
			if e := &old.entries[i]; e.aud == aud && now.Before(e.refresh) {
				h[s.header] = e.value
				return nil
			}
		}
	}
	tok, err := s.sign(res, aud, requestID, now)
	if err != nil {
		delete(h, s.header)
		return err
	}
	e := assertionEntry{aud: aud, value: []string{tok}, refresh: now.Add(s.cfg.TTL - s.cfg.TTL/4)}
	next := &assertionSet{signer: s, entries: []assertionEntry{e}}
	if old != nil && old.signer == s {
		for _, o := range old.entries {
			if o.aud != aud {
				next.entries = append(next.entries, o)
			}
		}
	}
	// A concurrent request may store its own set in between: one of the
	// two signatures is lost and made again later, never a wrong one kept.
	m.assertions.Store(next)
	h[s.header] = e.value
	return nil
}

// sign makes one assertion. The payload is JSON that gatehouse writes; the
// JWS (header, signing input, signature, compact form) is jwx's.
func (s *assertionSigner) sign(res *jwks.Result, aud, requestID string, now time.Time) (string, error) {
	claims := make(map[string]any, len(s.cfg.Claims)+6)
	for _, name := range s.cfg.Claims {
		if v, ok := res.Claim(name); ok {
			claims[name] = v
		}
	}
	// sub is the verified subject (the issuer's subject_claim), whatever
	// `claims` said about it.
	delete(claims, "sub")
	if res.Subject != "" {
		claims["sub"] = res.Subject
	}
	iat := now.Unix()
	claims["iss"] = s.cfg.Issuer
	claims["aud"] = aud
	claims["iat"] = iat
	claims["exp"] = iat + int64(s.cfg.TTL/time.Second)
	claims["gatehouse_request_id"] = requestID
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("assertion claims: %w", err)
	}
	out, err := jws.Sign(payload, jws.WithKey(s.cfg.key.alg, s.cfg.key.signer, jws.WithProtectedHeaders(s.hdrs)))
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	s.signed.Inc()
	return string(out), nil
}

// serveJWKS answers GET /.well-known/jwks.json on the admin listener: the
// current key first, then the previous one during a rotation. A short
// max-age: a verifier that saw an unknown kid refetches anyway, and one
// that did not should notice a rotation within a minute.
func (s *assertionSigner) serveJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("ETag", s.etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == s.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(s.jwks)
}

// memo is what the proxy keeps per verified token in Result.Memo: the
// rendered claim headers and the signed assertions. It is made once per
// cached token; both parts are swapped atomically, as requests of the same
// token run concurrently.
type memo struct {
	headers    atomic.Pointer[rendered]
	assertions atomic.Pointer[assertionSet]
	// digest is the token's SHA-256, the egress exchange cache's key part
	// (egress.go subjectDigest): hashed once per token, not per call.
	digest atomic.Pointer[[sha256.Size]byte]
}

func memoOf(res *jwks.Result) *memo {
	if m, ok := res.Memo.Load().(*memo); ok {
		return m
	}
	m := &memo{}
	if res.Memo.CompareAndSwap(nil, m) {
		return m
	}
	return res.Memo.Load().(*memo)
}
