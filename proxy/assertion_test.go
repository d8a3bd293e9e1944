package proxy_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// writeAssertionKey writes a new PEM private key of kind ("ec", "ed25519",
// "rsa", "p384") to a file in dir and returns the file and the key.
func writeAssertionKey(t testing.TB, dir, kind string) (string, crypto.Signer) {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "ec":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, kind+"-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	return f.Name(), k
}

// thumbprint is the RFC 7638 kid of k's public key, computed here by hand
// (not by the code under test's path): SHA-256 over the required members
// in lexicographic order.
func thumbprint(t testing.TB, k crypto.Signer) string {
	t.Helper()
	var doc string
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		raw, err := p.Bytes() // 0x04 || X || Y, each 32 bytes
		if err != nil {
			t.Fatal(err)
		}
		enc := base64.RawURLEncoding.EncodeToString
		doc = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, enc(raw[1:33]), enc(raw[33:]))
	case ed25519.PublicKey:
		doc = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, base64.RawURLEncoding.EncodeToString(p))
	default:
		t.Fatalf("no thumbprint for %T", p)
	}
	sum := crypto.SHA256.New()
	sum.Write([]byte(doc))
	return base64.RawURLEncoding.EncodeToString(sum.Sum(nil))
}

// verifyAssertion checks tok's signature with pub and returns its protected
// header and claims.
func verifyAssertion(t testing.TB, tok string, alg jwa.SignatureAlgorithm, pub crypto.PublicKey) (map[string]any, map[string]any) {
	t.Helper()
	payload, err := jws.Verify([]byte(tok), jws.WithKey(alg, pub))
	if err != nil {
		t.Fatalf("assertion does not verify with the key: %v", err)
	}
	var claims, hdr map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	h, _, _ := strings.Cut(tok, ".")
	hb, _ := base64.RawURLEncoding.DecodeString(h)
	if err := json.Unmarshal(hb, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr, claims
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAssertionClaims(t *testing.T) {
	dir := t.TempDir()
	is := proxytest.NewIssuer(t, "RS256")
	up := newRecorder(t)
	other := newRecorder(t)
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	for _, kind := range []string{"ec", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			keyFile, key := writeAssertionKey(t, dir, kind)
			alg := map[string]jwa.SignatureAlgorithm{"ec": jwa.ES256, "ed25519": jwa.EdDSA}[kind]
			cfg := proxytest.Config(t, fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
issuers:
%sroutes:
  - location: /
  - location: /other/
    upstream: %q
  - location: /open/
    auth: none
upstream_assertion:
  issuer: checkout
  key_file: %q
  ttl: 40s
  claims: [sub, roles, "realm_access.roles", "https://example.com/tenant", email]
audit:
  sink: none
`, up.URL, is.YAML("api"), otherURL, keyFile))
			// The token's clock is real; the assertion's is this one, a day
			// ahead of it so that a real-clock iat would show.
			clock := &fakeClock{t: time.Now().Add(24 * time.Hour).Truncate(time.Second)}
			m := proxy.NewMetrics("")
			h := proxytest.NewHandler(t, cfg, proxy.HandlerOptions{Now: clock.now, Metrics: m})
			tok := is.Token(map[string]any{"aud": "api", "sub": "u-7", "roles": []string{"user", "admin"},
				"realm_access": map[string]any{"roles": []string{"kc"}}, "https://example.com/tenant": "acme",
				"exp": time.Now().Add(48 * time.Hour).Unix()})
			send := func(path string, hdr ...string) *httptest.ResponseRecorder {
				r := httptest.NewRequest("GET", path, nil)
				r.Header.Set("Authorization", "Bearer "+tok)
				for i := 0; i+1 < len(hdr); i += 2 {
					r.Header.Add(hdr[i], hdr[i+1])
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					t.Fatalf("%s: status %d %s", path, w.Code, w.Body)
				}
				return w
			}
			w := send("/x", "X-Gatehouse-Assertion", "forged", "x-gatehouse-assertion", "forged2")
			got := up.Last(t)
			if v := got.Header.Values("X-Gatehouse-Assertion"); len(v) != 1 || strings.HasPrefix(v[0], "forged") {
				t.Fatalf("upstream assertion header %q, want one signed by gatehouse", v)
			}
			hdr, c := verifyAssertion(t, got.Header.Get("X-Gatehouse-Assertion"), alg, key.Public())
			if hdr["typ"] != "JWT" || hdr["alg"] != alg.String() || hdr["kid"] != thumbprint(t, key) {
				t.Errorf("header %v, want typ JWT, alg %s, kid %s", hdr, alg, thumbprint(t, key))
			}
			iat := float64(clock.now().Unix())
			want := map[string]any{
				"iss": "checkout", "aud": "127.0.0.1", "sub": "u-7", "roles": []any{"user", "admin"},
				"realm_access.roles": []any{"kc"}, "https://example.com/tenant": "acme",
				"iat": iat, "exp": iat + 40, "gatehouse_request_id": w.Header().Get("X-Request-Id"),
			}
			if fmt.Sprint(c) != fmt.Sprint(want) {
				t.Errorf("claims\n got %v\nwant %v", c, want)
			}
			if _, ok := c["email"]; ok {
				t.Errorf("email is absent from the token but present in the assertion")
			}

			// A per-route upstream: aud is its host, without the port.
			send("/other/x")
			_, c = verifyAssertion(t, other.Last(t).Header.Get("X-Gatehouse-Assertion"), alg, key.Public())
			if c["aud"] != "localhost" {
				t.Errorf("per-route upstream aud %v, want localhost", c["aud"])
			}

			// auth: none: the client's header is stripped, none is set.
			r := httptest.NewRequest("GET", "/open/x", nil)
			r.Header.Set("X_Gatehouse_Assertion", "forged")
			r.Header.Set("Authorization", "Bearer "+tok)
			h.ServeHTTP(httptest.NewRecorder(), r)
			for k := range up.Last(t).Header {
				if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "x-gatehouse-assertion") {
					t.Errorf("auth: none forwarded %s", k)
				}
			}

			// One signature per token, audience and window: 2 so far
			// (two audiences); more requests inside the window sign nothing.
			signed := func() float64 { return counter(t, m.Registry, "gatehouse_assertions_signed_total", nil) }
			if n := signed(); n != 2 {
				t.Errorf("%v signatures after two audiences, want 2", n)
			}
			send("/x")
			cached := up.Last(t).Header.Get("X-Gatehouse-Assertion")
			for range 5 {
				send("/x")
			}
			clock.add(29 * time.Second) // still under three quarters of 40s
			send("/x")
			if n := signed(); n != 2 {
				t.Errorf("%v signatures within the window, want 2", n)
			}
			if up.Last(t).Header.Get("X-Gatehouse-Assertion") != cached {
				t.Errorf("a new assertion within the window")
			}
			clock.add(2 * time.Second) // 31s: under 10s of its life left
			send("/x")
			if n := signed(); n != 3 {
				t.Errorf("%v signatures after the window, want 3", n)
			}
			_, c = verifyAssertion(t, up.Last(t).Header.Get("X-Gatehouse-Assertion"), alg, key.Public())
			if c["iat"] != float64(clock.now().Unix()) || c["exp"] != float64(clock.now().Unix()+40) {
				t.Errorf("re-signed iat %v exp %v, want %d and +40", c["iat"], c["exp"], clock.now().Unix())
			}
		})
	}
}

func TestAssertionConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ec, _ := writeAssertionKey(t, dir, "ec")
	rsaFile, _ := writeAssertionKey(t, dir, "rsa")
	p384, _ := writeAssertionKey(t, dir, "p384")
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwkstest.JWKS(jwkstest.NewKey("ES256", "k")), 0o600); err != nil {
		t.Fatal(err)
	}
	base := `listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:1"
issuers:
  - issuer: "https://i.test"
    audiences: any
    jwks_file: ` + jwksFile + `
routes:
  - location: /
upstream_assertion:
`
	cases := []struct{ body, want string }{
		{"  issuer: a\n  key_file: " + rsaFile + "\n", ":11:13: upstream_assertion.key_file: " + rsaFile + ": an RSA key"},
		{"  issuer: a\n  key_file: " + filepath.Join(dir, "missing.pem") + "\n", ":11:13: upstream_assertion.key_file: open "},
		{"  issuer: a\n  key_file: " + p384 + "\n", "must be on P-256"},
		{"  issuer: a\n  key_file: " + ec + "\n  ttl: 6m\n", ":12:8: upstream_assertion.ttl must be at most 5m0s"},
		{"  issuer: a\n  key_file: " + ec + "\n  previous_key_file: " + rsaFile + "\n", ":12:22: upstream_assertion.previous_key_file: "},
		{"  issuer: a\n  key_file: " + ec + "\n  claims: [exp]\n", ":12:12: upstream_assertion.claims: \"exp\" is set by gatehouse"},
		{"  key_file: " + ec + "\n", ":10:3: missing required key \"issuer\""},
		{"  issuer: a\n  key_file: " + ec + "\n  header: Authorization\n", "cannot carry the assertion"},
		{"  issuer: a\n  key_file: " + ec + "\n  header: X-Forwarded-For\n", "cannot carry the assertion"},
		{"  issuer: a\n  key_file: " + ec + "\n  header: X_Original_URL\n", "cannot carry the assertion"},
		{"  issuer: a\n  key_file: " + ec + "\n  header: X-Auth-Subject\nheaders:\n  X-Auth-Subject: sub\n", "also an injected claim header"},
		{"  issuer: a\n  key_file: " + ec + "\ntoken:\n  sources: [\"header:X-Gatehouse-Assertion\"]\n", "also a token source"},
	}
	for _, c := range cases {
		_, err := proxy.ParseConfig("g.yaml", []byte(base+c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config\n%s\nerror %v\nwant it to contain %q", c.body, err, c.want)
		}
	}
	if _, err := proxy.ParseConfig("g.yaml", []byte(base+"  issuer: a\n  key_file: "+ec+"\n")); err != nil {
		t.Errorf("a good EC key: %v", err)
	}
}

// TestAssertionJWKS: the admin listener publishes both keys during a
// rotation, and a verifier built from that JWKS (jwx here; a second
// gatehouse in the end-to-end test) accepts what gatehouse signs.
func TestAssertionJWKS(t *testing.T) {
	dir := t.TempDir()
	cur, curKey := writeAssertionKey(t, dir, "ed25519")
	prev, prevKey := writeAssertionKey(t, dir, "ec")
	is := proxytest.NewIssuer(t, "ES256")
	up := newRecorder(t)
	g := startGatehouse(t, fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
admin:
  listen: "127.0.0.1:0"
issuers:
%sroutes:
  - location: /
upstream_assertion:
  issuer: checkout
  key_file: %q
  previous_key_file: %q
audit:
  sink: none
`, up.URL, is.YAML("api"), cur, prev))
	res, err := http.Get(g.AdminURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Cache-Control"), "max-age=") || res.Header.Get("ETag") == "" {
		t.Fatalf("jwks answer %d, Cache-Control %q, ETag %q", res.StatusCode, res.Header.Get("Cache-Control"), res.Header.Get("ETag"))
	}
	set, err := jwk.ParseReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		kids = append(kids, k.KeyID())
		if _, ok := k.Get("d"); ok {
			t.Errorf("the JWKS publishes a private part")
		}
	}
	if want := []string{thumbprint(t, curKey), thumbprint(t, prevKey)}; fmt.Sprint(kids) != fmt.Sprint(want) {
		t.Errorf("kids %v, want %v (current first)", kids, want)
	}
	req, _ := http.NewRequest("GET", g.AdminURL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	if r2, err := http.DefaultClient.Do(req); err != nil || r2.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %v %v, want 304", r2.StatusCode, err)
	} else {
		r2.Body.Close()
	}
	status, _, _ := do(t, "GET", g.URL+"/x", http.Header{"Authorization": {"Bearer " + is.Token(map[string]any{"aud": "api"})}}, "")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	a := up.Last(t).Header.Get("X-Gatehouse-Assertion")
	if _, err := jws.Verify([]byte(a), jws.WithKeySet(set, jws.WithRequireKid(true))); err != nil {
		t.Errorf("the assertion does not verify with the published JWKS: %v", err)
	}
}

// assertionCases are the catalogue rows of upstream_assertion: only
// gatehouse vouches, whatever header spelling or protocol the client uses.
func assertionCases() []attackCase {
	// signedHere wants the upstream's one assertion header to be
	// gatehouse's own (it verifies with the world's key), or none at all.
	signedHere := func(want bool) func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
		return func(t *testing.T, s *secWorld, up []proxytest.Request, _ string) {
			if len(up) != 1 {
				return
			}
			var vals []string
			for k, v := range up[0].Header {
				if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "x-gatehouse-assertion") {
					vals = append(vals, v...)
				}
			}
			switch {
			case !want && len(vals) != 0:
				t.Errorf("the upstream got an assertion on a request gatehouse did not vouch for: %q", vals)
			case want && len(vals) != 1:
				t.Errorf("the upstream got %d assertion values, want gatehouse's one", len(vals))
			case want:
				if _, err := jws.Verify([]byte(vals[0]), jws.WithKey(jwa.ES256, s.assertKey.Public())); err != nil {
					t.Errorf("the upstream's assertion is not gatehouse's: %v", err)
				}
			}
		}
	}
	forged := []string{"X-Gatehouse-Assertion: forged", "x-gatehouse-assertion: forged", "X_GATEHOUSE_ASSERTION: forged", "x-GaTeHoUsE_aSsErTiOn: forged"}
	h2forged := func(path string, token bool, want bool) func(t *testing.T, s *secWorld, addr string) {
		return func(t *testing.T, s *secWorld, addr string) {
			before := len(s.up.Requests())
			fields := h2Get(path, "x-gatehouse-assertion", "forged", "x_gatehouse_assertion", "forged")
			if token {
				fields = append(fields, "authorization", "Bearer "+s.user)
			}
			if r := h2Request(t, addr, fields...); r.status != 200 {
				t.Fatalf("answered %v, want 200", r)
			}
			got := s.up.Requests()[before:]
			if len(got) != 1 {
				t.Fatalf("the upstream got %d requests, want 1", len(got))
			}
			signedHere(want)(t, s, got, "")
		}
	}
	return []attackCase{
		{id: "ASRT-01", category: "assertion", name: "forged assertion header in four spellings, valid token, auth: required",
			header: forged, token: user, status: 200, reach: true, note: "every spelling stripped; the upstream gets gatehouse's one assertion",
			check: signedHere(true)},
		{id: "ASRT-02", category: "assertion", name: "forged assertion header in four spellings, auth: none", target: "/public/x",
			header: forged, status: 200, reach: true, note: "stripped; no assertion (nothing was verified)", check: signedHere(false)},
		{id: "ASRT-03", category: "assertion", name: "forged assertion header, auth: optional without a token", target: "/opt/x",
			header: forged, status: 200, reach: true, note: "stripped; no assertion", check: signedHere(false)},
		{id: "ASRT-04", category: "assertion", name: "forged assertion header with an invalid token", header: forged,
			token: func(s *secWorld) string { return s.evil.Sign(s.claims(nil)) }, status: 401, code: "invalid_token"},
		{id: "ASRT-05", category: "assertion", name: "HTTP/2: x-gatehouse-assertion and x_gatehouse_assertion in lower case, auth: none",
			note: "stripped as over HTTP/1.1: the upstream gets no assertion", interact: h2forged("/public/x", false, false)},
		{id: "ASRT-06", category: "assertion", name: "HTTP/2: forged lower-case assertion with a valid token",
			note: "the upstream gets gatehouse's one assertion", interact: h2forged("/api/x", true, true)},
		{id: "ASRT-07", category: "assertion", name: "admin /.well-known/jwks.json",
			note: "public keys only (no private member), the current key's kid is the RFC 7638 thumbprint",
			interact: func(t *testing.T, s *secWorld, _ string) {
				res, err := http.Get(s.g.AdminURL + "/.well-known/jwks.json")
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				var doc struct{ Keys []map[string]any }
				if err := json.NewDecoder(res.Body).Decode(&doc); err != nil || len(doc.Keys) != 1 {
					t.Fatalf("jwks %v keys, error %v", len(doc.Keys), err)
				}
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
					if _, ok := doc.Keys[0][private]; ok {
						t.Errorf("the JWKS publishes private member %q", private)
					}
				}
				if doc.Keys[0]["kid"] != thumbprint(t, s.assertKey) {
					t.Errorf("kid %v, want the thumbprint", doc.Keys[0]["kid"])
				}
			}},
	}
}

