package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy"
)

const corsRoutes = `
routes:
  - location: "= /login"
    auth: none
  - location: "/api/"
    methods: [GET, POST]
    roles: { any: [user, admin] }
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
`

// TestCORSAnswer: with preflight: answer, gatehouse answers a preflight
// itself, 204 with the CORS headers when origin, method and headers are
// allowed, else 403 forbidden; nothing reaches the upstream; an OPTIONS
// that is not a preflight needs a token as any request (SPEC.md 15).
func TestCORSAnswer(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config(tokenSources+`cors:
  preflight: answer
  allow_origins: ["https://app.example", "http://localhost:5173"]
  allow_headers: [Authorization, Content-Type]
  max_age: 90s
`, corsRoutes))
	const origin = "https://app.example"
	tok := w.token(nil)
	tests := []struct {
		name        string
		path        string
		origin      string
		method      string
		more        http.Header
		status      int
		wantMethods string
		wantHeaders string
	}{
		{"allowed, methods of the route", "/api/orders", origin, "POST",
			http.Header{"Access-Control-Request-Headers": {"authorization,content-type"}}, 204, "GET, POST", "Authorization, Content-Type"},
		{"second origin", "/api/orders", "http://localhost:5173", "GET", nil, 204, "GET, POST", "Authorization, Content-Type"},
		{"route with every method", "/admin/x", origin, "DELETE", nil, 204, "GET, HEAD, POST, PUT, PATCH, DELETE", "Authorization, Content-Type"},
		{"no route: every standard method", "/nowhere", origin, "PUT", nil, 204, "GET, HEAD, POST, PUT, PATCH, DELETE", "Authorization, Content-Type"},
		{"token ignored", "/api/orders", origin, "GET", http.Header{"Authorization": {"Bearer " + tok}, "Cookie": {"gh_at=" + tok}}, 204, "GET, POST", "Authorization, Content-Type"},
		{"origin not listed", "/api/orders", "https://evil.example", "GET", nil, 403, "", ""},
		{"origin differs in case", "/api/orders", "https://APP.example", "GET", nil, 403, "", ""},
		{"origin with a path", "/api/orders", origin + "/", "GET", nil, 403, "", ""},
		{"null origin", "/api/orders", "null", "GET", nil, 403, "", ""},
		{"method no route allows", "/api/orders", origin, "DELETE", nil, 403, "", ""},
		{"header not allowed", "/api/orders", origin, "GET", http.Header{"Access-Control-Request-Headers": {"authorization, x-evil"}}, 403, "", ""},
		{"requested headers not names", "/api/orders", origin, "GET", http.Header{"Access-Control-Request-Headers": {"a b"}}, 403, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := len(w.up.Requests())
			status, h, body := preflight(t, g.URL+tt.path, tt.origin, tt.method, tt.more)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if n := len(w.up.Requests()); n != hits {
				t.Errorf("a preflight reached the upstream under answer")
			}
			if !strings.Contains(h.Get("Vary"), "Origin") || h.Get("X-Request-Id") == "" {
				t.Errorf("Vary %q, X-Request-Id %q", h.Get("Vary"), h.Get("X-Request-Id"))
			}
			if tt.status != 204 {
				if h.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(body, `"error":"forbidden"`) {
					t.Errorf("refused preflight: ACAO %q body %s", h.Get("Access-Control-Allow-Origin"), body)
				}
				return
			}
			want := map[string]string{
				"Access-Control-Allow-Origin":      tt.origin,
				"Access-Control-Allow-Credentials": "true",
				"Access-Control-Allow-Methods":     tt.wantMethods,
				"Access-Control-Allow-Headers":     tt.wantHeaders,
				"Access-Control-Max-Age":           "90",
			}
			for k, v := range want {
				if h.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}

	addr := strings.TrimPrefix(g.URL, "http://")
	ordinary := []struct{ name, text, want string }{
		{"OPTIONS without Access-Control-Request-Method", "OPTIONS /admin/x HTTP/1.1\r\nHost: a\r\nOrigin: " + origin + "\r\nConnection: close\r\n\r\n", " 401 "},
		{"OPTIONS without Origin", "OPTIONS /admin/x HTTP/1.1\r\nHost: a\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n", " 401 "},
		{"preflight with a body", "OPTIONS /admin/x HTTP/1.1\r\nHost: a\r\nOrigin: " + origin + "\r\nAccess-Control-Request-Method: GET\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndata", " 401 "},
		{"two origins", "OPTIONS /admin/x HTTP/1.1\r\nHost: a\r\nOrigin: " + origin + "\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n", " 401 "},
		{"bad path first", "OPTIONS /admin/%2e%2e%2fx HTTP/1.1\r\nHost: a\r\nOrigin: " + origin + "\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n", " 400 "},
	}
	for _, tt := range ordinary {
		t.Run(tt.name, func(t *testing.T) {
			hits := len(w.up.Requests())
			line, all := rawRequest(t, addr, tt.text)
			if !strings.Contains(line, tt.want) {
				t.Errorf("%s, want%s\n%s", line, tt.want, all)
			}
			if strings.Contains(all, "Access-Control-Allow-Origin") {
				t.Errorf("CORS headers on an ordinary answer:\n%s", all)
			}
			if len(w.up.Requests()) != hits {
				t.Errorf("reached the upstream")
			}
		})
	}

	_, _, metrics := do(t, "GET", g.AdminURL+"/metrics", nil, "")
	for _, want := range []string{
		`gatehouse_requests_total{decision="allow",reason="public",route="cors_preflight"} 5`,
		`gatehouse_requests_total{decision="deny",reason="forbidden",route="cors_preflight"} 7`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s\n%s", want, grep(metrics, "gatehouse_requests_total"))
		}
	}
}

