package proxy_test

import (
	"crypto"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// signAs makes an assertion with key as gatehouse A would (its kid), with
// the given claims: the attacker's copy with a changed exp or aud.
func signAs(t *testing.T, key crypto.Signer, claims map[string]any) string {
	t.Helper()
	hdr := jws.NewHeaders()
	hdr.Set(jws.TypeKey, "JWT")
	hdr.Set(jws.KeyIDKey, thumbprint(t, key))
	payload, _ := json.Marshal(claims)
	out, err := jws.Sign(payload, jws.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestAssertionTwoGatehouses: gatehouse A verifies the client's token and
// vouches for the request with its assertion; gatehouse B, in front of
// the second service, takes only A's assertions (its issuer entry is A's
// admin JWKS) and refuses forged, expired and wrong-audience ones. Then A
// rotates its key with a SIGHUP.
func TestAssertionTwoGatehouses(t *testing.T) {
	dir := t.TempDir()
	oldFile, oldKey := writeAssertionKey(t, dir, "ec")
	client := proxytest.NewIssuer(t, "RS256")
	upB := newRecorder(t)       // the service behind B
	elsewhere := newRecorder(t) // another upstream of A: its assertions name another aud
	elsewhereURL := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1)

	configA := func(upstream, keyFile, previous string) string {
		return fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
admin:
  listen: "127.0.0.1:0"
issuers:
%sroutes:
  - location: /
    roles: { any: [user] }
  - location: /elsewhere/
    upstream: %q
upstream_assertion:
  issuer: svc-a
  key_file: %q
  previous_key_file: %q
  ttl: 5m
  claims: [roles]
audit:
  sink: none
`, upstream, client.YAML("api"), elsewhereURL, keyFile, previous)
	}
	a := startProcess(t, configA("http://127.0.0.1:1", oldFile, ""))
	b := startProcess(t, fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
issuers:
  - issuer: svc-a
    audiences: ["127.0.0.1"]
    jwks_url: %q
    algorithms: [ES256, EdDSA]
    min_refresh_interval: 1s
    leeway: 0s
    required_claims: [sub, gatehouse_request_id]
token:
  sources: ["header:X-Gatehouse-Assertion"]
headers:
  X-Auth-Subject: sub
  X-Auth-Via: gatehouse_request_id
routes:
  - location: /
    roles: { any: [user] }
audit:
  sink: none
`, upB.URL, a.AdminURL+"/.well-known/jwks.json"))
	// A forwards to B: set now that B's address is known (a reload).
	if err := os.WriteFile(a.ConfigPath, []byte(configA(b.URL, oldFile, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Signal(syscall.SIGHUP)
	if !a.WaitLogCount(`"msg":"config reloaded"`, 1, 20*time.Second) {
		t.Fatalf("A did not reload:\n%s", a.Stderr.String())
	}

	user := client.Token(map[string]any{"aud": "api", "sub": "alice", "roles": []string{"user"}})
	bearer := http.Header{"Authorization": {"Bearer " + user}}

	// Through A, with a forged assertion from the client: replaced.
	forged := signAs(t, mustKey(t, dir), map[string]any{"iss": "svc-a", "aud": "127.0.0.1", "sub": "admin",
		"roles": []string{"user"}, "gatehouse_request_id": "x", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()})
	h := bearer.Clone()
	h["X-Gatehouse-Assertion"] = []string{forged}
	status, hdr, body := do(t, "GET", a.URL+"/orders/1", h, "")
	if status != 200 {
		t.Fatalf("A -> B answered %d %s\nA:\n%s\nB:\n%s", status, body, a.Stderr.String(), b.Stderr.String())
	}
	got := upB.Last(t)
	if got.Header.Get("X-Auth-Subject") != "alice" || got.Header.Get("X-Gatehouse-Assertion") == forged {
		t.Errorf("B's upstream got subject %q and the forged assertion: %v", got.Header.Get("X-Auth-Subject"), got.Header.Get("X-Gatehouse-Assertion") == forged)
	}
	if got.Header.Get("X-Auth-Via") != hdr.Get("X-Request-Id") {
		t.Errorf("gatehouse_request_id %q, want A's request id %q", got.Header.Get("X-Auth-Via"), hdr.Get("X-Request-Id"))
	}
	real := got.Header.Get("X-Gatehouse-Assertion")
	n := len(upB.Requests())

	// Straight to B: no assertion, a forged one, an expired and a
	// wrong-audience one signed with A's own key: all refused.
	_, wrongAud := func() (int, string) {
		if s, _, _ := do(t, "GET", a.URL+"/elsewhere/x", bearer, ""); s != 200 {
			t.Fatalf("A -> elsewhere answered %d", s)
		}
		return 0, elsewhere.Last(t).Header.Get("X-Gatehouse-Assertion")
	}()
	now := time.Now().Unix()
	expired := signAs(t, oldKey, map[string]any{"iss": "svc-a", "aud": "127.0.0.1", "sub": "alice", "roles": []string{"user"},
		"gatehouse_request_id": "x", "iat": now - 120, "exp": now - 60})
	for _, c := range []struct {
		name, assertion, code string
	}{
		{"no assertion", "", "missing_token"},
		{"forged with another key", forged, "invalid_token"},
		{"A's key, expired", expired, "token_expired"},
		{"A's assertion for another upstream (aud localhost)", wrongAud, "invalid_token"},
		{"the client's own token", user, "invalid_token"},
	} {
		h := http.Header{}
		if c.assertion != "" {
			h.Set("X-Gatehouse-Assertion", c.assertion)
		}
		status, _, body := do(t, "GET", b.URL+"/orders/1", h, "")
		if status != 401 || !strings.Contains(body, `"`+c.code+`"`) {
			t.Errorf("%s: B answered %d %s, want 401 %s", c.name, status, body, c.code)
		}
	}
	if len(upB.Requests()) != n {
		t.Errorf("B's upstream got %d refused requests", len(upB.Requests())-n)
	}
	// The control: A's real assertion, copied, is what B takes (within its
	// ttl it is a bearer credential, like the token it stands for).
	if s, _, _ := do(t, "GET", b.URL+"/orders/1", http.Header{"X-Gatehouse-Assertion": {real}}, ""); s != 200 {
		t.Errorf("A's own assertion sent to B answered %d", s)
	}

	// Rotation: the new key signs, the old one is still published.
	newFile, newKey := writeAssertionKey(t, dir, "ed25519")
	if err := os.WriteFile(a.ConfigPath, []byte(configA(b.URL, newFile, oldFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Signal(syscall.SIGHUP)
	if !a.WaitLogCount(`"msg":"config reloaded"`, 2, 20*time.Second) {
		t.Fatalf("A did not reload the rotation:\n%s", a.Stderr.String())
	}
	res, err := http.Get(a.AdminURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.ParseReader(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		kids = append(kids, k.KeyID())
	}
	if want := []string{thumbprint(t, newKey), thumbprint(t, oldKey)}; fmt.Sprint(kids) != fmt.Sprint(want) {
		t.Errorf("after the rotation the JWKS has %v, want %v", kids, want)
	}
	// B learns the new kid by its unknown-kid refetch (min_refresh_interval
	// 1s here): poll for the event, bounded.
	var last int
	ok := waitFor(30*time.Second, func() bool {
		last, _, _ = do(t, "GET", a.URL+"/orders/2", bearer, "")
		return last == 200
	})
	if !ok {
		t.Fatalf("after the rotation A -> B answers %d\nB:\n%s", last, b.Stderr.String())
	}
	hdrs, _ := verifyAssertion(t, upB.Last(t).Header.Get("X-Gatehouse-Assertion"), jwa.EdDSA, newKey.Public())
	if hdrs["kid"] != thumbprint(t, newKey) {
		t.Errorf("after the rotation the assertion's kid is %v, want the new key's", hdrs["kid"])
	}
	// An assertion of the old key, still within its ttl, still passes B.
	if s, _, _ := do(t, "GET", b.URL+"/orders/1", http.Header{"X-Gatehouse-Assertion": {real}}, ""); s != 200 {
		t.Errorf("an old-key assertion during the rotation answered %d", s)
	}
}

// mustKey is a fresh EC key that nobody publishes: the attacker's.
func mustKey(t *testing.T, dir string) crypto.Signer {
	_, k := writeAssertionKey(t, dir, "ec")
	return k
}

// TestAssertionConfigTestFlag: `gatehouse -t` reports every upstream
// assertion error of a file at its position, and exits 1.
func TestAssertionConfigTestFlag(t *testing.T) {
	dir := t.TempDir()
	rsaFile, _ := writeAssertionKey(t, dir, "rsa")
	is := proxytest.NewIssuer(t, "ES256")
	bad := dir + "/bad.yaml"
	os.WriteFile(bad, []byte(fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:1"
issuers:
%sroutes:
  - location: /
upstream_assertion:
  issuer: a
  key_file: %q
  previous_key_file: %q
  ttl: 10m
`, is.YAML("api"), rsaFile, dir+"/missing.pem")), 0o600)
	cmd := exec.Command(proxytest.Binary(t), "-t", "-config", bad)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("-t exited %d (%v), want 1", code, err)
	}
	want := []string{
		bad + ":11:13: upstream_assertion.key_file: " + rsaFile + ": an RSA key",
		bad + ":12:22: upstream_assertion.previous_key_file: open " + dir + "/missing.pem",
		bad + ":13:8: upstream_assertion.ttl must be at most 5m0s",
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("-t printed %d lines, want %d:\n%s", len(lines), len(want), stderr.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]) {
			t.Errorf("line %d = %q, want it to start %q", i, l, want[i])
		}
	}
}
