package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/broker"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Sink names accepted by `audit.sink`.
const (
	SinkStdout   = "stdout"
	SinkFile     = "file"
	SinkRabbitMQ = "rabbitmq"
	SinkNone     = "none"
)

// Defaults of the `audit` section (SPEC.md 2).
const (
	DefaultQueueSize     = 10000
	DefaultSpoolMaxBytes = 1 << 30 // 1 GiB
	DefaultExchange      = "gatehouse.audit"
	DefaultRoutingKey    = "auth.{decision}"
	DefaultURLEnv        = "GATEHOUSE_AMQP_URL"
	DefaultFsyncInterval = 50 * time.Millisecond
	maxFsyncInterval     = time.Minute
	// DefaultHeartbeat is the AMQP heartbeat gatehouse proposes; the
	// connection is dead after about three silent heartbeats (amqp091).
	DefaultHeartbeat = 10 * time.Second
	// DefaultConfirmTimeout bounds how long a publish may wait for its
	// confirm before the link is taken for dead.
	DefaultConfirmTimeout = 5 * time.Second
	// MaxBatchEvents bounds batch.max_events: with fields capped at 2 KiB
	// an event is at most a few tens of KiB, and a batch must fit one
	// spool record.
	MaxBatchEvents = 1000
)

// Config is the `audit` section with defaults applied. The zero value is not
// valid; use DefaultConfig or DecodeConfig.
type Config struct {
	Sink          string   // stdout | file | rabbitmq | none; default stdout
	Events        []string // decisions emitted, subset of allow, deny; default [allow deny]
	File          string   // path of the JSON-lines file for sink file (required there)
	QueueSize     int      // events buffered between requests and the sink; default 10000
	SpoolDir      string   // "" = no spool; else events the broker cannot take now go here
	SpoolMaxBytes int64    // bound on the spool's files in bytes; default 1 GiB
	// Durable (needs sink rabbitmq and SpoolDir): every event is appended
	// to the spool and published from there (durable.go); default false.
	Durable bool
	// FsyncInterval is the durable mode's group commit: the spool is
	// fsynced at most this often; 0 = DefaultFsyncInterval (50 ms).
	FsyncInterval time.Duration
	RabbitMQ      RabbitMQConfig
}

// RabbitMQConfig is `audit.rabbitmq`.
type RabbitMQConfig struct {
	// URLs are the brokers resolved from url_env, url_file (a comma-separated
	// list in either), url or urls (only when sink is rabbitmq), tried in
	// order: a cluster's nodes without a load balancer. They hold
	// passwords: never log them.
	URLs       []string
	URLEnv     string // as configured; default GATEHOUSE_AMQP_URL when neither url_file nor url is set
	URLFile    string // as configured
	Exchange   string // durable topic exchange; default gatehouse.audit
	RoutingKey string // template with {decision} and {reason}; default auth.{decision}
	// Batch, when MaxEvents > 0, publishes up to MaxEvents events of one
	// routing key as one message (SPEC.md 12). Absent: one message per event.
	Batch Batch
	// Heartbeat is the AMQP heartbeat proposed to the broker (the broker
	// may lower it); default 10s, at least 1s.
	Heartbeat time.Duration
	// ConfirmTimeout: a publish not confirmed within it means the link is
	// dead (a silent network): the connection is closed and its
	// unconfirmed messages are re-sent or spooled. Default 5s; at least 100ms.
	ConfirmTimeout time.Duration
}

// Batch is `audit.rabbitmq.batch`.
type Batch struct {
	MaxEvents int           // events per message, 1..1000; 0 = batching off
	MaxDelay  time.Duration // an event waits at most this long for its batch to fill; default 50ms
}

