package proxy_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The tests of this file run the binary for the proxy-side items of issue
// 11: token sources on routes that verify nothing, claim arrays an app
// would misread, and client bodies framed badly.

const tokenSources = `token:
  sources: ["header:Authorization", "cookie:gh_at", "query:access_token", "header:X-Api-Token"]
`

// TestUnverifiedTokensNeverReachUpstream: a token gatehouse did not verify
// on this request reaches the upstream from no configured source, and the
// other cookies and parameters arrive byte for byte (SPEC.md 5). The raw
// bytes the upstream read are searched for the token.
func TestUnverifiedTokensNeverReachUpstream(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config(tokenSources, ""))
	addr := strings.TrimPrefix(g.URL, "http://")
	tok := w.token(nil)
	other := w.token(map[string]any{"sub": "other"}) // a second valid token: it must not pass along

	tests := []struct {
		name       string
		target     string
		headers    string
		wantURI    string
		wantCookie []string
		wantAuth   string // the Authorization the upstream gets
		wantTokens int    // how often tok may appear on the wire: once when forwarded as verified
	}{
		{
			name:       "auth none, every source",
			target:     "/login?a=1&access_token=" + tok + "&b=%2F&&c",
			headers:    "Authorization: Bearer " + tok + "\r\nCookie: a=1; gh_at=" + tok + "; b=2\r\nX-Api-Token: " + tok + "\r\n",
			wantURI:    "/login?a=1&b=%2F&&c",
			wantCookie: []string{"a=1; b=2"},
		},
		{
			name:       "auth none, HTTP/2-style cookie headers and an encoded parameter name",
			target:     "/login?access%5Ftoken=" + tok + "&z=%7e",
			headers:    "Cookie: a=1\r\nCookie: gh_at=" + tok + "\r\nCookie: b=\"x y\"\r\n",
			wantURI:    "/login?z=%7e",
			wantCookie: []string{"a=1", `b="x y"`},
		},
		{
			name:     "auth none, Basic passes",
			target:   "/login",
			headers:  "Authorization: Basic dTpw\r\n",
			wantURI:  "/login",
			wantAuth: "Basic dTpw",
		},
		{
			name:       "auth optional, cookie token verified and kept, the rest removed",
			target:     "/public/x?access_token=" + other + "&k=v",
			headers:    "Cookie: gh_at=" + tok + "; a=1\r\nX-Api-Token: " + other + "\r\n",
			wantURI:    "/public/x?k=v",
			wantCookie: []string{"gh_at=" + tok + "; a=1"},
			wantTokens: 1,
		},
		{
			name:       "auth required, bearer verified, cookie and query removed",
			target:     "/api/x?access_token=" + other,
			headers:    "Authorization: Bearer " + tok + "\r\nCookie: gh_at=" + other + "\r\n",
			wantURI:    "/api/x",
			wantAuth:   "Bearer " + tok,
			wantTokens: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mark := w.up.WireLen()
			line, all := rawRequest(t, addr, "GET "+tt.target+" HTTP/1.1\r\nHost: app.test\r\n"+tt.headers+"Connection: close\r\n\r\n")
			if !strings.Contains(line, " 200 ") {
				t.Fatalf("%s\n%s", line, all)
			}
			got := w.up.Last(t)
			if got.RequestURI != tt.wantURI {
				t.Errorf("upstream RequestURI = %q, want %q", got.RequestURI, tt.wantURI)
			}
			if c := got.Header["Cookie"]; strings.Join(c, "|") != strings.Join(tt.wantCookie, "|") {
				t.Errorf("upstream Cookie = %q, want %q", c, tt.wantCookie)
			}
			if a := got.Header.Get("Authorization"); a != tt.wantAuth {
				t.Errorf("upstream Authorization = %.20q, want %.20q", a, tt.wantAuth)
			}
			if v, ok := got.Header["X-Api-Token"]; ok {
				t.Errorf("upstream got X-Api-Token %.20q", v)
			}
			wire := w.up.WireSince(mark)
			if n := strings.Count(wire, tok); n != tt.wantTokens {
				t.Errorf("the token is %d times on the upstream wire, want %d", n, tt.wantTokens)
			}
			if strings.Contains(wire, other) {
				t.Errorf("a token that was not the verified one reached the upstream")
			}
		})
	}
}

