package revoke

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/internal/broker"
)

// Tuning of the consumer.
const (
	// prefetch is the consumer's credit: RabbitMQ requires a prefetch for
	// stream consumers, and acks return it.
	prefetch = 1000
	maxBatch = 65536 // revocations applied in one snapshot at most
	// liveDelay and backlogDelay bound how long a revocation read waits to
	// be applied: a few ms while following, longer while replaying.
	liveDelay    = 2 * time.Millisecond
	backlogDelay = 200 * time.Millisecond
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 10 * time.Second
	logEvery     = 10 * time.Second
)

// Options are a Feed's collaborators.
type Options struct {
	Log     *slog.Logger     // nil: slog.Default()
	Metrics *Metrics         // nil: none
	Now     func() time.Time // nil: time.Now; decides expiry and readiness
}

// Feed follows the revocation stream into a Store: from the stream's start
// at boot, then from the offset after the last one read at each reconnect,
// so nothing is applied twice or missed. While the broker is unreachable it
// keeps what it knows (fail-open), unless the config says fail_closed.
type Feed struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	m     *Metrics
	now   func() time.Time
	d     *broker.Dialer
	start time.Time

	caughtUp atomic.Bool
	// refuseFrom is the Unix nanosecond from which Refuse answers true (fail_closed,
	// feed down); 0 while the feed is healthy.
	refuseFrom atomic.Int64

	// Owned by the run goroutine.
	lastOffset int64
	// cluster is the cluster_name of the broker lastOffset was read on.
	// Offsets are a stream's own: another node of the same cluster serves
	// the same replicated stream, but an independent broker in the URL list
	// holds another stream with offsets of its own, which must be read from
	// its start (applying an entry twice changes nothing).
	cluster  string
	markerID string
	source   string
	lastWarn time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

// Start begins following the stream of cfg into store. Close ends it.
func Start(cfg *Config, store *Store, o Options) *Feed {
	f := &Feed{cfg: *cfg, store: store, log: o.Log, m: o.Metrics, now: o.Now,
		lastOffset: -1, markerID: newID(), done: make(chan struct{})}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.now == nil {
		f.now = time.Now
	}
	f.source = "gatehouse/" + f.markerID[:8]
	f.d = &broker.Dialer{URLs: cfg.URLs.List, Name: "gatehouse revocation"}
	f.start = f.now()
	f.markDown(f.start)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go f.run(ctx)
	return f
}

// Store is the store the feed fills.
func (f *Feed) Store() *Store { return f.store }

// CaughtUp reports whether the backlog present at start has been read.
func (f *Feed) CaughtUp() bool { return f.caughtUp.Load() }

// Ready is /readyz's view: the backlog is read, or ready_timeout has passed
// since start (then gatehouse serves with what it has, or refuses tokens
// when fail_closed).
func (f *Feed) Ready() bool {
	return f.caughtUp.Load() || f.now().Sub(f.start) >= f.cfg.ReadyTimeout
}

// Refuse reports whether tokens must be refused (503 keys_unavailable) at
// now: fail_closed, and the feed down or behind for longer than
// ready_timeout. One atomic load.
func (f *Feed) Refuse(now int64) bool {
	at := f.refuseFrom.Load()
	return at != 0 && now >= at
}

func (f *Feed) markDown(at time.Time) {
	if f.cfg.FailClosed && f.refuseFrom.Load() == 0 {
		f.refuseFrom.Store(at.Add(f.cfg.ReadyTimeout).UnixNano())
	}
}

func (f *Feed) markUp() { f.refuseFrom.Store(0) }

// Close stops the consumer and waits for it.
func (f *Feed) Close() {
	f.cancel()
	<-f.done
}

