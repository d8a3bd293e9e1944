package proxy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/proxy"
)

// TestRevocationExampleLoads: the commented-out revocation block of
// config.example.yaml, uncommented, is a valid section with SPEC's defaults.
func TestRevocationExampleLoads(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?m)^# revocation:.*\n(#   .*\n)+`).Find(b)
	if block == nil {
		t.Fatal("config.example.yaml has no commented revocation block")
	}
	on := regexp.MustCompile(`(?m)^# ?`).ReplaceAll(block, nil)
	text := strings.Replace(string(b), string(block), string(on), 1)
	path := filepath.Join(t.TempDir(), "example.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEHOUSE_AMQP_URL", "amqp://u:p@broker-a:5672/, amqps://u:p@broker-b:5671/")
	cfg, err := proxy.LoadConfig(path)
	if err != nil {
		t.Fatalf("uncommented revocation block does not load: %v", err)
	}
	r := cfg.Revocation
	if r == nil || r.Stream != "gatehouse.revocations" || r.MaxAge != 24*time.Hour || r.ReadyTimeout != 10*time.Second || r.FailClosed || len(r.URLs.List) != 2 {
		t.Errorf("revocation section: %+v", r)
	}
}

// TestRevocationConfigErrors: what `gatehouse -t` reports, at FILE:LINE:COL,
// never echoing a URL.
func TestRevocationConfigErrors(t *testing.T) {
	w := newWorld(t)
	t.Setenv("REV_TEST_URLS", "amqp://u:s3cret@a/,http://u:s3cret@b/")
	for _, tc := range []struct{ name, section, want string }{
		{"url and urls", "revocation:\n  rabbitmq:\n    url: amqp://u:s3cret@a/\n    urls: [amqp://b/]\n", "give only one of url_env, url_file, url and urls (got url, urls)"},
		{"bad URL in list", "revocation:\n  rabbitmq:\n    url_env: REV_TEST_URLS\n", "environment variable REV_TEST_URLS (URL 2 of 2): not a valid amqp:// or amqps:// URL"},
		{"no rabbitmq", "revocation:\n  ready_timeout: 1s\n", `missing required key "rabbitmq"`},
		{"unknown key", "revocation:\n  rabbitmq: {url: \"amqp://a/\"}\n  fail_open: true\n", `unknown key "fail_open"`},
		{"max_age", "revocation:\n  rabbitmq: {url: \"amqp://a/\", max_age: 10ms}\n", "max_age must be at least 1s"},
		{"stream", "revocation:\n  rabbitmq: {url: \"amqp://a/\", stream: amq.x}\n", "stream must be a queue name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := proxy.ParseConfig("g.yaml", []byte(w.config(tc.section, "")))
			if err == nil {
				t.Fatal("accepted")
			}
			found := false
			for _, e := range yamlpos.Errors(err) {
				if strings.Contains(e.Error(), tc.want) && regexp.MustCompile(`^g\.yaml:\d+:\d+: `).MatchString(e.Error()) {
					found = true
				}
				if strings.Contains(e.Error(), "s3cret") {
					t.Errorf("error leaks a URL: %v", e)
				}
			}
			if !found {
				t.Errorf("errors %v do not contain %q at a position", err, tc.want)
			}
		})
	}
}
