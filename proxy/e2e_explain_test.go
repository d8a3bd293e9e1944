package proxy_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// run runs the gatehouse binary and returns stdout, stderr and the exit code.
func run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(proxytest.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb proxytest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("gatehouse %v: %v", args, err)
	return "", "", -1
}

// TestExampleCases: every example config in the repo has a cases file
// beside it, and `gatehouse test` passes it.
func TestExampleCases(t *testing.T) {
	configs, _ := filepath.Glob("../examples/*/gatehouse.yaml")
	configs = append(configs, "../config.example.yaml")
	if len(configs) < 3 {
		t.Fatalf("found only %v", configs)
	}
	env := []string{"GATEHOUSE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/", "GATEHOUSE_HMAC_SECRET=" + strings.Repeat("s", 48)}
	for _, cfg := range configs {
		cases := strings.TrimSuffix(cfg, ".yaml") + ".cases.yaml"
		t.Run(cfg, func(t *testing.T) {
			if _, err := os.Stat(cases); err != nil {
				t.Fatalf("%s has no cases file: %v", cfg, err)
			}
			out, errs, code := run(t, env, "test", "-config", cfg, cases)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := lines[len(lines)-1]
			if code != 0 || !strings.HasSuffix(last, " passed, 0 failed") || strings.HasPrefix(last, "0 passed") {
				t.Errorf("gatehouse test %s: exit %d\n%s%s", cases, code, out, errs)
			}
		})
	}
}

// TestPolicyTestCommand: a failing case prints its line and explanation,
// the closing count, and exit 1; usage and config errors exit 2.
func TestPolicyTestCommand(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfg, []byte(w.config("", `
routes:
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
    roles: { any: [user] }
    when: "claims.tenant == route.captures.tenant"
`)), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `
cases:
  - name: own tenant
    request: { method: GET, url: /tenants/acme/x }
    claims: { sub: a, tenant: acme, roles: [user] }
    expect: allow
    route: "~ ^/tenants/(?P<tenant>[^/]+)/"
  - name: other tenant
    request: { method: GET, url: /tenants/globex/x }
    claims: { sub: a, tenant: acme, roles: [user] }
    expect: insufficient_scope
  - name: anonymous
    request: { url: /tenants/acme/x }
    anonymous: true
    expect: missing_token
`)
	out, errs, code := run(t, nil, "test", "-config", cfg, good)
	if code != 0 || out != "3 passed, 0 failed\n" {
		t.Errorf("good cases: exit %d, stdout %q, stderr %q; want 0 and only the count", code, out, errs)
	}
	bad := write("bad.yaml", `
cases:
  - name: own tenant
    request: { method: GET, url: /tenants/acme/x }
    claims: { sub: a, tenant: acme, roles: [user] }
    expect: allow
  - name: wrong expectation
    request: { method: GET, url: /tenants/globex/x }
    claims: { sub: a, tenant: acme, roles: [user] }
    expect: allow
`)
	out, _, code = run(t, nil, "test", "-config", cfg, bad)
	if code != 1 {
		t.Errorf("failing case: exit %d, want 1", code)
	}
	for _, want := range []string{
		"FAIL wrong expectation: got insufficient_scope, want allow\n",
		"    FAIL when claims.tenant == route.captures.tenant: false\n",
		"    result: deny 403 insufficient_scope\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "\n1 passed, 1 failed\n") {
		t.Errorf("last line of %q is not `1 passed, 1 failed`", out)
	}
	invalid := write("invalid.yaml", "cases:\n  - request: { url: /x }\n    claims: { sub: a }\n    expect: maybe\n")
	_, errs, code = run(t, nil, "test", "-config", cfg, invalid)
	if code != 2 || !strings.Contains(errs, "invalid.yaml:4:13: expect must be allow or a denial code") {
		t.Errorf("invalid cases file: exit %d, stderr %q; want 2 and the position", code, errs)
	}
	if _, _, code = run(t, nil, "test", "-config", cfg); code != 2 {
		t.Errorf("no cases file: exit %d, want 2", code)
	}
	if _, _, code = run(t, nil, "test", "-config", filepath.Join(dir, "missing.yaml"), good); code != 2 {
		t.Errorf("missing config: exit %d, want 2", code)
	}
}

