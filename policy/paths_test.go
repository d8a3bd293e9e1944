package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// pathsDoc is a config with a global `paths` (none when empty) over one
// protected location of each form, a public catch-all and a deny default.
func pathsDoc(paths string) string {
	var b strings.Builder
	if paths != "" {
		fmt.Fprintf(&b, "paths: %s\n", paths)
	}
	b.WriteString(`routes:
  - location: "= /orders"
    name: exact
  - location: "/api/"
    name: prefix
  - location: "^~ /static/"
    name: stop
  - location: "~ ^/admin(/|$)"
    name: regex
  - location: "~ \\.php$"
    name: php
  - location: "/"
    name: catchall
    auth: none
`)
	return b.String()
}

// TestMatchPaths checks every location form under every combination of
// case and trailing_slash: which route a spelling reaches.
func TestMatchPaths(t *testing.T) {
	type want map[string]string // path -> route name
	// the spellings every combination agrees on
	common := want{
		"/orders": "exact", "/api/": "prefix", "/api/x": "prefix", "/static/a.php": "stop",
		"/admin": "regex", "/admin/": "regex", "/admin/x": "regex", "/x.php": "php", "/other": "catchall",
		"/ordersx": "catchall", "/apix": "catchall", "/administrator": "catchall",
	}
	tests := []struct {
		name, paths string
		want        want
	}{
		{"undeclared", "", want{
			"/ORDERS": "catchall", "/orders/": "catchall", "/Orders/": "catchall",
			"/API/x": "catchall", "/api": "catchall", "/API": "catchall",
			"/STATIC/a.php": "php", "/static": "catchall",
			"/ADMIN": "catchall", "/Admin/x": "catchall", "/x.PHP": "catchall",
		}},
		{"sensitive strict", "{ case: sensitive, trailing_slash: strict }", want{
			"/ORDERS": "catchall", "/orders/": "catchall",
			"/API/x": "catchall", "/api": "catchall",
			"/ADMIN": "catchall", "/x.PHP": "catchall",
		}},
		{"insensitive strict", "{ case: insensitive, trailing_slash: strict }", want{
			"/ORDERS": "exact", "/Orders": "exact", "/orders/": "catchall", "/ORDERS/": "catchall",
			"/API/x": "prefix", "/Api/X": "prefix", "/api": "catchall",
			"/STATIC/a.php": "stop", "/Static/A.PHP": "stop",
			"/ADMIN": "regex", "/aDmIn/users": "regex", "/x.PHP": "php",
		}},
		{"sensitive ignore", "{ case: sensitive, trailing_slash: ignore }", want{
			"/ORDERS": "catchall", "/orders/": "exact", "/ORDERS/": "catchall",
			"/API/x": "catchall", "/api": "prefix", "/API": "catchall",
			"/static": "stop", "/STATIC/a.php": "php",
			"/ADMIN": "catchall", "/x.php/": "php",
		}},
		{"insensitive ignore", "{ case: insensitive, trailing_slash: ignore }", want{
			"/ORDERS": "exact", "/orders/": "exact", "/Orders/": "exact",
			"/API/x": "prefix", "/api": "prefix", "/API": "prefix",
			"/static": "stop", "/STATIC": "stop", "/STATIC/a.php": "stop",
			"/ADMIN": "regex", "/Admin/x": "regex", "/x.PHP/": "php",
		}},
		{"express", "{ preset: express }", want{
			"/ORDERS": "exact", "/Orders/": "exact", "/api": "prefix", "/ADMIN/users": "regex", "/%41DMIN/x": "regex",
		}},
		{"flask", "{ preset: flask }", want{
			"/ORDERS": "catchall", "/orders/": "catchall", "/api": "catchall", "/ADMIN": "catchall",
		}},
		{"rails", "{ preset: rails }", want{
			"/ORDERS": "catchall", "/orders/": "exact", "/api": "prefix", "/ADMIN": "catchall",
		}},
		{"preset with explicit key", "{ preset: express, trailing_slash: strict }", want{
			"/ORDERS": "exact", "/orders/": "catchall", "/api": "catchall", "/API/x": "prefix",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := load(t, pathsDoc(tt.paths))
			for p, w := range common {
				if _, ok := tt.want[p]; !ok {
					tt.want[p] = w
				}
			}
			for p, w := range tt.want {
				canon, ok := Normalize(p)
				if !ok {
					t.Fatalf("Normalize(%q) failed", p)
				}
				if got := e.Match("GET", canon).Name; got != w {
					t.Errorf("Match(%q) = %q, want %q", p, got, w)
				}
			}
		})
	}
}

