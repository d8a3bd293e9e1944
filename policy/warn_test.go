package policy

import (
	"slices"
	"strings"
	"testing"
)

const undeclaredNote = `test.yaml:3:3: warning: paths is not declared: gatehouse matches paths case-sensitively with a strict trailing slash, and the locations warned about are exposed if the upstream reads them otherwise; set paths.preset (express, flask, django, spring, aspnet, rails, fastapi or gin) or paths.case and paths.trailing_slash`

// TestWarnings checks the exact -t warnings (SPEC.md 15) for the patterns
// of issue 11: a permissive default or a public catch-all beside
// case-sensitive protected locations, undeclared or declared.
func TestWarnings(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"undeclared, permissive default (the Express trial)", `
routes:
  - location: "= /orders"
    methods: [POST]
    roles: { all: ["order:create"] }
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "= /login"
    auth: none
default: { auth: required }
`, []string{
			undeclaredNote,
			`test.yaml:3:15: warning: location "= /orders" is exposed if the upstream reads paths case-insensitively or ignoring a trailing slash: POST "/ORDERS" reaches default (a token without this location's requirements), POST "/orders/" reaches default (a token without this location's requirements); declare paths`,
			`test.yaml:6:15: warning: location "~ ^/admin(/|$)" is exposed if the upstream reads paths case-insensitively: GET "/ADMIN" reaches default (a token without this location's requirements); declare paths`,
		}},
		{"undeclared, public catch-all", `
routes:
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "/"
    auth: none
`, []string{
			undeclaredNote,
			`test.yaml:3:15: warning: location "~ ^/admin(/|$)" is exposed if the upstream reads paths case-insensitively: GET "/ADMIN" reaches location "/" (auth none); declare paths`,
		}},
		{"undeclared, prefix without its slash", `
routes:
  - location: "/api/"
  - location: "/"
    auth: optional
`, []string{
			undeclaredNote,
			`test.yaml:3:15: warning: location "/api/" is exposed if the upstream reads paths case-insensitively or ignoring a trailing slash: GET "/API/" reaches location "/" (auth optional), GET "/api" reaches location "/" (auth optional); declare paths`,
		}},
		{"declared, a route stricter than its upstream", `
paths: { preset: express }
routes:
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "= /orders"
    paths: { case: sensitive }
  - location: "/"
    auth: none
`, []string{
			`test.yaml:6:15: warning: location "= /orders" can be bypassed: GET "/ORDERS" reaches location "/" (auth none), and its upstream reads that as "/orders" (paths: case insensitive, trailing_slash ignore); make this location match it (paths) or add one that does`,
		}},
		{"declared, fewer requirements", `
paths: { preset: rails }
routes:
  - location: "= /admin"
    roles: { all: [admin] }
    paths: { trailing_slash: strict }
  - location: "/"
    roles: { any: [user] }
`, []string{
			`test.yaml:4:15: warning: location "= /admin" can be bypassed: GET "/admin/" reaches location "/" (fewer requirements), and its upstream reads that as "/admin" (paths: case sensitive, trailing_slash ignore); make this location match it (paths) or add one that does`,
		}},
		{"express preset, bypass-free", `
paths: { preset: express }
routes:
  - location: "= /orders"
    methods: [POST]
    roles: { all: ["order:create"] }
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "/"
    auth: none
default: { auth: required }
`, nil},
		{"flask preset, the app tells spellings apart", `
paths: { preset: flask }
routes:
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
  - location: "/"
    auth: none
`, nil},
		{"undeclared, default deny", `
routes:
  - location: "= /orders"
    roles: { all: [admin] }
  - location: "= /login"
    auth: none
`, nil},
		{"undeclared, equally strict neighbour", `
routes:
  - location: "= /orders"
    roles: { all: [admin] }
default: { roles: { all: [admin] } }
`, nil},
		{"other upstream", `
routes:
  - location: "= /orders"
    roles: { all: [admin] }
  - location: "/"
    auth: none
    upstream: "http://static:80"
`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := load(t, tt.doc).Warnings()
			if !slices.Equal(got, tt.want) {
				t.Errorf("Warnings =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
