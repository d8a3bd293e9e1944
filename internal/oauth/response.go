package oauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxLifetime bounds expires_in (and a JWT's exp − iat): beyond it the
// response is not believed.
const maxLifetime = 366 * 24 * time.Hour

type tokenResponse struct {
	AccessToken     string          `json:"access_token"`
	TokenType       string          `json:"token_type"`
	IssuedTokenType string          `json:"issued_token_type"`
	ExpiresIn       json.RawMessage `json:"expires_in"` // a JSON number; a string holding an integer is tolerated
}

// parseTokenResponse checks a 200 token response (RFC 6749 5.1, RFC 8693
// 2.2.1) and returns the token and its lifetime. start is when the request
// was sent: expires_in counts from there, so the cached expiry errs early.
// An error never repeats a value from body.
func parseTokenResponse(body []byte, grant Grant, audience string, start time.Time) (Token, time.Duration, error) {
	var tr tokenResponse
	if err := decodeStrict(body, &tr); err != nil {
		return Token{}, 0, err
	}
	if tr.AccessToken == "" {
		return Token{}, 0, errors.New("no access_token")
	}
	if !headerSafe(tr.AccessToken) {
		return Token{}, 0, errors.New("access_token holds characters not allowed in a header value")
	}
	switch {
	case strings.EqualFold(tr.TokenType, "Bearer"):
	case grant == TokenExchange && tr.TokenType == "N_A" && tr.IssuedTokenType == tokenTypeAccessToken:
		// RFC 8693 2.2.1: N_A says "not usable as an access token" in
		// general; an issued access token is what was asked for.
	default:
		return Token{}, 0, errors.New("token_type is not Bearer")
	}
	// RFC 8693 makes issued_token_type required; some identity providers
	// omit it, so only a present one is checked.
	if grant == TokenExchange && tr.IssuedTokenType != "" && tr.IssuedTokenType != tokenTypeAccessToken && tr.IssuedTokenType != tokenTypeJWT {
		return Token{}, 0, errors.New("issued_token_type is not an access token")
	}
	cl, isJWT := unverifiedClaims(tr.AccessToken)
	if isJWT && audience != "" && cl.aud != nil && !cl.audience(audience) {
		return Token{}, 0, errors.New("the access token is for another audience")
	}

	if len(tr.ExpiresIn) > 0 && string(tr.ExpiresIn) != "null" {
		n, err := strconv.ParseInt(unquote(tr.ExpiresIn), 10, 64)
		if err != nil || n < 1 || n > int64(maxLifetime/time.Second) {
			return Token{}, 0, errors.New("expires_in is not a whole number of seconds in [1, 31622400]")
		}
		lifetime := time.Duration(n) * time.Second
		return Token{AccessToken: tr.AccessToken, Expiry: start.Add(lifetime)}, lifetime, nil
	}
	if isJWT && cl.exp != 0 {
		// Fallback, unverified: the exp only says how long to cache.
		exp := time.Unix(cl.exp, 0)
		from := start
		if cl.iat != 0 && time.Unix(cl.iat, 0).Before(start) {
			from = time.Unix(cl.iat, 0)
		}
		lifetime := exp.Sub(from)
		if !exp.After(start) || lifetime > maxLifetime {
			return Token{}, 0, errors.New("no expires_in and the access token's exp is past or too far")
		}
		return Token{AccessToken: tr.AccessToken, Expiry: exp}, lifetime, nil
	}
	// No lifetime known: usable once, never cached.
	return Token{AccessToken: tr.AccessToken}, 0, nil
}

// unquote returns a JSON string's content (some identity providers send
// expires_in as "3600") or the raw text of anything else.
func unquote(raw json.RawMessage) string {
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// headerSafe: visible ASCII only (no space, no control, no CR/LF), so the
// token can follow "Bearer " in a header and cannot inject another one.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

type claims struct {
	exp, iat int64
	aud      []string // nil: absent
}

func (c claims) audience(want string) bool {
	for _, a := range c.aud {
		if a == want {
			return true
		}
	}
	return false
}

// unverifiedClaims reads exp, iat and aud from a JWT-shaped token's payload
// without verifying anything; false when the token is not JWT-shaped
// (opaque). A JWT whose aud is neither a string nor strings gets a non-nil
// empty aud, matching no audience.
func unverifiedClaims(tok string) (claims, bool) {
	first := strings.IndexByte(tok, '.')
	last := strings.LastIndexByte(tok, '.')
	if first < 0 || first == last || strings.Count(tok, ".") != 2 {
		return claims{}, false
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(tok[first+1 : last])
	if err != nil {
		return claims{}, false
	}
	var raw struct {
		Exp json.Number     `json:"exp"`
		Iat json.Number     `json:"iat"`
		Aud json.RawMessage `json:"aud"`
	}
	if decodeStrict(payload, &raw) != nil {
		return claims{}, false
	}
	var c claims
	c.exp = numericDate(raw.Exp)
	c.iat = numericDate(raw.Iat)
	if raw.Aud != nil && !bytes.Equal(raw.Aud, []byte("null")) {
		var one string
		var many []string
		switch {
		case json.Unmarshal(raw.Aud, &one) == nil:
			c.aud = []string{one}
		case json.Unmarshal(raw.Aud, &many) == nil && many != nil:
			c.aud = many
		default:
			c.aud = []string{}
		}
	}
	return c, true
}

// numericDate reads a JWT NumericDate (RFC 7519 2, fractions allowed) as
// whole seconds; 0 when absent or not a sane positive time.
func numericDate(n json.Number) int64 {
	if n == "" {
		return 0
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || f < 1 || f > 1<<40 {
		return 0
	}
	return int64(f)
}
