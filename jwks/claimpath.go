package jwks

import "strings"

// lookupPath is the claim-path rule of SPEC.md 2, the one implementation in
// this package (Result.Claim over decoded claims, object.lookup over the raw
// JSON of a payload being verified): an exact top-level name wins
// (https://example.com/roles), else dots descend through nested objects
// (realm_access.roles).
//
// It is one concrete function over claimNode rather than a generic one:
// the generic version was called through a dictionary, which made the
// verify path's stack buffers of members escape (two allocations, 1.5 KiB
// more per cold verification in BenchmarkVerifyCold).
func lookupPath(top claimNode, path string) (claimValue, bool) {
	if v, ok := top.get(path); ok || !strings.Contains(path, ".") {
		return v, ok
	}
	cur, rest := top, path
	for {
		name, tail, more := strings.Cut(rest, ".")
		v, ok := cur.get(name)
		if !ok || !more {
			return v, ok
		}
		if cur, ok = v.object(); !ok {
			return claimValue{}, false
		}
		rest = tail
	}
}

// claimNode is one object of claims: raw JSON members (raw), or decoded
// claims (m; at the top of a Result that keeps only some, kept).
type claimNode struct {
	raw  object
	m    map[string]any
	kept []keptClaim
}

// claimValue is a value in a claimNode of the same form: raw JSON, or decoded.
type claimValue struct {
	raw     []byte
	v       any
	decoded bool
}

func (n claimNode) get(name string) (claimValue, bool) {
	switch {
	case n.m != nil:
		v, ok := n.m[name]
		return claimValue{v: v, decoded: true}, ok
	case n.kept != nil:
		for _, c := range n.kept {
			if c.name == name {
				return claimValue{v: c.v, decoded: true}, true
			}
		}
		return claimValue{}, false
	}
	raw, ok := n.raw.get(name)
	return claimValue{raw: raw}, ok
}

// object is the value as a node to descend into, if it is a JSON object.
func (v claimValue) object() (claimNode, bool) {
	if v.decoded {
		m, ok := v.v.(map[string]any)
		return claimNode{m: m}, ok
	}
	next, isObj, _ := parseObject(v.raw, nil)
	return claimNode{raw: next}, isObj
}

// lookup finds a claim path in a raw payload (lookupPath's rule).
func (o object) lookup(path string) ([]byte, bool) {
	v, ok := lookupPath(claimNode{raw: o}, path)
	return v.raw, ok
}
