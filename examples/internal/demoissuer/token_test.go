package demoissuer

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

type world struct {
	t   *testing.T
	is  *Issuer
	srv *httptest.Server
	now time.Time
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, now: time.Unix(1_800_000_000, 0)}
	w.is = New("demo-issuer", "service-a", func() time.Time { return w.now }, Options{
		// A secret with characters RFC 6749 2.3.1's form-encoding changes.
		Clients:   map[string]string{"service-a": "s3:cr+t%", "other": "x"},
		Audiences: []string{"service-b"},
		// "other" is service B: it may exchange what was addressed to B.
		ClientAudiences: map[string]string{"other": "service-b"},
	})
	w.srv = httptest.NewServer(w.is)
	t.Cleanup(w.srv.Close)
	return w
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (w *world) post(form url.Values, mutate func(*http.Request)) answer {
	w.t.Helper()
	req, _ := http.NewRequest("POST", w.srv.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape("service-a"), url.QueryEscape("s3:cr+t%"))
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(b, &a.body); err != nil {
		w.t.Fatalf("body %q: %v", b, err)
	}
	return a
}

// userToken logs alice in through /login, as a user would.
func (w *world) userToken() string {
	w.t.Helper()
	resp, err := http.PostForm(w.srv.URL+"/login", url.Values{"username": {"alice"}, "password": {"wonderland"}})
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		w.t.Fatalf("login: %v", err)
	}
	return v.AccessToken
}

// claimsOf verifies tok with the issuer's published JWKS, as a resource
// server would, and returns its claims and header.
func (w *world) claimsOf(tok string) (map[string]any, map[string]any) {
	w.t.Helper()
	c, err := w.is.verify(tok)
	if err != nil {
		w.t.Fatalf("issued token does not verify: %v", err)
	}
	var h map[string]any
	if err := decodeSegment(strings.Split(tok, ".")[0], &h); err != nil {
		w.t.Fatal(err)
	}
	return c, h
}

func TestClientCredentials(t *testing.T) {
	w := newWorld(t)
	a := w.post(url.Values{"grant_type": {"client_credentials"}, "audience": {"service-b"}, "scope": {"orders:read ledger"}}, nil)
	if a.status != 200 {
		t.Fatalf("status %d %v", a.status, a.body)
	}
	if a.header.Get("Cache-Control") != "no-store" || a.body["token_type"] != "Bearer" || a.body["expires_in"] != float64(900) || a.body["scope"] != "orders:read ledger" {
		t.Errorf("response %v %v", a.header, a.body)
	}
	if _, ok := a.body["issued_token_type"]; ok {
		t.Errorf("client_credentials answer has issued_token_type")
	}
	c, h := w.claimsOf(a.body["access_token"].(string))
	cur, _ := w.is.current()
	if h["alg"] != "RS256" || h["kid"] != cur.Kid {
		t.Errorf("header %v, want RS256 with kid %s", h, cur.Kid)
	}
	if c["sub"] != "service-a" || c["aud"] != "service-b" || c["iss"] != "demo-issuer" || c["exp"] != float64(w.now.Add(TokenLifetime).Unix()) || c["act"] != nil {
		t.Errorf("claims %v", c)
	}
	// No audience: the login audience.
	a = w.post(url.Values{"grant_type": {"client_credentials"}}, nil)
	if c, _ := w.claimsOf(a.body["access_token"].(string)); c["aud"] != "service-a" {
		t.Errorf("default aud %v", c["aud"])
	}
}

func TestTokenExchange(t *testing.T) {
	w := newWorld(t)
	user := w.userToken()
	a := w.post(url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {user},
		"subject_token_type": {TokenTypeAccessToken},
		"audience":           {"service-b"},
	}, nil)
	if a.status != 200 || a.body["issued_token_type"] != TokenTypeAccessToken || a.body["token_type"] != "Bearer" {
		t.Fatalf("status %d %v", a.status, a.body)
	}
	c, _ := w.claimsOf(a.body["access_token"].(string))
	act, _ := c["act"].(map[string]any)
	if c["sub"] != "alice" || c["aud"] != "service-b" || act["sub"] != "service-a" || c["roles"] == nil {
		t.Errorf("claims %v", c)
	}
	// Exchanging the exchanged token nests the earlier actor (RFC 8693 4.1).
	a = w.post(url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {a.body["access_token"].(string)},
		"subject_token_type": {TokenTypeAccessToken},
	}, func(r *http.Request) { r.SetBasicAuth("other", "x") })
	c, _ = w.claimsOf(a.body["access_token"].(string))
	act, _ = c["act"].(map[string]any)
	prior, _ := act["act"].(map[string]any)
	if act["sub"] != "other" || prior["sub"] != "service-a" {
		t.Errorf("nested act %v", c["act"])
	}
	// B's client cannot exchange alice's token for A: it was not addressed to B.
	if a := w.post(url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {user}, "subject_token_type": {TokenTypeAccessToken}},
		func(r *http.Request) { r.SetBasicAuth("other", "x") }); a.status != 400 || a.body["error"] != "invalid_request" {
		t.Errorf("exchange of a token not addressed to the client: %d %v", a.status, a.body)
	}
	// A token signed with the previous key still exchanges after a rotation.
	w.is.Rotate()
	if a := w.post(url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {user}, "subject_token_type": {TokenTypeAccessToken}}, nil); a.status != 200 {
		t.Errorf("after rotation: %d %v", a.status, a.body)
	}
}

