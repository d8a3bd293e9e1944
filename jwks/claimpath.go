package jwks

import "strings"

// lookupPath is the claim-path rule of SPEC.md 2, the one implementation in
// this package (Result.Claim over decoded claims, object.lookup over the raw
// JSON of a payload): an exact top-level name wins
// (https://example.com/roles), else dots descend through nested objects
// (realm_access.roles). get looks a name up in one object; sub turns a
// value into an object, or says it is none.
func lookupPath[O, V any](top O, path string, get func(O, string) (V, bool), sub func(V) (O, bool)) (V, bool) {
	if v, ok := get(top, path); ok || !strings.Contains(path, ".") {
		return v, ok
	}
	cur, rest := top, path
	for {
		name, tail, more := strings.Cut(rest, ".")
		v, ok := get(cur, name)
		if !ok || !more {
			return v, ok
		}
		if cur, ok = sub(v); !ok {
			var zero V
			return zero, false
		}
		rest = tail
	}
}

// claimObject is one object of decoded claims: the top level of a Result
// (all claims in m, or only the kept ones) or a nested object (m).
type claimObject struct {
	m    map[string]any
	kept []keptClaim
}

func (o claimObject) get(name string) (any, bool) {
	if o.m != nil {
		v, ok := o.m[name]
		return v, ok
	}
	for _, c := range o.kept {
		if c.name == name {
			return c.v, true
		}
	}
	return nil, false
}

func subClaimObject(v any) (claimObject, bool) {
	m, ok := v.(map[string]any)
	return claimObject{m: m}, ok
}

// lookup finds a claim path in a raw payload (lookupPath's rule).
func (o object) lookup(path string) ([]byte, bool) {
	return lookupPath(o, path, object.get, subObject)
}

func subObject(raw []byte) (object, bool) {
	next, isObj, _ := parseObject(raw, nil)
	return next, isObj
}
