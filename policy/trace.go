package policy

import (
	"fmt"
)

// Step is one route as `gatehouse explain` shows it: considered in nginx
// order, and why it matched or not.
type Step struct {
	Route   string `json:"route"`
	Line    int    `json:"line,omitempty"`
	Matched bool   `json:"matched"`
	Winner  bool   `json:"winner,omitempty"`
	Why     string `json:"why"`
}

// Trace explains Match for method and path: one Step per route, in the
// order nginx considers them (exact locations, prefixes, regexes in file
// order, then the default), each with why it won or not, and the winner,
// which is Match's own answer (Trace does not re-implement the order; it
// describes each route against it). Shadow routes are shown and never win.
func (e *Engine) Trace(method, path string) ([]Step, *Route) {
	winner := e.Match(method, path)
	var steps []Step
	step := func(r *Route, why string, args ...any) {
		steps = append(steps, Step{Route: r.Name, Line: r.line, Matched: r.matchesPath(path) && r.admits(method) && !r.Shadow,
			Winner: r == winner, Why: fmt.Sprintf(why, args...)})
	}
	// why a route that matches by path does not take part
	out := func(r *Route) string {
		switch {
		case r.Shadow:
			return "shadow route: decided and recorded only, not enforced"
		case !r.admits(method):
			return fmt.Sprintf("method %s not in methods %v", method, r.methods)
		}
		return ""
	}
	routes := e.routes[:len(e.routes)-1]
	for _, r := range routes {
		if r.kind != kindExact {
			continue
		}
		switch {
		case !r.matchesPath(path):
			step(r, "exact: path is not %q", r.value)
		case out(r) != "":
			step(r, "exact match, but %s", out(r))
		case r == winner:
			step(r, "exact match: wins at once")
		default:
			step(r, "exact match, but an earlier exact route wins")
		}
	}
	for _, r := range routes {
		if r.kind != kindPrefix && r.kind != kindPrefixStop {
			continue
		}
		switch {
		case !r.matchesPath(path):
			step(r, "prefix: path does not start with %q", r.value)
		case out(r) != "":
			step(r, "prefix matches, but %s", out(r))
		case r == winner && r.kind == kindPrefixStop:
			step(r, "longest matching prefix, ^~: wins, regexes are not tried")
		case r == winner:
			step(r, "longest matching prefix, and no regex matched: wins")
		case winner.kind == kindExact:
			step(r, "prefix matches, but an exact location won")
		case winner.kind == kindRegex || winner.kind == kindRegexFold:
			step(r, "prefix matches, but a regex matched (regexes win over a plain prefix)")
		default:
			step(r, "prefix matches, but a longer (or earlier) prefix wins")
		}
	}
	for _, r := range routes {
		if r.kind != kindRegex && r.kind != kindRegexFold {
			continue
		}
		switch {
		case winner.kind == kindExact:
			step(r, "not tried: an exact location won")
		case winner.kind == kindPrefixStop:
			step(r, "not tried: a ^~ prefix won")
		case (winner.kind == kindRegex || winner.kind == kindRegexFold) && r.Index > winner.Index:
			step(r, "not tried: an earlier regex matched")
		case !r.matchesPath(path):
			step(r, "regex does not match")
		case out(r) != "":
			step(r, "regex matches, but %s", out(r))
		default:
			step(r, "first regex in file order that matches: wins")
		}
	}
	if winner == e.def {
		steps = append(steps, Step{Route: "default", Matched: true, Winner: true, Why: "nothing matched: the default"})
	}
	return steps, winner
}

// Check is one requirement of a route and whether it held.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Explain lists the route's requirements for s and req with their results,
// in the order DecideRequest checks them. The decision itself is
// DecideRequest's.
func (r *Route) Explain(s *Subject, req *Request) []Check {
	var out []Check
	add := func(ok bool, name, detail string, args ...any) {
		out = append(out, Check{Name: name, OK: ok, Detail: fmt.Sprintf(detail, args...)})
	}
	switch {
	case r.deny:
		add(false, "default: deny", "unmatched requests are denied")
		return out
	case r.Auth == AuthNone:
		add(true, "auth: none", "no token is looked at")
	case s == nil && r.Auth == AuthOptional:
		add(true, "auth: optional", "no token: allowed without one")
	case s == nil:
		add(false, "auth: required", "no token")
		return out
	default:
		add(true, "auth: "+r.Auth.String(), "token given")
	}
	if s != nil {
		req := func(what string, q requirement, have []string) {
			if q.any != nil {
				add(containsAny(have, q.any), fmt.Sprintf("%s any %v", what, q.any), "token has %v", have)
			}
			if q.all != nil {
				all := requirement{all: q.all}
				_, failed := all.unmet(have)
				add(!failed, fmt.Sprintf("%s all %v", what, q.all), "token has %v", have)
			}
		}
		req("roles", r.roles, s.Roles)
		req("scopes", r.scopes, s.Scopes)
		for i := range r.claims {
			c := &r.claims[i]
			var v any
			ok := false
			if s.Claims != nil {
				v, ok = s.Claims.Claim(c.path)
			}
			want := c.want()
			if !ok {
				add(false, fmt.Sprintf("claims %s = %v", c.path, want), "claim absent")
			} else {
				add(c.met(v), fmt.Sprintf("claims %s = %v", c.path, want), "token has %v", v)
			}
		}
	}
	if r.when != nil {
		ok, err := r.evalWhen(s, req)
		switch {
		case err != nil:
			add(false, "when "+r.when.Source, "evaluation error: %v", err)
		case ok:
			add(true, "when "+r.when.Source, "true")
		default:
			add(false, "when "+r.when.Source, "false")
		}
	}
	return out
}

func (c *claimReq) want() any {
	switch c.kind {
	case claimBool:
		return c.bool
	case claimNumber:
		return c.num
	}
	return fmt.Sprintf("%q", c.str)
}