// TestTokenErrors: every malformed or unauthorised request gets the RFC
// 6749 5.2 error (or RFC 8693 2.2.2 for exchange) and no token.
func TestTokenErrors(t *testing.T) {
	w := newWorld(t)
	user := w.userToken()
	foreign := jwkstest.NewKey("RS256", "key-1").Sign(map[string]any{"iss": "demo-issuer", "sub": "mallory", "exp": w.now.Add(time.Hour).Unix()})
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	unsigned := hdr + "." + strings.Split(user, ".")[1] + "."
	exchange := func(tok, typ string) url.Values {
		v := url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {tok}}
		if typ != "" {
			v.Set("subject_token_type", typ)
		}
		return v
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(v url.Values, k string, vals ...string) url.Values {
		out := url.Values{}
		for kk, vv := range v {
			out[kk] = vv
		}
		out[k] = vals
		return out
	}
	cases := []struct {
		name   string
		form   url.Values
		mutate func(*http.Request)
		status int
		code   string
	}{
		{"no client auth", cc, func(r *http.Request) { r.Header.Del("Authorization") }, 401, "invalid_client"},
		{"wrong secret", cc, func(r *http.Request) { r.SetBasicAuth("service-a", "nope") }, 401, "invalid_client"},
		{"unknown client", cc, func(r *http.Request) { r.SetBasicAuth("mallory", "s3:cr+t%") }, 401, "invalid_client"},
		{"secret not form-encoded as 2.3.1 says", cc, func(r *http.Request) { r.SetBasicAuth("service-a", "s3:cr t%") }, 401, "invalid_client"},
		{"client_secret_post", with(cc, "client_secret", "s3:cr+t%"), nil, 401, "invalid_client"},
		{"client_id of another client", with(cc, "client_id", "other"), nil, 400, "invalid_request"},
		{"no grant_type", url.Values{"audience": {"service-b"}}, nil, 400, "invalid_request"},
		{"password grant", url.Values{"grant_type": {"password"}}, nil, 400, "unsupported_grant_type"},
		{"repeated grant_type", with(cc, "grant_type", "client_credentials", "client_credentials"), nil, 400, "invalid_request"},
		{"unknown audience", with(cc, "audience", "nobody"), nil, 400, "invalid_target"},
		{"two audiences", with(cc, "audience", "service-a", "service-b"), nil, 400, "invalid_target"},
		{"resource", with(cc, "resource", "https://b"), nil, 400, "invalid_target"},
		{"bad scope", with(cc, "scope", `a "b"`), nil, 400, "invalid_scope"},
		{"double space in scope", with(cc, "scope", "a  b"), nil, 400, "invalid_scope"},
		{"subject_token in client_credentials", with(cc, "subject_token", user), nil, 400, "invalid_request"},
		{"query parameters", cc, func(r *http.Request) { r.URL.RawQuery = "grant_type=client_credentials" }, 400, "invalid_request"},
		{"JSON body", cc, func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, 400, "invalid_request"},
		{"GET", cc, func(r *http.Request) { r.Method = "GET" }, 405, "invalid_request"},
		{"exchange without subject_token", url.Values{"grant_type": {GrantTokenExchange}, "subject_token_type": {TokenTypeAccessToken}}, nil, 400, "invalid_request"},
		{"exchange without subject_token_type", exchange(user, ""), nil, 400, "invalid_request"},
		{"id_token subject type", exchange(user, "urn:ietf:params:oauth:token-type:id_token"), nil, 400, "invalid_request"},
		{"actor_token", with(exchange(user, TokenTypeAccessToken), "actor_token", user), nil, 400, "invalid_request"},
		{"refresh token requested", with(exchange(user, TokenTypeAccessToken), "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), nil, 400, "invalid_request"},
		{"subject signed by another key", exchange(foreign, TokenTypeAccessToken), nil, 400, "invalid_request"},
		{"alg none subject", exchange(unsigned, TokenTypeAccessToken), nil, 400, "invalid_request"},
		{"tampered subject", exchange(user[:len(user)-4]+"AAAA", TokenTypeAccessToken), nil, 400, "invalid_request"},
		{"garbage subject", exchange("not.a.jwt", TokenTypeAccessToken), nil, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := w.post(c.form, c.mutate)
			if a.status != c.status || a.body["error"] != c.code {
				t.Errorf("got %d %v, want %d %s", a.status, a.body, c.status, c.code)
			}
			if _, ok := a.body["access_token"]; ok {
				t.Errorf("an error answer carries a token")
			}
			if c.status == 401 && a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", a.header.Get("Cache-Control"))
			}
		})
	}

	// An expired subject token: the clock moves past its exp.
	w.now = w.now.Add(TokenLifetime)
	if a := w.post(exchange(user, TokenTypeAccessToken), nil); a.status != 400 || a.body["error"] != "invalid_request" {
		t.Errorf("expired subject: %d %v", a.status, a.body)
	}
	// A subject token of a key no longer published (two rotations later).
	w.now = w.now.Add(-TokenLifetime)
	w.is.Rotate()
	w.is.Rotate()
	if a := w.post(exchange(user, TokenTypeAccessToken), nil); a.status != 400 {
		t.Errorf("subject of a retired key: %d %v", a.status, a.body)
	}
}

func TestDiscoveryNamesTokenEndpoint(t *testing.T) {
	w := newWorld(t)
	resp, err := http.Get(w.srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d["issuer"] != "demo-issuer" || d["token_endpoint"] != w.srv.URL+"/token" || d["jwks_uri"] != w.srv.URL+"/.well-known/jwks.json" {
		t.Errorf("discovery %v", d)
	}
}
