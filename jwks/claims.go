package jwks

import (
	"math"
	"strconv"
	"time"
)

// checkClaims checks the verified claims (exp, nbf, iat, max_lifetime, aud,
// required claims) and builds the result. Numbers are float64, as
// encoding/json decodes them into any: JSON numbers beyond 2^53 lose
// precision, which cannot matter for seconds since 1970.
func checkClaims(cfg *Issuer, claims object, now time.Time) (*Result, *Error) {
	exp, e := checkTimes(cfg, claims, now)
	if e != nil {
		return nil, e
	}
	if !cfg.AnyAudience {
		aud, _ := claims.get("aud")
		if !audienceOK(aud, cfg.Audiences) {
			return nil, errAudience
		}
	}
	for i, c := range cfg.RequiredClaims {
		if raw, ok := claims.lookup(c); !ok || string(raw) == "null" {
			return nil, cfg.requiredErr(i)
		}
	}
	return newResult(cfg, claims, exp)
}

// checkTimes checks exp, nbf, iat and max_lifetime, and returns exp.
func checkTimes(cfg *Issuer, claims object, now time.Time) (float64, *Error) {
	nowS := float64(now.UnixNano()) / 1e9
	leeway := cfg.Leeway.Seconds()
	rawExp, _ := claims.get("exp")
	exp, ok := rawNumber(rawExp)
	if !ok || !saneTime(exp) {
		return 0, errNoExp
	}
	if nowS > exp+leeway {
		return 0, errExpired
	}
	if raw, present := claims.get("nbf"); present {
		nbf, ok := rawNumber(raw)
		if !ok || !saneTime(nbf) {
			return 0, errBadNbf
		}
		if nbf > nowS+leeway {
			return 0, errNotYetValid
		}
	}
	iat, hasIat := 0.0, false
	if raw, present := claims.get("iat"); present {
		if iat, hasIat = rawNumber(raw); !hasIat || !saneTime(iat) {
			return 0, errBadIat
		}
		if iat > nowS+leeway {
			return 0, errIatFuture
		}
	}
	if cfg.MaxLifetime > 0 {
		if !hasIat {
			return 0, errNoIat
		}
		if exp-iat > cfg.MaxLifetime.Seconds() {
			return 0, errLifetime
		}
	}
	return exp, nil
}

// newResult builds the result of checked claims. iss, a string or absent,
// picked the issuer: the caller sets it.
func newResult(cfg *Issuer, claims object, exp float64) (*Result, *Error) {
	res := &Result{}
	// sub and jti are strings when present (RFC 7519 4.1.2, 4.1.7),
	// whichever claim the subject is taken from.
	sub, ok := optString(claims, "sub")
	if !ok {
		return nil, errSubType
	}
	if res.JTI, ok = optString(claims, "jti"); !ok {
		return nil, errJTIType
	}
	res.Subject = sub
	if raw, present := claims.get("iat"); present {
		// checkTimes accepted it: a sane number.
		if iat, ok := rawNumber(raw); ok {
			res.IssuedAt = int64(math.Floor(iat))
		}
	}
	if cfg.SubjectClaim != "" && cfg.SubjectClaim != "sub" {
		res.Subject = subject(claims, cfg.SubjectClaim)
	}
	sec, frac := math.Modf(exp)
	res.Expiry = time.Unix(int64(sec), int64(frac*1e9))
	res.NotAfter = res.Expiry.Add(cfg.Leeway)
	if raw, ok := claims.lookup(cfg.RolesClaim); ok {
		res.Roles = stringList(raw)
	}
	if raw, ok := claims.lookup(cfg.ScopesClaim); ok {
		res.Scopes = stringList(raw)
	}
	return res, nil
}

// subject reads subject_claim: a string as is, a number in plain decimal
// (seed tokens carry a numeric userId); anything else, or nothing, is no
// subject. It never refuses the token: the subject names the caller in
// audit events, the checks are elsewhere.
func subject(claims object, path string) string {
	raw, ok := claims.lookup(path)
	if !ok {
		return ""
	}
	if s, ok := rawString(raw); ok {
		return s
	}
	if f, ok := rawNumber(raw); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return ""
}

// saneTime bounds NumericDate values to [0, year 5000) so conversions stay exact.
func saneTime(t float64) bool { return t >= 0 && t < 95617584000 }

// optString reads an optional string claim: absent is "", present and not
// a string is not ok.
func optString(o object, k string) (string, bool) {
	raw, ok := o.get(k)
	if !ok {
		return "", true
	}
	return rawString(raw)
}
