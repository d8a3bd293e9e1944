package proxy_test

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// The security catalogue: one row per hostile input, each sent as raw bytes
// to the real binary. SECURITY.md renders this table (see
// TestSecurityCatalogueDocumented); the ids are stable, append new rows.

const (
	issuerB = "https://b.test" // a second issuer with its own key
	issuerC = "https://c.test" // same keys as issuer, but types: [at+jwt]
)

// secWorld is the one gatehouse the catalogue runs against, with its
// upstream, its issuers' keys, and an attacker's key and key server.
type secWorld struct {
	g    *gatehouse
	up   *recorder
	rsa  *jwkstest.Key // issuer, RS256 "k1"
	ec   *jwkstest.Key // issuer, ES256 "e1"
	b    *jwkstest.Key // issuerB, RS256 "b1"
	evil *jwkstest.Key // the attacker's RS256 key

	evilSrv  *httptest.Server // the attacker's jku/x5u server
	evilHits atomic.Int64

	// tunnel is an upstream that switches protocols for any Upgrade and
	// records the bytes that come through (h2c smuggling).
	tunnel    *httptest.Server
	tunnelMu  sync.Mutex
	tunnelGot strings.Builder

	// wireBefore marks the upstream's raw bytes when the current row began.
	wireBefore int
	user       string // a valid token with roles [user]

	assertKey crypto.Signer // upstream_assertion's key (assertion_test.go rows)
}

func newSecWorld(t *testing.T) *secWorld {
	s := &secWorld{
		up:   newRecorder(t),
		rsa:  jwkstest.NewKey("RS256", "k1"),
		ec:   jwkstest.NewKey("ES256", "e1"),
		b:    jwkstest.NewKey("RS256", "b1"),
		evil: jwkstest.NewKey("RS256", "evil"),
	}
	s.evilSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.evilHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwkstest.JWKS(s.evil))
	}))
	t.Cleanup(s.evilSrv.Close)
	s.tunnel = httptest.NewServer(http.HandlerFunc(s.serveTunnel))
	t.Cleanup(s.tunnel.Close)
	srvA := jwkstest.NewServer(s.rsa, s.ec)
	t.Cleanup(srvA.Close)
	srvB := jwkstest.NewServer(s.b)
	t.Cleanup(srvB.Close)
	var assertFile string
	assertFile, s.assertKey = writeAssertionKey(t, t.TempDir(), "ec")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
admin:
  listen: "127.0.0.1:0"
timeouts:
  read_header: 1s
  shutdown: 5s
issuers:
  - issuer: %q
    audiences: [api]
    jwks_url: %q
    algorithms: [RS256, ES256]
    leeway: 0s
  - issuer: %q
    audiences: [api]
    jwks_url: %q
    leeway: 0s
  - issuer: %q
    audiences: [api]
    types: [at+jwt]
    jwks_url: %q
    leeway: 0s
token:
  sources: ["header:Authorization", "cookie:session", "query:access_token"]
headers:
  X-Auth-Subject: sub
  X-Auth-Roles: roles
routes:
  - location: "= /login"
    auth: none
  - location: "/tunnel/"
    auth: none
    upstream: %q
  - location: "/public/"
    auth: none
  - location: "/opt/"
    auth: optional
  - location: "/api/"
    roles: { any: [user, admin] }
  - location: "/ro/"
    methods: [GET]
    roles: { any: [user] }
  - location: "/admin/"
    roles: { any: [admin] }
  - location: "= /admin"
    roles: { any: [admin] }
audit:
  sink: none
upstream_assertion:
  issuer: sec
  key_file: %q
