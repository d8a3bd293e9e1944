package proxy_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy"
)

// TestRevokeCommandErrors: usage and config errors exit 2, an unreachable
// broker exits 1 naming the broker by position, never by URL.
func TestRevokeCommandErrors(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withRev := write("rev.yaml", w.config("revocation:\n  rabbitmq:\n    urls: [\"amqp://u:s3cret@"+dead+"/\", \"amqp://u:s3cret@"+dead+"/\"]\n", ""))
	without := write("plain.yaml", w.config("", ""))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no kind", []string{"-config", withRev, "-reason", "x"}, 2, "give exactly one of -jti, -sub, -kid"},
		{"two kinds", []string{"-config", withRev, "-jti", "a", "-kid", "b", "-reason", "x"}, 2, "give exactly one of -jti, -sub, -kid"},
		{"no reason", []string{"-config", withRev, "-jti", "a"}, 2, "-reason is required"},
		{"before without sub", []string{"-config", withRev, "-jti", "a", "-reason", "x", "-before", "2026-01-01T00:00:00Z"}, 2, "-before goes with -sub only"},
		{"bad until", []string{"-config", withRev, "-jti", "a", "-reason", "x", "-until", "tomorrow"}, 2, "-until: not an RFC 3339 time"},
		{"no section", []string{"-config", without, "-jti", "a", "-reason", "x"}, 2, "has no revocation section"},
		{"broker down", []string{"-config", withRev, "-jti", "a", "-reason", "x"}, 1, "broker 2 of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := proxy.Revoke(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), tc.code, tc.want)
			}
			if strings.Contains(errb.String(), "s3cret") {
				t.Errorf("stderr leaks the URL: %s", errb.String())
			}
		})
	}
}
