package demoissuer

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// The RFC 8693 identifiers the token endpoint accepts.
const (
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantClientCredentials = "client_credentials"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	maxTokenRequest        = 1 << 16
	maxSubjectToken        = 8192
)

// oauthError is an RFC 6749 5.2 error response.
type oauthError struct {
	status      int
	code        string
	description string
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func invalid(code, format string, args ...any) *oauthError {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	return &oauthError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

// token is POST /token: RFC 6749 4.4 client credentials and RFC 8693 token
// exchange, the client authenticated by client_secret_basic (RFC 6749
// 2.3.1). Errors are RFC 6749 5.2 JSON bodies.
func (is *Issuer) token(w http.ResponseWriter, r *http.Request) {
	resp, err := is.issue(w, r)
	// RFC 6749 5.1: token responses are not cached, errors included.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if err != nil {
		var oe *oauthError
		if !errors.As(err, &oe) {
			oe = invalid("invalid_request", "%v", err)
		}
		if oe.status == http.StatusUnauthorized {
			// RFC 6749 5.2: a client that tried the Authorization header
			// gets 401 with the scheme it used.
			w.Header().Set("WWW-Authenticate", `Basic realm="demo-issuer"`)
		}
		if oe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		WriteJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.description})
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

func (is *Issuer) issue(w http.ResponseWriter, r *http.Request) (map[string]any, error) {
	if r.Method != http.MethodPost {
		// RFC 6749 3.2: the client MUST use POST.
		return nil, &oauthError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "the token endpoint takes POST"}
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/x-www-form-urlencoded" {
		return nil, invalid("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		// Parameters belong in the body (RFC 6749 4.4.2, RFC 8693 2.1); a
		// secret in a URL ends up in logs.
		return nil, invalid("invalid_request", "parameters go in the body, not the query")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		return nil, invalid("invalid_request", "the body is not a form of at most %d bytes", maxTokenRequest)
	}
	form := r.PostForm
	// RFC 6749 3.1, 3.2: parameters sent without a value are as if omitted,
	// and none may be repeated (RFC 8693 allows several audience values;
	// this issuer issues a token for one audience and says so below).
	for k, v := range form {
		if len(v) > 1 && k != "audience" {
			return nil, invalid("invalid_request", "parameter %s is repeated", k)
		}
	}
	client, err := is.authenticate(r, form)
	if err != nil {
		return nil, err
	}
	grant := form.Get("grant_type")
	switch grant {
	case "":
		return nil, invalid("invalid_request", "grant_type is missing")
	case GrantClientCredentials, GrantTokenExchange:
	default:
		return nil, invalid("unsupported_grant_type", "grant_type must be client_credentials or %s", GrantTokenExchange)
	}
	aud, err := is.audienceOf(form)
	if err != nil {
		return nil, err
	}
	scope, err := scopeOf(form.Get("scope"))
	if err != nil {
		return nil, err
	}
	key, _ := is.current()
	now := is.now()
	claims := map[string]any{
		"iss": is.name,
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(TokenLifetime).Unix(),
		"jti": randomHex(8),
		// RFC 8693 4.3 (and RFC 9068 2.2): the client the token was issued to.
		"client_id": client,
	}
	if scope != "" {
		claims["scope"] = scope
	}
	resp := map[string]any{"token_type": "Bearer", "expires_in": int(TokenLifetime.Seconds())}
	if grant == GrantClientCredentials {
		for _, k := range []string{"subject_token", "subject_token_type", "actor_token", "actor_token_type", "requested_token_type"} {
			if form.Has(k) {
				return nil, invalid("invalid_request", "%s belongs to token exchange, not client_credentials", k)
			}
		}
		// The client acts for itself: it is the subject.
		claims["sub"] = client
	} else {
		subject, err := is.exchangeSubject(form, client)
		if err != nil {
			return nil, err
		}
		claims["sub"] = subject["sub"]
		if roles, ok := subject["roles"]; ok {
			claims["roles"] = roles
		}
		// RFC 8693 4.1: the client is the current actor; an earlier
		// delegation chain nests inside it.
		act := map[string]any{"sub": client}
		if prior, ok := subject["act"]; ok {
			act["act"] = prior
		}
		claims["act"] = act
		resp["issued_token_type"] = TokenTypeAccessToken
	}
	resp["access_token"] = key.Sign(claims)
	if scope != "" {
		resp["scope"] = scope
	}
	return resp, nil
}

// authenticate checks client_secret_basic. Client credentials in the body
// (client_secret_post) are refused: RFC 6749 2.3.1 makes that method
// optional, and one method per request is the rule (2.3).
func (is *Issuer) authenticate(r *http.Request, form url.Values) (string, error) {
	if form.Has("client_secret") || form.Has("client_assertion") {
		return "", invalid("invalid_client", "this issuer takes client_secret_basic only")
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", invalid("invalid_client", "client authentication (HTTP Basic) is missing")
	}
	// RFC 6749 2.3.1: id and secret are form-urlencoded before base64.
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		return "", invalid("invalid_client", "client id or secret is not form-urlencoded")
	}
	if cid := form.Get("client_id"); cid != "" && cid != id {
		return "", invalid("invalid_request", "client_id in the body differs from the authenticated client")
	}
	want, known := is.opts.Clients[id]
	// Compare digests so the time does not depend on where they differ or
	// on the lengths.
	got, exp := sha256.Sum256([]byte(secret)), sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], exp[:]) != 1 || !known {
		return "", invalid("invalid_client", "unknown client or wrong secret")
	}
	return id, nil
}

