package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"

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
	RabbitMQ      RabbitMQConfig
}

// RabbitMQConfig is `audit.rabbitmq`.
type RabbitMQConfig struct {
	// URL is the broker URL resolved from url_env, url_file or url (only
	// when sink is rabbitmq). It holds a password: never log it.
	URL        string
	URLEnv     string // as configured; default GATEHOUSE_AMQP_URL when neither url_file nor url is set
	URLFile    string // as configured
	Exchange   string // durable topic exchange; default gatehouse.audit
	RoutingKey string // template with {decision} and {reason}; default auth.{decision}
}

// DefaultConfig is the section with every default and nothing else.
func DefaultConfig() Config {
	return Config{
		Sink:          SinkStdout,
		Events:        []string{"allow", "deny"},
		QueueSize:     DefaultQueueSize,
		SpoolMaxBytes: DefaultSpoolMaxBytes,
		RabbitMQ: RabbitMQConfig{
			URLEnv:     DefaultURLEnv,
			Exchange:   DefaultExchange,
			RoutingKey: DefaultRoutingKey,
		},
	}
}

// Equal reports whether two configs are the same, so a reload can keep the
// running emitter (and its broker connection) when `audit` did not change.
// The resolved URL takes part: a rotated password in url_file is a change.
func (c Config) Equal(o Config) bool {
	return c.Sink == o.Sink && slices.Equal(c.Events, o.Events) && c.File == o.File &&
		c.QueueSize == o.QueueSize && c.SpoolDir == o.SpoolDir && c.SpoolMaxBytes == o.SpoolMaxBytes &&
		c.RabbitMQ == o.RabbitMQ
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
	m := d.Map(n, "sink", "events", "file", "queue_size", "spool_dir", "spool_max_bytes", "rabbitmq")

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
	return c
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
	m := d.Map(n, append(slices.Clone(broker.URLKeysSingle), "exchange", "routing_key")...)
	u := broker.DecodeURLs(d, m, broker.URLOptions{
		DefaultEnv: DefaultURLEnv,
		Resolve:    resolve,
		Context:    "sink rabbitmq",
		At:         []*yaml.Node{sinkNode, auditNode},
	})
	r.URLEnv, r.URLFile = u.Env, u.File
	if len(u.List) > 0 {
		r.URL = u.List[0]
	}
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
	return r
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
