package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy"
)

// TestREADMETestCommand keeps .ci/run honest: it must run the exact test
// command that README.md tells users to run.
func TestREADMETestCommand(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Running the tests.*?```\n(go test [^\n]+)\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no `go test` command under \"## Running the tests\"")
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	cmd := string(m[1])
	for _, line := range strings.Split(string(ci), "\n") {
		if strings.TrimSpace(line) == cmd {
			return
		}
	}
	t.Fatalf(".ci/run does not run README's test command %q on a line of its own", cmd)
}

// TestREADMEConfigsLoad: every complete config README.md shows (a yaml
// block that starts with listen:) passes what `gatehouse -t` checks.
func TestREADMEConfigsLoad(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(listen: .*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d complete configs in README.md, want the two migration examples at least", len(blocks))
	}
	t.Setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef")
	for i, b := range blocks {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("readme-%d.yaml", i))
		if err := os.WriteFile(path, b[1], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := proxy.LoadConfig(path); err != nil {
			t.Errorf("README config %d does not load:\n%s\n%v", i, b[1], err)
		}
	}
}

// TestREADMEConditions: the five worked `when` examples load, and decide as
// their comments say; the explain sample is what explain prints.
func TestREADMEConditions(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(routes:\n  # 1\\. tenant isolation.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md lost the worked when examples")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gatehouse.yaml")
	text := "listen: \":8080\"\nupstream: \"http://127.0.0.1:3000\"\nissuers:\n  - issuer: \"https://auth.example.com\"\n    audiences: [api]\n    jwks_url: \"https://auth.example.com/jwks\"\n" + string(m[1])
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := filepath.Join(dir, "cases.yaml")
	if err := os.WriteFile(cases, []byte(`cases:
  - { name: own tenant, request: { url: /tenants/acme/x }, claims: { tenant: acme, roles: [user] }, expect: allow }
  - { name: other tenant, request: { url: /tenants/b/x }, claims: { tenant: acme, roles: [user] }, expect: insufficient_scope }
  - { name: owner, request: { method: PUT, url: /accounts/alice }, claims: { sub: alice }, expect: allow }
  - { name: support, request: { method: PUT, url: /accounts/alice }, claims: { sub: sam, roles: [support] }, expect: allow }
  - { name: stranger, request: { method: PUT, url: /accounts/alice }, claims: { sub: eve, roles: [] }, expect: insufficient_scope }
  - { name: stale token, request: { method: POST, url: /api/payments/ }, claims: { sub: a, iat: 1000000000 }, expect: insufficient_scope }
  - { name: no iat, request: { method: POST, url: /api/payments/ }, claims: { sub: a }, expect: insufficient_scope }
  - { name: verified, request: { url: /api/profile/ }, claims: { email_verified: true }, expect: allow }
  - { name: unverified, request: { url: /api/profile/ }, claims: { email_verified: false }, expect: insufficient_scope }
  - { name: admin off-site, request: { url: /admin }, claims: { roles: [admin] }, expect: insufficient_scope }
  - { name: admin in office, request: { url: /admin, headers: {} }, claims: { roles: [admin] }, expect: insufficient_scope }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := proxy.PolicyTest([]string{"-config", cfg, cases}, &out, &errb); code != 0 {
		t.Errorf("README examples: exit %d\n%s%s", code, out.String(), errb.String())
	}

	sample := regexp.MustCompile("(?s)\\$ (gatehouse explain -config config.example.yaml -claims '([^']*)' GET (\\S+))\n(.*?)```").FindSubmatch(readme)
	if sample == nil {
		t.Fatal("README.md lost the explain sample")
	}
	out.Reset()
	proxy.Explain([]string{"-config", "config.example.yaml", "-claims", string(sample[2]), "GET", string(sample[3])}, &out, &errb)
	for _, line := range strings.Split(strings.TrimSpace(string(sample[4])), "\n") {
		if strings.TrimSpace(line) != "..." && !strings.Contains(out.String(), line+"\n") {
			t.Errorf("explain does not print README's line %q; it prints:\n%s", line, out.String())
		}
	}
}
