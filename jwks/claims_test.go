package jwks

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func TestVerifyClaims(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	e := newEnv(t, ""+
		jwksIssuer(srv.URL, "leeway: 30s")+
		"  - issuer: https://life\n    audiences: [api, other]\n    jwks_url: "+srv.URL+"\n    max_lifetime: 1h\n    types: [at+jwt]\n    required_claims: [sub, realm.tenant]\n"+
		"  - audiences: any\n    jwks_url: "+srv.URL+"\n    required_claims: []\n")
	now := e.clk.now().Unix()
	base := func(iss string, mod map[string]any) map[string]any {
		c := map[string]any{"iss": iss, "sub": "u", "aud": "api", "exp": now + 60, "iat": now}
		if iss == "" {
			delete(c, "iss")
		}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	atjwt := map[string]any{"alg": "ES256", "kid": "k", "typ": "at+jwt"}
	lifeOK := map[string]any{"realm": map[string]any{"tenant": "t1"}}
	tests := []struct {
		name   string
		header map[string]any
		claims map[string]any
		want   *Error
	}{
		{"valid", nil, base(issA, nil), nil},
		{"exp missing", nil, base(issA, map[string]any{"exp": nil}), errNoExp},
		{"exp a string", nil, base(issA, map[string]any{"exp": "2099-01-01"}), errNoExp},
		{"exp negative", nil, base(issA, map[string]any{"exp": -1}), errNoExp},
		{"exp huge", nil, base(issA, map[string]any{"exp": 1e300}), errNoExp},
		{"exp passed within leeway", nil, base(issA, map[string]any{"exp": now - 30}), nil},
		{"exp passed beyond leeway", nil, base(issA, map[string]any{"exp": now - 31}), errExpired},
		{"nbf ahead within leeway", nil, base(issA, map[string]any{"nbf": now + 30}), nil},
		{"nbf ahead beyond leeway", nil, base(issA, map[string]any{"nbf": now + 31}), errNotYetValid},
		{"nbf not a number", nil, base(issA, map[string]any{"nbf": "soon"}), errBadNbf},
		{"iat ahead within leeway", nil, base(issA, map[string]any{"iat": now + 30}), nil},
		{"iat ahead beyond leeway", nil, base(issA, map[string]any{"iat": now + 31}), errIatFuture},
		{"iat not a number", nil, base(issA, map[string]any{"iat": true}), errBadIat},
		{"aud wrong", nil, base(issA, map[string]any{"aud": "other"}), errAudience},
		{"aud missing", nil, base(issA, map[string]any{"aud": nil}), errAudience},
		{"aud array containing", nil, base(issA, map[string]any{"aud": []any{"x", "api"}}), nil},
		{"aud array without", nil, base(issA, map[string]any{"aud": []any{"x", 1}}), errAudience},
		{"aud number", nil, base(issA, map[string]any{"aud": 1}), errAudience},
		{"sub required", nil, base(issA, map[string]any{"sub": nil}), requiredClaimError("sub")},
		{"sub not a string", nil, base(issA, map[string]any{"sub": 7}), errSubType},
		{"jti not a string", nil, base(issA, map[string]any{"jti": 7}), errJTIType},
		{"no-iss entry, aud any", nil, base("", map[string]any{"aud": "whatever", "sub": nil}), nil},
		{"max_lifetime ok", atjwt, base("https://life", lifeOK), nil},
		{"max_lifetime needs iat", atjwt, base("https://life", map[string]any{"iat": nil, "realm": lifeOK["realm"]}), errNoIat},
		{"max_lifetime exceeded", atjwt, base("https://life", map[string]any{"exp": now + 3601, "realm": lifeOK["realm"]}), errLifetime},
		{"nested required claim missing", atjwt, base("https://life", nil), requiredClaimError("realm.tenant")},
		{"typ missing", map[string]any{"alg": "ES256", "kid": "k"}, base("https://life", lifeOK), errType},
		{"typ JWT not allowed", map[string]any{"alg": "ES256", "kid": "k", "typ": "JWT"}, base("https://life", lifeOK), errType},
		{"typ application/AT+JWT", map[string]any{"alg": "ES256", "kid": "k", "typ": "application/AT+JWT"}, base("https://life", lifeOK), nil},
		{"second audience", atjwt, base("https://life", map[string]any{"aud": "other", "realm": lifeOK["realm"]}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = map[string]any{"alg": "ES256", "kid": "k", "typ": "JWT"}
			}
			_, err := e.verify(k.SignHeader(h, tt.claims))
			if !sameError(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	// A required claim sent as JSON null is missing, not present. base
	// drops nil values, so the payload is written out.
	t.Run("sub null", func(t *testing.T) {
		hdr := []byte(`{"alg":"ES256","kid":"k","typ":"JWT"}`)
		payload := []byte(fmt.Sprintf(`{"iss":%q,"sub":null,"aud":"api","exp":%d,"iat":%d}`, issA, now+60, now))
		if _, err := e.verify(k.SignRaw(hdr, payload)); !sameError(err, requiredClaimError("sub")) {
			t.Errorf("Verify = %v, want %v", err, requiredClaimError("sub"))
		}
	})
	// nbf ahead is token_expired (SPEC.md 4), iat ahead is invalid_token.
	if errNotYetValid.Reason.Code() != "token_expired" || errIatFuture.Reason.Code() != "invalid_token" {
		t.Error("reason codes of nbf/iat")
	}
}

// TestAlgKeyMismatchDefence: even when the allow-list is too wide (a config
// that lists HS256 next to RS256 for a JWKS issuer can only be built by
// hand), an HMAC token signed with the RSA public key is refused because
// the algorithm does not fit the key.
func TestAlgKeyMismatchDefence(t *testing.T) {
	rs := jwkstest.NewKey("RS256", "")
	srv := server(t)
	pub := rs.PublicJWK()
	delete(pub, "alg")
	srv.SetBody(mustJSON(map[string]any{"keys": []any{pub}}))
	iss := issuers(t, jwksIssuer(srv.URL))
	iss[0].Algorithms = []string{"RS256", "HS256", "ES256"}
	iss[0].fp = iss[0].fingerprint()
	e := newEnv(t, jwksIssuer(srv.URL), func(o *Options) { o.Issuers = iss })
	c := e.claims(issA)
	if _, err := e.verify(rs.Sign(c)); err != nil {
		t.Fatal(err)
	}
	for _, forged := range []*jwkstest.Key{
		{Alg: "HS256", Private: rs.PublicPEM()},
		{Alg: "HS256", Private: []byte(strings.TrimSpace(string(rs.PublicPEM())))},
		jwkstest.NewKey("ES256", ""),
	} {
		if _, err := e.verify(forged.Sign(c)); err != errAlgKey {
			t.Errorf("%s token on an RSA key = %v, want %v", forged.Alg, err, errAlgKey)
		}
	}
}

func TestClaimLookup(t *testing.T) {
	r := &Result{claims: map[string]any{
		"https://example.com/roles": []any{"a"},
		"realm_access":              map[string]any{"roles": []any{"r1", "r2"}, "deep": map[string]any{"x": true}},
		"a.b":                       "exact wins",
		"a":                         map[string]any{"b": "descended"},
		"n":                         float64(3),
		"nul":                       nil,
	}}
	tests := []struct {
		path string
		want any
		ok   bool
	}{
		{"https://example.com/roles", []any{"a"}, true},
		{"realm_access.roles", []any{"r1", "r2"}, true},
		{"realm_access.deep.x", true, true},
		{"a.b", "exact wins", true},
		{"n", float64(3), true},
		{"nul", nil, true},
		{"missing", nil, false},
		{"n.x", nil, false},
		{"realm_access.missing", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := r.Claim(tt.path)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Claim(%q) = %v, %v; want %v, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
	var _ interface{ Claim(string) (any, bool) } = r
	if n := testing.AllocsPerRun(100, func() { r.Claim("https://example.com/roles") }); n != 0 {
		t.Errorf("Claim of a top-level name allocates %v times", n)
	}
}

func TestStringList(t *testing.T) {
	tests := []struct {
		name string
		in   string // raw JSON
		want []string
	}{
		{"array", `["a","b"]`, []string{"a", "b"}},
		{"array with non-strings", `["a", 1, null, ["x"], {"y":"z"}, "b"]`, []string{"a", "b"}},
		{"escaped elements", `["\u0061dmin", "r\"w"]`, []string{"admin", `r"w`}},
		{"empty array is an empty list", `[ ]`, []string{}},
		{"space separated", `"read write"`, []string{"read", "write"}},
		{"comma separated", `"read,write"`, []string{"read", "write"}},
		{"mixed", `" read, write  admin "`, []string{"read", "write", "admin"}},
		{"number", `1`, nil},
		{"object", `{"a":"b"}`, nil},
		{"null", `null`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stringList([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("stringList(%s) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestHasDuplicateKeys(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`{"a":1,"b":2}`, false},
		{`{"a":1,"a":2}`, true},
		{`{"a":1, "\u0061":2}`, true},
		{`{"a":{"x":1},"b":{"x":1}}`, false},
		{`{"a":[{"x":1,"x":2}]}`, true},
		{`{"a":"\"a\"","b":"}{"}`, false},
		{`{"k\"":1,"k\u0022":2}`, true},
		{`{}`, false},
		{`{"a":[1,2,{"b":[]}],"c":null}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if _, _, got := parseObject([]byte(tt.in), nil); got != tt.want {
				t.Errorf("parseObject(%s) duplicate = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeSegment(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"", true},
		{"QQ", true},    // "A"
		{"QR", false},   // trailing bits set
		{"QQ==", false}, // padding
		{"QUJD", true},
		{"QU+D", false},
		{"QU/D", false},
		{"QU\nJD", false},
		{"Q", false},
		{"-_-_", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if _, ok := decodeSegment(tt.in); ok != tt.ok {
				t.Errorf("decodeSegment(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
		})
	}
}
