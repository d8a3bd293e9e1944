package jwks

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// ClaimsResult is the Result a token carrying claims would give once
// verified by the issuer entry is: roles and scopes read by its roles_claim
// and scopes_claim, sub, jti and exp. No signature, time, audience or
// required-claim check is made: it serves `gatehouse explain -claims` and
// policy tests (SPEC.md 13), which say so. Every claim is kept.
func ClaimsResult(is *Issuer, claims map[string]any) (*Result, error) {
	data, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	var all map[string]any
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	obj, isObj, _ := parseObject(data, nil)
	if !isObj {
		return nil, fmt.Errorf("claims: not an object")
	}
	res := &Result{Issuer: is.Name, claims: all}
	var ok bool
	if res.Subject, ok = optString(obj, "sub"); !ok {
		return nil, fmt.Errorf("claims: sub is not a string")
	}
	if res.JTI, ok = optString(obj, "jti"); !ok {
		return nil, fmt.Errorf("claims: jti is not a string")
	}
	if exp, ok := all["exp"].(float64); ok && saneTime(exp) {
		sec, frac := math.Modf(exp)
		res.Expiry = time.Unix(int64(sec), int64(frac*1e9))
		res.NotAfter = res.Expiry.Add(is.Leeway)
	}
	if raw, ok := obj.lookup(is.RolesClaim); ok {
		res.Roles = stringList(raw)
	}
	if raw, ok := obj.lookup(is.ScopesClaim); ok {
		res.Scopes = stringList(raw)
	}
	return res, nil
}