// TestClaimArraysWithSeparators: an array element holding "," (or, for the
// roles and scopes claims, a space) sets no header, and the warning names
// the header and claim, never the value (SPEC.md 5).
func TestClaimArraysWithSeparators(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("", ""))
	tests := []struct {
		name   string
		claims map[string]any
		header string
		want   string // "" : no header
		warns  bool
	}{
		{"roles element with comma", map[string]any{"roles": []any{"user", "zz-secret,admin"}}, "X-Auth-Roles", "", true},
		{"roles element with space", map[string]any{"roles": []any{"user", "zz-secret admin"}}, "X-Auth-Roles", "", true},
		{"plain roles", map[string]any{"roles": []any{"user", "admin"}}, "X-Auth-Roles", "user,admin", false},
		{"space in another array claim", map[string]any{"email": []any{"zz-secret a@b.c"}}, "X-Auth-Email", "zz-secret a@b.c", false},
		{"comma in another array claim", map[string]any{"email": []any{"zz-secret,a@b.c"}}, "X-Auth-Email", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := strings.Count(g.Stderr.String(), "holds a separator")
			status, _, body := do(t, "GET", g.URL+"/api/x", bearerHeader(w.token(tt.claims)), "")
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			got, ok := w.up.Last(t).Header[tt.header]
			if tt.want == "" && ok {
				t.Errorf("%s = %q, want no header", tt.header, got)
			}
			if tt.want != "" && (len(got) != 1 || got[0] != tt.want) {
				t.Errorf("%s = %q, want %q", tt.header, got, tt.want)
			}
			if !tt.warns {
				return
			}
			if !g.WaitLogCount("holds a separator", before+1, 10*time.Second) {
				t.Fatalf("no warning logged\n%s", g.Stderr.String())
			}
			lines := strings.Split(grep(g.Stderr.String(), "holds a separator"), "\n")
			line := lines[len(lines)-1]
			if !strings.Contains(line, `"header":"`+tt.header+`"`) || !strings.Contains(line, `"level":"WARN"`) {
				t.Errorf("warning does not name the header at warn level: %s", line)
			}
		})
	}
	if strings.Contains(g.Stderr.String(), "zz-secret") {
		t.Errorf("a claim value reached the log")
	}
}

// TestBadClientBody: a body the client frames badly is 400 bad_request,
// not 502, and the upstream histogram records no failure (SPEC.md 4).
func TestBadClientBody(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("", ""))
	addr := strings.TrimPrefix(g.URL, "http://")
	tok := w.token(nil)
	head := "POST /api/x HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer " + tok + "\r\n"

	tests := []struct {
		name      string
		text      string
		halfClose bool
	}{
		{"broken chunk size", head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n", false},
		{"chunk longer than announced", head + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", false},
		{"short content-length, then half-close", head + "Content-Length: 100\r\n\r\n0123456789", true},
		{"chunked body cut, then half-close", head + "Transfer-Encoding: chunked\r\n\r\n10\r\n01234", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := dialTimeout(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.WriteString(conn, tt.text); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				conn.(*net.TCPConn).CloseWrite()
			}
			b, _ := io.ReadAll(conn)
			line, _, _ := strings.Cut(string(b), "\r\n")
			if !strings.Contains(line, " 400 ") || !strings.Contains(string(b), `"error":"bad_request"`) {
				t.Errorf("answer %q, want 400 bad_request\n%s", line, b)
			}
		})
	}
	_, _, metrics := do(t, "GET", g.AdminURL+"/metrics", nil, "")
	for _, bad := range []string{`code="error"`, "upstream_unavailable"} {
		if l := grep(metrics, bad); l != "" {
			t.Errorf("a client's bad body counted as an upstream failure: %s", l)
		}
	}
	if strings.Contains(g.Stderr.String(), "upstream failed") {
		t.Errorf("logged as an upstream failure:\n%s", grep(g.Stderr.String(), "upstream failed"))
	}

	// A whole body still goes through on the same route.
	status, _, body := do(t, "POST", g.URL+"/api/x", bearerHeader(tok), "hello")
	if status != 200 || w.up.Last(t).Body != "hello" {
		t.Errorf("a good body: %d %s, upstream got %q", status, body, w.up.Last(t).Body)
	}
}

// preflight sends an OPTIONS request with Origin and
// Access-Control-Request-Method (and more headers) and returns the answer.
func preflight(t *testing.T, url, origin, method string, more http.Header) (int, http.Header, string) {
	t.Helper()
	h := http.Header{"Origin": {origin}, "Access-Control-Request-Method": {method}}
	for k, v := range more {
		h[k] = v
	}
	return do(t, "OPTIONS", url, h, "")
}
