package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeJWT builds a JWT-shaped token with these claims (unsigned: the client
// reads it, never verifies it).
func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2lnbmF0dXJl"
}

func writeJSON(status int, body string) func(w http.ResponseWriter, r *http.Request, n int64) {
	return func(w http.ResponseWriter, _ *http.Request, _ int64) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

func TestHostileResponses(t *testing.T) {
	wrongAud := fakeJWT(map[string]any{"aud": []string{"payments"}, "exp": 1_900_000_000})
	tests := []struct {
		name    string
		grant   Grant
		respond func(w http.ResponseWriter, r *http.Request, n int64)
		want    string // in the error text
	}{
		{"huge body", ClientCredentials, func(w http.ResponseWriter, _ *http.Request, _ int64) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"a","token_type":"Bearer","expires_in":60,"x":"%s"}`, strings.Repeat("A", 2<<20))
		}, "body too large: over 64 KiB"},
		{"bad JSON", ClientCredentials, writeJSON(200, `{"access_token":"a",`), "invalid JSON"},
		{"not an object", ClientCredentials, writeJSON(200, `["a"]`), "not a JSON object"},
		{"trailing data", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":60} {}`), "data after"},
		{"empty body", ClientCredentials, writeJSON(200, ``), "not a JSON object"},
		{"missing token", ClientCredentials, writeJSON(200, `{"token_type":"Bearer","expires_in":60}`), "no access_token"},
		{"empty token", ClientCredentials, writeJSON(200, `{"access_token":"","token_type":"Bearer","expires_in":60}`), "no access_token"},
		{"token not a string", ClientCredentials, writeJSON(200, `{"access_token":42,"token_type":"Bearer","expires_in":60}`), "access_token has the wrong JSON type"},
		{"CRLF in token", ClientCredentials, writeJSON(200, `{"access_token":"a\r\nX-Admin: 1","token_type":"Bearer","expires_in":60}`), "not allowed in a header"},
		{"LF in token", ClientCredentials, writeJSON(200, `{"access_token":"a\nb","token_type":"Bearer","expires_in":60}`), "not allowed in a header"},
		{"NUL in token", ClientCredentials, writeJSON(200, `{"access_token":"a\u0000b","token_type":"Bearer","expires_in":60}`), "not allowed in a header"},
		{"space in token", ClientCredentials, writeJSON(200, `{"access_token":"a b","token_type":"Bearer","expires_in":60}`), "not allowed in a header"},
		{"non-ASCII token", ClientCredentials, writeJSON(200, `{"access_token":"a\u00e9","token_type":"Bearer","expires_in":60}`), "not allowed in a header"},
		{"wrong token_type", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"mac","expires_in":60}`), "token_type is not Bearer"},
		{"missing token_type", ClientCredentials, writeJSON(200, `{"access_token":"a","expires_in":60}`), "token_type is not Bearer"},
		{"N_A for client credentials", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":60}`), "token_type is not Bearer"},
		{"N_A for an id_token", TokenExchange, writeJSON(200, `{"access_token":"a","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:id_token","expires_in":60}`), "token_type is not Bearer"},
		{"exchange issues a refresh token", TokenExchange, writeJSON(200, `{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token","expires_in":60}`), "issued_token_type is not an access token"},
		{"negative expires_in", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":-5}`), "expires_in"},
		{"zero expires_in", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":0}`), "expires_in"},
		{"huge expires_in", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":99999999999999999999}`), "expires_in"},
		{"expires_in over a year", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":31622401}`), "expires_in"},
		{"fractional expires_in", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":1.5}`), "expires_in"},
		{"expires_in not a number", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":true}`), "expires_in"},
		{"expires_in an object", ClientCredentials, writeJSON(200, `{"access_token":"a","token_type":"Bearer","expires_in":{"s":1}}`), "expires_in"},
		{"expired JWT without expires_in", ClientCredentials, writeJSON(200, `{"access_token":"`+fakeJWT(map[string]any{"exp": 1_000_000_000})+`","token_type":"Bearer"}`), "exp is past"},
		{"token for another audience", TokenExchange, writeJSON(200, `{"access_token":"`+wrongAud+`","token_type":"Bearer","expires_in":60}`), "another audience"},
		{"token with an unreadable aud", TokenExchange, writeJSON(200, `{"access_token":"`+fakeJWT(map[string]any{"aud": 7})+`","token_type":"Bearer","expires_in":60}`), "another audience"},
		{"not JSON content type", ClientCredentials, func(w http.ResponseWriter, _ *http.Request, _ int64) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `{"access_token":"a","token_type":"Bearer","expires_in":60}`)
		}, "without application/json"},
		{"400 invalid_grant", TokenExchange, writeJSON(400, `{"error":"invalid_grant","error_description":"subject token expired"}`), "answered 400 invalid_grant"},
		{"401 invalid_client", ClientCredentials, writeJSON(401, `{"error":"invalid_client"}`), "answered 401 invalid_client"},
		{"400 unregistered code", ClientCredentials, writeJSON(400, `{"error":"made_up_code"}`), "answered 400 (unregistered OAuth error)"},
		{"400 not OAuth", ClientCredentials, writeJSON(400, `<html>`), "answered 400"},
		{"500", ClientCredentials, writeJSON(500, `{"error":"server_error"}`), "answered 500 server_error"},
		{"redirect", ClientCredentials, func(w http.ResponseWriter, r *http.Request, _ int64) {
			http.Redirect(w, r, "http://127.0.0.1:1/steal", http.StatusTemporaryRedirect)
		}, "answered 307"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, cfg := secretIdP(t)
			p.set(func(p *testIdP) { p.respond = tt.respond })
			var results []string
			var mu sync.Mutex
			cfg.Observe = func(_ Grant, result string, _ time.Duration) {
				mu.Lock()
				results = append(results, result)
				mu.Unlock()
			}
			c := newClient(t, cfg)
			r := Request{Grant: tt.grant, Audience: "orders"}
			if tt.grant == TokenExchange {
				r.SubjectToken = "inbound"
			}
			for i := range 2 {
				tok, err := c.Token(context.Background(), r)
				if !errors.Is(err, ErrUnavailable) || tok != (Token{}) {
					t.Fatalf("Token = %+v, %v; want ErrUnavailable and no token", tok, err)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %q does not contain %q", err, tt.want)
				}
				// Nothing cached: every call asks again.
				if n := p.tokenHits.Load(); n != int64(i+1) {
					t.Fatalf("IdP called %d times after %d calls: a failure was cached", n, i+1)
				}
			}
			// An answer, however bad, is an "error"; only 5xx (and 429)
			// say the identity provider is unavailable.
			want := ResultError
			if tt.name == "500" {
				want = ResultUnavailable
			}
			mu.Lock()
			defer mu.Unlock()
			if len(results) != 2 || results[0] != want || results[1] != want {
				t.Errorf("Observe results = %v, want [%s %s]", results, want, want)
			}
		})
	}
}

func TestAcceptedResponses(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	jwtExp := fakeJWT(map[string]any{"aud": "orders", "iat": 1_800_000_000, "exp": 1_800_000_100})
	tests := []struct {
		name, body string
		grant      Grant
		want       Token
		lifetime   time.Duration
	}{
		{"lower-case bearer", `{"access_token":"a","token_type":"bearer","expires_in":60}`, ClientCredentials,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"expires_in as a string", `{"access_token":"a","token_type":"Bearer","expires_in":"60"}`, ClientCredentials,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"extra fields", `{"access_token":"a","token_type":"Bearer","expires_in":60,"scope":"x","refresh_token":"r","not-before-policy":0}`, ClientCredentials,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"N_A with an issued access token", `{"access_token":"a","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":60}`, TokenExchange,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"issued JWT", `{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","expires_in":60}`, TokenExchange,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"no issued_token_type", `{"access_token":"a","token_type":"Bearer","expires_in":60}`, TokenExchange,
			Token{"a", start.Add(time.Minute)}, time.Minute},
		{"JWT exp when expires_in is absent", `{"access_token":"` + jwtExp + `","token_type":"Bearer"}`, TokenExchange,
			Token{jwtExp, start.Add(100 * time.Second)}, 100 * time.Second},
		{"expires_in wins over the JWT's exp", `{"access_token":"` + jwtExp + `","token_type":"Bearer","expires_in":60}`, TokenExchange,
			Token{jwtExp, start.Add(time.Minute)}, time.Minute},
		{"opaque without expires_in: not cached", `{"access_token":"opaque","token_type":"Bearer"}`, ClientCredentials,
			Token{"opaque", time.Time{}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, lifetime, err := parseTokenResponse([]byte(tt.body), tt.grant, "orders", start)
			if err != nil || tok != tt.want || lifetime != tt.lifetime {
				t.Errorf("parseTokenResponse = %+v, %v, %v; want %+v, %v", tok, lifetime, err, tt.want, tt.lifetime)
			}
		})
	}
}

// TestUncacheableTokenAskedEachTime: without a lifetime a token is used once.
func TestUncacheableTokenAskedEachTime(t *testing.T) {
	p, cfg := secretIdP(t)
	p.expiresIn = nil
	c := newClient(t, cfg)
	for i := range 3 {
		tok, err := c.Token(context.Background(), Request{Grant: ClientCredentials})
		if err != nil || tok.AccessToken != fmt.Sprintf("at-%d", i+1) || !tok.Expiry.IsZero() {
			t.Fatalf("call %d: %+v, %v", i, tok, err)
		}
	}
}

// TestErrorsNeverCarrySecrets: whatever the IdP echoes back, in an error
// code, a description, a token response or a redirect, the error text holds
// no client secret, subject token, assertion or issued token.
func TestErrorsNeverCarrySecrets(t *testing.T) {
	const subject = "SUBJECT-eyJhbGciOiJub25lIn0.c3ViamVjdA.c2ln"
	echo := func(status int, field string) func(w http.ResponseWriter, r *http.Request, n int64) {
		return func(w http.ResponseWriter, r *http.Request, _ int64) {
			everything := r.Header.Get("Authorization") + " " + r.PostForm.Encode()
			body, _ := json.Marshal(map[string]any{field: everything, "error_description": everything, "token_type": "mac", "expires_in": -1})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write(body)
		}
	}
	responders := map[string]func(w http.ResponseWriter, r *http.Request, n int64){
		"400 echo in error":           echo(400, "error"),
		"401 echo in error":           echo(401, "error"),
		"500 echo":                    echo(500, "error"),
		"200 echo in access_token":    echo(200, "access_token"),
		"200 echo, CRLF access_token": writeJSON(200, `{"access_token":"ISSUED\r\n","token_type":"Bearer","expires_in":60}`),
		"200 issued, bad token_type":  writeJSON(200, `{"access_token":"ISSUED","token_type":"mac","expires_in":60}`),
		"200 issued, bad expires_in":  writeJSON(200, `{"access_token":"ISSUED","token_type":"Bearer","expires_in":-1}`),
		"200 issued, wrong audience":  writeJSON(200, `{"access_token":"`+fakeJWT(map[string]any{"aud": "ISSUED"})+`","token_type":"Bearer","expires_in":60}`),
	}
	for name, respond := range responders {
		for _, auth := range []string{"secret", "private_key_jwt"} {
			t.Run(name+" "+auth, func(t *testing.T) {
				var p *testIdP
				var cfg Config
				if auth == "secret" {
					p, cfg = secretIdP(t)
				} else {
					p = newTestIdP(t)
					key := testECKey(t)
					p.pub, p.alg = key.Public(), "ES256"
					cfg = Config{TokenEndpoint: p.tokenURL(), ClientID: p.clientID, PrivateKey: key}
				}
				p.set(func(p *testIdP) { p.respond = respond })
				c := newClient(t, cfg)
				_, err := c.Token(context.Background(), Request{Grant: TokenExchange, SubjectToken: subject, Audience: "orders"})
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Token: %v, want ErrUnavailable", err)
				}
				msg := err.Error()
				leaks := []string{subject, "SUBJECT", "ISSUED", "Basic", "eyJhbGciOiJub25l"}
				if p.secret != "" {
					leaks = append(leaks, p.secret, strings.Split(p.secret, ":")[0], basicAuth(p.clientID, p.secret)[6:])
				}
				p.mu.Lock()
				for _, a := range p.assertions {
					leaks = append(leaks, a, strings.Split(a, ".")[2])
				}
				p.mu.Unlock()
				for _, l := range leaks {
					if strings.Contains(msg, l) {
						t.Errorf("error text %q contains %q", msg, l)
					}
				}
			})
		}
	}
}

