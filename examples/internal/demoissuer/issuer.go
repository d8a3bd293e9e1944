// Package demoissuer is the examples' identity provider: users who log in
// for RS256 tokens, a JWKS with key rotation, an OpenID Connect discovery
// document, and a token endpoint for RFC 6749 4.4 client credentials and
// RFC 8693 token exchange. It is a demo on 127.0.0.1, shared by
// examples/quickstart and examples/services; nothing in gatehouse imports it.
package demoissuer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// TokenLifetime is how long the demo issuer's tokens live.
const TokenLifetime = 15 * time.Minute

// user is a demo account. Passwords in plain text are fine for a demo that
// listens on 127.0.0.1 and nowhere else.
type user struct {
	password string
	roles    []string
}

var users = map[string]user{
	"alice": {password: "wonderland", roles: []string{"user"}},
	"bob":   {password: "builder", roles: []string{"admin"}},
}

// Issuer is the demo auth service, shaped like the seeds' /login services:
// POST /login answers an RS256 token signed with the current key and its
// kid, GET /.well-known/jwks.json publishes the public keys, POST /rotate
// makes a new current key and keeps the previous one published so tokens it
// signed still verify until they expire, POST /token is the OAuth token
// endpoint (token.go) and GET /.well-known/openid-configuration names it.
type Issuer struct {
	name, audience string
	now            func() time.Time
	opts           Options

	mu   sync.Mutex
	keys []*jwkstest.Key // published, oldest first; the last one signs
	seq  int
}

// Options configure the token endpoint.
type Options struct {
	// Clients are the OAuth clients (client_id -> client_secret) allowed at
	// POST /token with client_secret_basic. None: the endpoint refuses all.
	Clients map[string]string
	// ClientAudiences, when it names a client, is the audience of that
	// client's own API: it may exchange only subject tokens addressed to
	// it (a token it received), not any token of the issuer it came by.
	ClientAudiences map[string]string
	// Audiences are the audiences /token issues tokens for (RFC 8693
	// audience, also accepted for client credentials); any other is
	// invalid_target. The login audience is always among them.
	Audiences []string
	// BaseURL is where the issuer is reached (for the discovery document's
	// token_endpoint and jwks_uri); "": the request's Host, over http.
	BaseURL string
}

// New returns an issuer whose tokens carry iss = name and, from /login,
// aud = audience. now is the clock (time.Now outside tests).
func New(name, audience string, now func() time.Time, opts Options) *Issuer {
	is := &Issuer{name: name, audience: audience, now: now, opts: opts}
	is.rotate()
	return is
}

// Rotate makes a new signing key and returns its kid.
func (is *Issuer) Rotate() string { return is.rotate() }

// rotate makes a new signing key and returns its kid. The kid carries a
// random suffix so that a restarted issuer never reuses a kid for a
// different key.
func (is *Issuer) rotate() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.seq++
	k := jwkstest.NewKey("RS256", fmt.Sprintf("key-%d-%s", is.seq, randomHex(4)))
	is.keys = append(is.keys, k)
	if len(is.keys) > 2 {
		is.keys = slices.Clone(is.keys[len(is.keys)-2:])
	}
	return k.Kid
}

func (is *Issuer) current() (*jwkstest.Key, []*jwkstest.Key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[len(is.keys)-1], slices.Clone(is.keys)
}

func (is *Issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/login" && r.Method == http.MethodPost:
		is.login(w, r)
	case r.URL.Path == "/.well-known/jwks.json" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		_, keys := is.current()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwkstest.JWKS(keys...))
	case r.URL.Path == "/token":
		is.token(w, r)
	case r.URL.Path == "/.well-known/openid-configuration" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		is.discovery(w, r)
	case r.URL.Path == "/rotate" && r.Method == http.MethodPost:
		kid := is.rotate()
		_, keys := is.current()
		kids := make([]string, 0, len(keys))
		for _, k := range keys {
			kids = append(kids, k.Kid)
		}
		WriteJSON(w, http.StatusOK, map[string]any{"kid": kid, "published": kids})
	default:
		WriteJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "POST /login, POST /token, GET /.well-known/jwks.json, GET /.well-known/openid-configuration, POST /rotate"})
	}
}

// login takes {"username": ..., "password": ...} as JSON or as a form. It
// answers JSON, or the bare token when the client accepts text/plain (so a
// shell can write TOKEN=$(curl ...)).
func (is *Issuer) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	var creds struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		if err := json.NewDecoder(r.Body).Decode(&creds); err != nil {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": "body must be {\"username\": ..., \"password\": ...}"})
			return
		}
	} else {
		if err := r.ParseForm(); err != nil {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": "form must carry username and password"})
			return
		}
		creds.Username, creds.Password = r.PostForm.Get("username"), r.PostForm.Get("password")
	}
	u, ok := users[creds.Username]
	if !ok || u.password != creds.Password {
		WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_credentials", "message": "unknown user or wrong password"})
		return
	}
	key, _ := is.current()
	now := is.now()
	token := key.Sign(map[string]any{
		"iss":   is.name,
		"aud":   is.audience,
		"sub":   creds.Username,
		"roles": u.roles,
		"iat":   now.Unix(),
		"exp":   now.Add(TokenLifetime).Unix(),
		"jti":   randomHex(8),
	})
	if accepts(r, "text/plain") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, token)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int(TokenLifetime.Seconds()),
		"kid":          key.Kid,
	})
}

// accepts reports whether the Accept header names mediaType (enough for a
// demo: no q-values).
func accepts(r *http.Request, mediaType string) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(part); err == nil && mt == mediaType {
				return true
			}
		}
	}
	return false
}

// WriteJSON writes v as indented JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
