package proxy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// warnConfig is the Express trial of issue 11 without `paths`: `= /orders`
// protected beside a permissive default.
const warnConfig = `listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:3000"
issuers:
  - issuer: "https://a"
    audiences: [x]
    jwks_url: "https://a/jwks"
routes:
  - location: "= /orders"
    roles: { all: [admin] }
default: { auth: required }
`

// TestConfigWarnings: LoadConfig returns the policy's -t warnings,
// formatted FILE:LINE:COL: warning: ..., and `paths` is a top-level key.
func TestConfigWarnings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "g.yaml")
	if err := os.WriteFile(file, []byte(warnConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := proxy.LoadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 2 ||
		!strings.HasPrefix(cfg.Warnings[0], file+":8:3: warning: paths is not declared") ||
		!strings.HasPrefix(cfg.Warnings[1], file+`:8:15: warning: location "= /orders" is exposed`) {
		t.Fatalf("Warnings = %q", cfg.Warnings)
	}
	declared := strings.Replace(warnConfig, "routes:", "paths: { preset: express }\nroutes:", 1)
	if err := os.WriteFile(file, []byte(declared), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = proxy.LoadConfig(file); err != nil || cfg.Warnings != nil {
		t.Fatalf("with paths declared: Warnings = %q, err %v, want none", cfg.Warnings, err)
	}
	bad := strings.Replace(warnConfig, "routes:", "paths: { preset: laravel }\nroutes:", 1)
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = proxy.LoadConfig(file); err == nil || !strings.Contains(err.Error(), file+`:7:18: paths.preset: unknown preset "laravel"`) {
		t.Fatalf("unknown preset: err = %v", err)
	}
}

// TestConfigTestWarnings: `gatehouse -t` prints the warnings on stderr,
// the success line on stdout, and exits 0.
func TestConfigTestWarnings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "g.yaml")
	if err := os.WriteFile(file, []byte(warnConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(proxytest.Binary(t), "-t", "-config", file)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("-t exited %v, want 0\n%s", err, stderr.String())
	}
	if stdout.String() != "configuration file "+file+" test is successful\n" {
		t.Errorf("stdout = %q", stdout.String())
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], file+":8:3: warning: paths is not declared") ||
		!strings.Contains(lines[1], `warning: location "= /orders" is exposed if the upstream reads paths case-insensitively or ignoring a trailing slash: GET "/ORDERS" reaches default`) {
		t.Errorf("stderr =\n%s", stderr.String())
	}
}

// TestConfigUpstreamPort: the global upstream goes through the one
// validator (policy.CheckUpstream), which range-checks the port.
func TestConfigUpstreamPort(t *testing.T) {
	file := filepath.Join(t.TempDir(), "g.yaml")
	bad := strings.Replace(warnConfig, "127.0.0.1:3000", "127.0.0.1:70000", 1)
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.LoadConfig(file); err == nil || !strings.Contains(err.Error(), file+`:2:11: upstream: bad port "70000"`) {
		t.Fatalf("LoadConfig = %v, want the port refused at 2:11", err)
	}
}

// TestWarningsLogged: a start logs the same warnings -t prints, so an
// operator who never runs -t still sees the exposed location.
func TestWarningsLogged(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("default: { auth: required }", `
routes:
  - location: "= /orders"
    roles: { all: [admin] }
`))
	if !g.WaitLog(`"msg":"config warning"`, 10*time.Second) {
		t.Fatalf("no config warning logged at start:\n%s", g.Stderr.String())
	}
	if !strings.Contains(g.Stderr.String(), `location \"= /orders\" is exposed`) {
		t.Errorf("the logged warning does not name the location:\n%s", g.Stderr.String())
	}
}