func (f *Feed) run(ctx context.Context) {
	defer close(f.done)
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	backoff := backoffMin
	down := false
	for ctx.Err() == nil {
		err := f.session(ctx, sweep.C, func() { backoff = backoffMin; down = false })
		f.markDown(f.now())
		if ctx.Err() != nil {
			return
		}
		if !down {
			f.log.Warn("revocation feed down, keeping the revocations known; retrying with backoff",
				"stream", f.cfg.Stream, "err", err, "fail_closed", f.cfg.FailClosed)
			down = true
		} else {
			f.log.Debug("revocation feed still down", "err", err)
		}
		d := backoff/2 + rand.N(backoff/2+1) // full jitter: many instances must not reconnect in step
		backoff = min(backoff*2, backoffMax)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-sweep.C:
			f.sweep()
			t.Stop()
		}
	}
}

func (f *Feed) sweep() {
	if f.store.Sweep(f.now()) > 0 {
		f.m.setEntries(f.store.Len())
	}
}

// session is one connection: declare, consume from where we are, apply.
func (f *Feed) session(ctx context.Context, sweepC <-chan time.Time, connected func()) error {
	var ch *amqp.Channel
	conn, idx, err := f.d.Dial(ctx, func(ctx context.Context, conn *amqp.Connection) error {
		c, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		if _, err := c.QueueDeclare(f.cfg.Stream, true, false, false, false, f.cfg.streamArgs()); err != nil {
			return fmt.Errorf("declare stream %s: %w", f.cfg.Stream, err)
		}
		if err := c.Qos(prefetch, 0, false); err != nil {
			return fmt.Errorf("set prefetch: %w", err)
		}
		if !f.caughtUp.Load() {
			if err := publishConfirmed(ctx, c, f.cfg.Stream, syncMarker(f.source, f.markerID, f.now()), f.markerID); err != nil {
				return fmt.Errorf("append sync marker: %w", err)
			}
		}
		ch = c
		return nil
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	cluster, _ := conn.Properties["cluster_name"].(string)
	if f.lastOffset >= 0 && cluster != f.cluster {
		f.log.Info("revocation feed moved to another broker cluster: reading its stream from the start",
			"stream", f.cfg.Stream, "broker", f.d.Label(idx))
		f.lastOffset = -1
	}
	f.cluster = cluster
	var offset any = "first"
	if f.lastOffset >= 0 {
		offset = f.lastOffset + 1
	}
	deliveries, err := ch.Consume(f.cfg.Stream, "", false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		f.d.Failed(idx)
		return fmt.Errorf("%s: consume: %w", f.d.Label(idx), err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	connected()
	f.log.Info("revocation feed connected", "stream", f.cfg.Stream, "broker", f.d.Label(idx), "from", offset)
	if f.caughtUp.Load() {
		f.markUp()
	}
	var (
		pending []Entry
		lastTag uint64
		unacked int
		flushC  <-chan time.Time
		flushT  *time.Timer
	)
	defer func() {
		if flushT != nil {
			flushT.Stop()
		}
	}()
	// Applying rebuilds a snapshot, so a backlog is applied in large
	// batches (at most backlogDelay late); once caught up, a revocation is
	// applied at most liveDelay after it arrives. Acks return the
	// consumer's credit and do not wait for either.
	apply := func() {
		if len(pending) > 0 {
			f.store.Apply(pending...)
			f.m.setEntries(f.store.Len())
			pending = pending[:0]
		}
		flushC = nil
	}
	// Every way out of the session applies what was read: lastOffset
	// already counts those messages, so the next session resumes after
	// them and would never apply them otherwise.
	defer apply()
	ack := func() error {
		if lastTag == 0 {
			return nil
		}
		err := ch.Ack(lastTag, true)
		lastTag, unacked = 0, 0
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-closed:
			f.d.Failed(idx)
			if e == nil {
				return fmt.Errorf("%s: connection closed", f.d.Label(idx))
			}
			return fmt.Errorf("%s: %w", f.d.Label(idx), e)
		case <-sweepC:
			f.sweep()
		case <-flushC:
			apply()
			if err := ack(); err != nil {
				f.d.Failed(idx)
				return fmt.Errorf("%s: ack: %w", f.d.Label(idx), err)
			}
		case d, ok := <-deliveries:
			if !ok {
				f.d.Failed(idx)
				return fmt.Errorf("%s: consumer cancelled", f.d.Label(idx))
			}
			lastTag = d.DeliveryTag
			unacked++
			e, ok, marker := f.handle(&d)
			if ok {
				pending = append(pending, e)
			}
			if marker {
				// Everything before the marker is applied before /readyz
				// may say ready.
				apply()
				f.caughtUp.Store(true)
				if f.store.Len() != [3]int{} {
					// A replay leaves the decoded messages and every
					// intermediate snapshot as garbage, often several
					// times the live store: hand it back to the OS once
					// rather than keep it resident.
					debug.FreeOSMemory()
				}
				f.log.Info("revocation backlog read", "stream", f.cfg.Stream, "entries", f.store.Len(), "since_start", f.now().Sub(f.start).String())
			}
			if len(pending) >= maxBatch {
				apply()
			}
			if len(pending) > 0 && flushC == nil {
				delay := liveDelay
				if !f.caughtUp.Load() {
					delay = backlogDelay
				}
				if flushT == nil {
					flushT = time.NewTimer(delay)
				} else {
					flushT.Reset(delay)
				}
				flushC = flushT.C
			}
			if unacked >= prefetch/2 || (len(pending) == 0 && flushC == nil) {
				if err := ack(); err != nil {
					f.d.Failed(idx)
					return fmt.Errorf("%s: ack: %w", f.d.Label(idx), err)
				}
			}
			if f.caughtUp.Load() {
				f.markUp()
			}
		}
	}
}

// handle reads one delivery: it returns the entry to apply, counts the
// message, and notices the sync marker.
func (f *Feed) handle(d *amqp.Delivery) (e Entry, apply, marker bool) {
	off, ok := d.Headers["x-stream-offset"].(int64)
	if ok {
		// A stream consumer may be given the start of the chunk that holds
		// the offset asked for: skip what was read before the reconnect.
		if off <= f.lastOffset {
			return Entry{}, false, false
		}
		f.lastOffset = off
	}
	now := f.now()
	if f.m != nil {
		f.m.last.Set(float64(now.UnixNano()) / 1e9)
	}
	e, id, err := parse(d.Body, f.cfg.MaxAge)
	switch {
	case errors.Is(err, errSync):
		return Entry{}, false, id == f.markerID && !f.caughtUp.Load()
	case err != nil:
		f.count("invalid")
		if now.Sub(f.lastWarn) >= logEvery {
			f.lastWarn = now
			f.log.Warn("revocation message skipped", "stream", f.cfg.Stream, "offset", off, "err", err)
		}
		return Entry{}, false, false
	case !e.Until.After(now):
		f.count("expired")
		return Entry{}, false, false
	}
	f.count("applied")
	return e, true, false
}

func (f *Feed) count(result string) {
	if f.m != nil {
		f.m.messages.WithLabelValues(result).Inc()
	}
}

// publishConfirmed publishes body to the stream on c and waits for the
// broker's confirm within ctx.
func publishConfirmed(ctx context.Context, c *amqp.Channel, stream string, body []byte, id string) error {
	if err := c.Confirm(false); err != nil {
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	// mandatory: a message no queue took comes back before its ack, and a
	// confirmed-but-returned message was not delivered (the stream is gone).
	returned := c.NotifyReturn(make(chan amqp.Return, 1))
	dc, err := c.PublishWithDeferredConfirmWithContext(ctx, "", stream, true, false, amqp.Publishing{
		ContentType:  ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    id,
		Body:         body,
	})
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the broker refused the message (nack)")
	}
	select {
	case r := <-returned:
		return fmt.Errorf("the broker returned the message: %s", r.ReplyText)
	default:
	}
	return nil
}
