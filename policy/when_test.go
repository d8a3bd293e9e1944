package policy

import (
	"testing"
)

const whenConfig = `
routes:
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
    roles: { any: [user] }
    when: "claims.tenant == route.captures.tenant || 'support' in claims.roles"
  - location: /public/
    auth: none
    when: request.method == 'GET'
  - location: /api/
    auth: required
  - location: /api/new/
    shadow: true
    roles: { any: [admin] }
default:
  auth: required
  shadow: deny
`

func TestDecideWhen(t *testing.T) {
	e, err := decodeDoc("w.yaml", []byte(whenConfig))
	if err != nil {
		t.Fatal(err)
	}
	acme := &Subject{Roles: []string{"user"}, Claims: claimMap{"tenant": "acme", "roles": []any{"user"}}}
	support := &Subject{Roles: []string{"user"}, Claims: claimMap{"tenant": "other", "roles": []any{"user", "support"}}}
	noTenant := &Subject{Roles: []string{"user"}, Claims: claimMap{}}
	tests := []struct {
		name, method, path string
		s                  *Subject
		want               Reason
		err                bool
	}{
		{"own tenant", "GET", "/tenants/acme/orders", acme, ReasonOK, false},
		{"other tenant", "GET", "/tenants/globex/orders", acme, ReasonInsufficientScope, false},
		{"support any tenant", "GET", "/tenants/globex/orders", support, ReasonOK, false},
		{"claim missing: error, denied", "GET", "/tenants/acme/x", noTenant, ReasonInsufficientScope, true},
		{"no token", "GET", "/tenants/acme/x", nil, ReasonMissingToken, false},
		{"public GET", "GET", "/public/x", nil, ReasonPublic, false},
		{"public POST denied", "POST", "/public/x", nil, ReasonInsufficientScope, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Match(tt.method, tt.path)
			req := Request{Method: tt.method, Path: tt.path}
			d := r.DecideRequest(tt.s, &req)
			if d.Reason != tt.want || (d.Err != nil) != tt.err {
				t.Errorf("DecideRequest(%s %s) = %s, err %v; want %s, err %v", tt.method, tt.path, d.Reason, d.Err, tt.want, tt.err)
			}
		})
	}
}

func TestShadow(t *testing.T) {
	e, err := decodeDoc("w.yaml", []byte(whenConfig))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, match, shadow string
	}{
		{"/api/new/x", "/api/", "/api/new/"},
		{"/api/x", "/api/", ""},
		{"/elsewhere", "default", "default"},
	}
	for _, tt := range tests {
		if got := e.Match("GET", tt.path).Name; got != tt.match {
			t.Errorf("Match(%q) = %s, want %s", tt.path, got, tt.match)
		}
		sh := e.Shadow("GET", tt.path)
		got := ""
		if sh != nil {
			got = sh.Name
			if !sh.Shadow {
				t.Errorf("Shadow(%q) is not marked Shadow", tt.path)
			}
		}
		if got != tt.shadow {
			t.Errorf("Shadow(%q) = %q, want %q", tt.path, got, tt.shadow)
		}
	}
	if d := e.Shadow("GET", "/elsewhere").Decide(nil); d.Reason != ReasonForbidden {
		t.Errorf("shadow default decides %s, want forbidden", d.Reason)
	}
	if d := e.Shadow("GET", "/api/new/x").Decide(&Subject{Roles: []string{"user"}}); d.Reason != ReasonInsufficientScope {
		t.Errorf("shadow route decides %s, want insufficient_scope", d.Reason)
	}
}

func BenchmarkDecideWhen(b *testing.B) {
	e, err := decodeDoc("w.yaml", []byte(whenConfig))
	if err != nil {
		b.Fatal(err)
	}
	s := &Subject{Roles: []string{"user"}, Claims: claimMap{"tenant": "acme", "roles": []any{"user"}}}
	b.ReportAllocs()
	for b.Loop() {
		r := e.Match("GET", "/tenants/acme/orders")
		req := Request{Method: "GET", Path: "/tenants/acme/orders"}
		if d := r.DecideRequest(s, &req); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
}

// TestTraceAgreesWithMatch: Trace's winner is Match's for every path of
// the nginx differential and the when config.
func TestTraceAgreesWithMatch(t *testing.T) {
	cfg := `
routes:
  - location: "= /login"
    auth: none
  - location: /api/
    methods: [GET]
  - location: /api/orders/
  - location: "^~ /static/"
  - location: "~ \\.php$"
  - location: "~* ^/ADMIN(/|$)"
  - location: "~ ^/tenants/(?P<tenant>[^/]+)/"
  - location: /api/new/
    shadow: true
  - location: "= /exact"
    methods: [POST]
`
	e, err := decodeDoc("t.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"GET", "POST"} {
		for _, p := range []string{"/login", "/login/", "/api/", "/api/x", "/api/orders/1", "/api/orders/1.php",
			"/static/a.php", "/admin", "/Admin/x", "/tenants/a/b", "/api/new/x", "/exact", "/", "/nothing"} {
			steps, w := e.Trace(method, p)
			if m := e.Match(method, p); m != w {
				t.Errorf("Trace(%s %s) winner %s, Match %s", method, p, w.Name, m.Name)
			}
			winners := 0
			for _, s := range steps {
				if s.Winner {
					winners++
				}
			}
			if winners != 1 {
				t.Errorf("Trace(%s %s) marks %d winners: %+v", method, p, winners, steps)
			}
		}
	}
}
