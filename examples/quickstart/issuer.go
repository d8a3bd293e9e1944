package main

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

// tokenLifetime is how long the demo issuer's tokens live.
const tokenLifetime = 15 * time.Minute

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

// issuer is the demo auth service, shaped like the seeds' /login services:
// POST /login answers an RS256 token signed with the current key and its
// kid, GET /.well-known/jwks.json publishes the public keys, POST /rotate
// makes a new current key and keeps the previous one published so tokens it
// signed still verify until they expire.
type issuer struct {
	name, audience string
	now            func() time.Time

	mu   sync.Mutex
	keys []*jwkstest.Key // published, oldest first; the last one signs
	seq  int
}

func newIssuer(name, audience string, now func() time.Time) *issuer {
	is := &issuer{name: name, audience: audience, now: now}
	is.rotate()
	return is
}

// rotate makes a new signing key and returns its kid. The kid carries a
// random suffix so that a restarted issuer never reuses a kid for a
// different key.
func (is *issuer) rotate() string {
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

func (is *issuer) current() (*jwkstest.Key, []*jwkstest.Key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[len(is.keys)-1], slices.Clone(is.keys)
}

func (is *issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/login" && r.Method == http.MethodPost:
		is.login(w, r)
	case r.URL.Path == "/.well-known/jwks.json" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		_, keys := is.current()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwkstest.JWKS(keys...))
	case r.URL.Path == "/rotate" && r.Method == http.MethodPost:
		kid := is.rotate()
		_, keys := is.current()
		kids := make([]string, 0, len(keys))
		for _, k := range keys {
			kids = append(kids, k.Kid)
		}
		writeJSON(w, http.StatusOK, map[string]any{"kid": kid, "published": kids})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "POST /login, GET /.well-known/jwks.json, POST /rotate"})
	}
}

// login takes {"username": ..., "password": ...} as JSON or as a form. It
// answers JSON, or the bare token when the client accepts text/plain (so a
// shell can write TOKEN=$(curl ...)).
func (is *issuer) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	var creds struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		if err := json.NewDecoder(r.Body).Decode(&creds); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": "body must be {\"username\": ..., \"password\": ...}"})
			return
		}
	} else {
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": "form must carry username and password"})
			return
		}
		creds.Username, creds.Password = r.PostForm.Get("username"), r.PostForm.Get("password")
	}
	u, ok := users[creds.Username]
	if !ok || u.password != creds.Password {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_credentials", "message": "unknown user or wrong password"})
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
		"exp":   now.Add(tokenLifetime).Unix(),
		"jti":   randomHex(8),
	})
	if accepts(r, "text/plain") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, token)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int(tokenLifetime.Seconds()),
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

func writeJSON(w http.ResponseWriter, status int, v any) {
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