// DefaultConfig is the section with every default and nothing else.
func DefaultConfig() Config {
	return Config{
		Sink:          SinkStdout,
		Events:        []string{"allow", "deny"},
		QueueSize:     DefaultQueueSize,
		SpoolMaxBytes: DefaultSpoolMaxBytes,
		RabbitMQ: RabbitMQConfig{
			URLEnv:         DefaultURLEnv,
			Exchange:       DefaultExchange,
			RoutingKey:     DefaultRoutingKey,
			Heartbeat:      DefaultHeartbeat,
			ConfirmTimeout: DefaultConfirmTimeout,
		},
	}
}

// Equal reports whether two configs are the same, so a reload can keep the
// running emitter (and its broker connection) when `audit` did not change.
// The resolved URL takes part: a rotated password in url_file is a change.
func (c Config) Equal(o Config) bool {
	return c.Sink == o.Sink && slices.Equal(c.Events, o.Events) && c.File == o.File &&
		c.QueueSize == o.QueueSize && c.SpoolDir == o.SpoolDir && c.SpoolMaxBytes == o.SpoolMaxBytes &&
		c.Durable == o.Durable && c.FsyncInterval == o.FsyncInterval &&
		c.RabbitMQ.equal(o.RabbitMQ)
}

func (r RabbitMQConfig) equal(o RabbitMQConfig) bool {
	return slices.Equal(r.URLs, o.URLs) && r.URLEnv == o.URLEnv && r.URLFile == o.URLFile &&
		r.Exchange == o.Exchange && r.RoutingKey == o.RoutingKey && r.Batch == o.Batch &&
		r.Heartbeat == o.Heartbeat && r.ConfirmTimeout == o.ConfirmTimeout
}

var (
	placeholder = regexp.MustCompile(`\{[^{}]*\}`)
)

// DecodeConfig decodes and validates the `audit` section (n may be nil: all
// defaults). With sink rabbitmq it resolves the URL from url_env, url_file or
// url; an unset variable or unreadable file is an error at the key's
// position. Errors are recorded in d; the returned config has defaults
// applied for every key that was absent or wrong.
func DecodeConfig(d *yamlpos.Decoder, n *yaml.Node) Config {
	c := DefaultConfig()
	m := d.Map(n, "sink", "events", "file", "queue_size", "spool_dir", "spool_max_bytes", "durable", "fsync_interval", "rabbitmq")

	if v := m.Get("sink"); d.String(v, &c.Sink) {
		switch c.Sink {
		case SinkStdout, SinkFile, SinkRabbitMQ, SinkNone:
		default:
			d.Errorf(v, "unknown audit sink %q (want stdout, file, rabbitmq or none)", c.Sink)
			c.Sink = SinkStdout
		}
	}
	if v := m.Get("events"); !yamlpos.IsNull(v) {
		var events []string
		if d.Strings(v, &events) {
			elems := d.Seq(v)
			ok := true
			for i, ev := range events {
				switch {
				case ev != "allow" && ev != "deny":
					d.Errorf(elems[i], "unknown audit event %q (want allow or deny)", ev)
					ok = false
				case slices.Contains(events[:i], ev):
					d.Errorf(elems[i], "audit event %q given twice", ev)
					ok = false
				}
			}
			if ok {
				c.Events = events
			}
		}
	}
	fileNode := m.Get("file")
	d.String(fileNode, &c.File)
	if c.Sink == SinkFile && c.File == "" {
		if fileNode != nil {
			d.Errorf(fileNode, "audit.file must not be empty with sink file")
		} else {
			d.Errorf(m.Node, "missing required key %q (sink file)", "file")
		}
	} else if c.Sink == SinkFile {
		checkFile(d, fileNode, c.File)
	}
	var i64 int64
	if d.Int(m.Get("queue_size"), 1, &i64) {
		if i64 > 1<<24 {
			d.Errorf(m.Get("queue_size"), "queue_size %d is too large (at most %d)", i64, 1<<24)
		} else {
			c.QueueSize = int(i64)
		}
	}
	if v := m.Get("spool_dir"); d.String(v, &c.SpoolDir) && c.SpoolDir != "" {
		checkSpoolDir(d, v, c.SpoolDir)
	}
	if d.Int(m.Get("spool_max_bytes"), 1, &i64) {
		c.SpoolMaxBytes = i64
	}
	if c.SpoolDir != "" && c.SpoolMaxBytes < minSpoolBytes {
		d.Errorf(m.Get("spool_max_bytes"), "spool_max_bytes must be at least %d", minSpoolBytes)
	}
	c.RabbitMQ = decodeRabbitMQ(d, m.Get("rabbitmq"), c.Sink == SinkRabbitMQ, m.Get("sink"), m.Node)
	decodeDurable(d, m, &c)
	return c
}