// TestExplainCommand: explain with a real token (keys fetched once from the
// issuer), with claims, in text and JSON, and its exit codes.
func TestExplainCommand(t *testing.T) {
	w := newWorld(t)
	cfg := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(cfg, []byte(w.config("", `
routes:
  - location: /api/
    roles: { any: [user] }
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
    roles: { any: [user] }
    when: "claims.tenant == route.captures.tenant"
  - location: /api/new/
    shadow: true
    roles: { any: [admin] }
`)), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := w.token(map[string]any{"tenant": "acme"})
	out, errs, code := run(t, nil, "explain", "-config", cfg, "-token", tok, "GET", "http://api.test/tenants/acme/../acme/orders?x=1")
	if code != 0 {
		t.Fatalf("explain allowed: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"path: /tenants/acme/orders (canonical)",
		"  no  /api/                            prefix: path does not start with \"/api/\"",
		"  WIN ~ ^/tenants/(?P<tenant>[^/]+)/   first regex in file order that matches: wins",
		"token: alg RS256, kid k1",
		"signature verified true",
		"  ok   roles any [user]: token has [user]",
		"  ok   when claims.tenant == route.captures.tenant: true",
		"result: allow 200 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[2]) {
		t.Error("explain printed the token")
	}

	out, _, code = run(t, nil, "explain", "-config", cfg, "-json", "-claims", `{"sub":"a","roles":["user"]}`, "GET", "/api/new/x")
	var ex struct {
		Path   string
		Route  string
		Shadow struct{ Route, Decision, Reason string }
		Token  struct {
			Source, Unchecked string
			Verified          bool
		}
		Requirements []struct {
			Name string
			OK   bool
		}
		Decision, Reason string
		Status           int
	}
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("-json output: %v\n%s", err, out)
	}
	if code != 0 || ex.Route != "/api/" || ex.Decision != "allow" || ex.Status != 200 ||
		ex.Shadow.Route != "/api/new/" || ex.Shadow.Decision != "deny" || ex.Shadow.Reason != "insufficient_scope" ||
		ex.Token.Source != "claims" || ex.Token.Verified || !strings.Contains(ex.Token.Unchecked, "signature") {
		t.Errorf("explain -json: exit %d, %+v", code, ex)
	}

	out, _, code = run(t, nil, "explain", "-config", cfg, "-claims", `{"sub":"a","tenant":"acme","roles":["user"]}`, "GET", "/tenants/globex/x")
	if code != 1 || !strings.Contains(out, "result: deny 403 insufficient_scope") {
		t.Errorf("explain denied: exit %d\n%s", code, out)
	}
	out, _, code = run(t, nil, "explain", "-config", cfg, "GET", "/a/%2F/b")
	if code != 1 || !strings.Contains(out, "path: refused") || !strings.Contains(out, "result: deny 400 bad_request") {
		t.Errorf("explain bad path: exit %d\n%s", code, out)
	}
	out, _, code = run(t, nil, "explain", "-config", cfg, "-token", w.token(map[string]any{"aud": "other"}), "GET", "/api/x")
	if code != 1 || !strings.Contains(out, "result: deny 401 invalid_token") {
		t.Errorf("explain wrong audience: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"explain", "-config", cfg, "GET"},
		{"explain", "-config", cfg, "-token", "x", "-claims", "{}", "GET", "/"},
		{"explain", "-config", cfg, "-claims", "[1]", "GET", "/"},
		{"explain", "-config", cfg + ".missing", "GET", "/"},
	} {
		if _, _, code := run(t, nil, args...); code != 2 {
			t.Errorf("gatehouse %q: exit %d, want 2", args, code)
		}
	}
	// The main command's flags keep working next to the subcommands.
	if out, errs, code := run(t, nil, "-t", "-config", cfg); code != 0 || !strings.Contains(out, "test is successful") {
		t.Errorf("-t: exit %d %s%s", code, out, errs)
	}
}
