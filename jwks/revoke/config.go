package revoke

import (
	"slices"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/broker"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Defaults of the `revocation` section (SPEC.md 12).
const (
	DefaultStream       = "gatehouse.revocations"
	DefaultMaxAge       = 24 * time.Hour
	DefaultReadyTimeout = 10 * time.Second
	DefaultURLEnv       = "GATEHOUSE_AMQP_URL"
)

// Config is the `revocation` section with defaults applied.
type Config struct {
	URLs         broker.URLs // resolved; they hold passwords
	Stream       string
	MaxAge       time.Duration
	ReadyTimeout time.Duration
	FailClosed   bool
}

// Decode decodes the `revocation` section; nil when it is absent (off).
// Errors are recorded in d at their FILE:LINE:COL; URLs are resolved now,
// so `gatehouse -t` finds an unset variable or unreadable file.
func Decode(d *yamlpos.Decoder, n *yaml.Node) *Config {
	if yamlpos.IsNull(n) {
		return nil
	}
	c := &Config{Stream: DefaultStream, MaxAge: DefaultMaxAge, ReadyTimeout: DefaultReadyTimeout}
	m := d.Map(n, "rabbitmq", "ready_timeout", "fail_closed")
	rn := d.Require(m, "rabbitmq")
	r := d.Map(rn, append(slices.Clone(broker.URLKeys), "stream", "max_age")...)
	c.URLs = broker.DecodeURLs(d, r, broker.URLOptions{
		DefaultEnv: DefaultURLEnv,
		Resolve:    rn != nil,
		List:       true,
		Context:    "revocation.rabbitmq",
		At:         []*yaml.Node{m.KeyNode("rabbitmq")},
	})
	if v := r.Get("stream"); d.String(v, &c.Stream) {
		// AMQP queue names are short strings; amq. is reserved.
		if c.Stream == "" || len(c.Stream) > 255 || (len(c.Stream) >= 4 && c.Stream[:4] == "amq.") {
			d.Errorf(v, "stream must be a queue name of 1 to 255 bytes, not starting with amq.")
			c.Stream = DefaultStream
		}
	}
	if v := r.Get("max_age"); d.Duration(v, &c.MaxAge) && c.MaxAge < time.Second {
		d.Errorf(v, "max_age must be at least 1s")
		c.MaxAge = DefaultMaxAge
	}
	if v := m.Get("ready_timeout"); d.Duration(v, &c.ReadyTimeout) && c.ReadyTimeout <= 0 {
		d.Errorf(v, "ready_timeout must be positive")
		c.ReadyTimeout = DefaultReadyTimeout
	}
	d.Bool(m.Get("fail_closed"), &c.FailClosed)
	return c
}

// streamArgs are the queue arguments every gatehouse declares the stream
// with: the same on every instance, or the broker refuses the declare.
func (c *Config) streamArgs() map[string]any {
	return map[string]any{
		"x-queue-type": "stream",
		// RabbitMQ takes the age with a unit: Y, M, D, h, m, s.
		"x-max-age": formatAge(c.MaxAge),
	}
}

func formatAge(d time.Duration) string {
	s := int64(d / time.Second)
	if s <= 0 {
		s = 1
	}
	switch {
	case s%86400 == 0:
		return strconv.FormatInt(s/86400, 10) + "D"
	case s%3600 == 0:
		return strconv.FormatInt(s/3600, 10) + "h"
	case s%60 == 0:
		return strconv.FormatInt(s/60, 10) + "m"
	}
	return strconv.FormatInt(s, 10) + "s"
}
