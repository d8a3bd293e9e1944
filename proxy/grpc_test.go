package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		ct   []string
		want bool
	}{
		{nil, false},
		{[]string{"application/grpc"}, true},
		{[]string{"application/grpc+proto"}, true},
		{[]string{"application/grpc;charset=utf-8"}, true},
		{[]string{"Application/GRPC"}, true},
		{[]string{"application/grpc-web"}, false},
		{[]string{"application/grpc-web+proto"}, false},
		{[]string{"application/grpcx"}, false},
		{[]string{"application/json"}, false},
		{[]string{"application/grp"}, false},
	}
	for _, tt := range tests {
		r := &http.Request{Header: http.Header{}}
		if tt.ct != nil {
			r.Header["Content-Type"] = tt.ct
		}
		if got := isGRPC(r); got != tt.want {
			t.Errorf("isGRPC(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
}

// TestGRPCStatusOf walks SPEC.md 9's table through every reason.
func TestGRPCStatusOf(t *testing.T) {
	want := map[reason]int{
		reasonMissingToken: 16, reasonInvalidToken: 16, reasonTokenExpired: 16, reasonTokenRevoked: 16,
		reasonInsufficientScope: 7, reasonForbidden: 7, reasonNoInboundToken: 7, reasonBadRequest: 3,
		reasonKeysUnavailable: 14, reasonUpstreamUnavailable: 14, reasonTokenUnavailable: 14,
		reasonUpstreamTimeout: 4, reasonPayloadTooLarge: 8, reasonTooManyRequests: 8, reasonInternalError: 13,
	}
	for rs := reason(0); rs < numReasons; rs++ {
		d := rs.info()
		if d.allow {
			continue
		}
		w, ok := want[rs]
		if !ok {
			t.Errorf("reason %q (HTTP %d) has no expected grpc-status in this test", d.code, d.status)
			continue
		}
		if got := grpcStatusOf(d.status); got != w {
			t.Errorf("grpcStatusOf(%d) for %s = %d, want %d", d.status, d.code, got, w)
		}
	}
	for s, want := range map[int]int{429: 8, 431: 8, 500: 13, 418: 2} {
		if got := grpcStatusOf(s); got != want {
			t.Errorf("grpcStatusOf(%d) = %d, want %d", s, got, want)
		}
	}
}

func TestWriteGRPCError(t *testing.T) {
	rec := httptest.NewRecorder()
	status := writeGRPCError(rec, reasonInvalidToken, "id-1", `token "expired"`)
	if status != 401 || rec.Code != 200 || rec.Body.Len() != 0 {
		t.Fatalf("returned %d, wrote %d with %d body bytes; want 401, 200, no body", status, rec.Code, rec.Body.Len())
	}
	h := rec.Header()
	for k, v := range map[string]string{
		"Content-Type":     "application/grpc",
		"Grpc-Status":      "16",
		"Grpc-Message":     "the token is not valid",
		"X-Request-Id":     "id-1",
		"Www-Authenticate": `Bearer realm="gatehouse", error="invalid_token", error_description="token \"expired\""`,
	} {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":   "plain text",
		"100%":         "100%25",
		"ü":            "%C3%BC",
		"a\r\nb":       "a%0D%0Ab",
		"~ and \x7f":   "~ and %7F",
		"":             "",
		"%%":           "%25%25",
		"tab\tinside!": "tab%09inside!",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true},
		{"2M", 2 * time.Minute, true},
		{"3S", 3 * time.Second, true},
		{"100m", 100 * time.Millisecond, true},
		{"5u", 5 * time.Microsecond, true},
		{"7n", 7, true},
		{"99999999S", 99999999 * time.Second, true},
		{"99999999H", 0, false},  // beyond a Duration
		{"123456789S", 0, false}, // 9 digits
		{"S", 0, false},
		{"10", 0, false},
		{"10s", 0, false},
		{"-1S", 0, false},
		{"1.5S", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseGRPCTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWithGRPCDeadline(t *testing.T) {
	r := httptest.NewRequest("POST", "/pkg.Svc/M", nil)
	r.Header.Set("Grpc-Timeout", "5S")
	if got, cancel := withGRPCDeadline(r); got != r {
		t.Error("a request without a gRPC content-type got a deadline")
		cancel()
	}
	r.Header.Set("Content-Type", "application/grpc")
	got, cancel := withGRPCDeadline(r)
	defer cancel()
	dl, ok := got.Context().Deadline()
	if !ok || time.Until(dl) > 5*time.Second {
		t.Errorf("deadline %v (set %v), want within 5s", dl, ok)
	}
}

func TestProtocolConfig(t *testing.T) {
	base := "listen: \":0\"\nupstream: %s\nissuers:\n  - issuer: i\n    audiences: any\n    hmac_secret_env: GH_TEST_SECRET\n%s"
	t.Setenv("GH_TEST_SECRET", strings.Repeat("s", 32))
	tests := []struct {
		name, upstream, extra string
		err                   string // "" for valid
	}{
		{"default", "http://127.0.0.1:1", "", ""},
		{"h2c upstream", "http://127.0.0.1:1", "upstream_protocol: h2c\n", ""},
		{"h2c unix socket", "unix:///run/app.sock", "upstream_protocol: h2c\n", ""},
		{"h2 upstream", "https://app:443", "upstream_protocol: h2\n", ""},
		{"h2 needs https", "http://127.0.0.1:1", "upstream_protocol: h2\n", "h2 needs an https:// upstream"},
		{"h2c not over https", "https://app", "upstream_protocol: h2c\n", "h2c is plain-text HTTP/2"},
		{"unknown upstream protocol", "http://a", "upstream_protocol: http3\n", `unknown upstream_protocol "http3"`},
		{"listen h2c", "http://a", "listen_protocols: [http1, h2c]\n", ""},
		{"listen h2 without tls", "http://a", "listen_protocols: [h2]\n", "without tls only http1 and h2c"},
		{"listen default list without tls", "http://a", "listen_protocols: [http1, h2, h2c]\n", ""},
		{"listen unknown", "http://a", "listen_protocols: [spdy]\n", `unknown protocol "spdy"`},
		{"listen twice", "http://a", "listen_protocols: [http1, http1]\n", "given twice"},
		{"listen empty", "http://a", "listen_protocols: []\n", "at least one"},
		{"route protocol meets the global upstream", "http://a", "routes:\n  - location: /x\n    upstream_protocol: h2\n", `route "/x": upstream_protocol: h2 needs an https:// upstream`},
		{"route upstream meets the global protocol", "http://a", "upstream_protocol: h2c\nroutes:\n  - location: /x\n    upstream: https://b\n", `route "/x": upstream_protocol: h2c is plain-text`},
		{"route pair", "http://a", "routes:\n  - location: /x\n    upstream: https://b\n    upstream_protocol: h2\n", ""},
		{"route unknown", "http://a", "routes:\n  - location: /x\n    upstream_protocol: h3\n", `unknown upstream_protocol "h3"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("t.yaml", []byte(strings.Replace(strings.Replace(base, "%s", tt.upstream, 1), "%s", tt.extra, 1)))
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				if c.Policy == nil {
					t.Fatal("no policy")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParseConfig error %v, want one containing %q", yamlpos.Errors(err), tt.err)
			}
		})
	}
}

func TestServerProtocols(t *testing.T) {
	withTLS := &Config{TLS: &TLSConfig{}}
	tests := []struct {
		name           string
		c              *Config
		http1, h2, h2c bool
	}{
		{"default plain", &Config{}, true, false, true},
		{"default tls", withTLS, true, true, false},
		{"http1 only", &Config{ListenProtocols: []string{"http1"}}, true, false, false},
		{"h2c only", &Config{ListenProtocols: []string{"h2c"}}, false, false, true},
	}
	for _, tt := range tests {
		p := serverProtocols(tt.c)
		if p.HTTP1() != tt.http1 || p.HTTP2() != tt.h2 || p.UnencryptedHTTP2() != tt.h2c {
			t.Errorf("%s: %v, want http1 %v h2 %v h2c %v", tt.name, p, tt.http1, tt.h2, tt.h2c)
		}
	}
}
