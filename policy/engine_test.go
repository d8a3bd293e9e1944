package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// load decodes a config document holding `routes` and `default`.
func load(t testing.TB, doc string) *Engine {
	t.Helper()
	e, err := decodeDoc("test.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("Decode:\n%v", err)
	}
	return e
}

// decodeDoc runs Decode over a document the way the root config does: the
// top-level mapping holds `routes` and `default` (other keys belong to other
// packages and are ignored here).
func decodeDoc(file string, data []byte) (*Engine, error) {
	d := yamlpos.NewDecoder(file)
	root := d.Parse(data)
	var paths, routes, def *yaml.Node
	if root != nil {
		m := d.Map(root)
		paths, routes, def = m.Get("paths"), m.Get("routes"), m.Get("default")
	}
	e := Decode(d, paths, routes, def)
	if err := d.Err(); err != nil {
		if e != nil {
			return nil, fmt.Errorf("Decode returned an engine despite errors: %w", err)
		}
		return nil, err
	}
	if e == nil {
		return nil, errors.New("Decode returned nil without recording an error")
	}
	return e, nil
}

// nginxDocExample is the example of the nginx `location` directive
// documentation (https://nginx.org/en/docs/http/ngx_http_core_module.html#location).
const nginxDocExample = `
routes:
  - location: "= /"
  - location: "/"
  - location: "/documents/"
  - location: "^~ /images/"
  - location: '~* \.(gif|jpg|jpeg)$'
`

