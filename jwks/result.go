package jwks

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
	"time"
)

// Result is a verified token. It is shared between requests (the token
// cache holds it): treat it as read-only, except Memo.
type Result struct {
	Issuer, JTI, Kid string
	// Subject is the issuer's subject_claim (default sub): a string as is,
	// a number in plain decimal; "" when absent or of another type.
	Subject string
	Expiry  time.Time // exp
	// IssuedAt is iat in Unix seconds (rounded down), 0 when absent: a
	// revocation by subject compares it without building a time.Time.
	IssuedAt      int64
	NotAfter      time.Time // exp + leeway: an upgraded connection closes then
	Roles, Scopes []string  // from roles_claim / scopes_claim

	// IDHash is HashString of JTI, Subject and Kid, computed once when the
	// token verifies: a per-request check against a large table (the
	// revocation store) starts from it instead of hashing three strings on
	// every cache hit. A zero element means "not computed".
	IDHash [3]uint64

	// Memo belongs to the caller (the proxy keeps the headers it rendered
	// for this result here); jwks never reads or writes it.
	Memo atomic.Value

	claims map[string]any // every claim; nil when the verifier keeps only some
	kept   []keptClaim    // the kept top-level claims (Options.KeepClaims)
}

// hashSeed is fixed per process: IDHash values are only compared within it.
var hashSeed = maphash.MakeSeed()

// HashString is the hash IDHash holds.
func HashString(s string) uint64 { return maphash.String(hashSeed, s) }

// keptClaim is one top-level claim a verifier keeps. A few of them in a
// slice cost a fraction of a map's memory, times 10,000 cached tokens.
type keptClaim struct {
	name string
	v    any
}

// Claim looks a claim path up in the verified claims: an exact top-level
// name wins (https://example.com/roles), else dots descend
// (realm_access.roles). Values are as encoding/json decodes them: string,
// float64, bool, nil, []any, map[string]any. It does not allocate.
func (r *Result) Claim(path string) (any, bool) {
	n := claimNode{m: r.claims, kept: r.kept}
	if n.m == nil && n.kept == nil {
		return nil, false // nothing kept
	}
	v, ok := lookupPath(n, path)
	return v.v, ok
}

// keepClaims decodes the top-level claims that paths can reach: the exact
// name when the payload has it, else the first dot segment, so that
// Result.Claim answers every one of paths as it would on the full claims.
// ok is false when one of them does not decode (a number beyond float64).
func keepClaims(claims object, paths []string) ([]keptClaim, bool) {
	out := make([]keptClaim, 0, len(paths))
	ok := true
	add := func(name string) {
		raw, present := claims.get(name)
		if !present {
			return
		}
		for _, c := range out {
			if c.name == name {
				return
			}
		}
		v, good := rawValue(raw)
		ok = ok && good
		out = append(out, keptClaim{name, v})
	}
	for _, p := range paths {
		if _, present := claims.get(p); present {
			add(p)
			continue
		}
		first, _, _ := strings.Cut(p, ".")
		add(first)
	}
	return out, ok
}
