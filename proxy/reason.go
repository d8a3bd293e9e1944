package proxy

import (
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// reason is why gatehouse answered a request the way it did: the `error`
// body code of SPEC.md 4 (and the part-two table after section 8), the
// `reason` label of gatehouse_requests_total and the audit `reason`. It
// indexes reasons, the one table from which every rendering (the JSON body
// today, gRPC trailers next), the metrics and the audit event read; a
// reason that is not in the table cannot be written down.
type reason uint8

const (
	reasonOK reason = iota
	reasonPublic
	reasonMissingToken
	reasonInvalidToken
	reasonTokenExpired
	reasonTokenRevoked
	reasonInsufficientScope
	reasonForbidden
	reasonBadRequest
	reasonKeysUnavailable
	reasonUpstreamUnavailable
	reasonUpstreamTimeout
	reasonPayloadTooLarge
	reasonTooManyRequests
	reasonNoInboundToken
	reasonTokenUnavailable
	// reasonInternalError answers a panic on the request path. It is not in
	// SPEC.md 4: a 500 is gatehouse's own bug, and the client still gets the
	// JSON body every other refusal has.
	reasonInternalError

	numReasons // the size of the table, not a reason
)

// A 431 (request line and headers over limits.max_header_bytes) is absent
// on purpose: Go's server answers it before gatehouse sees the request, so
// no handler code could record or render it.

// reasonInfo is how one reason is answered. Client text is fixed per
// reason: never an err.Error() that could echo the token or internals back.
type reasonInfo struct {
	code    string
	status  int
	message string
	www     string // WWW-Authenticate, "" for none
	allow   bool
}

var reasons = [numReasons]reasonInfo{
	reasonOK:                  {code: "ok", status: 200, allow: true},
	reasonPublic:              {code: "public", status: 200, allow: true},
	reasonMissingToken:        {"missing_token", 401, "a bearer token is required", `Bearer realm="gatehouse"`, false},
	reasonInvalidToken:        {"invalid_token", 401, "the token is not valid", `Bearer realm="gatehouse", error="invalid_token"`, false},
	reasonTokenExpired:        {"token_expired", 401, "the token has expired or is not yet valid", `Bearer realm="gatehouse", error="invalid_token"`, false},
	reasonTokenRevoked:        {"token_revoked", 401, "the token has been revoked", `Bearer realm="gatehouse", error="invalid_token"`, false},
	reasonInsufficientScope:   {"insufficient_scope", 403, "the token does not grant access to this resource", `Bearer realm="gatehouse", error="insufficient_scope"`, false},
	reasonForbidden:           {"forbidden", 403, "no route allows this request", "", false},
	reasonBadRequest:          {"bad_request", 400, "the request path or body is malformed", "", false},
	reasonKeysUnavailable:     {"keys_unavailable", 503, "the keys to verify this token are not available", "", false},
	reasonUpstreamUnavailable: {"upstream_unavailable", 502, "the upstream could not be reached", "", false},
	reasonUpstreamTimeout:     {"upstream_timeout", 504, "the upstream did not answer in time", "", false},
	reasonPayloadTooLarge:     {"payload_too_large", 413, "the request body is too large", "", false},
	reasonTooManyRequests:     {"too_many_requests", 429, "too many failed authentications from this client", "", false},
	reasonNoInboundToken:      {"no_inbound_token", 403, "there is no inbound token to propagate", "", false},
	reasonTokenUnavailable:    {"token_unavailable", 502, "the identity provider gave no token", "", false},
	reasonInternalError:       {"internal_error", 500, "gatehouse failed to handle this request", "", false},
}

func (r reason) info() *reasonInfo { return &reasons[r] }
func (r reason) String() string    { return reasons[r].code }
func (r reason) allowed() bool     { return reasons[r].allow }

// decision is the `decision` of metrics and audit for r.
func (r reason) decision() string {
	if reasons[r].allow {
		return "allow"
	}
	return "deny"
}

// fromPolicy is the one place where a policy decision's reason becomes
// gatehouse's. A reason policy adds without a case here is a deny
// (forbidden): the safe answer, and the reason tests catch the gap.
func fromPolicy(r policy.Reason) reason {
	switch r {
	case policy.ReasonOK:
		return reasonOK
	case policy.ReasonPublic:
		return reasonPublic
	case policy.ReasonMissingToken:
		return reasonMissingToken
	case policy.ReasonInsufficientScope:
		return reasonInsufficientScope
	}
	return reasonForbidden
}

// fromJWKS is the one place where a verifier's reason becomes gatehouse's.
// Anything the verifier refuses for a reason this switch does not know is
// an invalid token.
func fromJWKS(r jwks.Reason) reason {
	switch r {
	case jwks.ReasonExpired:
		return reasonTokenExpired
	case jwks.ReasonKeysUnavailable:
		return reasonKeysUnavailable
	}
	return reasonInvalidToken
}