// decodeDurable reads durable and fsync_interval (SPEC.md 12). durable: true
// without what it needs is an error at the key, never a silent downgrade:
// the operator asked for a guarantee the other sinks and a missing spool
// cannot give.
func decodeDurable(d *yamlpos.Decoder, m yamlpos.Map, c *Config) {
	if v := m.Get("durable"); d.Bool(v, &c.Durable) && c.Durable {
		switch {
		case c.Sink != SinkRabbitMQ:
			d.Errorf(v, "durable: true needs sink rabbitmq (sink is %s)", c.Sink)
		case c.SpoolDir == "":
			d.Errorf(v, "durable: true needs spool_dir")
		case c.RabbitMQ.Batch.MaxEvents > 0:
			// Durable mode publishes each spooled record as it was
			// written, one event each: batching would silently not apply.
			d.Errorf(v, "durable: true cannot be combined with rabbitmq.batch yet (durable mode publishes each event from the spool on its own)")
		}
	}
	if v := m.Get("fsync_interval"); d.Duration(v, &c.FsyncInterval) {
		if c.FsyncInterval <= 0 || c.FsyncInterval > maxFsyncInterval {
			d.Errorf(v, "fsync_interval must be more than 0 and at most %v", maxFsyncInterval)
			c.FsyncInterval = 0
		}
	}
}

// access(2) modes; package syscall does not name them.
const (
	wOK = 0x2
	xOK = 0x1
)

// checkFile reports, for `gatehouse -t`, an audit.file that New could not
// open for appending (SPEC.md 2: its directory must exist and be
// writable): a directory in its place, a file this process cannot write,
// or a directory that is missing or not writable. New does not create
// directories for it, so a typo in the path fails here rather than at
// start. Checked with access(2), so -t leaves nothing behind.
func checkFile(d *yamlpos.Decoder, n *yaml.Node, path string) {
	info, err := os.Stat(path)
	switch {
	case err == nil && info.IsDir():
		d.Errorf(n, "audit.file %s is a directory", path)
		return
	case err == nil:
		if syscall.Access(path, wOK) != nil {
			d.Errorf(n, "audit.file %s is not writable", path)
		}
		return
	case !errors.Is(err, os.ErrNotExist):
		d.Errorf(n, "audit.file: %v", unwrapPath(err))
		return
	}
	dir := filepath.Dir(path)
	info, err = os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.Errorf(n, "audit.file: directory %s does not exist", dir)
	case err != nil:
		d.Errorf(n, "audit.file: %v", unwrapPath(err))
	case !info.IsDir():
		d.Errorf(n, "audit.file: %s is not a directory", dir)
	case syscall.Access(dir, wOK|xOK) != nil:
		d.Errorf(n, "audit.file: directory %s is not writable", dir)
	}
}

// checkSpoolDir reports, for `gatehouse -t`, a spool_dir that New would
// refuse: a non-directory in the way, or a directory this process cannot
// write. A missing directory is fine when New can create it (MkdirAll):
// its nearest existing ancestor must be a writable directory.
func checkSpoolDir(d *yamlpos.Decoder, n *yaml.Node, dir string) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		parent := dir
		for {
			next := filepath.Dir(parent)
			if next == parent {
				return // the root itself is missing: nothing more to check
			}
			parent = next
			if info, err = os.Stat(parent); !errors.Is(err, os.ErrNotExist) {
				break
			}
		}
		switch {
		case err != nil:
			d.Errorf(n, "spool_dir: %v", unwrapPath(err))
		case !info.IsDir():
			d.Errorf(n, "spool_dir %s cannot be created: %s is not a directory", dir, parent)
		case syscall.Access(parent, wOK|xOK) != nil:
			d.Errorf(n, "spool_dir %s cannot be created: %s is not writable", dir, parent)
		}
	case err != nil:
		d.Errorf(n, "spool_dir: %v", unwrapPath(err))
	case !info.IsDir():
		d.Errorf(n, "spool_dir %s is not a directory", dir)
	case syscall.Access(dir, wOK|xOK) != nil:
		d.Errorf(n, "spool_dir %s is not writable", dir)
	}
}

