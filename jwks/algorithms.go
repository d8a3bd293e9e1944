package jwks

import (
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// candidates picks the keys to try: those with the token's kid (or, when no
// key has it, the keys without a kid, as PEM and HMAC sources have), each of
// which must fit alg; without a kid, up to maxKidlessTry keys that fit.
func candidates(ks *keySet, kid string, kidSet bool, alg string) ([]*key, *Error) {
	var out []*key
	if kidSet {
		matched := false
		for _, k := range ks.keys {
			if k.kid == kid {
				matched = true
				if k.fits(alg) {
					out = append(out, k)
				}
			}
		}
		if !matched {
			for _, k := range ks.keys {
				if k.kid == "" && k.fits(alg) {
					out = append(out, k)
				}
			}
			if len(out) == 0 {
				return nil, errUnknownKid
			}
		}
		if len(out) == 0 {
			return nil, errAlgKey
		}
		return out, nil
	}
	for _, k := range ks.keys {
		if k.fits(alg) {
			out = append(out, k)
			if len(out) == maxKidlessTry {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, errAlgKey
	}
	return out, nil
}

// verifiers are jwx's signature verifiers, made once. We call them directly
// on the signing input we already split and checked, instead of jws.Verify,
// which would parse the token a second time (see BENCHMARKS.md).
var verifiers = func() map[string]jws.Verifier {
	m := map[string]jws.Verifier{}
	for _, a := range knownAlgs {
		ver, err := jws.NewVerifier(jwa.SignatureAlgorithm(a))
		if err != nil {
			panic("jwks: no jwx verifier for " + a)
		}
		m[a] = ver
	}
	return m
}()

// typeAllowed compares typ with the allowed types case-insensitively,
// treating "application/at+jwt" and "at+jwt" as the same (RFC 7515 4.1.9).
func typeAllowed(types []string, typ string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		return strings.TrimPrefix(s, "application/")
	}
	t := norm(typ)
	for _, a := range types {
		if norm(a) == t {
			return true
		}
	}
	return false
}