// TestMatchPathsPerRoute: a route's `paths` overrides the global one per
// key, a route preset replaces both, and each route matches under its own.
func TestMatchPathsPerRoute(t *testing.T) {
	e := load(t, `
paths: { preset: express }
routes:
  - location: "= /strict"
    paths: { trailing_slash: strict }
  - location: "= /exact-case"
    paths: { case: sensitive }
  - location: "/flask/"
    paths: { preset: flask }
  - location: "/flask-ci/"
    paths: { preset: flask, case: insensitive }
default: { auth: none }
`)
	tests := []struct{ path, want string }{
		{"/STRICT", "= /strict"},
		{"/strict/", "default"},
		{"/exact-case/", "= /exact-case"},
		{"/EXACT-CASE", "default"},
		{"/flask/x", "/flask/"},
		{"/FLASK/x", "default"},
		{"/flask", "default"},
		{"/FLASK-CI/x", "/flask-ci/"},
		{"/flask-ci", "default"},
	}
	for _, tt := range tests {
		if got := e.Match("GET", tt.path).Name; got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestMatchPathsLongestPrefix: nginx's longest-prefix rule holds across
// the case-sensitive and case-insensitive trees, and /p/ matching /p under
// ignore counts as the length of /p/.
func TestMatchPathsLongestPrefix(t *testing.T) {
	e := load(t, `
routes:
  - location: "/a/"
    paths: { case: insensitive }
  - location: "/a/b/"
  - location: "/A/B/C/"
    paths: { case: insensitive }
  - location: "/x"
  - location: "/x/"
    paths: { trailing_slash: ignore }
  - location: "^~ /s/"
    paths: { trailing_slash: ignore }
  - location: "~ ^/s"
default: { auth: none }
`)
	tests := []struct{ path, want string }{
		{"/A/b/", "/a/"},
		{"/a/b/", "/a/b/"},
		{"/a/b/c/d", "/A/B/C/"},
		{"/a/B/c/", "/A/B/C/"},
		{"/x", "/x/"},
		{"/x/", "/x/"},
		{"/xy", "/x"},
		{"/s", "^~ /s/"},
		{"/s/1", "^~ /s/"},
		{"/st", "~ ^/s"},
	}
	for _, tt := range tests {
		if got := e.Match("GET", tt.path).Name; got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestMatchPathsExactOrder: an exact match under loose semantics and one
// under the default compete by file order; methods still decide.
func TestMatchPathsExactOrder(t *testing.T) {
	e := load(t, `
routes:
  - location: "= /p/"
    paths: { trailing_slash: ignore }
    methods: [POST]
  - location: "= /p"
    name: strict-p
  - location: "= /P"
    paths: { case: insensitive }
    name: folded
  - location: "= /"
    paths: { preset: express }
default: { auth: none }
`)
	tests := []struct{ method, path, want string }{
		{"POST", "/p", "= /p/"},
		{"GET", "/p", "strict-p"},
		{"GET", "/P", "folded"},
		{"GET", "/p/", "default"},
		{"POST", "/P/", "default"},
		{"GET", "/", "= /"},
		{"GET", "/x", "default"},
	}
	for _, tt := range tests {
		if got := e.Match(tt.method, tt.path).Name; got != tt.want {
			t.Errorf("Match(%s %q) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestMatchPathsNonASCII: only ASCII letters fold; canonical paths carry
// other letters as escapes, which stay apart (É is not é).
func TestMatchPathsNonASCII(t *testing.T) {
	e := load(t, `
paths: { case: insensitive }
routes:
  - location: "= /caf%C3%A9"
default: { auth: none }
`)
	for p, want := range map[string]string{"/CAF%C3%A9": "= /caf%C3%A9", "/caf%C3%89": "default", "/café": "= /caf%C3%A9"} {
		c, _ := Normalize(p)
		if got := e.Match("GET", c).Name; got != want {
			t.Errorf("Match(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestMatchPathsDoesNotAllocate(t *testing.T) {
	e := load(t, pathsDoc("{ preset: express }"))
	// Exact and prefix matches never reach a regex (sync.Pool): checked
	// even under -race; the rest only without it.
	paths := []string{"/ORDERS/", "/Api", "/api/x", "/STATIC"}
	if !raceEnabled {
		paths = append(paths, "/ADMIN/", "/x.php/", "/none")
	}
	for _, p := range paths {
		if n := testing.AllocsPerRun(100, func() { e.Match("GET", p) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times, want 0", p, n)
		}
	}
}

func TestPathsErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown preset", "paths: { preset: laravel }\n", `test.yaml:1:18: paths.preset: unknown preset "laravel": want express, flask, django, spring, aspnet, rails, fastapi or gin`},
		{"bad case", "paths:\n  case: upper\n", `test.yaml:2:9: paths.case must be sensitive or insensitive, got "upper"`},
		{"bad slash", "paths:\n  trailing_slash: maybe\n", `test.yaml:2:19: paths.trailing_slash must be strict or ignore, got "maybe"`},
		{"unknown key", "paths:\n  cases: insensitive\n", `test.yaml:2:3: unknown key`},
		{"route preset", "routes:\n  - location: /a/\n    paths: { preset: nope }\n", `test.yaml:3:22: paths.preset: unknown preset "nope"`},
		{"not a mapping", "paths: express\n", `test.yaml:1:8:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDoc("test.yaml", []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRouteName(t *testing.T) {
	e := load(t, `
routes:
  - location: "/api/orders/"
    name: orders-read
    methods: [GET]
  - location: "/api/orders/"
    methods: [POST]
default: { auth: required }
`)
	rs := e.Routes()
	if rs[0].Name != "orders-read" || rs[0].Location != "/api/orders/" {
		t.Errorf("route 0: Name %q Location %q, want orders-read, /api/orders/", rs[0].Name, rs[0].Location)
	}
	if rs[1].Name != "/api/orders/" {
		t.Errorf("unnamed route Name = %q, want its location", rs[1].Name)
	}
	if rs[2].Name != "default" || rs[2].Location != "" {
		t.Errorf("default route Name %q Location %q", rs[2].Name, rs[2].Location)
	}

	errs := []struct{ name, doc, want string }{
		{"empty", "routes:\n  - location: /a/\n    name: \"\"\n", `test.yaml:3:11: name must not be empty`},
		{"control", "routes:\n  - location: /a/\n    name: \"a\\tb\"\n", `test.yaml:3:11: name "a\tb" must be printable`},
		{"default", "routes:\n  - location: /a/\n    name: default\n", `test.yaml:3:11: name "default" is the default route's label`},
		{"twice", "routes:\n  - location: /a/\n    name: n\n  - location: /b/\n    name: n\n", `test.yaml:5:11: duplicate name "n": already the name of the route at line 2`},
		{"another's location", "routes:\n  - location: /a/\n  - location: /b/\n    name: /a/\n", `test.yaml:4:11: duplicate name "/a/": already the label of the unnamed route at line 2`},
		{"not a string", "routes:\n  - location: /a/\n    name: [x]\n", `test.yaml:3:11:`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDoc("test.yaml", []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDecisionDetail(t *testing.T) {
	e := load(t, `
routes:
  - location: "= /roles-any"
    roles: { any: [user, admin] }
  - location: "= /roles-all"
    roles: { all: [admin] }
  - location: "= /scopes"
    roles: { any: [user] }
    scopes: { all: ["orders:write"] }
  - location: "= /claims"
    claims: { email_verified: true, tenant: acme }
  - location: "= /public"
    auth: none
`)
	user := &Subject{Roles: []string{"user"}, Claims: claimMap{"email_verified": true, "tenant": "evil-value"}}
	tests := []struct {
		path   string
		s      *Subject
		reason Reason
		detail string
	}{
		{"/roles-any", &Subject{Roles: []string{"guest"}}, ReasonInsufficientScope, "roles any [user admin]"},
		{"/roles-all", user, ReasonInsufficientScope, "roles all [admin]"},
		{"/scopes", user, ReasonInsufficientScope, "scopes all [orders:write]"},
		{"/claims", user, ReasonInsufficientScope, "claim tenant"},
		{"/claims", &Subject{}, ReasonInsufficientScope, "claim email_verified"},
		{"/roles-any", nil, ReasonMissingToken, "no token"},
		{"/nothing", user, ReasonForbidden, "no route matched"},
		{"/roles-any", user, ReasonOK, ""},
		{"/public", nil, ReasonPublic, ""},
	}
	for _, tt := range tests {
		d := e.Match("GET", tt.path).Decide(tt.s)
		if d.Reason != tt.reason || d.Detail != tt.detail {
			t.Errorf("Decide(%q) = %q %q, want %q %q", tt.path, d.Reason, d.Detail, tt.reason, tt.detail)
		}
		if strings.Contains(d.Detail, "evil-value") {
			t.Errorf("Detail %q carries a claim value from the token", d.Detail)
		}
	}
	r := e.Match("GET", "/claims")
	if n := testing.AllocsPerRun(100, func() { r.Decide(user) }); n != 0 {
		t.Errorf("Decide allocates %v times, want 0", n)
	}
}

func TestMethods(t *testing.T) {
	e := load(t, `
paths: { preset: express }
routes:
  - location: "/api/orders/"
    methods: [POST, GET]
  - location: "/api/orders/"
    methods: [DELETE]
  - location: "~ ^/api/orders/[0-9]+$"
    methods: [PUT, GET]
  - location: "= /open"
  - location: "/closed/"
    methods: [GET]
`)
	tests := []struct {
		path  string
		want  []string
		every bool
	}{
		{"/api/orders/", []string{"DELETE", "GET", "POST"}, false},
		{"/API/Orders", []string{"DELETE", "GET", "POST"}, false},
		{"/api/orders/7", []string{"DELETE", "GET", "POST", "PUT"}, false},
		{"/open/", nil, true},
		{"/closed/x", []string{"GET"}, false},
		{"/elsewhere", nil, false}, // default: deny serves nothing
	}
	for _, tt := range tests {
		got, every := e.Methods(tt.path)
		if !slices.Equal(got, tt.want) || every != tt.every {
			t.Errorf("Methods(%q) = %q, %v, want %q, %v", tt.path, got, every, tt.want, tt.every)
		}
	}
	open := load(t, "default: { auth: required }\n")
	if got, every := open.Methods("/x"); got != nil || !every {
		t.Errorf("Methods with a permissive default = %q, %v, want nil, true", got, every)
	}
}

// TestPathsDuplicates: locations that match the same paths under their
// `paths` are duplicates; the same spellings under different semantics
// are not.
func TestPathsDuplicates(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"folded prefix", "paths: { case: insensitive }\nroutes:\n  - location: /admin/\n  - location: /ADMIN/\n", `test.yaml:4:15: duplicate location "/ADMIN/"`},
		{"slashed exact", "paths: { trailing_slash: ignore }\nroutes:\n  - location: = /p\n  - location: = /p/\n", `test.yaml:4:15: duplicate location "= /p/"`},
		{"folded regex source differs", "paths: { case: insensitive }\nroutes:\n  - location: ~ ^/a\n  - location: ~ ^/A\n", ""},
		{"different semantics", "routes:\n  - location: /admin/\n  - location: /ADMIN/\n    paths: { case: insensitive }\n", ""},
		{"strict slashes", "routes:\n  - location: = /p\n  - location: = /p/\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDoc("test.yaml", []byte(tt.doc))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Decode error = %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Decode error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
