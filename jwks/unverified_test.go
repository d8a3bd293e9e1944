package jwks

import (
	"slices"
	"testing"
)

// TestClaimsResult: claims given directly are read by the issuer entry's
// roles_claim and scopes_claim, as a verified token's would be.
func TestClaimsResult(t *testing.T) {
	is := &Issuer{Name: "https://i", RolesClaim: "realm_access.roles", ScopesClaim: "scp"}
	res, err := ClaimsResult(is, map[string]any{
		"sub": "alice", "jti": "j1", "exp": 2000000000, "tenant": "acme",
		"realm_access": map[string]any{"roles": []any{"user", "support"}},
		"scp":          "orders:read orders:write",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Subject != "alice" || res.JTI != "j1" || res.Issuer != "https://i" || res.Expiry.Unix() != 2000000000 {
		t.Errorf("ClaimsResult = %+v", res)
	}
	if !slices.Equal(res.Roles, []string{"user", "support"}) || !slices.Equal(res.Scopes, []string{"orders:read", "orders:write"}) {
		t.Errorf("roles %v scopes %v", res.Roles, res.Scopes)
	}
	if v, ok := res.Claim("tenant"); !ok || v != "acme" {
		t.Errorf("Claim(tenant) = %v, %v", v, ok)
	}
	// subject_claim applies as it does to a verified token (the seeds'
	// tokens name their user userId); no exp is no expiry.
	is.SubjectClaim = "userId"
	if res, err := ClaimsResult(is, map[string]any{"userId": "u-7"}); err != nil || res.Subject != "u-7" || !res.Expiry.IsZero() {
		t.Errorf("with subject_claim userId: %+v, %v; want subject u-7 and no expiry", res, err)
	}
	if _, err := ClaimsResult(is, map[string]any{"sub": 5}); err == nil {
		t.Error("a numeric sub was accepted")
	}
}