// minSpoolBytes keeps a spool able to hold at least a few records.
const minSpoolBytes = 64 << 10

func decodeRabbitMQ(d *yamlpos.Decoder, n *yaml.Node, resolve bool, sinkNode, auditNode *yaml.Node) RabbitMQConfig {
	r := DefaultConfig().RabbitMQ
	m := d.Map(n, append(slices.Clone(broker.URLKeys), "exchange", "routing_key", "batch", "heartbeat", "confirm_timeout")...)
	u := broker.DecodeURLs(d, m, broker.URLOptions{
		DefaultEnv: DefaultURLEnv,
		Resolve:    resolve,
		List:       true,
		Context:    "sink rabbitmq",
		At:         []*yaml.Node{sinkNode, auditNode},
	})
	r.URLEnv, r.URLFile, r.URLs = u.Env, u.File, u.List
	if d.String(m.Get("exchange"), &r.Exchange) && r.Exchange == "" {
		d.Errorf(m.Get("exchange"), "exchange must not be empty (the default exchange cannot be declared)")
	}
	if v := m.Get("routing_key"); d.String(v, &r.RoutingKey) {
		for _, p := range placeholder.FindAllString(r.RoutingKey, -1) {
			if p != "{decision}" && p != "{reason}" {
				d.Errorf(v, "routing_key: unknown placeholder %s (known: {decision}, {reason})", p)
			}
		}
		if len(r.RoutingKey) > 200 {
			d.Errorf(v, "routing_key is too long (AMQP allows 255 bytes after substitution)")
		}
	}
	if v := m.Get("batch"); v != nil && !yamlpos.IsNull(v) {
		r.Batch = decodeBatch(d, v)
	}
	if v := m.Get("heartbeat"); d.Duration(v, &r.Heartbeat) && r.Heartbeat < time.Second {
		d.Errorf(v, "heartbeat must be at least 1s")
		r.Heartbeat = DefaultHeartbeat
	}
	if v := m.Get("confirm_timeout"); d.Duration(v, &r.ConfirmTimeout) && r.ConfirmTimeout < 100*time.Millisecond {
		d.Errorf(v, "confirm_timeout must be at least 100ms")
		r.ConfirmTimeout = DefaultConfirmTimeout
	}
	return r
}

// decodeBatch decodes `audit.rabbitmq.batch`: present means on, so
// max_events is required.
func decodeBatch(d *yamlpos.Decoder, n *yaml.Node) Batch {
	b := Batch{MaxDelay: 50 * time.Millisecond}
	m := d.Map(n, "max_events", "max_delay")
	if m.Node == nil {
		return Batch{}
	}
	var i64 int64
	if v := d.Require(m, "max_events"); d.Int(v, 1, &i64) {
		if i64 > MaxBatchEvents {
			d.Errorf(v, "max_events %d is too large (at most %d)", i64, MaxBatchEvents)
		} else {
			b.MaxEvents = int(i64)
		}
	}
	if v := m.Get("max_delay"); d.Duration(v, &b.MaxDelay) && b.MaxDelay == 0 {
		d.Errorf(v, "max_delay must be more than 0")
	}
	return b
}

// unwrapPath drops the *PathError wrapper's repetition of the operation.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// Wants reports whether decision is listed in events.
func (c Config) wants(decision string) bool { return slices.Contains(c.Events, decision) }