// TestCORSAnyOrigin: ["*"] answers "*" and never with credentials;
// allow_headers ["*"] echoes the requested names.
func TestCORSAnyOrigin(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config(`cors:
  preflight: answer
  allow_origins: ["*"]
  allow_methods: [GET]
  allow_headers: ["*"]
`, corsRoutes))
	status, h, body := preflight(t, g.URL+"/api/x", "https://any.example", "GET",
		http.Header{"Access-Control-Request-Headers": {"authorization, x-trace"}})
	if status != 204 {
		t.Fatalf("status %d: %s", status, body)
	}
	want := map[string]string{
		"Access-Control-Allow-Origin":      "*",
		"Access-Control-Allow-Credentials": "",
		"Access-Control-Allow-Methods":     "GET",
		"Access-Control-Allow-Headers":     "authorization, x-trace",
		"Access-Control-Max-Age":           "600",
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
	if status, _, _ := preflight(t, g.URL+"/api/x", "https://any.example", "POST", nil); status != 403 {
		t.Errorf("method outside allow_methods: status %d, want 403", status)
	}
}

// TestCORSPass: with preflight: pass, a preflight goes to the upstream with
// every token source removed; the route the actual request would take
// picks the upstream, and a default: deny there refuses it.
func TestCORSPass(t *testing.T) {
	w := newWorld(t)
	w.up.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			rw.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
			rw.WriteHeader(http.StatusNoContent)
		}
	})
	g := startGatehouse(t, w.config(tokenSources+"cors:\n  preflight: pass\n", corsRoutes))
	tok := w.token(nil)
	const origin = "https://app.example"

	status, h, body := preflight(t, g.URL+"/admin//x?access_token="+tok+"&q=1", origin, "PUT", http.Header{
		"Authorization": {"Bearer " + tok}, "Cookie": {"a=1; gh_at=" + tok}, "X-Auth-Roles": {"admin"},
	})
	if status != 204 || h.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("status %d ACAO %q: %s", status, h.Get("Access-Control-Allow-Origin"), body)
	}
	got := w.up.Last(t)
	if got.Method != "OPTIONS" || got.RequestURI != "/admin/x?q=1" {
		t.Errorf("upstream got %s %s", got.Method, got.RequestURI)
	}
	if got.Header.Get("Authorization") != "" || got.Header.Get("Cookie") != "a=1" || got.Header.Get("X-Auth-Roles") != "" {
		t.Errorf("upstream got Authorization %.20q Cookie %.20q X-Auth-Roles %q", got.Header.Get("Authorization"), got.Header.Get("Cookie"), got.Header.Get("X-Auth-Roles"))
	}

	hits := len(w.up.Requests())
	if status, _, body := preflight(t, g.URL+"/api/x", origin, "DELETE", nil); status != 403 || !strings.Contains(body, "forbidden") {
		t.Errorf("preflight for a method that only default: deny takes: %d %s", status, body)
	}
	if status, _, _ := do(t, "OPTIONS", g.URL+"/admin/x", http.Header{"Origin": {origin}}, ""); status != 401 {
		t.Errorf("OPTIONS without Access-Control-Request-Method: %d, want 401", status)
	}
	if status, _, _ := do(t, "OPTIONS", g.URL+"/admin/x", http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"GET"}}, "body"); status != 401 {
		t.Errorf("preflight with a body: %d, want 401", status)
	}
	if len(w.up.Requests()) != hits {
		t.Errorf("a refused request reached the upstream")
	}

	_, _, metrics := do(t, "GET", g.AdminURL+"/metrics", nil, "")
	for _, want := range []string{
		`gatehouse_requests_total{decision="allow",reason="public",route="cors_preflight"} 1`,
		`gatehouse_requests_total{decision="deny",reason="forbidden",route="cors_preflight"} 1`,
		`gatehouse_upstream_duration_seconds_count{code="2xx",route="cors_preflight"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestCORSDenyIsDefault: without a cors section a preflight to a protected
// route is an ordinary request: 401.
func TestCORSDenyIsDefault(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("", corsRoutes))
	if status, _, _ := preflight(t, g.URL+"/admin/x", "https://app.example", "GET", nil); status != 401 {
		t.Errorf("preflight under the default: %d, want 401", status)
	}
}

func TestCORSConfigErrors(t *testing.T) {
	base := `listen: ":8080"
upstream: "http://127.0.0.1:3000"
issuers:
  - issuer: "https://a.test"
    audiences: [api]
    jwks_file: /nonexistent
routes:
  - location: /
`
	tests := []struct {
		name, cors, want string
	}{
		{"unknown mode", "cors:\n  preflight: allow\n", `x.yaml:10:14: cors.preflight must be deny, pass or answer, got "allow"`},
		{"unknown key", "cors:\n  preflight: answer\n  allow_origin: [\"*\"]\n", `x.yaml:11:3: unknown key`},
		{"answer without origins", "cors:\n  preflight: answer\n", `x.yaml:10:3: cors: preflight: answer needs allow_origins`},
		{"origin with path", "cors:\n  preflight: answer\n  allow_origins: [\"https://a.example/\"]\n", `x.yaml:11:19: cors.allow_origins: "https://a.example/": an origin has no path`},
		{"origin in upper case", "cors:\n  preflight: answer\n  allow_origins: [\"https://A.example\"]\n", `x.yaml:11:19: cors.allow_origins: "https://A.example": browsers send scheme and host in lower case`},
		{"origin with default port", "cors:\n  preflight: answer\n  allow_origins: [\"https://a.example:443\"]\n", `default port`},
		{"null origin", "cors:\n  preflight: answer\n  allow_origins: [\"null\"]\n", `"null" is the origin of sandboxed`},
		{"star with others", "cors:\n  preflight: answer\n  allow_origins: [\"*\", \"https://a.example\"]\n", `x.yaml:11:19: cors.allow_origins: "*" stands alone`},
		{"lower-case method", "cors:\n  preflight: answer\n  allow_origins: [\"*\"]\n  allow_methods: [get]\n", `x.yaml:12:19: cors.allow_methods: "get" is not an upper-case HTTP method`},
		{"bad header", "cors:\n  preflight: answer\n  allow_origins: [\"*\"]\n  allow_headers: [\"a b\"]\n", `x.yaml:12:19: cors.allow_headers: "a b" is not a header name`},
		{"negative max_age", "cors:\n  preflight: answer\n  allow_origins: [\"*\"]\n  max_age: -1s\n", `x.yaml:12:12: duration "-1s" must not be negative`},
		{"answer keys under pass", "cors:\n  preflight: pass\n  allow_origins: [\"*\"]\n", `x.yaml:11:3: cors.allow_origins applies only to preflight: answer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := proxy.ParseConfig("x.yaml", []byte(base+tt.cors))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig error:\n%v\nwant it to contain %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{"", "cors:\n  preflight: deny\n", "cors:\n  preflight: pass\n",
		"cors:\n  preflight: answer\n  allow_origins: [\"https://a.example:8443\", \"http://localhost:5173\"]\n  allow_methods: [GET, PURGE]\n  allow_headers: [Authorization]\n  max_age: 0s\n"} {
		if _, err := proxy.ParseConfig("x.yaml", []byte(base+ok)); err != nil && !strings.Contains(err.Error(), "jwks_file") {
			t.Errorf("ParseConfig(%q): %v", ok, err)
		}
	}
}