%s`, s.up.URL, issuer, srvA.URL, issuerB, srvB.URL, issuerC, srvA.URL, s.tunnel.URL, assertFile, secEgress(s.up.URL))
	s.g = startGatehouse(t, cfg)
	s.user = s.rsa.Sign(s.claims(nil))
	return s
}

func (s *secWorld) serveTunnel(rw http.ResponseWriter, r *http.Request) {
	up := r.Header.Get("Upgrade")
	if up == "" {
		io.WriteString(rw, "plain")
		return
	}
	conn, brw, err := http.NewResponseController(rw).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", up)
	brw.Flush()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 4096)
	for {
		n, err := brw.Read(b)
		s.tunnelMu.Lock()
		s.tunnelGot.Write(b[:n])
		s.tunnelMu.Unlock()
		if err != nil {
			return
		}
	}
}

// upgradeThrough sends an upgrade request for proto to /tunnel/x and, when
// it is switched, a request for /admin/x through the tunnel. It returns the
// status and whether the tunnel upstream received the smuggled request.
func upgradeThrough(t *testing.T, s *secWorld, addr, headers string) (int, bool) {
	conn, err := dialTimeout(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /tunnel/x HTTP/1.1\r\nHost: app.test\r\n"+headers+"\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		return res.StatusCode, false
	}
	const smuggled = "GET /admin/x HTTP/1.1\r\nHost: app.test\r\n\r\n"
	io.WriteString(conn, smuggled)
	reached := waitFor(3*time.Second, func() bool {
		s.tunnelMu.Lock()
		defer s.tunnelMu.Unlock()
		return strings.Contains(s.tunnelGot.String(), smuggled)
	})
	return res.StatusCode, reached
}

// claims are valid claims for issuer with roles [user], changed by mods
// (a nil value deletes the claim).
func (s *secWorld) claims(mods map[string]any) map[string]any {
	c := map[string]any{
		"iss": issuer, "aud": "api", "sub": "123",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"roles": []any{"user"},
	}
	for k, v := range mods {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// signHS is an HMAC-SHA256 JWS over header and claims with secret: what an
// attacker makes from a public key in algorithm confusion.
func signHS(secret []byte, header, claims any) string {
	input := b64(mustJSON(header)) + "." + b64(mustJSON(claims))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + b64(m.Sum(nil))
}

// unsigned is header.payload. with the given signature bytes.
func unsigned(header, claims any, sig []byte) string {
	return b64(mustJSON(header)) + "." + b64(mustJSON(claims)) + "." + b64(sig)
}

// parts splits a compact token.
func parts(tok string) (h, p, sig string) {
	a := strings.SplitN(tok, ".", 3)
	return a[0], a[1], a[2]
}

// highS returns the ES256 token with its signature's s replaced by n-s:
// the other valid signature of the same message (ECDSA malleability).
func highS(tok string) string {
	h, p, sig := parts(tok)
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(raw) != 64 {
		panic("not an ES256 signature")
	}
	s := new(big.Int).SetBytes(raw[32:])
	s.Sub(elliptic.P256().Params().N, s)
	out := append([]byte{}, raw[:32]...)
	out = append(out, s.FillBytes(make([]byte, 32))...)
	return h + "." + p + "." + b64(out)
}

// nonCanonicalSig flips a trailing bit of the signature's last character:
// lenient decoders give the same bytes, strict ones refuse it.
func nonCanonicalSig(tok string) string {
	h, p, sig := parts(tok)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	return h + "." + p + "." + sig[:len(sig)-1] + string(alphabet[last^1])
}

// stdAlphabet re-signs until the signature holds '-' or '_' and returns it
// with those written as '+' and '/'.
func stdAlphabet(k *jwkstest.Key, claims map[string]any) string {
	for i := 0; ; i++ {
		claims["jti"] = fmt.Sprint(i)
		tok := k.Sign(claims)
		h, p, sig := parts(tok)
		if strings.ContainsAny(sig, "-_") {
			return h + "." + p + "." + strings.NewReplacer("-", "+", "_", "/").Replace(sig)
		}
	}
}

// attackCase is one catalogue row. The request is raw bytes: method, target
// and header lines exactly as written ("{user}" stands for a valid user
// token), or raw for the whole request.
type attackCase struct {
	id, category, name string

	method, target string                   // default GET /api/x
	token          func(s *secWorld) string // sent as Authorization: Bearer
	header         []string                 // "Name: value" lines, in order
	body           string
	raw            func(s *secWorld) string                     // the whole request instead
	slow           bool                                         // headers never finished: the connection must be cut
	interact       func(t *testing.T, s *secWorld, addr string) // a conversation instead of one request

	status  int    // expected status
	code    string // expected body error code; "" for 200s and Go's own plain answers
	reach   bool   // the upstream may (and must) receive exactly one request
	maybe   bool   // the upstream may receive one (cut) request or none: wait for it to settle
	note    string // said after the answer in SECURITY.md
	bug     string // a known bug: the row is skipped with this text until fixed
	forward string // when reach: the request-target the upstream must get
	check   func(t *testing.T, s *secWorld, up []proxytest.Request, answer string)
}

func (c attackCase) request(s *secWorld) string {
	if c.raw != nil {
		return c.raw(s)
	}
	method, target := c.method, c.target
	if method == "" {
		method = "GET"
	}
	if target == "" {
		target = "/api/x"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: app.test\r\n", method, target)
	if c.token != nil {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", c.token(s))
	}
	for _, h := range c.header {
		b.WriteString(strings.ReplaceAll(h, "{user}", s.user) + "\r\n")
	}
	if c.body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(c.body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(c.body)
	return b.String()
}

// expectation is the row's answer in words, for SECURITY.md.
func (c attackCase) expectation() string {
	if c.slow {
		return "connection closed after `timeouts.read_header`, upstream not reached"
	}
	if c.interact != nil {
		ans := c.note
		if c.bug != "" {
			ans += " — SKIPPED, known bug: " + c.bug
		}
		return ans
	}
	var ans string
	switch {
	case c.code != "":
		ans = fmt.Sprintf("%d `%s`", c.status, c.code)
	case c.status == 200:
		ans = "200"
	default:
		ans = fmt.Sprintf("%d (Go's HTTP server)", c.status)
	}
	if c.note != "" {
		ans += " (" + c.note + ")"
	}
	if c.bug != "" {
		ans += " — SKIPPED, known bug: " + c.bug
	}
	if c.maybe {
		return ans + ", upstream gets at most one request, never the smuggled one"
	}
	if !c.reach {
		return ans + ", upstream not reached"
	}
	if c.forward != "" {
		return fmt.Sprintf("%s, upstream gets `%s`", ans, c.forward)
	}
	return ans + ", upstream reached once"
}

func user(s *secWorld) string { return s.user }

// tok makes a token func from a builder over the world.
func tok(f func(s *secWorld) string) func(s *secWorld) string { return f }

// noEvilFetch asserts the attacker's key server saw nothing.
func noEvilFetch(t *testing.T, s *secWorld, _ []proxytest.Request, _ string) {
	if n := s.evilHits.Load(); n != 0 {
		t.Errorf("the attacker's key server got %d requests", n)
	}
}

// upstreamHeaders asserts the one upstream request's headers: none of the
// folded names in banned, and the given exact values.
func upstreamHeaders(banned []string, want map[string]string) func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
	fold := func(k string) string { return strings.ReplaceAll(strings.ToLower(k), "_", "-") }
	return func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
		if len(up) != 1 {
			return
		}
		for k, v := range up[0].Header {
			for _, b := range banned {
				if strings.HasPrefix(fold(k), b) {
					if w, ok := want[http.CanonicalHeaderKey(k)]; ok && len(v) == 1 && v[0] == w {
						continue
					}
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
		}
		for k, w := range want {
			if got := up[0].Header.Values(k); w == "" && len(got) != 0 || w != "" && (len(got) != 1 || got[0] != w) {
				t.Errorf("upstream %s = %q, want %q", k, got, w)
			}
		}
	}
}

func upstreamMethod(m string) func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
	return func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
		if len(up) == 1 && up[0].Method != m {
			t.Errorf("upstream method %q, want %q", up[0].Method, m)
		}
	}
}

// catalogue is every row, in the order SECURITY.md lists them.
func catalogue() []attackCase {
	var all []attackCase
	for _, part := range [][]attackCase{jwtCases(), pathCases(), headerCases(), smugglingCases(), http2Cases(), floodCases(), assertionCases(), egressCases()} {
		all = append(all, part...)
	}
	return all
}

func jwtCases() []attackCase {
	now := time.Now()
	in := func(d time.Duration) int64 { return now.Add(d).Unix() }
	return []attackCase{
		// Controls: what must pass does pass.
		{id: "JWT-00", category: "jwt", name: "control: valid RS256 token", token: user, status: 200, reach: true, forward: "/api/x"},
		{id: "JWT-01", category: "jwt", name: "control: valid ES256 token", token: tok(func(s *secWorld) string { return s.ec.Sign(s.claims(nil)) }), status: 200, reach: true},

		// alg none (RFC 8725 2.1, 3.1).
		{id: "JWT-02", category: "jwt", name: `alg "none", empty signature`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return b64(mustJSON(map[string]any{"alg": "none", "kid": "k1"})) + "." + b64(mustJSON(s.claims(nil))) + "."
			})},
		{id: "JWT-03", category: "jwt", name: `alg "none" with a real RS256 signature`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				_, _, sig := parts(s.user)
				return b64(mustJSON(map[string]any{"alg": "none", "kid": "k1"})) + "." + b64(mustJSON(s.claims(nil))) + "." + sig
			})},
		{id: "JWT-04", category: "jwt", name: `alg "None"`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return unsigned(map[string]any{"alg": "None", "kid": "k1"}, s.claims(nil), []byte("x"))
			})},
		{id: "JWT-05", category: "jwt", name: `alg "NONE"`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return unsigned(map[string]any{"alg": "NONE", "kid": "k1"}, s.claims(nil), []byte("x"))
			})},
		{id: "JWT-06", category: "jwt", name: `alg "nOnE"`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return unsigned(map[string]any{"alg": "nOnE", "kid": "k1"}, s.claims(nil), []byte("x"))
			})},

		// Algorithm confusion (CVE-2015-9235 and kin).
		{id: "JWT-07", category: "jwt", name: "RS256 key used as HS256 secret (public key PEM)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return signHS(s.rsa.PublicPEM(), map[string]any{"alg": "HS256", "kid": "k1", "typ": "JWT"}, s.claims(nil))
			})},
		{id: "JWT-08", category: "jwt", name: "RS256 key used as HS256 secret (JWK JSON)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return signHS(mustJSON(s.rsa.PublicJWK()), map[string]any{"alg": "HS256", "kid": "k1", "typ": "JWT"}, s.claims(nil))
			})},
		{id: "JWT-09", category: "jwt", name: "ES256 key's kid with an RS256 header (alg does not fit the key)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "e1"}, s.claims(nil))
			})},

		// Signature stripping and foreign keys.
		{id: "JWT-10", category: "jwt", name: "signature stripped (header.payload.)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { h, p, _ := parts(s.user); return h + "." + p + "." })},
		{id: "JWT-11", category: "jwt", name: "signature stripped (header.payload)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { h, p, _ := parts(s.user); return h + "." + p })},
		{id: "JWT-12", category: "jwt", name: "payload swapped under a valid signature (roles: admin)", target: "/admin/x", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				h, _, sig := parts(s.user)
				return h + "." + b64(mustJSON(s.claims(map[string]any{"roles": []any{"admin"}}))) + "." + sig
			})},
		{id: "JWT-13", category: "jwt", name: "foreign key with the same kid", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "k1"}, s.claims(nil))
			})},

		// Keys named by the token (RFC 8725 3.10): never fetched, never used.
		{id: "JWT-14", category: "jwt", name: "embedded jwk header with the attacker's key", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "evil", "jwk": s.evil.PublicJWK()}, s.claims(nil))
			})},
		{id: "JWT-15", category: "jwt", name: "embedded jwk header with the attacker's key and a known kid", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "k1", "jwk": s.evil.PublicJWK()}, s.claims(nil))
			})},
		{id: "JWT-16", category: "jwt", name: "jku pointing at the attacker's server (zero fetches)", status: 401, code: "invalid_token", check: noEvilFetch,
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "evil", "jku": s.evilSrv.URL + "/jwks.json"}, s.claims(nil))
			})},
		{id: "JWT-17", category: "jwt", name: "x5u pointing at the attacker's server (zero fetches)", status: 401, code: "invalid_token", check: noEvilFetch,
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "evil", "x5u": s.evilSrv.URL + "/cert.pem"}, s.claims(nil))
			})},

		// kid injection.
		{id: "JWT-18", category: "jwt", name: "kid path traversal ../../dev/null, HS256 with an empty secret", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return signHS(nil, map[string]any{"alg": "HS256", "kid": "../../../../../../dev/null"}, s.claims(nil))
			})},
		{id: "JWT-19", category: "jwt", name: "kid SQL injection, HS256 with secret \"1\"", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return signHS([]byte("1"), map[string]any{"alg": "HS256", "kid": "x' UNION SELECT '1'--"}, s.claims(nil))
			})},
		{id: "JWT-20", category: "jwt", name: "kid as a file path, signed with the attacker's key", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "/etc/passwd"}, s.claims(nil))
			})},
		{id: "JWT-21", category: "jwt", name: "kid of 4,000 bytes", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": strings.Repeat("k", 4000)}, s.claims(nil))
			})},
		{id: "JWT-22", category: "jwt", name: "kid with a NUL byte (k1\\u0000x)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "k1\x00x"}, s.claims(nil))
			})},
		{id: "JWT-23", category: "jwt", name: "kid of the wrong type (number)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": 1}, s.claims(nil))
			})},

		// crit, sizes.
		{id: "JWT-24", category: "jwt", name: "crit header naming an extension (validly signed)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "k1", "crit": []any{"exp"}, "exp": 1}, s.claims(nil))
			})},
		{id: "JWT-25", category: "jwt", name: "empty crit list (validly signed)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "k1", "crit": []any{}}, s.claims(nil))
			})},
		{id: "JWT-26", category: "jwt", name: "token larger than token.max_size (validly signed)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.Sign(s.claims(map[string]any{"pad": strings.Repeat("p", 9000)}))
			})},
		{id: "JWT-27", category: "jwt", name: "huge JOSE header value (validly signed, over max_size)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "k1", "x": strings.Repeat("h", 7000)}, s.claims(nil))
			})},
		{id: "JWT-28", category: "jwt", name: "20,000-byte Authorization header of garbage", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return strings.Repeat("A", 20000) })},

		// Duplicate JSON keys: two parsers, two meanings.
		{id: "JWT-29", category: "jwt", name: `duplicate "alg" in the header (none then RS256)`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignRaw([]byte(`{"alg":"none","alg":"RS256","kid":"k1"}`), mustJSON(s.claims(nil)))
			})},
		{id: "JWT-30", category: "jwt", name: `duplicate "kid" in the header`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignRaw([]byte(`{"alg":"RS256","kid":"evil","kid":"k1"}`), mustJSON(s.claims(nil)))
			})},
		{id: "JWT-31", category: "jwt", name: `duplicate "sub" in the payload`, status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				c := mustJSON(s.claims(nil))
				c = append([]byte(`{"sub":"admin",`), c[1:]...)
				return s.rsa.SignRaw([]byte(`{"alg":"RS256","kid":"k1"}`), c)
			})},
		{id: "JWT-32", category: "jwt", name: `duplicate "roles" in the payload`, target: "/admin/x", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				c := mustJSON(s.claims(nil))
				c = append([]byte(`{"roles":["admin"],`), c[1:]...)
				return s.rsa.SignRaw([]byte(`{"alg":"RS256","kid":"k1"}`), c)
			})},

		// Non-canonical base64url and other serialisations.
		{id: "JWT-33", category: "jwt", name: "padded base64 signature (=), signing input untouched", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				// Padding the header would change the signing input and fail
				// the signature anyway; padding the signature leaves only the
				// canonical-base64url rule to refuse it.
				h, p, sig := parts(s.user)
				pad := func(x string) string { return x + strings.Repeat("=", (4-len(x)%4)%4+4*btoi(len(x)%4 == 0)) }
				return h + "." + p + "." + pad(sig)
			})},
		{id: "JWT-34", category: "jwt", name: "standard alphabet in the signature (+ and /)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return stdAlphabet(s.rsa, s.claims(nil)) })},
		{id: "JWT-35", category: "jwt", name: "stray trailing bits in the signature's last character", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return nonCanonicalSig(s.user) })},
		{id: "JWT-36", category: "jwt", name: "JWS JSON flattened serialisation", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				h, p, sig := parts(s.user)
				return string(mustJSON(map[string]any{"protected": h, "payload": p, "signature": sig}))
			})},
		{id: "JWT-37", category: "jwt", name: "JWS JSON general serialisation", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				h, p, sig := parts(s.user)
				return string(mustJSON(map[string]any{"payload": p, "signatures": []any{map[string]any{"protected": h, "signature": sig}}}))
			})},
		{id: "JWT-38", category: "jwt", name: "four segments (JWE-shaped)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.user + ".x" })},

		// ECDSA.
		{id: "JWT-39", category: "jwt", name: "ES256 signature r = s = 0 (CVE-2022-21449)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return unsigned(map[string]any{"alg": "ES256", "kid": "e1"}, s.claims(nil), make([]byte, 64))
			})},
		{id: "JWT-40", category: "jwt", name: "ES256 signature r = s = n (the curve order)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
				return unsigned(map[string]any{"alg": "ES256", "kid": "e1"}, s.claims(nil), append(append([]byte{}, n...), n...))
			})},
		{id: "JWT-41", category: "jwt", name: "ES256 signature with s replaced by n-s (valid: must pass)", status: 200, reach: true,
			token: tok(func(s *secWorld) string { return highS(s.ec.Sign(s.claims(map[string]any{"jti": "highs"}))) })},
		{id: "JWT-42", category: "jwt", name: "ES256 signature in DER instead of r||s", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				h, p, _ := parts(s.ec.Sign(s.claims(nil)))
				digest := sha256.Sum256([]byte(h + "." + p))
				der, err := ecdsa.SignASN1(rand.Reader, s.ec.Private.(*ecdsa.PrivateKey), digest[:])
				if err != nil {
					panic(err)
				}
				return h + "." + p + "." + b64(der)
			})},

		// Claims.
		{id: "JWT-43", category: "jwt", name: "expired", status: 401, code: "token_expired",
			token: tok(func(s *secWorld) string {
				return s.rsa.Sign(s.claims(map[string]any{"exp": in(-time.Minute), "iat": in(-time.Hour)}))
			})},
		{id: "JWT-44", category: "jwt", name: "nbf ahead", status: 401, code: "token_expired",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"nbf": in(time.Hour)})) })},
		{id: "JWT-45", category: "jwt", name: "iat in the future", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"iat": in(time.Hour)})) })},
		{id: "JWT-46", category: "jwt", name: "wrong iss", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"iss": "https://evil.test"})) })},
		{id: "JWT-47", category: "jwt", name: "wrong aud", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"aud": "other"})) })},
		{id: "JWT-48", category: "jwt", name: "missing exp", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"exp": nil})) })},
		{id: "JWT-49", category: "jwt", name: "exp as a string", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.Sign(s.claims(map[string]any{"exp": fmt.Sprint(in(time.Hour))}))
			})},
		{id: "JWT-50", category: "jwt", name: "typ JWT where types: [at+jwt]", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"iss": issuerC})) })},
		{id: "JWT-51", category: "jwt", name: "control: typ at+jwt where types: [at+jwt]", status: 200, reach: true,
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": "k1", "typ": "at+jwt"}, s.claims(map[string]any{"iss": issuerC}))
			})},
		{id: "JWT-52", category: "jwt", name: "token for issuer A signed with issuer B's key (B's kid)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.b.Sign(s.claims(nil)) })},
		{id: "JWT-53", category: "jwt", name: "token for issuer B signed with issuer A's key (A's kid)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"iss": issuerB})) })},
		{id: "JWT-54", category: "jwt", name: "iss as an array", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.Sign(s.claims(map[string]any{"iss": []any{issuer}})) })},
		{id: "JWT-55", category: "jwt", name: "header not JSON", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.SignRaw([]byte(`alg=RS256`), mustJSON(s.claims(nil))) })},
		{id: "JWT-56", category: "jwt", name: "payload JSON array", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string { return s.rsa.SignRaw([]byte(`{"alg":"RS256","kid":"k1"}`), []byte(`[1,2]`)) })},
		{id: "JWT-57", category: "jwt", name: "payload with invalid UTF-8", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				c := mustJSON(s.claims(nil))
				c = append([]byte(`{"x":"`+"\xff\xfe"+`",`), c[1:]...)
				return s.rsa.SignRaw([]byte(`{"alg":"RS256","kid":"k1"}`), c)
			})},
		{id: "JWT-58", category: "jwt", name: "PS256 header over the RS256 key (alg not allowed, not the key's alg)", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				ps := &jwkstest.Key{Alg: "PS256", Kid: "k1", Private: s.rsa.Private}
				return ps.Sign(s.claims(nil))
			})},
		{id: "JWT-59", category: "jwt", name: "empty kid with a valid signature", status: 401, code: "invalid_token",
			token: tok(func(s *secWorld) string {
				return s.rsa.SignHeader(map[string]any{"alg": "RS256", "kid": ""}, s.claims(nil))
			})},
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSecurityCatalogue sends every row to one running gatehouse and checks
// the answer, and that the upstream saw the request only when allowed.
func TestSecurityCatalogue(t *testing.T) {
	s := newSecWorld(t)
	addr := strings.TrimPrefix(s.g.URL, "http://")
	cases := catalogue()
	passed, skipped := 0, 0
	runBugs := os.Getenv("GATEHOUSE_RUN_KNOWN_BUGS") != ""
	for _, c := range cases {
		if c.bug != "" && !runBugs {
			skipped++
		}
		ok := t.Run(c.id+" "+c.name, func(t *testing.T) {
			if c.bug != "" && !runBugs {
				t.Skip("BUG: " + c.bug + " (GATEHOUSE_RUN_KNOWN_BUGS=1 runs it)")
			}
			if c.interact != nil {
				c.interact(t, s, addr)
				return
			}
			before := len(s.up.Requests())
			s.wireBefore = s.up.WireLen()
			if c.slow {
				runSlow(t, addr)
				if n := len(s.up.Requests()) - before; n != 0 {
					t.Errorf("the upstream got %d requests", n)
				}
				return
			}
			_, answer := rawRequest(t, addr, c.request(s))
			if c.maybe {
				// The upstream may still be reading a request whose body
				// broke; let it arrive before the next row counts.
				deadline := time.Now().Add(3 * time.Second)
				for len(s.up.Requests()) == before && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
			}
			up := s.up.Requests()[before:]
			status, code := parseAnswer(answer)
			if status != c.status || code != c.code {
				t.Errorf("answer %d %q, want %d %q\n%.600s", status, code, c.status, c.code, answer)
			}
			switch {
			case c.maybe && len(up) > 1:
				t.Errorf("the upstream got %d requests, want at most 1", len(up))
			case c.maybe:
			case c.reach && len(up) != 1:
				t.Errorf("the upstream got %d requests, want 1", len(up))
			case !c.reach && len(up) != 0:
				t.Errorf("the upstream got %d requests, want none: %q", len(up), up[0].RequestURI)
			case c.reach && c.forward != "" && up[0].RequestURI != c.forward:
				t.Errorf("the upstream got %q, want %q", up[0].RequestURI, c.forward)
			}
			if c.check != nil {
				c.check(t, s, up, answer)
			}
		})
		if ok && (c.bug == "" || runBugs) {
			passed++
		}
	}
	if strings.Contains(s.g.Stderr.String(), "panic") {
		t.Errorf("gatehouse logged a panic:\n%s", s.g.Stderr.String())
	}
	t.Logf("FIGURE catalogue: %d cases, %d passed, %d skipped as known bugs", len(cases), passed, skipped)
}

// parseAnswer reads the first response's status and JSON error code.
func parseAnswer(answer string) (int, string) {
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil)
	if err != nil {
		return 0, ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var eb errorBody
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		json.Unmarshal(b, &eb)
	}
	return res.StatusCode, eb.Error
}

// runSlow opens a connection, sends a request line and half a header, and
// expects gatehouse to close it (timeouts.read_header is 1s here); the read
// deadline only bounds a failing test.
func runSlow(t *testing.T, addr string) {
	conn, err := dialTimeout(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /public/x HTTP/1.1\r\nHost: x\r\nX-Slow: a")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
		t.Fatalf("the connection was still open after 10s")
	}
}

// pathCases: the normalisation bypasses of the peers' advisories (Istio
// CVE-2021-31920, Traefik, oauth2-proxy, caddy-security, Tomcat's ";"). The
// token has role user only: a path that reaches /admin/ answers 403
// insufficient_scope, and a bypass would show as a 200 from /public/.
func pathCases() []attackCase {
	p := func(id, name, target string, status int, code string) attackCase {
		return attackCase{id: id, category: "path", name: name, target: target, token: user, status: status, code: code}
	}
	pub := func(id, name, target, forward string) attackCase {
		return attackCase{id: id, category: "path", name: name, target: target, token: user, status: 200, reach: true, forward: forward}
	}
	const deny, bad = "insufficient_scope", "bad_request"
	return []attackCase{
		pub("PATH-00", "control: /public/x", "/public/x", "/public/x"),
		p("PATH-01", "control: /admin/x", "/admin/x", 403, deny),
		p("PATH-02", "double slash //admin/x", "//admin/x", 403, deny),
		p("PATH-03", "slashes everywhere ///admin///x", "///admin///x", 403, deny),
		p("PATH-04", "dot segment /./admin/x", "/./admin/x", 403, deny),
		p("PATH-05", "dot-dot /public/../admin/x", "/public/../admin/x", 403, deny),
		p("PATH-06", "encoded dot-dot /public/%2e%2e/admin/x", "/public/%2e%2e/admin/x", 403, deny),
		p("PATH-07", "mixed-case encoded dot-dot %2e%2E", "/public/%2e%2E/admin/x", 403, deny),
		p("PATH-08", "half-encoded dot-dot .%2e", "/public/.%2e/admin/x", 403, deny),
		p("PATH-09", "encoded single dot /public/%2e/../admin/x", "/public/%2e/../admin/x", 403, deny),
		pub("PATH-10", "double-encoded dot-dot %252e%252e stays literal", "/public/%252e%252e/admin/x", "/public/%252e%252e/admin/x"),
		p("PATH-11", "dot-dot above the root /../admin/x", "/../admin/x", 400, bad),
		p("PATH-12", "encoded dot-dot above the root /%2e%2e/admin/x", "/%2e%2e/admin/x", 400, bad),
		p("PATH-13", "climbing out of /public/ twice", "/public/../../admin/x", 400, bad),
		p("PATH-14", "encoded unreserved letters /%61dmin/x", "/%61dmin/x", 403, deny),
		p("PATH-15", "encoded slash /admin%2Fx", "/admin%2Fx", 400, bad),
		p("PATH-16", "encoded slash, lower case /admin%2fx", "/admin%2fx", 400, bad),
		p("PATH-17", "encoded slash after dot-dot /public/..%2Fadmin/x", "/public/..%2Fadmin/x", 400, bad),
		p("PATH-18", "trailing encoded slash /admin%2F", "/admin%2F", 400, bad),
		p("PATH-19", "encoded backslash /public/..%5Cadmin/x", "/public/..%5Cadmin/x", 400, bad),
		p("PATH-20", `raw backslash /public/..\admin/x`, `/public/..\admin/x`, 400, bad),
		p("PATH-21", "path parameter /admin/x;jsessionid=1", "/admin/x;jsessionid=1", 403, deny),
		p("PATH-22", "path parameter in a segment /public;x=1/../admin/x", "/public;x=1/../admin/x", 403, deny),
		p("PATH-23", "/admin;/x matches no route (default deny)", "/admin;/x", 403, "forbidden"),
		p("PATH-24", "servlet dot segment /.;/admin/x", "/.;/admin/x", 400, bad),
		p("PATH-25", "servlet dot-dot /public/..;/admin/x", "/public/..;/admin/x", 400, bad),
		p("PATH-26", "servlet dot-dot with parameter /public/..;a=b/admin/x", "/public/..;a=b/admin/x", 400, bad),
		p("PATH-27", "encoded NUL /admin/x%00", "/admin/x%00", 400, bad),
		p("PATH-28", "encoded NUL before dot-dot /public/%00/../admin/x", "/public/%00/../admin/x", 400, bad),
		p("PATH-29", "encoded CRLF /public/%0d%0aX-Injected:%201", "/public/%0d%0aX-Injected:%201", 400, bad),
		p("PATH-30", "encoded DEL /public/%7F", "/public/%7F", 400, bad),
		p("PATH-31", "overlong UTF-8 slash %C0%AF", "/public/..%C0%AFadmin/x", 400, bad),
		p("PATH-32", "overlong UTF-8 dots %C0%AE%C0%AE", "/public/%C0%AE%C0%AE/admin/x", 400, bad),
		p("PATH-33", "invalid UTF-8 %FF", "/public/%FF", 400, bad),
		p("PATH-34", "IIS %u encoding %u002e (refused by Go's server)", "/public/%u002e%u002e/admin/x", 400, ""),
		p("PATH-35", "broken percent-encoding %2 (refused by Go's server)", "/public/x%2", 400, ""),
		pub("PATH-36", "fullwidth dots stay a literal segment", "/public/%EF%BC%8E%EF%BC%8E/admin/x", "/public/%EF%BC%8E%EF%BC%8E/admin/x"),
		p("PATH-37", "fullwidth solidus /%EF%BC%8Fadmin/x matches no route", "/%EF%BC%8Fadmin/x", 403, "forbidden"),
		p("PATH-38", "upper case /ADMIN/x matches no route", "/ADMIN/x", 403, "forbidden"),
		p("PATH-39", "mixed case /Admin/x matches no route", "/Admin/x", 403, "forbidden"),
		p("PATH-40", "exact /admin", "/admin", 403, deny),
		p("PATH-41", "trailing slash /admin/", "/admin/", 403, deny),
		p("PATH-42", "dot-dot to /admin without a slash", "/public/../admin", 403, deny),
		p("PATH-43", "fragment in the raw target /admin/x#frag", "/admin/x#frag", 403, deny),
		p("PATH-44", "fragment before dot-dots /public/x#/../../admin/x", "/public/x#/../../admin/x", 403, deny),
		pub("PATH-45", "dot-dots in the query stay in the query", "/public/x?/../../admin/x", "/public/x?/../../admin/x"),
		p("PATH-46", "empty query /admin/x?", "/admin/x?", 403, deny),
		pub("PATH-47", "trailing dot-dot /public/x/.. keeps the slash", "/public/x/..", "/public/"),
		pub("PATH-48", "three dots are a name", "/public/...", "/public/..."),
		{id: "PATH-49", category: "path", name: "absolute-form target GET http://x/admin/x", target: "http://app.test/admin/x", token: user, status: 403, code: deny},
		{id: "PATH-50", category: "path", name: "absolute-form target with dot-dot", target: "http://app.test/public/../admin/x", token: user, status: 403, code: deny},
		{id: "PATH-51", category: "path", name: "absolute-form target with an encoded slash", target: "http://app.test/admin%2Fx", token: user, status: 400, code: bad},
		{id: "PATH-52", category: "path", name: "OPTIONS * (asterisk-form)", method: "OPTIONS", target: "*", token: user, status: 200,
			note: "Go's HTTP server answers OPTIONS * itself, empty"},
		{id: "PATH-53", category: "path", name: "GET * (asterisk-form with another method)", target: "*", token: user, status: 400, code: bad},
		{id: "PATH-54", category: "path", name: "raw space in the target", target: "/public/a b", token: user, status: 400},
		{id: "PATH-55", category: "path", name: "no token on the normalised /admin/x", target: "/public/%2e%2e/admin/x", status: 401, code: "missing_token"},
	}
}

// spoofAuth is every spelling of an identity header a client may try.
var spoofAuth = []string{
	"X-Auth-Subject: attacker", "x-auth-subject: attacker", "X-AUTH-ROLES: admin",
	"X_Auth_Subject: attacker", "x_auth_roles: admin", "X-aUtH-eMaIl: root@x", "X-Auth-Anything: x",
}

// overrides are the path and method rewriting headers of SPEC.md 5.
var overrides = []string{
	"X-Original-URL: /admin/x", "X-Rewrite-URL: /admin/x", "X-Forwarded-Uri: /admin/x",
	"X-Forwarded-Prefix: /admin", "X-Forwarded-Path: /admin/x", "X-Forwarded-Port: 1",
	"X-HTTP-Method-Override: DELETE", "X_HTTP_Method_Override: DELETE", "X-HTTP-Method: DELETE",
	"X-Method-Override: DELETE", "Forwarded: for=1.2.3.4;host=admin", "X-Real-IP: 1.2.3.4",
}

var overrideNames = []string{"x-original-url", "x-rewrite-url", "x-forwarded-uri", "x-forwarded-prefix",
	"x-forwarded-path", "x-forwarded-port", "x-http-method", "x-method-override", "forwarded", "x-real-ip"}

func headerCases() []attackCase {
	h := func(id, name, target string, header []string, token func(*secWorld) string, status int, code string) attackCase {
		return attackCase{id: id, category: "header", name: name, target: target, header: header, token: token, status: status, code: code}
	}
	authOnly := []string{"x-auth-"}
	withSub := map[string]string{"X-Auth-Subject": "123", "X-Auth-Roles": "user"}
	noSub := map[string]string{"X-Auth-Subject": "", "X-Auth-Roles": ""}
	return []attackCase{
		{id: "HDR-01", category: "header", name: "X-Auth-* in every case and with underscores, auth: none", target: "/public/x",
			header: spoofAuth, status: 200, reach: true, check: upstreamHeaders(authOnly, noSub)},
		{id: "HDR-02", category: "header", name: "X-Auth-* spoofed, auth: none, with a Bearer token (token removed too)", target: "/public/x",
			header: spoofAuth, token: user, status: 200, reach: true, check: upstreamHeaders(append([]string{"authorization"}, authOnly...), noSub)},
		{id: "HDR-03", category: "header", name: "X-Auth-* spoofed, auth: optional, no token", target: "/opt/x",
			header: spoofAuth, status: 200, reach: true, check: upstreamHeaders(authOnly, noSub)},
		{id: "HDR-04", category: "header", name: "X-Auth-* spoofed, auth: optional, with a token", target: "/opt/x",
			header: spoofAuth, token: user, status: 200, reach: true, check: upstreamHeaders(authOnly, withSub)},
		{id: "HDR-05", category: "header", name: "X-Auth-* spoofed, auth: required", target: "/api/x",
			header: spoofAuth, token: user, status: 200, reach: true, check: upstreamHeaders(authOnly, withSub)},
		{id: "HDR-06", category: "header", name: "path and method override headers on a public route", target: "/public/x",
			header: overrides, status: 200, reach: true, forward: "/public/x", check: upstreamHeaders(overrideNames, nil)},
		{id: "HDR-07", category: "header", name: "method override cannot turn a denied POST into a GET", method: "POST", target: "/ro/x",
			header: []string{"X-HTTP-Method-Override: GET", "X-Method-Override: GET", "X-HTTP-Method: GET"}, token: user, status: 403, code: "forbidden"},
		{id: "HDR-08", category: "header", name: "method override headers never reach the upstream", target: "/ro/x",
			header: overrides, token: user, status: 200, reach: true, forward: "/ro/x",
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, a string) {
				upstreamMethod("GET")(t, s, up, a)
				upstreamHeaders(overrideNames, nil)(t, s, up, a)
			}},
		{id: "HDR-09", category: "header", name: "X-Original-URL cannot open /admin/ from /public/", target: "/public/x",
			header: []string{"X-Original-URL: /admin/x", "X-Rewrite-URL: /admin/x"}, status: 200, reach: true, forward: "/public/x",
			check: upstreamHeaders(overrideNames, nil)},
		h("HDR-10", "two Authorization headers, both valid", "/api/x", []string{"Authorization: Bearer {user}"}, user, 401, "invalid_token"),
		h("HDR-11", "Bearer and Basic Authorization headers", "/api/x", []string{"Authorization: Basic dTpw"}, user, 401, "invalid_token"),
		{id: "HDR-12", category: "header", name: "authorization: bearer in lower case", header: []string{"authorization: bearer {user}"}, status: 200, reach: true},
		{id: "HDR-13", category: "header", name: "AUTHORIZATION: BEARER in upper case", header: []string{"AUTHORIZATION: BEARER {user}"}, status: 200, reach: true},
		h("HDR-14", "Authorization_ with an underscore is not Authorization", "/api/x", []string{"Authorization_: Bearer {user}"}, nil, 401, "missing_token"),
		h("HDR-15", "token cookie twice in one Cookie header", "/api/x", []string{"Cookie: session={user}; session={user}"}, nil, 401, "invalid_token"),
		h("HDR-16", "token cookie in two Cookie headers", "/api/x", []string{"Cookie: session={user}", "Cookie: a=1; session={user}"}, nil, 401, "invalid_token"),
		h("HDR-17", "token query parameter twice", "/api/x?access_token=a&access_token=b", nil, nil, 401, "invalid_token"),
		{id: "HDR-18", category: "header", name: "token query parameter twice, one name percent-encoded", target: "/api/x?access_token=a&access%5Ftoken=b",
			status: 401, code: "invalid_token", raw: func(s *secWorld) string {
				return "GET /api/x?access_token=" + s.user + "&access%5Ftoken=" + s.user + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
			}},
		h("HDR-19", "a bad Authorization is not rescued by a good cookie", "/api/x", []string{"Authorization: Bearer garbage", "Cookie: session={user}"}, nil, 401, "invalid_token"),
		{id: "HDR-20", category: "header", name: "Connection: X-Auth-Subject, X-Request-Id cannot drop injected headers", token: user,
			header: []string{"Connection: X-Auth-Subject, X-Auth-Roles, X-Request-Id"}, status: 200, reach: true,
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, a string) {
				upstreamHeaders(authOnly, withSub)(t, s, up, a)
				if len(up) == 1 && up[0].Header.Get("X-Request-Id") == "" {
					t.Errorf("X-Request-Id was dropped")
				}
			}},
		{id: "HDR-21", category: "header", name: "spoofed X-Forwarded-Proto and -Host from an untrusted peer", target: "/public/x",
			header: []string{"X-Forwarded-Proto: https", "X-Forwarded-Host: admin.internal", "X-Forwarded-For: 10.0.0.1"}, status: 200, reach: true,
			check: upstreamHeaders(nil, map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.test", "X-Forwarded-For": "10.0.0.1, 127.0.0.1"})},
		h("HDR-22", "space before the colon (X-Auth-Subject : admin)", "/public/x", []string{"X-Auth-Subject : admin"}, nil, 400, ""),
		{id: "HDR-23", category: "header", name: "obsolete line folding of X-Auth-Subject", target: "/public/x",
			header: []string{"X-Auth-Subject: a", " admin"}, status: 200, reach: true, note: "Go joins the lines; the header is stripped",
			check: upstreamHeaders(authOnly, noSub)},
		h("HDR-24", "two Host headers", "/public/x", []string{"Host: admin.internal"}, nil, 400, ""),
		h("HDR-25", "NUL byte in a header value", "/public/x", []string{"X-Test: a\x00b"}, nil, 400, ""),
		{id: "HDR-26", category: "header", name: "a forwarded answer carries X-Request-Id once", target: "/public/x", status: 200, reach: true,
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, answer string) {
				if n := strings.Count(answer, "\r\nX-Request-Id:"); n != 1 {
					t.Errorf("the answer has %d X-Request-Id headers, want 1", n)
				}
			}},
		h("HDR-27", "a 40,000-byte header (over limits.max_header_bytes)", "/public/x", []string{"X-Big: " + strings.Repeat("b", 40000)}, nil, 431, ""),
		{id: "HDR-28", category: "header", name: "bad client X-Request-Id is replaced", target: "/public/x",
			header: []string{"X-Request-Id: ../../etc/passwd"}, status: 200, reach: true,
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, a string) {
				if len(up) == 1 && strings.Contains(up[0].Header.Get("X-Request-Id"), "/") {
					t.Errorf("upstream X-Request-Id = %q", up[0].Header.Get("X-Request-Id"))
				}
			}},
		h("HDR-29", "two Bearer credentials in one Authorization header", "/api/x", []string{"Authorization: Bearer {user}, Bearer {user}"}, nil, 401, "invalid_token"),
		{id: "HDR-30", category: "header", name: "query token followed by a ;-separated second token (parameter cloaking)", status: 200, reach: true,
			note: "the query is forwarded byte for byte (SPEC.md 3): an upstream that splits on ; must not read the token from the query",
			raw: func(s *secWorld) string {
				return "GET /api/x?access_token=" + s.user + "&x=1;access_token=evil HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
			},
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
				if len(up) == 1 && !strings.HasSuffix(up[0].RequestURI, "&x=1;access_token=evil") {
					t.Errorf("upstream got %q", up[0].RequestURI)
				}
			}},
		{id: "HDR-31", category: "header", name: "token cookie and query token on an auth: none route", status: 200, reach: true,
			note: "removed: every token source goes on auth: none (SPEC.md 5); the other cookies and parameters pass byte for byte",
			raw: func(s *secWorld) string {
				return "GET /login?a=1&access_token=" + s.user + "&b=%2F HTTP/1.1\r\nHost: x\r\nCookie: a=1; session=" + s.user + "; b=2\r\nConnection: close\r\n\r\n"
			},
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
				if len(up) == 1 && (up[0].RequestURI != "/login?a=1&b=%2F" || up[0].Header.Get("Cookie") != "a=1; b=2") {
					t.Errorf("upstream got %q with Cookie %q", up[0].RequestURI, up[0].Header.Get("Cookie"))
				}
			}},
		{id: "HDR-32", category: "header", name: "CORS preflight to a protected route, cors not configured", method: "OPTIONS", target: "/admin/x",
			header: []string{"Origin: https://evil.example", "Access-Control-Request-Method: GET"}, status: 401, code: "missing_token",
			note: "cors.preflight defaults to deny: a preflight is an ordinary request (SPEC.md 15)"},
	}
}

// framedOnce asserts the upstream saw at most one request, never the
// smuggled /admin/ one, with exactly body.
func framedOnce(body string) func(t *testing.T, s *secWorld, up []proxytest.Request, answer string) {
	return func(t *testing.T, s *secWorld, up []proxytest.Request, answer string) {
		wire := s.up.WireSince(s.wireBefore)
		if len(up) > 0 && !strings.Contains(wire, " HTTP/1.1\r\n") {
			t.Errorf("the upstream's raw bytes were not recorded (%d requests, %q)", len(up), wire)
		}
		if why := ambiguousFraming(wire); why != "" {
			t.Errorf("gatehouse sent the upstream an ambiguous request: %s", why)
		}
		for _, r := range up {
			if strings.Contains(r.RequestURI, "admin") {
				t.Errorf("the smuggled request reached the upstream: %s %s", r.Method, r.RequestURI)
			}
			if r.Body != body {
				t.Errorf("upstream body %q, want %q", r.Body, body)
			}
		}
		if strings.Count(answer, "HTTP/1.1 200") > 1 {
			t.Errorf("more than one 200 on one connection:\n%s", answer)
		}
	}
}

var requestLine = regexp.MustCompile(`^[A-Z]+ \S+ HTTP/1\.[01]$`)

// ambiguousFraming reads the raw bytes the upstream got and says what is
// wrong with the framing of any request head in them: Content-Length and
// Transfer-Encoding together, Content-Length twice, or a Transfer-Encoding
// other than exactly chunked. Body bytes that happen to split like a head
// are skipped: a head starts with a request line.
func ambiguousFraming(wire string) string {
	for _, head := range strings.Split(wire, "\r\n\r\n") {
		lines := strings.Split(strings.TrimLeft(head, "\r\n"), "\r\n")
		if !requestLine.MatchString(lines[0]) {
			continue
		}
		cl, te := 0, 0
		for _, l := range lines[1:] {
			name, value, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "content-length":
				cl++
			case "transfer-encoding":
				te++
				if strings.TrimSpace(value) != "chunked" {
					return fmt.Sprintf("Transfer-Encoding %q in %q", value, lines[0])
				}
			}
		}
		switch {
		case cl > 0 && te > 0:
			return "Content-Length and Transfer-Encoding in " + strconv.Quote(lines[0])
		case cl > 1 || te > 1:
			return "a framing header twice in " + strconv.Quote(lines[0])
		}
	}
	return ""
}

func TestAmbiguousFraming(t *testing.T) {
	for _, tt := range []struct{ wire, want string }{
		{"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", ""},
		{"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", ""},
		{"POST /a HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length and Transfer-Encoding"},
		{"GET / HTTP/1.1\r\n\r\nPOST /a HTTP/1.1\r\ncontent-length: 2\r\nContent-Length: 3\r\n\r\n", "twice"},
		{"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "Transfer-Encoding"},
	} {
		got := ambiguousFraming(tt.wire)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("ambiguousFraming(%q) = %q, want %q", tt.wire, got, tt.want)
		}
	}
}

func smugglingCases() []attackCase {
	raw := func(text string) func(*secWorld) string {
		return func(*secWorld) string { return strings.ReplaceAll(text, "\n", "\r\n") }
	}
	const smuggled = "GET /admin/x HTTP/1.1\nHost: x\nConnection: close\n\n"
	return []attackCase{
		{id: "SMUG-01", category: "smuggling", name: "Content-Length and Transfer-Encoding: chunked together (CL.TE)",
			raw:    raw("POST /public/x HTTP/1.1\nHost: x\nContent-Length: 6\nTransfer-Encoding: chunked\n\n0\n\n" + smuggled),
			status: 200, reach: true, note: "Transfer-Encoding wins (RFC 9112 6.3); the rest is the next request, answered 401 on its own",
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, answer string) {
				framedOnce("")(t, s, up, answer)
				if !strings.Contains(answer, `"error":"missing_token"`) {
					t.Errorf("the trailing /admin/x was not answered 401:\n%s", answer)
				}
			}},
		{id: "SMUG-02", category: "smuggling", name: "Transfer-Encoding then Content-Length (TE.CL)",
			raw:    raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nContent-Length: 3\nConnection: close\n\n5\nhello\n0\n\n"),
			status: 200, reach: true, note: "Transfer-Encoding wins", check: framedOnce("hello")},
		{id: "SMUG-03", category: "smuggling", name: "two different Content-Length values",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nContent-Length: 5\nContent-Length: 40\n\nhello" + smuggled), status: 400, check: framedOnce("hello")},
		{id: "SMUG-04", category: "smuggling", name: "Content-Length: 5, 40 in one header",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nContent-Length: 5, 40\n\nhello" + smuggled), status: 400, check: framedOnce("hello")},
		{id: "SMUG-05", category: "smuggling", name: "Transfer-Encoding: chunked, identity",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding: chunked, identity\n\n5\nhello\n0\n\n" + smuggled), status: 501, check: framedOnce("hello")},
		{id: "SMUG-06", category: "smuggling", name: "Transfer-Encoding: xchunked",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding: xchunked\n\n5\nhello\n0\n\n" + smuggled), status: 501, check: framedOnce("hello")},
		{id: "SMUG-07", category: "smuggling", name: "Transfer-Encoding given twice",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nTransfer-Encoding: identity\n\n5\nhello\n0\n\n" + smuggled), status: 501, check: framedOnce("hello")},
		{id: "SMUG-08", category: "smuggling", name: "Transfer-Encoding with a space before the colon",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding : chunked\nContent-Length: 5\n\nhello"), status: 400, check: framedOnce("hello")},
		{id: "SMUG-09", category: "smuggling", name: "Transfer-Encoding:\\tchunked (tab) is plain chunked",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding:\tchunked\nConnection: close\n\n5\nhello\n0\n\n"), status: 200, reach: true, check: framedOnce("hello")},
		{id: "SMUG-10", category: "smuggling", name: "invalid chunk size",
			raw: raw("POST /public/x HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nConnection: close\n\nzz\nhello\n0\n\n"), status: 400, code: "bad_request", maybe: true,
			note: "the client's broken body is the client's error (SPEC.md 4), not 502", check: framedOnce("")},
		{id: "SMUG-11", category: "smuggling", name: "pipelined second request is decided on its own",
			raw: raw("GET /public/x HTTP/1.1\nHost: x\n\n" + smuggled), status: 200, reach: true,
			check: func(t *testing.T, s *secWorld, up []proxytest.Request, answer string) {
				framedOnce("")(t, s, up, answer)
				if !strings.Contains(answer, `"error":"missing_token"`) {
					t.Errorf("the pipelined /admin/x was not answered 401:\n%s", answer)
				}
			}},
		{id: "SMUG-12", category: "smuggling", name: "control: a WebSocket upgrade on an auth: none route passes", note: "101, the upgrade reaches the upstream",
			interact: func(t *testing.T, s *secWorld, addr string) {
				status, _ := upgradeThrough(t, s, addr, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
				if status != http.StatusSwitchingProtocols {
					t.Errorf("WebSocket upgrade answered %d, want 101", status)
				}
			}},
		{id: "SMUG-13", category: "smuggling", name: "h2c upgrade smuggling (Upgrade: h2c, then /admin/x through the tunnel)",
			note: "the h2c upgrade is not forwarded (only WebSocket upgrades pass, SPEC.md 5): no tunnel, /admin/x never reaches the upstream unchecked",
			interact: func(t *testing.T, s *secWorld, addr string) {
				status, reached := upgradeThrough(t, s, addr, "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n")
				if status == http.StatusSwitchingProtocols || reached {
					t.Errorf("h2c upgrade answered %d; smuggled request reached the upstream: %v", status, reached)
				}
			}},
		{id: "BODY-01", category: "body", name: "POST with a body and a forged token", method: "POST",
			token: tok(func(s *secWorld) string {
				return s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "k1"}, s.claims(nil))
			}),
			body: "secret=1", status: 401, code: "invalid_token"},
		{id: "BODY-02", category: "body", name: "POST with a body and no token, Expect: 100-continue", method: "POST",
			header: []string{"Expect: 100-continue"}, body: "secret=1", status: 401, code: "missing_token"},
		{id: "BODY-03", category: "body", name: "chunked POST to a default-deny path",
			raw: raw("POST /nowhere HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nConnection: close\n\n5\nhello\n0\n\n"), status: 403, code: "forbidden"},
		{id: "BODY-04", category: "body", name: "POST with a body and an expired token", method: "POST",
			token: tok(func(s *secWorld) string {
				return s.rsa.Sign(s.claims(map[string]any{"exp": time.Now().Add(-time.Minute).Unix(), "iat": time.Now().Add(-time.Hour).Unix()}))
			}),
			body: "secret=1", status: 401, code: "token_expired"},
		{id: "SLOW-01", category: "slowloris", name: "headers never finished", slow: true},
		{id: "SLOW-02", category: "slowloris", name: "denied request whose body never finishes (Content-Length 1000, 2 bytes sent)",
			note: "401 answered at once with `Connection: close`, and the connection closed: gatehouse does not wait for a body it will not use",
			interact: func(t *testing.T, s *secWorld, addr string) {
				for _, req := range []string{
					"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab",
					"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\nab",
				} {
					conn, err := dialTimeout(addr)
					if err != nil {
						t.Fatal(err)
					}
					io.WriteString(conn, req)
					// The bound only ends a failing run: the answer must come
					// without the body, well before timeouts.idle.
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					all, err := io.ReadAll(conn)
					conn.Close()
					if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
						t.Errorf("%q: no answer and the connection still open after 5s (got %q)", req[:40], all)
						continue
					}
					if status, code := parseAnswer(string(all)); status != 401 || code != "missing_token" {
						t.Errorf("%q: answer %d %q, want 401 missing_token:\n%s", req[:40], status, code, all)
					}
				}
			}},
	}
}

var updateSecurity = flag.Bool("update-security", false, "rewrite the catalogue section of ../SECURITY.md from the table")

const (
	catalogueBegin = "<!-- catalogue:begin (generated by TestSecurityCatalogueDocumented; go test ./proxy/ -run TestSecurityCatalogueDocumented -update-security) -->\n"
	catalogueEnd   = "<!-- catalogue:end -->\n"
)

var categoryTitles = []struct{ key, title string }{
	{"jwt", "JWT attacks"}, {"path", "Path tricks"}, {"header", "Header smuggling"},
	{"smuggling", "Request smuggling"}, {"body", "Bodies on denied requests"}, {"slowloris", "Slow clients"},
	{"http2", "HTTP/2 and gRPC"}, {"flood", "Failed-auth floods"}, {"assertion", "Upstream assertion (SPEC.md 11)"}, {"egress", "Egress listener"},
}

// renderCatalogue is the markdown list SECURITY.md carries between the markers.
func renderCatalogue(cases []attackCase) string {
	esc := strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "<", `\<`, "`", "\\`", "#", `\#`)
	var b strings.Builder
	for _, cat := range categoryTitles {
		n := 0
		for _, c := range cases {
			if c.category == cat.key {
				n++
			}
		}
		fmt.Fprintf(&b, "\n#### %s (%d)\n\n", cat.title, n)
		for _, c := range cases {
			if c.category == cat.key {
				fmt.Fprintf(&b, "- `%s` %s: %s\n", c.id, esc.Replace(c.name), c.expectation())
			}
		}
	}
	b.WriteString("\n")
	return b.String()
}

// TestSecurityCatalogueDocumented fails when SECURITY.md's list differs from
// the table; -update-security rewrites it.
func TestSecurityCatalogueDocumented(t *testing.T) {
	cases := catalogue()
	ids := map[string]bool{}
	for _, c := range cases {
		if ids[c.id] {
			t.Errorf("catalogue id %s used twice", c.id)
		}
		ids[c.id] = true
		known := false
		for _, cat := range categoryTitles {
			known = known || cat.key == c.category
		}
		if !known {
			t.Errorf("%s: unknown category %q", c.id, c.category)
		}
	}
	const file = "../SECURITY.md"
	doc, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i, j := strings.Index(text, catalogueBegin), strings.Index(text, catalogueEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the catalogue markers %q and %q", file, catalogueBegin, catalogueEnd)
	}
	want := renderCatalogue(cases)
	got := text[i+len(catalogueBegin) : j]
	if got == want {
		return
	}
	if *updateSecurity {
		text = text[:i+len(catalogueBegin)] + want + text[j:]
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's catalogue differs from the table in security_test.go; run go test ./proxy/ -run TestSecurityCatalogueDocumented -update-security", file)
}

// floodCases: limits.failed_auth (SPEC.md 12). The catalogue's gatehouse
// runs without it (its own rows answer many 401s), so each row starts a
// binary of its own, behind 127.0.0.1 as a trusted proxy so that
// X-Forwarded-For can name many clients from one test.
func floodCases() []attackCase {
	return []attackCase{
		{id: "FLOOD-01", category: "flood", name: "a flood of bad tokens from one client, then the same client spoofing X-Forwarded-For, then another client",
			note: "the first `burst` (5) are 401, the next 100 are 429 `too_many_requests` with `Retry-After`, also with a valid token, " +
				"on an `auth: none` route and with a forged address left of the proxy's; another client's valid token is 200; the upstream sees only that one",
			interact: func(t *testing.T, s *secWorld, _ string) {
				up := newRecorder(t)
				g := startProcess(t, fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
issuers:
  - issuer: %q
    audiences: [api]
    jwks_url: %q
trusted_proxies: ["127.0.0.1/32"]
limits:
  failed_auth: { rate: 0.01, burst: 5 }
routes:
  - location: "/public/"
    auth: none
  - location: "/api/"
audit:
  sink: none
`, up.URL, issuer, jwkstest.NewServer(s.rsa).URL))
				addr := strings.TrimPrefix(g.URL, "http://")
				send := func(path, xff, token string) (int, string, string) {
					req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: %s\r\n", path, xff)
					if token != "" {
						req += "Authorization: Bearer " + token + "\r\n"
					}
					_, answer := rawRequest(t, addr, req+"Connection: close\r\n\r\n")
					status, code := parseAnswer(answer)
					retry := ""
					if res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil); err == nil {
						retry = res.Header.Get("Retry-After")
						res.Body.Close()
					}
					return status, code, retry
				}
				garbage := s.evil.SignHeader(map[string]any{"alg": "RS256", "kid": "k1"}, s.claims(nil))
				for i := range 5 {
					if st, code, _ := send("/api/x", "203.0.113.5", garbage); st != 401 || code != "invalid_token" {
						t.Fatalf("bad token %d: %d %q, want 401 invalid_token", i+1, st, code)
					}
				}
				for i := range 100 {
					path, xff, token := "/api/x", "203.0.113.5", garbage
					switch i % 4 {
					case 1:
						token = s.user
					case 2:
						path, token = "/public/x", ""
					case 3:
						xff = "198.51.100.1, 203.0.113.5" // the forged address is left of the one the proxy saw
					}
					st, code, retry := send(path, xff, token)
					if n, err := strconv.Atoi(retry); st != 429 || code != "too_many_requests" || err != nil || n < 1 || n > 100 {
						t.Fatalf("flood request %d (%s, X-Forwarded-For %s): %d %q Retry-After %q, want 429 too_many_requests, 1..100",
							i+1, path, xff, st, code, retry)
					}
				}
				if st, _, _ := send("/api/x", "203.0.113.6", s.user); st != 200 {
					t.Errorf("another client's valid token: %d, want 200", st)
				}
				if n := len(up.Requests()); n != 1 {
					t.Errorf("the upstream got %d requests, want 1", n)
				}
			}},
	}
}
