package policy

// Claims gives access to a verified token's claims by claim path (the jwks
// package implements it: an exact top-level claim name first, else dots
// descend). Values are as encoding/json decodes them: string, float64, bool,
// nil, []any, map[string]any.
type Claims interface {
	Claim(path string) (any, bool)
}

// Subject is the verified caller: roles and scopes read from the token by
// the issuer's roles_claim and scopes_claim, and all its claims.
type Subject struct {
	Roles, Scopes []string
	Claims        Claims
}

// Reason is the reason code of a decision: the `error` body codes of SPEC.md
// 4 for denials, "ok" or "public" for allowed requests. It is the metrics
// `reason` label and the audit `reason`.
type Reason string

const (
	ReasonOK                Reason = "ok"                 // allowed: a verified token met every requirement
	ReasonPublic            Reason = "public"             // allowed without a token
	ReasonMissingToken      Reason = "missing_token"      // denied 401: the route needs a token
	ReasonInsufficientScope Reason = "insufficient_scope" // denied 403: roles, scopes or claims not met
	ReasonForbidden         Reason = "forbidden"          // denied 403: unmatched with `default: deny`
)

// Decision is the outcome for one request.
type Decision struct {
	Allow  bool
	Reason Reason
	Route  *Route
	// Detail says which check denied, in words, for the audit event's
	// data.detail and the debug log (SPEC.md 15): "no token" for
	// missing_token, "no route matched" for forbidden, and for
	// insufficient_scope the first failed requirement as configured:
	// "roles any [user admin]", "roles all [admin]", "scopes all
	// [orders:write]", "claim email_verified" (the claim path, never a
	// value). "" when allowed. The strings are built at load.
	Detail string
}

// Details of the denials that do not depend on the route.
const (
	DetailNoToken = "no token"
	DetailNoRoute = "no route matched"
)

// Decide decides for s, the verified subject, or nil when no token was
// presented (the proxy passes nil on AuthNone routes too; invalid tokens are
// the verifier's answer and never reach Decide). It does not allocate.
//
//   - the default route of `default: deny`: deny, forbidden, whatever s is;
//   - AuthNone: allow, public;
//   - no subject: AuthRequired denies missing_token; AuthOptional allows
//     public, always ("never deny for absence", SPEC.md 2; Decode refuses
//     optional routes with requirements, which could not hold without a
//     token);
//   - a subject: allow ok when every requirement (roles any/all, scopes
//     any/all, claims equalities) holds, else deny insufficient_scope.
func (r *Route) Decide(s *Subject) Decision {
	switch {
	case r.deny:
		return Decision{Reason: ReasonForbidden, Route: r, Detail: DetailNoRoute}
	case r.Auth == AuthNone:
		return Decision{Allow: true, Reason: ReasonPublic, Route: r}
	case s == nil:
		if r.Auth == AuthOptional {
			return Decision{Allow: true, Reason: ReasonPublic, Route: r}
		}
		return Decision{Reason: ReasonMissingToken, Route: r, Detail: DetailNoToken}
	}
	if detail, failed := r.unmet(s); failed {
		return Decision{Reason: ReasonInsufficientScope, Route: r, Detail: detail}
	}
	return Decision{Allow: true, Reason: ReasonOK, Route: r}
}

// unmet reports whether s fails a requirement, with the detail of the
// first it fails, in the order roles, scopes, claims (file order).
func (r *Route) unmet(s *Subject) (string, bool) {
	if d, failed := r.roles.unmet(s.Roles); failed {
		return d, true
	}
	if d, failed := r.scopes.unmet(s.Scopes); failed {
		return d, true
	}
	for i := range r.claims {
		c := &r.claims[i]
		if s.Claims == nil {
			return c.detail, true
		}
		v, ok := s.Claims.Claim(c.path)
		if !ok || !c.met(v) {
			return c.detail, true
		}
	}
	return "", false
}
