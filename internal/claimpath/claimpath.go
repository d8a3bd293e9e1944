// Package claimpath owns the one rule for naming a claim in a token (SPEC.md
// 2, roles_claim): an exact top-level claim name wins
// ("https://example.com/roles"), else the dots descend through nested
// objects ("realm_access.roles"). Every package that reads claims by path
// (jwks over its decoded and its raw claims, policy through jwks, proxy for
// the injected headers) goes through Lookup, so the rule cannot drift. It
// is a leaf package: the standard library only.
package claimpath

import "strings"

// Lookup finds path in a claim set of any representation. top looks up a
// top-level claim by name; member looks up name in a value that is a JSON
// object and reports false when the value is not an object or lacks the
// member. Lookup itself does not allocate; top and member are called with
// substrings of path.
func Lookup[V any](path string, top func(name string) (V, bool), member func(v V, name string) (V, bool)) (V, bool) {
	if v, ok := top(path); ok {
		return v, true
	}
	name, rest, more := strings.Cut(path, ".")
	if !more {
		var zero V
		return zero, false
	}
	v, ok := top(name)
	for ok {
		name, rest, more = strings.Cut(rest, ".")
		if v, ok = member(v, name); !ok || !more {
			return v, ok
		}
	}
	var zero V
	return zero, false
}

// Root returns the top-level claim that path reads in a claim set where
// has reports which top-level names exist: path itself when it is one,
// else its first dot-separated name. A verifier that keeps only some
// claims keeps Root(path) for each path it will be asked for.
func Root(path string, has func(name string) bool) string {
	if has(path) {
		return path
	}
	first, _, _ := strings.Cut(path, ".")
	return first
}

// InMap is Lookup over claims as encoding/json decodes a JSON object:
// nested objects are map[string]any.
func InMap(m map[string]any, path string) (any, bool) {
	return Lookup(path,
		func(name string) (any, bool) { v, ok := m[name]; return v, ok },
		member)
}

// member looks name up in v when v is a decoded JSON object.
func member(v any, name string) (any, bool) {
	o, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	x, ok := o[name]
	return x, ok
}