// TestAssertionExampleConfig: config.example.yaml's commented-out
// upstream_assertion block, uncommented (with a real key file), loads.
func TestAssertionExampleConfig(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keyFile, _ := writeAssertionKey(t, t.TempDir(), "ed25519")
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "# upstream_assertion:"):
			in = true
		case in && !strings.HasPrefix(line, "#   "):
			in = false
		}
		if in {
			line = strings.TrimPrefix(line, "# ")
			if strings.HasPrefix(line, "  key_file:") {
				line = "  key_file: " + keyFile
			}
		}
		out = append(out, line)
	}
	text := strings.Join(out, "\n")
	if !strings.Contains(text, "\nupstream_assertion:") {
		t.Fatal("config.example.yaml has no commented-out upstream_assertion block")
	}
	path := filepath.Join(t.TempDir(), "example.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// The example's paths are relative to the repository root.
	t.Chdir("..")
	cfg, err := proxy.LoadConfig(path)
	if err != nil {
		t.Fatalf("the uncommented example does not load: %v", err)
	}
	if cfg.Assertion == nil || cfg.Assertion.Issuer != "checkout" || cfg.Assertion.TTL != time.Minute {
		t.Errorf("upstream_assertion decoded as %+v", cfg.Assertion)
	}
}

func TestAssertionWithoutAdminWarns(t *testing.T) {
	keyFile, _ := writeAssertionKey(t, t.TempDir(), "ec")
	is := proxytest.NewIssuer(t, "ES256")
	cfg := proxytest.Config(t, fmt.Sprintf("listen: \"127.0.0.1:0\"\nupstream: \"http://127.0.0.1:1\"\nissuers:\n%sroutes:\n  - location: /\nupstream_assertion:\n  issuer: a\n  key_file: %q\n", is.YAML("api"), keyFile))
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], ":10:3: warning: upstream_assertion is on but admin.listen is empty") {
		t.Errorf("warnings %q", cfg.Warnings)
	}
}