// FuzzParseTokenResponse: any body gives a header-safe, non-empty token with
// a sane lifetime, or an error; never a panic.
func FuzzParseTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","token_type":"Bearer","expires_in":60}`,
		`{"access_token":"a","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":"60"}`,
		`{"access_token":"` + fakeJWT(map[string]any{"aud": []string{"orders"}, "exp": 1_800_000_100, "iat": 1_700_000_000}) + `","token_type":"bearer"}`,
		`{"access_token":"a\r\nb","token_type":"Bearer","expires_in":60}`,
		`{"access_token":"a","token_type":"Bearer","expires_in":-1} x`,
		`[]`, ``, `{"error":"invalid_grant"}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	start := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte, exchange bool) {
		grant := ClientCredentials
		if exchange {
			grant = TokenExchange
		}
		tok, lifetime, err := parseTokenResponse(body, grant, "orders", start)
		if err != nil {
			if tok != (Token{}) || lifetime != 0 {
				t.Fatalf("error %v with a token %+v", err, tok)
			}
			return
		}
		if tok.AccessToken == "" || !headerSafe(tok.AccessToken) {
			t.Fatalf("accepted unsafe token %q", tok.AccessToken)
		}
		if tok.Expiry.IsZero() {
			if lifetime != 0 {
				t.Fatalf("lifetime %v without an expiry", lifetime)
			}
			return
		}
		if !tok.Expiry.After(start) || lifetime <= 0 || lifetime > maxLifetime || tok.Expiry.Sub(start) > maxLifetime {
			t.Fatalf("accepted expiry %v, lifetime %v", tok.Expiry, lifetime)
		}
	})
}
