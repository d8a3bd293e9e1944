package audit

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
	t.Setenv("AUDIT_TEST_URLS", " amqp://u:envs3cret@127.0.0.1:5672/, amqp://u:envs3cret@127.0.0.2:5672/")
	t.Setenv("AUDIT_TEST_BAD_URLS", "amqp://u:envs3cret@127.0.0.1:5672/,http://u:envs3cret@x/")
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
  spool_dir: ` + dir + `/gh
  spool_max_bytes: 1048576
  rabbitmq:
    url_env: AUDIT_TEST_URL
    exchange: ex
    routing_key: "a.{decision}.{reason}"
    batch: {max_events: 100, max_delay: 20ms}
    heartbeat: 3s
    confirm_timeout: 2s
`,
			want: Config{Sink: "rabbitmq", Events: []string{"deny"}, QueueSize: 50, SpoolDir: dir + "/gh", SpoolMaxBytes: 1 << 20,
				RabbitMQ: RabbitMQConfig{URLs: []string{"amqp://u:envs3cret@127.0.0.1:5672/"}, URLEnv: "AUDIT_TEST_URL", Exchange: "ex", RoutingKey: "a.{decision}.{reason}",
					Batch: Batch{MaxEvents: 100, MaxDelay: 20 * time.Millisecond}, Heartbeat: 3 * time.Second, ConfirmTimeout: 2 * time.Second}},
		},
		{
			name: "url_file trimmed",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_file: " + urlFile + "\n",
			want: Config{Sink: "rabbitmq", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLs: []string{"amqp://u:s3cret@broker:5672/vh"}, URLFile: urlFile, Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}",
					Heartbeat: 10 * time.Second, ConfirmTimeout: 5 * time.Second}},
		},
		{
			name: "file sink",
			src:  "audit:\n  sink: file\n  file: " + dir + "/a.jsonl\n  events: []\n",
			want: Config{Sink: "file", Events: []string{}, File: dir + "/a.jsonl", QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: DefaultConfig().RabbitMQ},
		},
		{
			name: "url not resolved unless sink rabbitmq",
			src:  "audit:\n  sink: none\n  rabbitmq:\n    url_env: NOT_SET_ANYWHERE_42\n",
			want: Config{Sink: "none", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLEnv: "NOT_SET_ANYWHERE_42", Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}",
					Heartbeat: 10 * time.Second, ConfirmTimeout: 5 * time.Second}},
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
				`gatehouse.yaml:9:5: give only one of url_env, url_file, url and urls (got url_env, url)`,
				`gatehouse.yaml:10:15: exchange must not be empty (the default exchange cannot be declared)`,
				`gatehouse.yaml:11:18: routing_key: unknown placeholder {user} (known: {decision}, {reason})`,
			},
		},
		{
			name: "batch with defaults",
			src:  "audit:\n  rabbitmq:\n    batch: {max_events: 1}\n    heartbeat: 2s\n",
			want: Config{Sink: "stdout", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLEnv: "GATEHOUSE_AMQP_URL", Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}",
					Batch: Batch{MaxEvents: 1, MaxDelay: 50 * time.Millisecond}, Heartbeat: 2 * time.Second, ConfirmTimeout: 5 * time.Second}},
		},
		{
			name: "urls, a cluster's nodes in order",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    urls: [\"amqp://u:s3cret@rmq-0:5672/\", \"amqp://u:s3cret@rmq-1:5672/\"]\n",
			want: Config{Sink: "rabbitmq", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLs: []string{"amqp://u:s3cret@rmq-0:5672/", "amqp://u:s3cret@rmq-1:5672/"},
					Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}", Heartbeat: 10 * time.Second, ConfirmTimeout: 5 * time.Second}},
		},
		{
			name: "url_env with a comma-separated list",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_env: AUDIT_TEST_URLS\n",
			want: Config{Sink: "rabbitmq", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: RabbitMQConfig{URLs: []string{"amqp://u:envs3cret@127.0.0.1:5672/", "amqp://u:envs3cret@127.0.0.2:5672/"},
					URLEnv: "AUDIT_TEST_URLS", Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}", Heartbeat: 10 * time.Second, ConfirmTimeout: 5 * time.Second}},
		},
		{
			name: "a bad URL in a list is named by position",
			src:  "audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_env: AUDIT_TEST_BAD_URLS\n",
			errs: []string{"gatehouse.yaml:4:14: environment variable AUDIT_TEST_BAD_URLS (URL 2 of 2): not a valid amqp:// or amqps:// URL"},
		},
		{
			name: "batch and timeouts wrong",
			src: `audit:
  rabbitmq:
    batch: {max_delay: 0s}
    heartbeat: 0s
    confirm_timeout: 10ms
  spool_dir: ""
