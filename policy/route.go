package policy

import (
	"regexp"
	"slices"

	"github.com/gatehouse/gatehouse/policy/expr"
)

// Auth says whether a route looks at a token.
type Auth uint8

const (
	// AuthRequired (the default): a verified token is needed.
	AuthRequired Auth = iota
	// AuthOptional: a token is verified when present; its absence never
	// denies. It cannot be combined with roles, scopes or claims (Decode
	// refuses that: they could not hold without a token).
	AuthOptional
	// AuthNone: no token is looked at.
	AuthNone
)

func (a Auth) String() string {
	switch a {
	case AuthRequired:
		return "required"
	case AuthOptional:
		return "optional"
	case AuthNone:
		return "none"
	}
	return "unknown"
}

// kind is the form of a location (SPEC.md 3).
type kind uint8

const (
	kindDefault    kind = iota // the `default` route: no location
	kindExact                  // = /path
	kindPrefix                 // /prefix
	kindPrefixStop             // ^~ /prefix: when longest, regexes are not tried
	kindRegex                  // ~ regex
	kindRegexFold              // ~* regex (case-insensitive)
)

// Route is one entry of `routes`, or the `default` route. Routes are built
// by Decode and never change afterwards.
type Route struct {
	// Name is the route's `name` when given (unique among routes), else
	// the location string as written in the file ("= /login",
	// "/api/orders/", "~ ^/admin(/|$)"), or "default". It is the metrics
	// `route` label and the audit `route`.
	Name string
	// Location is the location string as written in the file; "" for the
	// default route.
	Location string
	// Index is the position of the route in Engine.Routes.
	Index int
	// Auth is the route's `auth` (AuthRequired when not given).
	Auth Auth
	// Upstream is the per-route upstream URL; "" means the global one.
	// Validated as http://host[:port][/path], https://... or
	// unix:///abs/path.sock.
	Upstream string
	// UpstreamProtocol is the per-route `upstream_protocol` (http1, h2c or
	// h2); "" means the global one. Whether it fits the upstream's scheme
	// is the proxy's check: only it knows the global upstream.
	UpstreamProtocol string

	kind  kind
	value string         // the path or regex after the modifier
	re    *regexp.Regexp // kindRegex, kindRegexFold
	// rePre and reSuf are literals every match must start and end with
	// (anchored regexes such as ^/admin(/|$) or \.php$), checked before
	// running the regex: with many regexes most are ruled out by a string
	// compare. The Fold flags say to compare ASCII case-insensitively.
	rePre, reSuf         string
	rePreFold, reSufFold bool
	// methods admitted, literally (HEAD only when listed); nil means every
	// method.
	methods   []string
	line, col int       // the location's position, for duplicate errors and warnings
	sem       semantics // how the route's upstream reads a path (`paths`)
	// nameLine and nameCol are the position of `name`; 0 when unnamed.
	nameLine, nameCol int

	deny   bool // the default route of `default: deny`
	roles  requirement
	scopes requirement
	claims []claimReq
	when   *expr.Program // nil: no `when`
	// shadowOf is the `shadow` of the default route body, nil without one.
	shadowOf *Route

	// Shadow routes (`shadow: true`, or the `shadow` of `default`) are
	// matched and decided only to record what they would decide
	// (Engine.Shadow); Engine.Match never returns one.
	Shadow bool
}

// requirement is a `roles` or `scopes` mapping: any (at least one of) and
// all (every one of). A nil list is no requirement.
type requirement struct {
	any, all []string
	// anyDetail and allDetail are the Decision.Detail of a failed any or
	// all ("roles any [user admin]"), built at load so Decide does not
	// allocate.
	anyDetail, allDetail string
}

func (q requirement) empty() bool { return q.any == nil && q.all == nil }

// unmet reports whether have fails q, with the detail of the failed part.
func (q *requirement) unmet(have []string) (string, bool) {
	if q.any != nil && !containsAny(have, q.any) {
		return q.anyDetail, true
	}
	for _, w := range q.all {
		if !slices.Contains(have, w) {
			return q.allDetail, true
		}
	}
	return "", false
}

func containsAny(have, want []string) bool {
	for _, w := range want {
		if slices.Contains(have, w) {
			return true
		}
	}
	return false
}

// claimReq is one `claims` entry: the claim at path must equal the value.
type claimReq struct {
	path   string
	detail string // "claim PATH": the path only, never a value
	// exactly one of these is set, by the YAML type of the required value
	kind claimKind
	str  string
	num  float64
	bool bool
}

type claimKind uint8

const (
	claimString claimKind = iota
	claimNumber
	claimBool
)

// met compares with a value as encoding/json decodes it: strings equal
// strings, booleans booleans, numbers numerically (as float64). No
// conversions across types: "5" is not 5, "true" is not true.
func (c *claimReq) met(v any) bool {
	switch c.kind {
	case claimString:
		s, ok := v.(string)
		return ok && s == c.str
	case claimBool:
		b, ok := v.(bool)
		return ok && b == c.bool
	case claimNumber:
		switch n := v.(type) {
		case float64:
			return n == c.num
		case int:
			return float64(n) == c.num
		case int64:
			return float64(n) == c.num
		}
	}
	return false
}

// admits reports whether the route takes part in matching for method: the
// route's methods include it (SPEC.md 3), compared literally. GET does not
// admit HEAD: a route that should answer HEAD lists it.
func (r *Route) admits(method string) bool {
	return r.methods == nil || slices.Contains(r.methods, method)
}

// hasRequirements reports whether the route asks anything of a token.
func (r *Route) hasRequirements() bool {
	return !r.roles.empty() || !r.scopes.empty() || len(r.claims) > 0
}

// ClaimPaths returns the claim paths of the route's `claims` rules: what
// Decide will ask Subject.Claims for.
// The claims a `when` condition reads are among them.
func (r *Route) ClaimPaths() []string {
	out := make([]string, len(r.claims))
	for i := range r.claims {
		out[i] = r.claims[i].path
	}
	if r.when != nil {
		out = append(out, r.when.ClaimNames()...)
	}
	if r.shadowOf != nil { // the default's shadow is not among Engine.Routes
		out = append(out, r.shadowOf.ClaimPaths()...)
	}
	return out
}
