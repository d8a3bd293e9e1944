package jwks

import (
	"encoding/json"
	"fmt"
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
	// The same reading as a verified token's, subject_claim included; only
	// exp may be absent here (a policy case need not invent one).
	exp, _ := all["exp"].(float64)
	if !saneTime(exp) {
		exp = 0
	}
	res, e := newResult(is, obj, exp)
	if e != nil {
		return nil, fmt.Errorf("claims: %s", e.Msg)
	}
	res.Issuer, res.claims = is.Name, all
	if exp == 0 {
		res.Expiry, res.NotAfter = time.Time{}, time.Time{}
	}
	return res, nil
}
