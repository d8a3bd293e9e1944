package expr

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// mapClaims is Claims over a decoded payload, top-level names only.
type mapClaimsT map[string]any

func (m mapClaimsT) Claim(p string) (any, bool) { v, ok := m[p]; return v, ok }

var tenantRE = regexp.MustCompile(`^/tenants/(?P<tenant>[^/]+)/`)

func input() *Input {
	return &Input{
		Method: "GET", Path: "/tenants/acme/orders", Host: "api.example.com",
		Header:   map[string][]string{"X-Tenant": {"acme"}, "Accept": {"a", "b"}},
		RawQuery: "a=1&a=2&b=3",
		ClientIP: "10.1.2.3",
		Now:      time.Unix(1_800_000_000, 0),
		Claims: mapClaimsT{
			"sub": "alice", "tenant": "acme", "roles": []any{"user", "support"},
			"iat": float64(1_800_000_000 - 60), "email_verified": true, "level": float64(3),
		},
	}
}

func TestEval(t *testing.T) {
	tests := []struct {
		name, src string
		want      bool
	}{
		{"tenant equals capture", "claims.tenant == route.captures.tenant", true},
		{"tenant by index", "claims['tenant'] == route.captures['tenant']", true},
		{"role in list", "'support' in claims.roles", true},
		{"role absent", "'admin' in claims.roles", false},
		{"has present", "has(claims.email_verified) && claims.email_verified", true},
		{"has absent", "has(claims.nope)", false},
		{"in claims", "'sub' in claims && !('nope' in claims)", true},
		{"fresh token", "now - timestamp(int(claims.iat)) < duration('10m')", true},
		{"stale token", "now - timestamp(int(claims.iat)) < duration('30s')", false},
		{"number compares with int", "claims.level >= 3 && claims.level == 3", true},
		{"method", "request.method == 'GET' && request.path.startsWith('/tenants/')", true},
		{"host", "request.host == 'api.example.com'", true},
		{"header any case", "request.headers['x-tenant'] == 'acme' && request.headers['accept'] == 'a'", true},
		{"header absent", "'x-nope' in request.headers", false},
		{"header size", "size(request.headers) == 2", true},
		{"query", "request.query['a'] == ['1', '2'] && request.query.b[0] == '3'", true},
		{"query absent", "!('c' in request.query)", true},
		{"cidr", "cidr('10.0.0.0/8').containsIP(client_ip)", true},
		{"cidr out", "cidr('192.168.0.0/16').containsIP(client_ip)", false},
		{"captures whole", "route.captures == {'tenant': 'acme'}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, errs := Compile(tt.src, tenantRE)
			if len(errs) > 0 {
				t.Fatalf("Compile(%q): %v", tt.src, errs)
			}
			got, err := p.Eval(input())
			if err != nil {
				t.Fatalf("Eval(%q): %v", tt.src, err)
			}
			if got != tt.want {
				t.Errorf("Eval(%q) = %v, want %v", tt.src, got, tt.want)
			}
		})
	}
}

func TestEvalErrors(t *testing.T) {
	for _, src := range []string{
		"claims.missing == 'x'",            // no such key
		"request.headers['x-nope'] == 'x'", // no such key
		"int(claims.sub) > 0",              // conversion fails
	} {
		p, errs := Compile(src, tenantRE)
		if len(errs) > 0 {
			t.Fatalf("Compile(%q): %v", src, errs)
		}
		got, err := p.Eval(input())
		if err == nil || got {
			t.Errorf("Eval(%q) = %v, %v; want false and an error", src, got, err)
		}
	}
	// without a token claims is empty
	p, _ := Compile("has(claims.sub)", nil)
	in := input()
	in.Claims = nil
	if got, err := p.Eval(in); got || err != nil {
		t.Errorf("has(claims.sub) without claims = %v, %v; want false, nil", got, err)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, src string
		line, col int // col 0-based
		msg       string
	}{
		{"unknown variable", "claims.a == 1 && reqest.method == 'GET'", 1, 17, "undeclared reference to 'reqest'"},
		{"type error", "request.method == 1", 1, 15, "no matching overload"},
		{"not bool", "request.method", 1, 0, "must evaluate to a bool"},
		{"syntax", "request.method ==", 1, 17, "Syntax error"},
		{"claims whole", "size(claims) > 1", 1, 5, "claims can be read only by name"},
		{"claims dynamic", "claims[request.method] == 1", 1, 0, "claims can be read only by name"},
		{"capture unknown", "route.captures.tenantx == 'a'", 1, 14, "no group (?P<tenantx>"},
		{"second line", "true &&\n  nope", 2, 2, "undeclared reference to 'nope'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := Compile(tt.src, tenantRE)
			if len(errs) == 0 {
				t.Fatalf("Compile(%q): no error", tt.src)
			}
			e := errs[0]
			if e.Line != tt.line || e.Col != tt.col || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("Compile(%q) = %d:%d %q, want %d:%d containing %q", tt.src, e.Line, e.Col, e.Msg, tt.line, tt.col, tt.msg)
			}
		})
	}
}

func TestCostLimit(t *testing.T) {
	cheap, errs := Compile("claims.tenant == route.captures.tenant", tenantRE)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if cheap.Metered() {
		t.Errorf("tenant check is metered (estimate %d), want a static bound", cheap.CostMax)
	}
	slow, errs := Compile("claims.items.all(x, claims.items.all(y, claims.items.all(z, x + y + z >= 0.0)))", nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if !slow.Metered() {
		t.Fatalf("nested loops are not metered (estimate %d)", slow.CostMax)
	}
	items := make([]any, 200)
	for i := range items {
		items[i] = float64(i)
	}
	in := input()
	in.Claims = mapClaimsT{"items": items}
	got, err := slow.Eval(in)
	if got || err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Errorf("8M-step loop = %v, %v; want false and a cost limit error", got, err)
	}
	in.Claims = mapClaimsT{"items": items[:3]}
	if got, err := slow.Eval(in); !got || err != nil {
		t.Errorf("small loop = %v, %v; want true", got, err)
	}
}

func TestClaimNames(t *testing.T) {
	p, errs := Compile("claims.tenant == 'a' || 'support' in claims['roles'] || has(claims.x) || 'y' in claims", nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := strings.Join(p.ClaimNames(), ","); got != "roles,tenant,x,y" {
		t.Errorf("ClaimNames = %s, want roles,tenant,x,y", got)
	}
	if p.Needs() != 0 {
		t.Errorf("Needs = %b, want 0", p.Needs())
	}
	p, _ = Compile("now > timestamp('2020-01-01T00:00:00Z') && client_ip != ''", nil)
	if p.Needs() != NeedNow|NeedClientIP {
		t.Errorf("Needs = %b, want now|client_ip", p.Needs())
	}
}

func BenchmarkEvalTenant(b *testing.B) {
	p, errs := Compile("claims.tenant == route.captures.tenant", tenantRE)
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	in := input()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := p.Eval(in); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkEvalRole(b *testing.B) {
	p, errs := Compile("'support' in claims.roles", nil)
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	in := input()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := p.Eval(in); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
