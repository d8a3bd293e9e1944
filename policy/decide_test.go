package policy

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/claimpath"
)

// claimMap is a Claims over decoded claims, by the one claim-path rule
// the jwks package's real one follows (internal/claimpath).
type claimMap map[string]any

func (m claimMap) Claim(path string) (any, bool) { return claimpath.InMap(m, path) }

const decideConfig = `
routes:
  - location: "= /public"
    auth: none
  - location: "= /optional"
    auth: optional
  - location: "= /required"
  - location: "= /any"
    roles: { any: [user, admin] }
  - location: "= /all"
    roles: { all: [user, admin] }
  - location: "= /both"
    roles: { any: [a, b], all: [c] }
  - location: "= /scopes"
    scopes: { all: ["orders:write", "orders:read"] }
  - location: "= /claims"
    claims: { email_verified: true, tenant: acme, level: 3, ratio: 0.5 }
  - location: "= /mixed"
    roles: { any: [admin] }
    scopes: { any: [x] }
    claims: { tenant: acme }
`

func TestDecide(t *testing.T) {
	e := load(t, decideConfig+"default: deny\n")
	eOpen := load(t, decideConfig+"default: { auth: optional }\n")
	eReq := load(t, decideConfig+"default: { roles: { any: [user] } }\n")
	goodClaims := claimMap{"email_verified": true, "tenant": "acme", "level": float64(3), "ratio": 0.5}
	user := &Subject{Roles: []string{"user"}}
	tests := []struct {
		name   string
		e      *Engine
		path   string
		s      *Subject
		allow  bool
		reason Reason
	}{
		{"default deny without token", e, "/nowhere", nil, false, ReasonForbidden},
		{"default deny with token", e, "/nowhere", &Subject{Roles: []string{"admin"}}, false, ReasonForbidden},
		{"default route optional, no token", eOpen, "/nowhere", nil, true, ReasonPublic},
		{"default route optional, token", eOpen, "/nowhere", user, true, ReasonOK},
		{"default route roles, no token", eReq, "/nowhere", nil, false, ReasonMissingToken},
		{"default route roles, met", eReq, "/nowhere", user, true, ReasonOK},
		{"default route roles, not met", eReq, "/nowhere", &Subject{}, false, ReasonInsufficientScope},

		{"none without token", e, "/public", nil, true, ReasonPublic},
		{"none with subject", e, "/public", user, true, ReasonPublic},
		{"required without token", e, "/required", nil, false, ReasonMissingToken},
		{"required with token", e, "/required", &Subject{}, true, ReasonOK},
		{"optional without token", e, "/optional", nil, true, ReasonPublic},
		{"optional with token", e, "/optional", &Subject{}, true, ReasonOK},

		{"any first", e, "/any", user, true, ReasonOK},
		{"any second", e, "/any", &Subject{Roles: []string{"x", "admin"}}, true, ReasonOK},
		{"any none", e, "/any", &Subject{Roles: []string{"guest"}}, false, ReasonInsufficientScope},
		{"any empty roles", e, "/any", &Subject{}, false, ReasonInsufficientScope},
		{"any is case-sensitive", e, "/any", &Subject{Roles: []string{"User"}}, false, ReasonInsufficientScope},
		{"roles are not scopes", e, "/any", &Subject{Scopes: []string{"user"}}, false, ReasonInsufficientScope},
		{"all met", e, "/all", &Subject{Roles: []string{"admin", "x", "user"}}, true, ReasonOK},
		{"all partly", e, "/all", user, false, ReasonInsufficientScope},
		{"any and all met", e, "/both", &Subject{Roles: []string{"b", "c"}}, true, ReasonOK},
		{"any and all, any missing", e, "/both", &Subject{Roles: []string{"c"}}, false, ReasonInsufficientScope},
		{"any and all, all missing", e, "/both", &Subject{Roles: []string{"a"}}, false, ReasonInsufficientScope},
		{"scopes all met", e, "/scopes", &Subject{Scopes: []string{"orders:read", "orders:write"}}, true, ReasonOK},
		{"scopes one missing", e, "/scopes", &Subject{Scopes: []string{"orders:write"}}, false, ReasonInsufficientScope},
		{"scopes are not roles", e, "/scopes", &Subject{Roles: []string{"orders:read", "orders:write"}}, false, ReasonInsufficientScope},

		{"claims met", e, "/claims", &Subject{Claims: goodClaims}, true, ReasonOK},
		{"claims nil", e, "/claims", &Subject{}, false, ReasonInsufficientScope},
		{"claim missing", e, "/claims", &Subject{Claims: claimMap{"email_verified": true, "tenant": "acme", "level": float64(3)}}, false, ReasonInsufficientScope},
		{"claim bool false", e, "/claims", &Subject{Claims: with(goodClaims, "email_verified", false)}, false, ReasonInsufficientScope},
		{"claim bool as string", e, "/claims", &Subject{Claims: with(goodClaims, "email_verified", "true")}, false, ReasonInsufficientScope},
		{"claim string differs", e, "/claims", &Subject{Claims: with(goodClaims, "tenant", "Acme")}, false, ReasonInsufficientScope},
		{"claim number as string", e, "/claims", &Subject{Claims: with(goodClaims, "level", "3")}, false, ReasonInsufficientScope},
		{"claim number differs", e, "/claims", &Subject{Claims: with(goodClaims, "level", 3.5)}, false, ReasonInsufficientScope},
		{"claim number numerically equal", e, "/claims", &Subject{Claims: with(goodClaims, "level", 3.0)}, true, ReasonOK},
		{"claim number as int", e, "/claims", &Subject{Claims: with(goodClaims, "level", 3)}, true, ReasonOK},
		{"claim number as int64", e, "/claims", &Subject{Claims: with(goodClaims, "level", int64(3))}, true, ReasonOK},
		{"claim null", e, "/claims", &Subject{Claims: with(goodClaims, "tenant", nil)}, false, ReasonInsufficientScope},
		{"claim array", e, "/claims", &Subject{Claims: with(goodClaims, "tenant", []any{"acme"})}, false, ReasonInsufficientScope},
		{"claim float", e, "/claims", &Subject{Claims: with(goodClaims, "ratio", 0.25)}, false, ReasonInsufficientScope},

		{"mixed met", e, "/mixed", &Subject{Roles: []string{"admin"}, Scopes: []string{"x"}, Claims: claimMap{"tenant": "acme"}}, true, ReasonOK},
		{"mixed scope missing", e, "/mixed", &Subject{Roles: []string{"admin"}, Claims: claimMap{"tenant": "acme"}}, false, ReasonInsufficientScope},
		{"mixed claim missing", e, "/mixed", &Subject{Roles: []string{"admin"}, Scopes: []string{"x"}}, false, ReasonInsufficientScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.e.Match("GET", tt.path)
			d := r.Decide(tt.s)
			if d.Allow != tt.allow || d.Reason != tt.reason || d.Route != r {
				t.Fatalf("Decide on %q = {%v %q %q}, want {%v %q %q}", r.Name, d.Allow, d.Reason, d.Route.Name, tt.allow, tt.reason, r.Name)
			}
		})
	}
}