func TestMatchNginxDocExample(t *testing.T) {
	e := load(t, nginxDocExample)
	// The request table of the nginx documentation: A to E.
	for _, tt := range []struct{ path, want string }{
		{"/", "= /"},         // A
		{"/index.html", "/"}, // B
		{"/documents/document.html", "/documents/"},  // C
		{"/images/1.gif", "^~ /images/"},             // D
		{"/documents/1.jpg", `~* \.(gif|jpg|jpeg)$`}, // E
		// and around them
		{"/documents/1.JPG", `~* \.(gif|jpg|jpeg)$`},
		{"/images/", "^~ /images/"},
		{"/images", "/"},
		{"/x.gif", `~* \.(gif|jpg|jpeg)$`},
		{"/Documents/x", "/"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			if got := e.Match("GET", tt.path).Name; got != tt.want {
				t.Fatalf("Match(GET, %q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

const specRoutes = `
routes:
  - location: "= /login"
    auth: none
  - location: "/api/orders/"
    methods: [GET]
    roles: { any: [user, admin] }
  - location: "/api/orders/"
    methods: [POST, PUT, DELETE]
    roles: { any: [admin] }
    scopes: { all: ["orders:write"] }
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
    claims: { email_verified: true }
    upstream: "http://admin-svc:3003"
`

const specExample = specRoutes + "default: deny\n"

func TestMatch(t *testing.T) {
	tests := []struct {
		name, config string
		method, path string
		want         string
	}{
		{"spec exact", specExample, "GET", "/login", "= /login"},
		{"spec exact other method", specExample, "POST", "/login", "= /login"},
		{"spec exact is exact", specExample, "GET", "/login/", "default"},
		{"spec GET", specExample, "GET", "/api/orders/42", "/api/orders/"},
		{"spec HEAD is not GET", specExample, "HEAD", "/api/orders/42", "default"},
		{"spec POST", specExample, "POST", "/api/orders/", "/api/orders/"},
		{"spec PATCH unmatched", specExample, "PATCH", "/api/orders/42", "default"},
		{"spec prefix needs slash", specExample, "GET", "/api/orders", "default"},
		{"spec regex", specExample, "GET", "/admin", "~ ^/admin(/|$)"},
		{"spec regex slash", specExample, "DELETE", "/admin/users", "~ ^/admin(/|$)"},
		{"spec regex case", specExample, "GET", "/ADMIN", "default"},
		{"spec regex no boundary", specExample, "GET", "/administrator", "default"},
		{"spec semicolon", specExample, "GET", "/admin;", "default"},

		{"longest prefix", `
routes:
  - location: /a/
  - location: /a/b/
  - location: /a/b/c
`, "GET", "/a/b/cd", "/a/b/c"},
		{"longest prefix shorter", `
routes:
  - location: /a/
  - location: /a/b/c
  - location: /a/b/
`, "GET", "/a/b/x", "/a/b/"},
		{"regex beats plain prefix", `
routes:
  - location: /static/
  - location: '~ \.php$'
`, "GET", "/static/x.php", `~ \.php$`},
		{"caret-tilde beats regex", `
routes:
  - location: ^~ /static/
  - location: '~ \.php$'
`, "GET", "/static/x.php", "^~ /static/"},
		{"caret-tilde only when longest", `
routes:
  - location: ^~ /static/
  - location: /static/php/
  - location: '~ \.php$'
`, "GET", "/static/php/x.php", `~ \.php$`},
		{"longer caret-tilde stops", `
routes:
  - location: /static/
  - location: ^~ /static/php/
  - location: '~ \.php$'
`, "GET", "/static/php/x.php", "^~ /static/php/"},
		{"regex file order", `
routes:
  - location: '~ ^/a'
  - location: '~ ^/a/b'
`, "GET", "/a/b", "~ ^/a"},
		{"regex case-insensitive", `
routes:
  - location: '~* ^/admin'
`, "GET", "/AdMiN/x", "~* ^/admin"},
		{"regex case-sensitive", `
routes:
  - location: '~ ^/admin'
`, "GET", "/Admin/x", "default"},
		{"exact beats everything", `
routes:
  - location: ^~ /x
  - location: '~ ^/x$'
  - location: = /x
`, "GET", "/x", "= /x"},
		{"remembered prefix when no regex", `
routes:
  - location: /a
  - location: '~ ^/b'
`, "GET", "/ab", "/a"},
		{"exact filtered by method", `
routes:
  - location: = /x
    methods: [POST]
  - location: /
`, "GET", "/x", "/"},
		{"prefix filtered falls to shorter", `
routes:
  - location: /a/
  - location: /a/b/
    methods: [POST]
`, "GET", "/a/b/c", "/a/"},
		{"caret-tilde filtered lets regex in", `
routes:
  - location: ^~ /a/
    methods: [POST]
  - location: '~ ^/a/'
`, "GET", "/a/x", "~ ^/a/"},
		{"regex filtered by method", `
routes:
  - location: '~ ^/a'
    methods: [DELETE]
  - location: '~ ^/'
`, "GET", "/a", "~ ^/"},
		{"same location split by method", `
routes:
  - location: /a/
    methods: [GET]
  - location: /a/
    methods: [POST]
`, "POST", "/a/x", "/a/"},
		{"HEAD not admitted by POST", `
routes:
  - location: /a/
    methods: [POST]
`, "HEAD", "/a/x", "default"},
		{"HEAD not admitted by GET", `
routes:
  - location: /a/
    methods: [GET]
`, "HEAD", "/a/x", "default"},
		{"HEAD falls through GET to a shorter prefix", `
routes:
  - location: /a/b/
    methods: [GET]
  - location: /a/
`, "HEAD", "/a/b/x", "/a/"},
		{"HEAD when listed", `
routes:
  - location: /a/
    methods: [GET, HEAD]
`, "HEAD", "/a/x", "/a/"},
		{"GET not admitted by HEAD", `
routes:
  - location: '~ ^/a'
    methods: [HEAD]
`, "GET", "/a", "default"},
		{"default route body", `
routes:
  - location: /a/
default: { auth: optional }
`, "GET", "/b", "default"},
		{"no routes", `default: deny`, "GET", "/", "default"},
		{"empty config", ``, "GET", "/x", "default"},
		{"regex sees escaped path", `
routes:
  - location: '~ %20'
`, "GET", "/a%20b", "~ %20"},
		{"prefix with escape", `
routes:
  - location: /caf%C3%A9/
`, "GET", "/caf%C3%A9/x", "/caf%C3%A9/"},
		{"prefix ending in dot", `
routes:
  - location: /a/.
`, "GET", "/a/.well-known", "/a/."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := load(t, tt.config)
			if got := e.Match(tt.method, tt.path).Name; got != tt.want {
				t.Fatalf("Match(%s, %q) = %q, want %q", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

// TestMatchGetAndHeadApart: GET and HEAD are distinct methods (SPEC.md 3),
// so a [GET] route and a [HEAD] route on the same location do not overlap
// (SPEC.md 2) and each method finds its own route.
func TestMatchGetAndHeadApart(t *testing.T) {
	e := load(t, `
routes:
  - location: /h/
    methods: [GET]
    roles: { any: [reader] }
  - location: /h/
    methods: [HEAD]
    auth: none
  - location: = /x
    methods: [HEAD]
  - location: = /x
    methods: [GET, POST]
`)
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/h/1", 0},
		{"HEAD", "/h/1", 1},
		{"HEAD", "/x", 2},
		{"GET", "/x", 3},
		{"PUT", "/x", 4}, // the default route
	} {
		if got := e.Match(tt.method, tt.path).Index; got != tt.want {
			t.Errorf("Match(%s, %q).Index = %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestMatchCorpus runs the bypass corpus through Normalize and Match: a
// rejected path never reaches Match, and every accepted one is matched as
// its canonical form.
func TestMatchCorpus(t *testing.T) {
	e := load(t, `
routes:
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "/"
    auth: none
default: deny
`)
	for _, tt := range normalizeCorpus {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := Normalize(tt.in)
			if !ok {
				if tt.want != bad {
					t.Fatalf("Normalize(%q) rejected, want %q", tt.in, tt.want)
				}
				return
			}
			want := "/"
			if p == "/admin" || strings.HasPrefix(p, "/admin/") {
				want = "~ ^/admin(/|$)"
			}
			if got := e.Match("GET", p).Name; got != want {
				t.Fatalf("Match(GET, Normalize(%q) = %q) = %q, want %q", tt.in, p, got, want)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	e := load(t, specExample)
	rs := e.Routes()
	want := []struct {
		name     string
		auth     Auth
		upstream string
	}{
		{"= /login", AuthNone, ""},
		{"/api/orders/", AuthRequired, ""},
		{"/api/orders/", AuthRequired, ""},
		{"~ ^/admin(/|$)", AuthRequired, "http://admin-svc:3003"},
		{"default", AuthRequired, ""},
	}
	if len(rs) != len(want) {
		t.Fatalf("Routes() has %d routes, want %d", len(rs), len(want))
	}
	for i, w := range want {
		r := rs[i]
		if r.Name != w.name || r.Index != i || r.Auth != w.auth || r.Upstream != w.upstream {
			t.Errorf("Routes()[%d] = {%q %d %v %q}, want {%q %d %v %q}", i, r.Name, r.Index, r.Auth, r.Upstream, w.name, i, w.auth, w.upstream)
		}
	}
	if e.Default() != rs[len(rs)-1] {
		t.Errorf("Default() is not the last of Routes()")
	}
	if e.Match("GET", "/nowhere") != e.Default() {
		t.Errorf("Match of an unmatched path is not Default()")
	}
}

func TestMatchNoAlloc(t *testing.T) {
	// Exact and prefix matching never touch a sync.Pool: checked even under -race.
	plain := load(t, `
routes:
  - location: = /login
  - location: /api/orders/
    methods: [GET]
  - location: ^~ /static/
  - location: /
`)
	for _, p := range []string{"/login", "/api/orders/1", "/static/x", "/nothing"} {
		for _, m := range []string{"GET", "HEAD", "POST"} {
			if a := testing.AllocsPerRun(100, func() { plain.Match(m, p) }); a != 0 {
				t.Errorf("Match(%s, %q): %v allocs, want 0", m, p, a)
			}
		}
	}
	if raceEnabled {
		t.Skip("regex allocation counts are meaningless under -race (sync.Pool drops items); run without -race")
	}
	e := load(t, specRoutes+`
  - location: '~* \.(gif|jpg)$'
`)
	for _, p := range []string{"/login", "/api/orders/1", "/admin/x", "/x.GIF", "/nothing"} {
		if a := testing.AllocsPerRun(100, func() { e.Match("GET", p) }); a != 0 {
			t.Errorf("Match(GET, %q): %v allocs, want 0", p, a)
		}
	}
}

func FuzzMatch(f *testing.F) {
	e, err := decodeDoc("fuzz.yaml", []byte(specRoutes+`
  - location: "^~ /static/"
  - location: "/"
  - location: '~* \.(gif|jpg|jpeg)$'
  - location: "= /"
  - location: "~ (?i)^/KIT"
  - location: "~* ^/Shop/"
  - location: '~ \.php$'
  - location: '~* \.HTML$'
  - location: '~ ^/x/(?i:abc)$'
  - location: "~* ^/api/v1/"
    methods: [GET]
`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("GET", "/admin")
	f.Add("HEAD", "/api/orders/1")
	f.Add("", "")
	f.Add("get", "relative")
	f.Add("POST", "/static/x.jpg")
	f.Fuzz(func(t *testing.T, method, path string) {
		if r := e.Match(method, path); r == nil {
			t.Fatalf("Match(%q, %q) = nil", method, path)
		}
		if p, ok := Normalize(path); ok {
			if got, want := e.Match(method, p), referenceMatch(e, method, p); got != want {
				t.Fatalf("Match(%q, %q) = %q, reference %q", method, p, got.Name, want.Name)
			}
		}
	})
}
