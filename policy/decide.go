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
	// Err is why the route's `when` could not be evaluated (a missing key,
	// a failed conversion, the cost limit): the request is denied
	// insufficient_scope, and the caller logs Err.
	Err error
}

// Details of the denials that do not depend on the route.
const (
	DetailNoToken = "no token"
	DetailNoRoute = "no route matched"
	DetailWhen    = "when" // the route's `when` was false or could not be evaluated (Err)
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
//
// A route with `when` is decided by DecideRequest; Decide evaluates its
// condition over an empty request.
func (r *Route) Decide(s *Subject) Decision { return r.DecideRequest(s, nil) }

// DecideRequest is Decide for a route whose `when` reads the request req
// (nil: an empty request). The condition is evaluated last, once every
// other requirement holds, on every auth mode (claims is empty without a
// token); false or an evaluation error denies insufficient_scope. Without
// `when` req is not read, and it does not allocate.
func (r *Route) DecideRequest(s *Subject, req *Request) Decision {
	switch {
	case r.deny:
		return Decision{Reason: ReasonForbidden, Route: r, Detail: DetailNoRoute}
	case r.Auth == AuthNone:
		return r.decideWhen(Decision{Allow: true, Reason: ReasonPublic, Route: r}, nil, req)
	case s == nil:
		if r.Auth == AuthOptional {
			return r.decideWhen(Decision{Allow: true, Reason: ReasonPublic, Route: r}, nil, req)
		}
		return Decision{Reason: ReasonMissingToken, Route: r, Detail: DetailNoToken}
	}
	if detail, failed := r.unmet(s); failed {
		return Decision{Reason: ReasonInsufficientScope, Route: r, Detail: detail}
	}
	return r.decideWhen(Decision{Allow: true, Reason: ReasonOK, Route: r}, s, req)
}

// decideWhen turns allow into a denial when the route's condition does not
// hold.
func (r *Route) decideWhen(allow Decision, s *Subject, req *Request) Decision {
	if r.when == nil {
		return allow
	}
	ok, err := r.evalWhen(s, req)
	if ok {
		return allow
	}
	return Decision{Reason: ReasonInsufficientScope, Route: r, Detail: DetailWhen, Err: err}
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
