package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults of a Dialer.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultSetupTimeout = 10 * time.Second
	DefaultHeartbeat    = 10 * time.Second
)

// Dialer connects to the first reachable broker of a list. A Dialer is safe
// for concurrent use; it remembers where the last attempt failed so the next
// round starts with the broker after it rather than waiting on a dead one
// again.
type Dialer struct {
	URLs []string // tried in order; they hold passwords: never log them
	// Name is the connection_name shown in the management UI.
	Name string
	// Heartbeat is the AMQP heartbeat; it bounds how long a dead peer goes
	// unnoticed. 0: DefaultHeartbeat.
	Heartbeat time.Duration
	// DialTimeout bounds the TCP connect; 0: DefaultDialTimeout.
	DialTimeout time.Duration
	// SetupTimeout bounds one attempt: connect, handshake and Setup.
	// 0: DefaultSetupTimeout.
	SetupTimeout time.Duration

	mu   sync.Mutex
	next int
}

// Setup runs on a fresh connection within the attempt's deadline (open
// channels, declare, enable confirms). An error closes the connection and
// the next broker is tried. ctx ends with the attempt: a blocking amqp091
// call in Setup is interrupted by closing the socket, which is the one way
// to stop amqp091's RPCs.
type Setup func(ctx context.Context, conn *amqp.Connection) error

// Dial tries each broker once, in order, starting after the last one that
// failed, and returns the first connection whose Setup succeeded, with its
// position in URLs. Each attempt is bounded by SetupTimeout and ctx. The
// error names brokers by position, never by URL.
func (d *Dialer) Dial(ctx context.Context, setup Setup) (*amqp.Connection, int, error) {
	n := len(d.URLs)
	if n == 0 {
		return nil, -1, errors.New("no broker URL configured")
	}
	d.mu.Lock()
	start := d.next % n
	d.mu.Unlock()
	var errs []error
	for k := range n {
		i := (start + k) % n
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		conn, err := d.attempt(ctx, d.URLs[i], setup)
		if err == nil {
			d.mu.Lock()
			d.next = i
			d.mu.Unlock()
			return conn, i, nil
		}
		d.mu.Lock()
		d.next = i + 1
		d.mu.Unlock()
		errs = append(errs, fmt.Errorf("%s: %w", d.Label(i), err))
	}
	return nil, -1, errors.Join(errs...)
}

// Failed records that broker i's connection was lost, so the next Dial
// starts with the broker after it.
func (d *Dialer) Failed(i int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.URLs) > 0 && i >= 0 {
		d.next = (i + 1) % len(d.URLs)
	}
}

// Label names broker i for logs and errors: "broker", or "broker 2 of 3".
func (d *Dialer) Label(i int) string {
	if len(d.URLs) <= 1 {
		return "broker"
	}
	return fmt.Sprintf("broker %d of %d", i+1, len(d.URLs))
}

func orDefault(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func (d *Dialer) attempt(ctx context.Context, url string, setup Setup) (*amqp.Connection, error) {
	setupTimeout := orDefault(d.SetupTimeout, DefaultSetupTimeout)
	dialTimeout := orDefault(d.DialTimeout, DefaultDialTimeout)
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	// Closing the socket is the one way to interrupt amqp091's blocking
	// handshake and RPCs.
	stop := context.AfterFunc(sctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if raw != nil {
			raw.Close()
		}
	})
	defer stop()
	name := d.Name
	if name == "" {
		name = "gatehouse"
	}
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:  orDefault(d.Heartbeat, DefaultHeartbeat),
		Properties: amqp.Table{"connection_name": name, "product": "gatehouse"},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(sctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091 clears this deadline once the handshake is done.
			if err := c.SetDeadline(time.Now().Add(setupTimeout)); err != nil {
				c.Close()
				return nil, err
			}
			mu.Lock()
			raw = c
			mu.Unlock()
			return c, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", scrub(err, url))
	}
	if setup != nil {
		if err := setup(sctx, conn); err != nil {
			conn.Close()
			if sctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, sctx.Err())
			}
			return nil, err
		}
	}
	if !stop() {
		// The deadline fired after Setup returned: the socket may be closed
		// under a connection that looks fine.
		conn.Close()
		return nil, fmt.Errorf("connect: %w", context.DeadlineExceeded)
	}
	return conn, nil
}

// scrub guards against an error that quotes the URL: amqp091 validates the
// URI with its own parser, but a future version might wrap url.Error.
func scrub(err error, url string) error {
	if url != "" && strings.Contains(err.Error(), url) {
		return errors.New("invalid broker URL")
	}
	return err
}
