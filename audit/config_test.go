package audit

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// decode parses src as a whole config file whose `audit` key holds the
// section, as proxy.LoadConfig would hand it over.
func decode(t *testing.T, src string) (Config, []string) {
	t.Helper()
	d := yamlpos.NewDecoder("gatehouse.yaml")
	root := d.Parse([]byte(src))
	m := d.Map(root)
	c := DecodeConfig(d, m.Get("audit"))
	var errs []string
	for _, e := range yamlpos.Errors(d.Err()) {
		errs = append(errs, e.Error())
	}
	return c, errs
}

func TestDecodeConfigDefaults(t *testing.T) {
	for _, src := range []string{"listen: x\n", "audit:\n", "audit: {}\n"} {
		c, errs := decode(t, src)
		if len(errs) > 0 {
			t.Fatalf("decode(%q) errors: %q", src, errs)
		}
		if !c.Equal(DefaultConfig()) {
			t.Errorf("decode(%q) = %+v, want defaults %+v", src, c, DefaultConfig())
		}
	}
	c := DefaultConfig()
	if c.Sink != "stdout" || !slices.Equal(c.Events, []string{"allow", "deny"}) || c.QueueSize != 10000 ||
		c.SpoolMaxBytes != 1<<30 || c.RabbitMQ.Exchange != "gatehouse.audit" ||
		c.RabbitMQ.RoutingKey != "auth.{decision}" || c.RabbitMQ.URLEnv != "GATEHOUSE_AMQP_URL" {
		t.Errorf("DefaultConfig() = %+v, want SPEC.md 2 defaults", c)
	}
}

func TestDecodeConfig(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "amqp-url")
	if err := os.WriteFile(urlFile, []byte("amqp://u:s3cret@broker:5672/vh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUDIT_TEST_URL", "amqp://u:envs3cret@127.0.0.1:5672/")
	t.Setenv("AUDIT_TEST_BAD_URL", "http://u:envs3cret@x/")
	os.Unsetenv("GATEHOUSE_AMQP_URL")
	tests := []struct {
		name string
		src  string
		want Config // checked when errs is empty
		errs []string
	}{
		{
			name: "full rabbitmq from env",
			src: `audit:
  sink: rabbitmq
  events: [deny]
  queue_size: 50
  spool_dir: /var/spool/gh
  spool_max_bytes: 1048576
  rabbitmq:
    url_env: AUDIT_TEST_URL
    exchange: ex
    routing_key: "a.{decision}.{reason}"
`,
			want: Config{Sink: "rabbitmq", Events: []string{"deny"}, QueueSize: 50, SpoolDir: "/var/spool/gh", SpoolMaxBytes: 1 << 20,
				RabbitMQ: RabbitMQConfig{URL: "amqp://u:envs3cret@127.0.0.1:5672/", URLEnv: "AUDIT_TEST_URL", Exchange: "ex", RoutingKey: "a.{decision}.{reason}"}},
		},
		{
			name: "url_file trimmed",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_file: " + urlFile + "\n",
			want: Config{Sink: "rabbitmq", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URL: "amqp://u:s3cret@broker:5672/vh", URLFile: urlFile, Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}"}},
		},
		{
			name: "file sink",
			src:  "audit:\n  sink: file\n  file: /tmp/a.jsonl\n  events: []\n",
			want: Config{Sink: "file", Events: []string{}, File: "/tmp/a.jsonl", QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: DefaultConfig().RabbitMQ},
		},
		{
			name: "url not resolved unless sink rabbitmq",
			src:  "audit:\n  sink: none\n  rabbitmq:\n    url_env: NOT_SET_ANYWHERE_42\n",
			want: Config{Sink: "none", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLEnv: "NOT_SET_ANYWHERE_42", Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}"}},
		},
		{
			name: "default url_env unset",
			src:  "audit:\n  sink: rabbitmq\n",
			errs: []string{"gatehouse.yaml:2:9: sink rabbitmq: environment variable GATEHOUSE_AMQP_URL (url_env) is not set"},
		},
		{
			name: "named url_env unset",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_env: NOT_SET_ANYWHERE_42\n",
			errs: []string{"gatehouse.yaml:4:14: sink rabbitmq: environment variable NOT_SET_ANYWHERE_42 (url_env) is not set"},
		},
		{
			name: "url_file unreadable",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_file: " + dir + "/missing\n",
			errs: []string{"gatehouse.yaml:4:15: read url_file: " + dir + "/missing: no such file or directory"},
		},
		{
			name: "bad url never echoed",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_env: AUDIT_TEST_BAD_URL\n",
			errs: []string{"gatehouse.yaml:4:14: environment variable AUDIT_TEST_BAD_URL: not a valid amqp:// or amqps:// URL"},
		},
		{
			name: "many errors",
			src: `audit:
  sink: kafka
  events: [allow, maybe, allow]
  queue_size: 0
  spool_max_bytes: lots
  colour: blue
  rabbitmq:
    url: amqp://x
    url_env: X
    exchange: ""
    routing_key: "auth.{user}"
`,
			errs: []string{
				`gatehouse.yaml:2:9: unknown audit sink "kafka" (want stdout, file, rabbitmq or none)`,
				`gatehouse.yaml:3:19: unknown audit event "maybe" (want allow or deny)`,
				`gatehouse.yaml:3:26: audit event "allow" given twice`,
				`gatehouse.yaml:4:15: must be at least 1, got 0`,
				`gatehouse.yaml:5:20: expected an integer, got "lots"`,
				`gatehouse.yaml:6:3: unknown key "colour"`,
				`gatehouse.yaml:9:5: give only one of url_env, url_file and url (got url_env, url)`,
				`gatehouse.yaml:10:15: exchange must not be empty (the default exchange cannot be declared)`,
				`gatehouse.yaml:11:18: routing_key: unknown placeholder {user} (known: {decision}, {reason})`,
			},
		},
		{
			name: "file sink without file",
			src:  "audit:\n  sink: file\n",
			errs: []string{`gatehouse.yaml:2:3: missing required key "file" (sink file)`},
		},
		{
			name: "not a mapping",
			src:  "audit: [1]\n",
			errs: []string{`gatehouse.yaml:1:8: expected a mapping, got a list`},
		},
		{
			name: "spool_dir is a file",
			src:  "audit:\n  spool_dir: " + urlFile + "\n",
			errs: []string{"gatehouse.yaml:2:14: spool_dir " + urlFile + " is not a directory"},
		},
		{
			name: "small spool",
			src:  "audit:\n  spool_dir: /x\n  spool_max_bytes: 10\n",
			errs: []string{`gatehouse.yaml:3:20: spool_max_bytes must be at least 65536`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := decode(t, tt.src)
			if !slices.Equal(errs, tt.errs) {
				t.Fatalf("errors =\n%s\nwant\n%s", strings.Join(errs, "\n"), strings.Join(tt.errs, "\n"))
			}
			for _, e := range errs {
				if strings.Contains(e, "s3cret") {
					t.Errorf("error leaks the URL password: %s", e)
				}
			}
			if tt.errs == nil && !c.Equal(tt.want) {
				t.Errorf("config = %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestConfigEqual(t *testing.T) {
	a, b := DefaultConfig(), DefaultConfig()
	if !a.Equal(b) {
		t.Fatal("two default configs differ")
	}
	b.RabbitMQ.URL = "amqp://other"
	if a.Equal(b) {
		t.Error("configs with different URLs are Equal")
	}
	b = DefaultConfig()
	b.Events = []string{"deny"}
	if a.Equal(b) {
		t.Error("configs with different events are Equal")
	}
}
