package policy

import (
	"strings"
	"testing"
	"unsafe"
)

// bad marks a corpus entry that Normalize must reject (400, never forwarded).
const bad = "<bad>"

// normalizeCorpus is the bypass corpus: each entry with the exact canonical
// path or the rejection. The matcher tests and the nginx differential test
// reuse it.
var normalizeCorpus = []struct {
	name, in, want string
}{
	// Already canonical: returned as is.
	{"root", "/", "/"},
	{"plain", "/admin", "/admin"},
	{"trailing slash kept", "/admin/", "/admin/"},
	{"case kept", "/ADMIN", "/ADMIN"},
	{"mixed case kept", "/Admin/Panel", "/Admin/Panel"},
	{"sub-delims raw", "/a!$&'()*+,;=:@b", "/a!$&'()*+,;=:@b"},
	{"semicolon segment end", "/admin;", "/admin;"},
	{"semicolon params", "/admin;jsessionid=1/x", "/admin;jsessionid=1/x"},
	{"three dots literal", "/.../admin", "/.../admin"},
	{"dot prefix literal", "/.well-known/x", "/.well-known/x"},
	{"dotdot prefix literal", "/..x/admin", "/..x/admin"},
	{"encoded reserved kept", "/a%3Fb%23c", "/a%3Fb%23c"},
	{"double encoding not decoded twice", "/%252e%252e/admin", "/%252e%252e/admin"},
	{"double encoded slash literal", "/a%252Fb", "/a%252Fb"},
	{"utf-8 encoded kept", "/caf%C3%A9", "/caf%C3%A9"},
	{"4-byte utf-8", "/%F0%9F%98%80", "/%F0%9F%98%80"},

	// Repeated slashes.
	{"double slash", "//admin", "/admin"},
	{"many slashes", "///admin///x", "/admin/x"},
	{"double trailing slash", "/admin//", "/admin/"},
	{"only slashes", "////", "/"},

	// Dot segments.
	{"dot", "/./admin", "/admin"},
	{"dotdot", "/x/../admin", "/admin"},
	{"dotdot twice", "/x/y/../../admin", "/admin"},
	{"trailing dot", "/admin/.", "/admin/"},
	{"trailing dotdot", "/admin/..", "/"},
	{"dotdot then slash", "/admin/../", "/"},
	{"dot only", "/.", "/"},
	{"dot slash", "/./", "/"},
	{"dotdot climbs", "/..", bad},
	{"dotdot climbs to admin", "/../admin", bad},
	{"dotdot climbs later", "/a/../../admin", bad},
	{"dotdot after double slash", "/a//../admin", "/admin"},
	{"encoded dotdot lower", "/%2e%2e/admin", bad},
	{"encoded dotdot upper", "/%2E%2E/admin", bad},
	{"half encoded dotdot", "/%2E./admin", bad},
	{"encoded dotdot resolves", "/x/%2e%2e/admin", "/admin"},
	{"encoded dot", "/%2e/admin", "/admin"},
	{"encoded dot mixed", "/x/.%2E/admin", "/admin"},

	// Unreserved decoding and hex case.
	{"decode letters", "/%61dmin", "/admin"},
	{"decode upper letters", "/%41DMIN", "/ADMIN"},
	{"decode tilde dash underscore", "/%7e%2d%5F", "/~-_"},
	{"upper-case hex", "/a%3fb", "/a%3Fb"},
	{"upper-case utf-8 hex", "/caf%c3%a9", "/caf%C3%A9"},
	{"percent kept", "/100%25", "/100%25"},
	{"percent lower kept", "/%25ff", "/%25ff"},

	// Raw bytes that have no place in a path are encoded.
	{"raw space", "/a b", "/a%20b"},
	{"raw quote", `/a"b`, "/a%22b"},
	{"raw braces", "/a{b}", "/a%7Bb%7D"},
	{"raw utf-8", "/café", "/caf%C3%A9"},

	// Encoded slash and backslash.
	{"encoded slash", "/admin%2F", bad},
	{"encoded slash lower", "/a%2fb", bad},
	{"encoded slash leading", "/%2Fadmin", bad},
	{"backslash", `\admin`, bad},
	{"backslash inside", `/x\admin`, bad},
	{"encoded backslash", "/%5cadmin", bad},
	{"encoded backslash upper", "/%5Cadmin", bad},

	// Servlet path parameters on dot segments.
	{"dotdot semicolon", "/admin/..;/x", bad},
	{"dot semicolon", "/.;/admin", bad},
	{"dotdot semicolon params", "/x/..;jsessionid=1/admin", bad},
	{"encoded dotdot semicolon", "/x/%2e%2e;/admin", bad},
	{"dotdot encoded semicolon", "/x/..%3b/admin", bad},
	{"dot encoded semicolon", "/.%3B/admin", bad},

	// Control characters.
	{"encoded nul", "/admin%00", bad},
	{"encoded newline", "/admin%0a", bad},
	{"encoded cr", "/admin%0D", bad},
	{"encoded tab", "/admin%09", bad},
	{"encoded del", "/admin%7f", bad},
	{"raw nul", "/admin\x00", bad},
	{"raw newline", "/admin\n", bad},
	{"raw tab", "/ad\tmin", bad},
	{"raw del", "/admin\x7f", bad},

	// UTF-8.
	{"overlong dot", "/%C0%AE%C0%AE/admin", bad},
	{"overlong slash", "/%C0%AFadmin", bad},
	{"overlong 3-byte", "/%E0%80%AE", bad},
	{"lone FF", "/%FF", bad},
	{"lone continuation", "/%80", bad},
	{"truncated sequence", "/%C3", bad},
	{"truncated before slash", "/%C3/a", bad},
	{"surrogate", "/%ED%A0%80", bad},
	{"past U+10FFFF", "/%F4%90%80%80", bad},
	{"raw invalid byte", "/\xff", bad},
	{"raw overlong", "/\xc0\xae", bad},
	{"mixed raw and encoded sequence", "/%C3\xa9", "/%C3%A9"},

	// Broken percent-encoding.
	{"non-hex escape", "/%zz", bad},
	{"short escape", "/%4", bad},
	{"trailing percent", "/admin%", bad},
	{"half hex", "/%4g", bad},

	// Not a path.
	{"empty", "", bad},
	{"relative", "admin", bad},
	{"absolute URI", "http://x/admin", bad},
	{"star", "*", bad},
}

