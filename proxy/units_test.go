package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestClaimString(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
		ok   bool
	}{
		{"string", "abc", "abc", true},
		{"integer float", float64(12345678901), "12345678901", true},
		{"big integer stays plain", float64(1e21), "1000000000000000000000", true},
		{"fraction", 1.5, "1.5", true},
		{"json number", json.Number("42"), "42", true},
		{"json number exponent", json.Number("1e3"), "1000", true},
		{"bool", true, "true", true},
		{"array", []any{"a", float64(2), false}, "a,2,false", true},
		{"array with object", []any{"a", map[string]any{"k": "v"}}, `a,{"k":"v"}`, true},
		{"object compact and sorted", map[string]any{"b": float64(1), "a": "x"}, `{"a":"x","b":1}`, true},
		{"null", nil, "", false},
		{"control character", "a\r\nX-Evil: 1", "", false},
		{"tab", "a\tb", "", false},
		{"DEL", "a\x7fb", "", false},
		{"control in array", []any{"ok", "bad\n"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := claimString(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("claimString(%#v) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"no trusted proxies: the peer", "192.0.2.1:5000", []string{"1.2.3.4"}, nil, "192.0.2.1"},
		{"untrusted peer: xff ignored", "192.0.2.1:5000", []string{"1.2.3.4"}, trusted, "192.0.2.1"},
		{"trusted peer: rightmost untrusted", "10.1.1.1:5000", []string{"6.6.6.6, 1.2.3.4, 10.2.2.2"}, trusted, "1.2.3.4"},
		{"several headers", "127.0.0.1:1", []string{"6.6.6.6", "1.2.3.4"}, trusted, "1.2.3.4"},
		{"all trusted: leftmost", "10.1.1.1:5000", []string{"10.3.3.3, 10.2.2.2"}, trusted, "10.3.3.3"},
		{"garbage stops the walk", "10.1.1.1:5000", []string{"6.6.6.6, nonsense, 10.2.2.2"}, trusted, "10.2.2.2"},
		{"ipv6 peer", "[2001:db8::1]:443", nil, trusted, "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clientIP(tt.remote, tt.xff, tt.trusted); got != tt.want {
				t.Errorf("clientIP(%q, %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestExtractToken(t *testing.T) {
	sources := []TokenSource{
		{Kind: SourceBearer, Name: "Authorization"},
		{Kind: SourceCookie, Name: "session"},
		{Kind: SourceQuery, Name: "access_token"},
		{Kind: SourceHeader, Name: "X-Token"},
	}
	tests := []struct {
		name   string
		header http.Header
		query  string
		want   string
		src    int
		st     tokenStatus
	}{
		{"none", nil, "", "", -1, tokenAbsent},
		{"bearer", http.Header{"Authorization": {"Bearer abc"}}, "", "abc", 0, tokenFound},
		{"bearer any case", http.Header{"Authorization": {"bEaReR   abc "}}, "", "abc", 0, tokenFound},
		{"basic is no token, falls through", http.Header{"Authorization": {"Basic xyz"}, "Cookie": {"session=c1"}}, "", "c1", 1, tokenFound},
		{"bearerx is another scheme", http.Header{"Authorization": {"Bearerx abc"}}, "", "", -1, tokenAbsent},
		{"empty bearer", http.Header{"Authorization": {"Bearer"}}, "", "", 0, tokenInvalid},
		{"two authorization headers", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, "", "", 0, tokenInvalid},
		{"cookie twice in one header", http.Header{"Cookie": {"session=a; session=b"}}, "", "", 1, tokenInvalid},
		{"cookie twice across headers", http.Header{"Cookie": {"session=a", "x=1; session=b"}}, "", "", 1, tokenInvalid},
		{"query", nil, "a=1&access_token=q1", "q1", 2, tokenFound},
		{"query twice", nil, "access_token=q1&access_token=q2", "", 2, tokenInvalid},
		{"query twice, one encoded name", nil, "access_token=q1&access%5Ftoken=q2", "", 2, tokenInvalid},
		{"raw header", http.Header{"X-Token": {"h1"}}, "", "h1", 3, tokenFound},
		{"raw header twice", http.Header{"X-Token": {"h1", "h2"}}, "", "", 3, tokenInvalid},
		{"first source wins", http.Header{"Authorization": {"Bearer first"}, "X-Token": {"h1"}}, "access_token=q", "first", 0, tokenFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{Header: tt.header, URL: &url.URL{RawQuery: tt.query}}
			if r.Header == nil {
				r.Header = http.Header{}
			}
			got, src, st, _ := extractToken(r, sources)
			if got != tt.want || src != tt.src || st != tt.st {
				t.Errorf("extractToken = %q, %d, %d; want %q, %d, %d", got, src, st, tt.want, tt.src, tt.st)
			}
		})
	}
}

func TestRemoveTokens(t *testing.T) {
	sources := []TokenSource{
		{Kind: SourceBearer, Name: "Authorization"},
		{Kind: SourceCookie, Name: "session"},
		{Kind: SourceQuery, Name: "access_token"},
		{Kind: SourceHeader, Name: "X-Token"},
	}
	tests := []struct {
		name        string
		header      http.Header
		query       string
		wantHeader  http.Header
		wantQuery   string
		keep        int
		wantKeptSrc bool
	}{
		{"every source", http.Header{"Authorization": {"Bearer t"}, "Cookie": {"a=1; session=t", "b=2"}, "X-Token": {"t"}},
			"x=%2f&access_token=t&access%5ftoken=u&y=1+2", http.Header{"Cookie": {"a=1", "b=2"}}, "x=%2f&y=1+2", -1, false},
		{"cookie in the middle, bytes kept", http.Header{"Cookie": {"a=1;  b=\"q\" ; session=t; c=3;"}},
			"", http.Header{"Cookie": {"a=1;  b=\"q\" ; c=3;"}}, "", -1, false},
		{"cookie first", http.Header{"Cookie": {"session=t; a=1"}}, "", http.Header{"Cookie": {"a=1"}}, "", -1, false},
		{"cookie alone", http.Header{"Cookie": {"session=t"}}, "", http.Header{}, "", -1, false},
		{"HTTP/2 style cookie headers", http.Header{"Cookie": {"a=1", "session=t", "b=2"}}, "",
			http.Header{"Cookie": {"a=1", "b=2"}}, "", -1, false},
		{"similar cookie names stay", http.Header{"Cookie": {"xsession=1; session2=2; session=t"}}, "",
			http.Header{"Cookie": {"xsession=1; session2=2"}}, "", -1, false},
		{"query first, empty parts kept", nil, "access_token=t&&a=1&", nil, "&a=1&", -1, false},
		{"query last", nil, "a=1&b=%zz&access_token=t", nil, "a=1&b=%zz", -1, false},
		{"query only", nil, "access_token=t", nil, "", -1, false},
		{"query repeated and encoded", nil, "access_token=t&x=1&acc%65ss_token=u&access_token", nil, "x=1", -1, false},
		{"similar query names stay", nil, "access_token2=1&xaccess_token=2&access_token=t", nil, "access_token2=1&xaccess_token=2", -1, false},
		{"basic auth stays", http.Header{"Authorization": {"Basic dTpw"}}, "", http.Header{"Authorization": {"Basic dTpw"}}, "", -1, false},
		{"kept source", http.Header{"Authorization": {"Bearer t"}, "Cookie": {"session=t"}}, "access_token=t",
			http.Header{"Authorization": {"Bearer t"}}, "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			want := tt.wantHeader
			if want == nil {
				want = http.Header{}
			}
			r := &http.Request{Header: h, URL: &url.URL{RawQuery: tt.query}}
			removeTokens(r, sources, tt.keep)
			if !reflect.DeepEqual(r.Header, want) || r.URL.RawQuery != tt.wantQuery {
				t.Errorf("removeTokens: header %q query %q; want %q %q", r.Header, r.URL.RawQuery, want, tt.wantQuery)
			}
			// What the reader finds and what the remover removes must agree.
			if _, _, st, _ := extractToken(r, sources); st != tokenAbsent && !tt.wantKeptSrc {
				t.Errorf("a token source is still readable after removeTokens: %q %q", r.Header, r.URL.RawQuery)
			}
		})
	}
}

func TestRenderClaimSeparators(t *testing.T) {
	tests := []struct {
		name string
		in   any
		seps string
		want string
		why  renderFail
	}{
		{"plain array", []any{"user", "admin"}, ", ", "user,admin", renderOK},
		{"comma in element", []any{"user,admin"}, ",", "", renderSeparator},
		{"comma in element of a roles claim", []any{"user", "a,b"}, ", ", "", renderSeparator},
		{"space in element of a roles claim", []any{"user admin"}, ", ", "", renderSeparator},
		{"space in element of another claim", []any{"New York", "Paris"}, ",", "New York,Paris", renderOK},
		{"nested array holds a comma", []any{[]any{"a", "b"}}, ",", "", renderSeparator},
		{"string with comma is not an array", "user,admin", ", ", "user,admin", renderOK},
		{"control wins over separator", []any{"a,b\n"}, ",", "", renderUnusable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := renderClaim(tt.in, tt.seps)
			if got != tt.want || why != tt.why {
				t.Errorf("renderClaim(%#v, %q) = %q, %d; want %q, %d", tt.in, tt.seps, got, why, tt.want, tt.why)
			}
		})
	}
}

func TestStripFoldsNames(t *testing.T) {
	c := defaultConfig("x")
	c.Headers = []HeaderRule{{Name: "X-User", Claim: "sub"}}
	s := newStripper(c)
	h := http.Header{
		"X-Auth-Subject": {"a"}, "X_auth_subject": {"a"}, "X_AUTH_ROLES": {"a"}, "X-User": {"u"}, "X_user": {"u"},
		"X-Http-Method-Override": {"DELETE"}, "X_original_url": {"/admin"}, "Forwarded": {"x"},
		"Accept": {"*/*"}, "X-Other": {"keep"},
		"Connection": {"keep-alive, X-Other, Upgrade"},
	}
	s.strip(h)
	if len(h) != 1 || h.Get("Accept") != "*/*" {
		t.Errorf("after strip: %v", h)
	}
}

func TestRequestID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{{"abc-123", true}, {"a.b_c:d", true}, {"", false}, {"has space", false}, {"é", false}, {string(make([]byte, 129)), false}} {
		if got := validRequestID(tt.in); got != tt.want {
			t.Errorf("validRequestID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	a, b := newRequestID(), newRequestID()
	if a == b || !validRequestID(a) {
		t.Errorf("newRequestID gave %q then %q", a, b)
	}
}

func TestQuoteHeader(t *testing.T) {
	if got := quoteHeader("say \"hi\"\\\r\n\x80"); got != `"say \"hi\"\\"` {
		t.Errorf("quoteHeader = %q", got)
	}
}

func TestRawPath(t *testing.T) {
	for _, tt := range []struct{ uri, want string }{
		{"/a/b?x=1", "/a/b"},
		{"/a%2fb{", "/a%2fb{"},
		{"/admin%2F..%2F\"x", "/admin%2F..%2F\"x"},
		{"http://host:8080/p%2Fq?z", "/p%2Fq"},
		{"http://host", ""},
		{"*", ""},
	} {
		if got := rawPath(&http.Request{RequestURI: tt.uri}); got != tt.want {
			t.Errorf("rawPath(%q) = %q, want %q", tt.uri, got, tt.want)
		}
	}
}

func TestIsPreflight(t *testing.T) {
	pre := http.Header{"Origin": {"https://a.example"}, "Access-Control-Request-Method": {"PUT"}}
	emptyBody := io.NopCloser(strings.NewReader("")) // as the HTTP/2 server gives a request without body
	tests := []struct {
		name   string
		method string
		header http.Header
		length int64
		body   io.ReadCloser
		want   bool
	}{
		{"HTTP/1.1 preflight", "OPTIONS", pre, 0, http.NoBody, true},
		{"HTTP/2 preflight", "OPTIONS", pre, 0, emptyBody, true},
		{"announced body", "OPTIONS", pre, 4, emptyBody, false},
		{"chunked body", "OPTIONS", pre, -1, emptyBody, false},
		{"not OPTIONS", "GET", pre, 0, http.NoBody, false},
		{"no Origin", "OPTIONS", http.Header{"Access-Control-Request-Method": {"PUT"}}, 0, http.NoBody, false},
		{"no method", "OPTIONS", http.Header{"Origin": {"https://a.example"}}, 0, http.NoBody, false},
		{"empty method", "OPTIONS", http.Header{"Origin": {"https://a.example"}, "Access-Control-Request-Method": {""}}, 0, http.NoBody, false},
		{"two origins", "OPTIONS", http.Header{"Origin": {"https://a.example", "https://b.example"}, "Access-Control-Request-Method": {"PUT"}}, 0, http.NoBody, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{Method: tt.method, Header: tt.header, ContentLength: tt.length, Body: tt.body}
			if got := isPreflight(r); got != tt.want {
				t.Errorf("isPreflight(%s %v, length %d) = %v, want %v", tt.method, tt.header, tt.length, got, tt.want)
			}
		})
	}
}