`,
			errs: []string{
				`gatehouse.yaml:3:12: missing required key "max_events"`,
				`gatehouse.yaml:3:24: max_delay must be more than 0`,
				`gatehouse.yaml:4:16: heartbeat must be at least 1s`,
				`gatehouse.yaml:5:22: confirm_timeout must be at least 100ms`,
			},
		},
		{
			name: "batch too large",
			src:  "audit:\n  rabbitmq:\n    batch:\n      max_events: 5000\n      max_delay: 1s\n",
			errs: []string{`gatehouse.yaml:4:19: max_events 5000 is too large (at most 1000)`},
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
			src:  "audit:\n  spool_dir: " + dir + "/x\n  spool_max_bytes: 10\n",
			errs: []string{`gatehouse.yaml:3:20: spool_max_bytes must be at least 65536`},
		},
		{
			name: "spool_dir created under a missing parent",
			src:  "audit:\n  spool_dir: " + dir + "/new/spool\n",
			want: Config{Sink: "stdout", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolDir: dir + "/new/spool",
				SpoolMaxBytes: 1 << 30, RabbitMQ: DefaultConfig().RabbitMQ},
		},
		{
			name: "durable",
			src:  "audit:\n  sink: rabbitmq\n  spool_dir: " + dir + "/d\n  durable: true\n  fsync_interval: 5ms\n  rabbitmq:\n    url_env: AUDIT_TEST_URL\n",
			want: Config{Sink: "rabbitmq", Events: []string{"allow", "deny"}, QueueSize: 10000, SpoolDir: dir + "/d",
				SpoolMaxBytes: 1 << 30, Durable: true, FsyncInterval: 5 * time.Millisecond,
				RabbitMQ: RabbitMQConfig{URLs: []string{"amqp://u:envs3cret@127.0.0.1:5672/"}, URLEnv: "AUDIT_TEST_URL", Exchange: "gatehouse.audit", RoutingKey: "auth.{decision}",
					Heartbeat: DefaultHeartbeat, ConfirmTimeout: DefaultConfirmTimeout}},
		},
		{
			name: "durable without spool_dir",
			src:  "audit:\n  sink: rabbitmq\n  durable: true\n  rabbitmq:\n    url_env: AUDIT_TEST_URL\n",
			errs: []string{"gatehouse.yaml:3:12: durable: true needs spool_dir"},
		},
		{
			name: "durable with batch",
			src:  "audit:\n  sink: rabbitmq\n  spool_dir: " + dir + "/d\n  durable: true\n  rabbitmq:\n    url_env: AUDIT_TEST_URL\n    batch: {max_events: 10, max_delay: 10ms}\n",
			errs: []string{"gatehouse.yaml:4:12: durable: true cannot be combined with rabbitmq.batch yet (durable mode publishes each event from the spool on its own)"},
		},
		{
			name: "durable with sink file",
			src:  "audit:\n  sink: file\n  file: " + dir + "/a.jsonl\n  spool_dir: " + dir + "/d\n  durable: true\n",
			errs: []string{"gatehouse.yaml:5:12: durable: true needs sink rabbitmq (sink is file)"},
		},
		{
			name: "bad durable keys",
			src:  "audit:\n  durable: yes please\n  fsync_interval: 0s\n",
			errs: []string{`gatehouse.yaml:2:12: expected true or false, got "yes please"`,
				"gatehouse.yaml:3:19: fsync_interval must be more than 0 and at most 1m0s"},
		},
		{
			name: "fsync_interval too long",
			src:  "audit:\n  fsync_interval: 2m\n",
			errs: []string{"gatehouse.yaml:2:19: fsync_interval must be more than 0 and at most 1m0s"},
		},
		{
			name: "spool_dir under a file",
			src:  "audit:\n  spool_dir: " + urlFile + "/spool\n",
			errs: []string{"gatehouse.yaml:2:14: spool_dir: " + urlFile + "/spool: not a directory"},
		},
		{
			name: "file sink, directory missing",
			src:  "audit:\n  sink: file\n  file: " + dir + "/logs/audit.jsonl\n",
			errs: []string{"gatehouse.yaml:3:9: audit.file: directory " + dir + "/logs does not exist"},
		},
		{
			name: "file sink, a directory in its place",
			src:  "audit:\n  sink: file\n  file: " + dir + "\n",
			errs: []string{"gatehouse.yaml:3:9: audit.file " + dir + " is a directory"},
		},
		{
			name: "file sink under a file",
			src:  "audit:\n  sink: file\n  file: " + urlFile + "/audit.jsonl\n",
			errs: []string{"gatehouse.yaml:3:9: audit.file: " + urlFile + "/audit.jsonl: not a directory"},
		},
		{
			name: "file sink, file exists",
			src:  "audit:\n  sink: file\n  file: " + urlFile + "\n",
			want: Config{Sink: "file", Events: []string{"allow", "deny"}, File: urlFile, QueueSize: 10000, SpoolMaxBytes: 1 << 30,
				RabbitMQ: DefaultConfig().RabbitMQ},
		},
		{
			name: "audit.file not checked unless sink file",
			src:  "audit:\n  sink: stdout\n  file: " + dir + "/logs/audit.jsonl\n",
			want: Config{Sink: "stdout", Events: []string{"allow", "deny"}, File: dir + "/logs/audit.jsonl", QueueSize: 10000,
				SpoolMaxBytes: 1 << 30, RabbitMQ: DefaultConfig().RabbitMQ},
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
	b.RabbitMQ.URLs = []string{"amqp://other"}
	if a.Equal(b) {
		t.Error("configs with different URLs are Equal")
	}
	b = DefaultConfig()
	b.Events = []string{"deny"}
	if a.Equal(b) {
		t.Error("configs with different events are Equal")
	}
}

// TestDecodeConfigNotWritable: -t refuses an audit.file or spool_dir this
// process cannot write. Permission bits do not stop root, so as root the
// test has nothing to show and skips.
func TestDecodeConfigNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission bits do not deny writes")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	_, errs := decode(t, "audit:\n  sink: file\n  file: "+dir+"/audit.jsonl\n  spool_dir: "+dir+"/spool\n")
	want := []string{
		"gatehouse.yaml:3:9: audit.file: directory " + dir + " is not writable",
		"gatehouse.yaml:4:14: spool_dir " + dir + "/spool cannot be created: " + dir + " is not writable",
	}
	if !slices.Equal(errs, want) {
		t.Errorf("errors =\n%s\nwant\n%s", strings.Join(errs, "\n"), strings.Join(want, "\n"))
	}
}