// TestDecideOptionalNeverMissingToken: an AuthOptional route never denies
// for a missing token (SPEC.md 2), even one built with requirements (Decode
// refuses those, TestDecodeGolden/optional_requirements); a token that is
// presented is still held to them.
func TestDecideOptionalNeverMissingToken(t *testing.T) {
	for _, tt := range []struct {
		name   string
		r      *Route
		s      *Subject
		allow  bool
		reason Reason
	}{
		{"roles, no token", &Route{Auth: AuthOptional, roles: requirement{any: []string{"user"}}}, nil, true, ReasonPublic},
		{"scopes, no token", &Route{Auth: AuthOptional, scopes: requirement{all: []string{"x"}}}, nil, true, ReasonPublic},
		{"claims, no token", &Route{Auth: AuthOptional, claims: []claimReq{{path: "tenant", kind: claimString, str: "acme"}}}, nil, true, ReasonPublic},
		{"roles, met", &Route{Auth: AuthOptional, roles: requirement{any: []string{"user"}}}, &Subject{Roles: []string{"user"}}, true, ReasonOK},
		{"roles, not met", &Route{Auth: AuthOptional, roles: requirement{any: []string{"user"}}}, &Subject{Roles: []string{"guest"}}, false, ReasonInsufficientScope},
		{"required, no token", &Route{Auth: AuthRequired, roles: requirement{any: []string{"user"}}}, nil, false, ReasonMissingToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.r.Decide(tt.s)
			if d.Allow != tt.allow || d.Reason != tt.reason {
				t.Fatalf("Decide = {%v %q}, want {%v %q}", d.Allow, d.Reason, tt.allow, tt.reason)
			}
		})
	}
}

func with(m claimMap, k string, v any) claimMap {
	out := claimMap{}
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func TestDecideNoAlloc(t *testing.T) {
	e := load(t, decideConfig)
	s := &Subject{Roles: []string{"admin"}, Scopes: []string{"x"}, Claims: claimMap{"tenant": "acme"}}
	r := e.Match("GET", "/mixed")
	if a := testing.AllocsPerRun(100, func() { r.Decide(s) }); a != 0 {
		t.Errorf("Decide: %v allocs, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { r.Decide(nil) }); a != 0 {
		t.Errorf("Decide(nil): %v allocs, want 0", a)
	}
}

func TestAuthString(t *testing.T) {
	for a, want := range map[Auth]string{AuthRequired: "required", AuthOptional: "optional", AuthNone: "none", 9: "unknown"} {
		if got := a.String(); got != want {
			t.Errorf("Auth(%d).String() = %q, want %q", a, got, want)
		}
	}
}

func TestClaimPaths(t *testing.T) {
	e := load(t, `
routes:
  - location: "/a/"
    claims: { email_verified: true, "realm_access.level": 3 }
  - location: "/b/"
`)
	got := e.Routes()[0].ClaimPaths()
	if len(got) != 2 || got[0] != "email_verified" || got[1] != "realm_access.level" {
		t.Errorf("ClaimPaths() = %q", got)
	}
	if n := len(e.Routes()[1].ClaimPaths()); n != 0 {
		t.Errorf("route without claims has %d claim paths", n)
	}
}
