package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

const egressBase = `listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:3000"
issuers:
  - issuer: "https://auth.example.com"
    audiences: [x]
    jwks_url: "https://auth.example.com/jwks"
paths: { preset: express }
default: { auth: required }
`

// TestEgressConfig: the egress section's errors, each at its FILE:LINE:COL.
func TestEgressConfig(t *testing.T) {
	t.Setenv("EGRESS_SECRET", "s3cret")
	for _, tt := range []struct {
		name, egress string
		want         []string // substrings of the error, "" for none
	}{
		{"valid", `
egress:
  listen: "127.0.0.1:15001"
  inbound_grace: 2s
  routes:
    - host: Orders
      path_prefix: /api/
      upstream: "https://orders.prod.svc:8443"
      token: exchange
      audience: orders-api
      scopes: [orders:read]
    - host: orders:8080
      upstream: "http://orders.prod.svc:8080"
      token: propagate
  idp:
    issuer: "https://auth.example.com"
    client_id: checkout
    client_secret_env: EGRESS_SECRET
`, nil},
		{"listen required", `
egress:
  routes: []
`, []string{"g.yaml:11:3: missing required key \"listen\""}},
		{"bad strategy and missing upstream", `
egress:
  listen: "127.0.0.1:15001"
  routes:
    - host: orders
      token: forward
`, []string{`g.yaml:13:7: missing required key "upstream"`, `g.yaml:14:14: egress.routes: token must be propagate, exchange, client_credentials or none, got "forward"`}},
		{"audience on propagate", `
egress:
  listen: "127.0.0.1:15001"
  routes:
    - host: orders
      upstream: "http://o"
      token: propagate
      audience: x
`, []string{`g.yaml:16:17: egress.routes: audience and scopes apply only to exchange and client_credentials`}},
		{"idp needed", `
egress:
  listen: "127.0.0.1:15001"
  routes:
    - host: orders
      upstream: "http://o"
      token: client_credentials
`, []string{`g.yaml:13:7: egress.idp is needed`}},
		{"idp with two secrets and an unknown issuer", `
egress:
  listen: "127.0.0.1:15001"
  idp:
    issuer: "https://other.example.com"
    client_id: c
    client_secret_env: EGRESS_SECRET
    client_secret_file: /nonexistent
`, []string{`g.yaml:13:13: egress.idp.issuer "https://other.example.com" is not an entry of issuers`, `g.yaml:13:5: egress.idp needs exactly one of client_secret_env, client_secret_file, private_key_file (got 2)`}},
		{"unset secret env, plain http IdP", `
egress:
  listen: "127.0.0.1:15001"
  idp:
    token_endpoint: "http://idp.example.com/token"
    client_id: c
    client_secret_env: EGRESS_UNSET_SECRET
`, []string{`g.yaml:13:21: egress.idp.token_endpoint: "http://idp.example.com/token": want https://`, `g.yaml:15:24: egress.idp.client_secret_env: environment variable "EGRESS_UNSET_SECRET" is empty or unset`}},
		{"duplicate route, ca_file on http, bad host, unknown key", `
egress:
  listen: "127.0.0.1:15001"
  routes:
    - { host: a, upstream: "http://a", token: none }
    - { host: A, upstream: "http://a", token: none }
    - { host: "u@b", upstream: "http://b", token: none, ca_file: /x }
    - { host: c, upstream: "unix:///s.sock", token: none, path_prefix: "a/../b" }
  extra: 1
`, []string{`g.yaml:14:7: egress.routes: host "a" with path_prefix "/" is given twice`, `g.yaml:15:15: egress.routes: host: "u@b"`, `g.yaml:15:66: egress.routes: ca_file applies only to an https:// upstream`, `g.yaml:16:28: egress.routes: upstream must be http:// or https://`, `g.yaml:16:72: egress.routes: path_prefix "a/../b" must be a canonical path`, `g.yaml:17:3: unknown key "extra"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := proxy.ParseConfig("g.yaml", []byte(egressBase+tt.egress))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ParseConfig = %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseConfig = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestEgressListenWarning: `gatehouse -t` warns (exit 0) about an egress
// listener that is not on loopback, and not about one that is.
func TestEgressListenWarning(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		listen string
		warn   bool
	}{
		{`":15001"`, true}, {`"0.0.0.0:15001"`, true}, {`"10.1.2.3:15001"`, true},
		{`"127.0.0.1:15001"`, false}, {`"[::1]:15001"`, false}, {`"localhost:15001"`, false},
	} {
		t.Run(tt.listen, func(t *testing.T) {
			file := filepath.Join(dir, "g.yaml")
			text := egressBase + "egress:\n  listen: " + tt.listen + "\n"
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(proxytest.Binary(t), "-t", "-config", file)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("-t exited %v, want 0\n%s", err, stderr.String())
			}
			want := file + ":10:11: warning: egress.listen " + tt.listen
			if got := strings.Contains(stderr.String(), want); got != tt.warn {
				t.Errorf("warned = %v, want %v; stderr:\n%s", got, tt.warn, stderr.String())
			}
		})
	}
}

// TestConfigExampleEgress: config.example.yaml loads as shipped (egress
// commented out), and with its egress block uncommented.
func TestConfigExampleEgress(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if _, err := proxy.ParseConfig("config.example.yaml", b); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	i := strings.Index(text, "# egress:")
	if i < 0 {
		t.Fatal("config.example.yaml has no commented egress block")
	}
	j := i + strings.Index(text[i:], "\n\n")
	var block []string
	for _, l := range strings.Split(text[i:j], "\n") {
		block = append(block, strings.TrimPrefix(l, "# "))
	}
	srv := httptestTLSCA(t)
	on := text[:i] + strings.ReplaceAll(strings.Join(block, "\n"), "/etc/gatehouse/ledger-ca.pem", srv) + text[j:]
	t.Setenv("CHECKOUT_SECRET", "s3cret")
	cfg, err := proxy.ParseConfig("config.example.yaml", []byte(on))
	if err != nil {
		t.Fatalf("config.example.yaml with egress uncommented: %v", err)
	}
	if cfg.Egress == nil || len(cfg.Egress.Routes) != 2 || cfg.Egress.IdP == nil {
		t.Fatalf("egress = %+v", cfg.Egress)
	}
}

// httptestTLSCA writes a CA bundle file (an httptest server's certificate).
func httptestTLSCA(t *testing.T) string {
	srv := httptest.NewTLSServer(nil)
	srv.Close()
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestEgressConfigPrivateKey: private_key_file is read at load (-t sees a
// broken key) through internal/oauth's loader.
func TestEgressConfigPrivateKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "key.pem"), filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	section := func(file string) string {
		return egressBase + "egress:\n  listen: \"127.0.0.1:15001\"\n  idp:\n    token_endpoint: \"https://idp.example.com/token\"\n    client_id: c\n    private_key_file: " + file + "\n"
	}
	cfg, err := proxy.ParseConfig("g.yaml", []byte(section(good)))
	if err != nil {
		t.Fatalf("good key: %v", err)
	}
	if cfg.Egress.IdP.PrivateKey == nil || cfg.Egress.IdP.KeyID == "" {
		t.Errorf("idp = %+v, want the key and its kid", cfg.Egress.IdP)
	}
	if _, err := proxy.ParseConfig("g.yaml", []byte(section(bad))); err == nil || !strings.Contains(err.Error(), "g.yaml:14:23: egress.idp.private_key_file: ") {
		t.Errorf("bad key: %v", err)
	}
}
