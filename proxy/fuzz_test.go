package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzClaimString: whatever JSON a verified token carries, rendering it as a
// header value never panics and never yields a control character (which
// would split or smuggle a header, SPEC.md 5).
func FuzzClaimString(f *testing.F) {
	for _, s := range []string{
		`"alice"`, `123`, `1e21`, `-0.5`, `true`, `null`, `["a","b"]`, `[1,[2,3],{"a":1}]`,
		`{"b":1,"a":"x"}`, `"evil\r\nX-Injected: 1"`, `["ok","bad\u0000"]`, `"\u007f"`, `[null]`,
		`"\u2028"`, `12345678901234567890123`, `[]`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, useNumber := range []bool{false, true} {
			dec := json.NewDecoder(bytes.NewReader(data))
			if useNumber {
				dec.UseNumber()
			}
			var v any
			if dec.Decode(&v) != nil {
				return
			}
			s, ok := claimString(v)
			if !ok {
				continue
			}
			for i := 0; i < len(s); i++ {
				if c := s[i]; c < 0x20 || c == 0x7f {
					t.Fatalf("claimString(%s) = %q holds control byte %#x", data, s, c)
				}
			}
			if str, isStr := v.(string); isStr && s != str {
				t.Fatalf("claimString(%q) = %q, want the string as is", str, s)
			}
			if utf8.Valid(data) && !utf8.ValidString(s) {
				t.Fatalf("claimString(%s) = %q: invalid UTF-8 from valid input", data, s)
			}
		}
	})
}

var errLine = regexp.MustCompile(`^fuzz\.yaml:\d+:\d+: `)

// FuzzLoadConfig: any bytes as a config file never panic, and every error
// is one line starting FILE:LINE:COL: (what `gatehouse -t` prints).
func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"", "listen: \":8080\"\n", "{", "listen: [\n", "a: &x 1\nb: *x\n", "<<: {a: 1}\n",
		"listen: 1\nlisten: 2\n", "routes:\n  - location: \"~ ^/(\"\n", "timeouts:\n  idle: forever\n",
		"issuers:\n  - issuer: x\n    audiences: any\n    jwks_url: \"http://a\"\n    hmac_secret_env: X\n",
		"headers:\n  \"Bad Name\": sub\n", "token:\n  sources: [\"cookie:\"]\n", "listen: \"\x00\"\n",
		"\ufeffupstream: \"unix:///tmp/s\"\n", "routes: !!binary aGk=\n", "a:\n\tb: 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keys and CA files are read at load: keep the fuzzer away from
		// device files that never end.
		if bytes.Contains(data, []byte("/dev")) || bytes.Contains(data, []byte("/proc")) || bytes.Contains(data, []byte("/sys")) {
			t.Skip()
		}
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("ParseConfig returned neither a config nor an error")
			}
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !errLine.MatchString(line) {
				t.Fatalf("error line %q does not start FILE:LINE:COL: (input %q)", line, data)
			}
		}
	})
}

// FuzzExtractToken: any Authorization value, Cookie header and raw query
// are read without panicking; a token found is never empty and comes from
// the source it names; removing every source leaves none to find.
func FuzzExtractToken(f *testing.F) {
	f.Add("Bearer abc", "session=x", "access_token=y")
	f.Add("bearer\t", "session=a; session=b", "access%5Ftoken=1&access_token=2")
	f.Add("Basic dTpw", `session="q"`, "a=%zz&access_token=%")
	f.Add("Bearer  a b", ";;=;session", "&&access_token&")
	sources := []TokenSource{
		{Kind: SourceBearer, Name: "Authorization"},
		{Kind: SourceCookie, Name: "session"},
		{Kind: SourceQuery, Name: "access_token"},
		{Kind: SourceHeader, Name: "X-Token"},
	}
	f.Fuzz(func(t *testing.T, authz, cookie, query string) {
		h := http.Header{}
		if authz != "" {
			h["Authorization"] = []string{authz}
			h["X-Token"] = []string{authz}
		}
		if cookie != "" {
			h["Cookie"] = []string{cookie}
		}
		r := &http.Request{Header: h, URL: &url.URL{RawQuery: query}}
		raw, src, st, _ := extractToken(r, sources)
		switch st {
		case tokenFound:
			if raw == "" || src < 0 || src >= len(sources) {
				t.Fatalf("found token %q from source %d", raw, src)
			}
		case tokenAbsent:
			if raw != "" || src != -1 {
				t.Fatalf("absent, yet %q from %d", raw, src)
			}
		}
		removeTokens(r, sources, -1)
		if raw2, src2, st2, _ := extractToken(r, sources); st2 != tokenAbsent {
			t.Fatalf("after removeTokens source %d still gives %q (status %d): %v %q", src2, raw2, st2, r.Header, r.URL.RawQuery)
		}
	})
}