func TestNormalize(t *testing.T) {
	for _, tt := range normalizeCorpus {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Normalize(tt.in)
			if !ok {
				got = bad
			}
			if got != tt.want {
				t.Fatalf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if ok {
				again, ok2 := Normalize(got)
				if !ok2 || again != got {
					t.Fatalf("Normalize(%q) = %q, %v: not a fixed point", got, again, ok2)
				}
			}
		})
	}
}

func TestNormalizeNoAllocWhenCanonical(t *testing.T) {
	for _, in := range []string{"/", "/api/orders/42", "/a%3Fb/caf%C3%A9/", "/x/y/z;a=b"} {
		var out string
		allocs := testing.AllocsPerRun(100, func() { out, _ = Normalize(in) })
		if allocs != 0 {
			t.Errorf("Normalize(%q): %v allocs, want 0", in, allocs)
		}
		// The very same string comes back, not a copy.
		if out != in || unsafe.StringData(out) != unsafe.StringData(in) {
			t.Errorf("Normalize(%q) = %q", in, out)
		}
	}
	// A result that is a prefix of the input is a substring, no allocation.
	if allocs := testing.AllocsPerRun(100, func() { Normalize("/admin/.") }); allocs != 0 {
		t.Errorf("Normalize(/admin/.): %v allocs, want 0", allocs)
	}
}

// checkCanonical states what every accepted output must satisfy; the fuzz
// target and the tests share it.
func checkCanonical(t *testing.T, in, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "/") {
		t.Fatalf("Normalize(%q) = %q: does not start with /", in, out)
	}
	for _, s := range []string{"//", "/./", "/../", `\`} {
		if strings.Contains(out, s) {
			t.Fatalf("Normalize(%q) = %q: contains %q", in, out, s)
		}
	}
	if strings.HasSuffix(out, "/.") || strings.HasSuffix(out, "/..") {
		t.Fatalf("Normalize(%q) = %q: ends in a dot segment", in, out)
	}
	for i := 0; i < len(out); i++ {
		c := out[i]
		if c < 0x21 || c >= 0x7f {
			t.Fatalf("Normalize(%q) = %q: raw byte %#x", in, out, c)
		}
	}
	again, ok := Normalize(out)
	if !ok || again != out {
		t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v: not a fixed point", in, out, out, again, ok)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, tt := range normalizeCorpus {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := Normalize(in)
		if !ok {
			if out != "" {
				t.Fatalf("Normalize(%q) = %q, false: want an empty path with false", in, out)
			}
			return
		}
		checkCanonical(t, in, out)
	})
}