// audienceOf is the one audience the token is for: the request's (RFC 8693
// 2.1 audience), which must be one this issuer serves (else invalid_target,
// RFC 8693 2.2.2), or, absent, the login audience. resource (RFC 8707) is
// not supported and refused rather than ignored.
func (is *Issuer) audienceOf(form url.Values) (string, error) {
	if form.Has("resource") {
		return "", invalid("invalid_target", "resource is not supported; use audience")
	}
	auds := form["audience"]
	switch len(auds) {
	case 0:
		return is.audience, nil
	case 1:
	default:
		return "", invalid("invalid_target", "this issuer issues a token for one audience at a time")
	}
	if auds[0] == is.audience || slices.Contains(is.opts.Audiences, auds[0]) {
		return auds[0], nil
	}
	return "", invalid("invalid_target", "no service has the audience %q", auds[0])
}

// scopeOf checks RFC 6749 3.3 syntax: space-delimited, each token of
// NQCHAR (%x21 / %x23-5B / %x5D-7E), and returns it with single spaces.
func scopeOf(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	parts := strings.Split(s, " ")
	for _, p := range parts {
		if p == "" {
			return "", invalid("invalid_scope", "scope has an empty token (one space between tokens)")
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
				return "", invalid("invalid_scope", "scope token has a character outside RFC 6749 3.3 NQCHAR")
			}
		}
	}
	return strings.Join(parts, " "), nil
}

// exchangeSubject validates RFC 8693 2.1's subject parameters and returns
// the subject token's claims. Only an access token this issuer signed and
// that has not expired is accepted; anything else is invalid_request (RFC
// 8693 2.2.2: "if either the subject_token or actor_token are invalid for
// any reason").
func (is *Issuer) exchangeSubject(form url.Values, client string) (map[string]any, error) {
	tok, typ := form.Get("subject_token"), form.Get("subject_token_type")
	if tok == "" {
		return nil, invalid("invalid_request", "subject_token is missing")
	}
	if typ == "" {
		return nil, invalid("invalid_request", "subject_token_type is missing")
	}
	if typ != TokenTypeAccessToken {
		return nil, invalid("invalid_request", "subject_token_type must be %s", TokenTypeAccessToken)
	}
	if form.Has("actor_token") || form.Has("actor_token_type") {
		// The client is the actor (act.sub); a separate actor token is
		// not supported, and refused rather than silently dropped.
		return nil, invalid("invalid_request", "actor_token is not supported")
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken && rt != tokenTypeJWT {
		return nil, invalid("invalid_request", "requested_token_type must be an access token or a JWT")
	}
	claims, err := is.verify(tok)
	if err != nil {
		return nil, invalid("invalid_request", "subject_token: %v", err)
	}
	if own, ok := is.opts.ClientAudiences[client]; ok && !hasAudience(claims["aud"], own) {
		return nil, invalid("invalid_request", "subject_token is not addressed to client %s (aud %s)", client, own)
	}
	return claims, nil
}

// verify checks a compact JWS against this issuer's published keys and
// returns its claims when iss is this issuer, exp is in the future and sub
// is a non-empty string.
func (is *Issuer) verify(tok string) (map[string]any, error) {
	if len(tok) > maxSubjectToken {
		return nil, errors.New("too long")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	var hdr struct {
		Alg  string   `json:"alg"`
		Kid  string   `json:"kid"`
		Crit []string `json:"crit"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if hdr.Alg != "RS256" || hdr.Crit != nil {
		return nil, errors.New("not an RS256 token of this issuer")
	}
	_, keys := is.current()
	i := slices.IndexFunc(keys, func(k *jwkstest.Key) bool { return k.Kid == hdr.Kid })
	if i < 0 {
		return nil, errors.New("unknown kid")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("signature is not base64url")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	pub, ok := keys[i].Public().(*rsa.PublicKey)
	if !ok || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
		return nil, errors.New("bad signature")
	}
	var claims map[string]any
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %v", err)
	}
	if claims["iss"] != is.name {
		return nil, errors.New("issued by another issuer")
	}
	exp, ok := claims["exp"].(float64)
	if !ok || math.IsNaN(exp) || float64(is.now().Unix()) >= exp {
		return nil, errors.New("expired or without exp")
	}
	if sub, ok := claims["sub"].(string); !ok || sub == "" {
		return nil, errors.New("no sub")
	}
	return claims, nil
}

// hasAudience reports whether a JWT aud claim (a string or an array of
// strings, RFC 7519 4.1.3) contains want.
func hasAudience(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		return slices.Contains(a, any(want))
	}
	return false
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("not base64url")
	}
	return json.Unmarshal(b, v)
}

// discovery is the OpenID Connect discovery document (Discovery 1.0 3),
// enough for an OAuth client to find the token endpoint.
func (is *Issuer) discovery(w http.ResponseWriter, r *http.Request) {
	base := is.opts.BaseURL
	if base == "" {
		base = "http://" + r.Host
	}
	WriteJSON(w, http.StatusOK, map[string]any{
		"issuer":                                is.name,
		"jwks_uri":                              base + "/.well-known/jwks.json",
		"token_endpoint":                        base + "/token",
		"grant_types_supported":                 []string{GrantClientCredentials, GrantTokenExchange},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
	})
}
