package proxy

import (
	"testing"

	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// TestReasonTable: every slot of the table is filled, codes are distinct,
// only ok and public allow, and the statuses are those of SPEC.md 4 (and
// the part-two table).
func TestReasonTable(t *testing.T) {
	want := map[string]int{
		"ok": 200, "public": 200, "missing_token": 401, "invalid_token": 401, "token_expired": 401,
		"token_revoked": 401, "insufficient_scope": 403, "forbidden": 403, "bad_request": 400,
		"keys_unavailable": 503, "upstream_unavailable": 502, "upstream_timeout": 504,
		"payload_too_large": 413, "too_many_requests": 429, "no_inbound_token": 403,
		"token_unavailable": 502, "internal_error": 500,
	}
	seen := map[string]bool{}
	for r := reason(0); r < numReasons; r++ {
		in := r.info()
		if in.code == "" || seen[in.code] {
			t.Errorf("reason %d: code %q empty or repeated", r, in.code)
		}
		seen[in.code] = true
		if st, ok := want[in.code]; !ok || st != in.status {
			t.Errorf("reason %q: status %d, want %d", in.code, in.status, st)
		}
		if in.allow != (in.code == "ok" || in.code == "public") {
			t.Errorf("reason %q: allow = %v", in.code, in.allow)
		}
		if !in.allow && in.message == "" {
			t.Errorf("reason %q: no client message", in.code)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("table has %d reasons, want %d", len(seen), len(want))
	}
}

// TestReasonMappings: policy's and jwks's reasons land on the proxy reason
// of the same code, in the one mapping of each.
func TestReasonMappings(t *testing.T) {
	for _, pr := range []policy.Reason{policy.ReasonOK, policy.ReasonPublic, policy.ReasonMissingToken, policy.ReasonInsufficientScope, policy.ReasonForbidden} {
		if got := fromPolicy(pr).String(); got != string(pr) {
			t.Errorf("fromPolicy(%q) = %q", pr, got)
		}
	}
	for _, jr := range []jwks.Reason{jwks.ReasonInvalid, jwks.ReasonExpired, jwks.ReasonKeysUnavailable} {
		if got := fromJWKS(jr).String(); got != jr.Code() {
			t.Errorf("fromJWKS(%v) = %q, want %q", jr, got, jr.Code())
		}
	}
}
