package proxy_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// TestWhenConfigErrors: `-t` reports a bad `when` at the file position of
// the offending character inside the expression.
func TestWhenConfigErrors(t *testing.T) {
	w := newWorld(t)
	cfg := w.config("", `
routes:
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
    when: claims.tenant == route.captures.tenant && reqest.method == 'GET'
  - location: /b/
    when: "request.method == 1"
`)
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// line numbers inside the config text
	lines := strings.Split(cfg, "\n")
	lineOf := func(s string) int {
		for i, l := range lines {
			if strings.Contains(l, s) {
				return i + 1
			}
		}
		t.Fatalf("%q not in config", s)
		return 0
	}
	out, err := exec.Command(proxytest.Binary(t), "-t", "-config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("-t: %v, want exit 1\n%s", err, out)
	}
	want := []string{
		path + ":" + itoa(lineOf("reqest")) + ":53: when: undeclared reference to 'reqest'",
		path + ":" + itoa(lineOf("request.method == 1")) + ":27: when: found no matching overload for '_==_' applied to '(string, int)'",
	}
	for _, wl := range want {
		if !strings.Contains(string(out), wl) {
			t.Errorf("-t output lacks %q:\n%s", wl, out)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestWhenEndToEnd: tenant isolation with real tokens, an evaluation error
// and an expression over the cost limit deny (and are logged), never allow.
func TestWhenEndToEnd(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("", `
routes:
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
    roles: { any: [user] }
    when: "claims.tenant == route.captures.tenant || 'support' in claims.roles"
  - location: /loop/
    when: "claims.items.all(x, claims.items.all(y, claims.items.all(z, x + y + z >= 0.0)))"
  - location: /fresh/
    when: "now - timestamp(int(claims.iat)) < duration('10m') && request.headers['x-tenant'] == claims.tenant"
  - location: /lan/
    auth: none
    when: "cidr('127.0.0.0/8').containsIP(client_ip)"
  - location: /wan/
    auth: none
    when: "cidr('10.0.0.0/8').containsIP(client_ip)"
`))
	items := make([]any, 300)
	for i := range items {
		items[i] = i
	}
	acme := w.token(map[string]any{"tenant": "acme"})
	support := w.token(map[string]any{"tenant": "other", "roles": []any{"user", "support"}})
	tests := []struct {
		name, path, tok string
		header          map[string]string
		status          int
		code            string
	}{
		{"own tenant", "/tenants/acme/orders", acme, nil, 200, ""},
		{"other tenant", "/tenants/globex/orders", acme, nil, 403, "insufficient_scope"},
		{"support", "/tenants/globex/orders", support, nil, 200, ""},
		{"no tenant claim: evaluation error", "/tenants/acme/orders", w.token(nil), nil, 403, "insufficient_scope"},
		{"cost limit", "/loop/x", w.token(map[string]any{"items": items}), nil, 403, "insufficient_scope"},
		{"small loop", "/loop/x", w.token(map[string]any{"items": items[:3]}), nil, 200, ""},
		{"fresh, header matches", "/fresh/x", acme, map[string]string{"X-Tenant": "acme"}, 200, ""},
		{"fresh, header differs", "/fresh/x", acme, map[string]string{"X-Tenant": "globex"}, 403, "insufficient_scope"},
		{"stale token", "/fresh/x", w.token(map[string]any{"tenant": "acme", "iat": time.Now().Add(-time.Hour).Unix()}), map[string]string{"X-Tenant": "acme"}, 403, "insufficient_scope"},
		{"client ip in range", "/lan/x", "", nil, 200, ""},
		{"client ip out of range", "/wan/x", "", nil, 403, "insufficient_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bearerHeader(tt.tok)
			if tt.tok == "" {
				h = http.Header{}
			}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			before := len(w.up.Requests())
			status, _, body := do(t, "GET", g.URL+tt.path, h, "")
			if status != tt.status {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, status, body, tt.status)
			}
			if tt.code != "" {
				var eb errorBody
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error != tt.code {
					t.Errorf("GET %s body %s, want error %s", tt.path, body, tt.code)
				}
				if n := len(w.up.Requests()); n != before {
					t.Errorf("denied request reached the upstream")
				}
			}
		})
	}
	for _, logged := range []string{"cost limit exceeded", "no such key: tenant"} {
		if !g.WaitLog(logged, 5*time.Second) {
			t.Errorf("log lacks %q:\n%s", logged, g.Stderr.String())
		}
	}
	if !strings.Contains(g.Stderr.String(), `"msg":"when condition failed"`) {
		t.Errorf("no when condition failed line:\n%s", g.Stderr.String())
	}
}

// TestShadowEndToEnd: a shadow route is decided and recorded (metric and
// audit data.shadow), and the request is handled as if it did not exist.
func TestShadowEndToEnd(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("", `
routes:
  - location: /api/
    roles: { any: [user] }
  - location: /api/new/
    shadow: true
    roles: { any: [admin] }
default:
  auth: none
  shadow: deny
`))
	user := w.token(nil)
	if status, _, body := do(t, "GET", g.URL+"/api/new/x", bearerHeader(user), ""); status != 200 {
		t.Fatalf("GET /api/new/x = %d %s, want 200 (the shadow route is not enforced)", status, body)
	}
	if status, _, body := do(t, "GET", g.URL+"/elsewhere", nil, ""); status != 200 {
		t.Fatalf("GET /elsewhere = %d %s, want 200 (default auth: none enforced)", status, body)
	}
	if v := metric(t, g, `gatehouse_shadow_decisions_total{decision="deny",reason="insufficient_scope",route="/api/new/"}`); v != 1 {
		t.Errorf("shadow metric for /api/new/ = %v, want 1", v)
	}
	if v := metric(t, g, `gatehouse_shadow_decisions_total{decision="deny",reason="forbidden",route="default"}`); v != 1 {
		t.Errorf("shadow metric for default = %v, want 1", v)
	}
	deadline := time.Now().Add(5 * time.Second)
	var shadows []map[string]any
	for time.Now().Before(deadline) {
		shadows = shadows[:0]
		for _, l := range strings.Split(strings.TrimSpace(g.Stdout.String()), "\n") {
			var ev struct {
				Data struct {
					Path   string         `json:"path"`
					Route  string         `json:"route"`
					Shadow map[string]any `json:"shadow"`
				} `json:"data"`
			}
			if json.Unmarshal([]byte(l), &ev) == nil && ev.Data.Shadow != nil {
				ev.Data.Shadow["enforced"] = ev.Data.Route
				shadows = append(shadows, ev.Data.Shadow)
			}
		}
		if len(shadows) >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(shadows) != 2 {
		t.Fatalf("got %d audit events with shadow, want 2:\n%s", len(shadows), g.Stdout.String())
	}
	want := []string{
		`{"decision":"deny","enforced":"/api/","reason":"insufficient_scope","route":"/api/new/"}`,
		`{"decision":"deny","enforced":"default","reason":"forbidden","route":"default"}`,
	}
	for i, s := range shadows {
		b, _ := json.Marshal(s)
		if string(b) != want[i] {
			t.Errorf("event %d shadow = %s, want %s", i, b, want[i])
		}
	}
}
