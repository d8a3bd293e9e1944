package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options are the process-level parts of an emitter.
type Options struct {
	Logger  *slog.Logger     // nil = discard
	Metrics *Metrics         // nil = a private unregistered set
	Source  string           // CloudEvents source, "gatehouse/<hostname>"; "" = that, computed
	Stdout  io.Writer        // for sink stdout; nil = os.Stdout
	Now     func() time.Time // nil = time.Now
}

// Emitter hands decisions from the request path to a sink through a bounded
// queue. Emit never blocks; one worker goroutine encodes and delivers.
type Emitter struct {
	cfg    Config
	log    *slog.Logger
	m      *Metrics
	c      counters
	source string
	now    func() time.Time

	none, allow, deny bool

	q        chan *Event
	closed   atomic.Bool
	emitting atomic.Int64 // Emit calls between the closed check and the send
	drops    atomic.Uint64
	stop     chan context.Context
	done     chan struct{}
	closeErr error // set by the worker before done is closed

	idPrefix string // random per emitter, so ids never repeat across processes
	idSeq    uint64 // worker only

	keyAllow, keyDeny string // routing keys precomputed when the template has no {reason}

	file   *fileWriter // sink file
	rabbit *rabbit     // sink rabbitmq
}

// closeGrace is how long Close waits for the worker after ctx ended: the
// rabbitmq worker needs up to a second to close its connection.
const closeGrace = 2 * time.Second

// dropReportEvery bounds the "events dropped" log line.
const dropReportEvery = 10 * time.Second

// New starts the emitter and its worker goroutine. With sink rabbitmq it
// does not fail when the broker is unreachable: events wait in the queue and
// the spool while it connects in the background. It fails only for what
// cannot work: a file that cannot be opened, a spool_dir that is not
// writable. A spool left by a previous process is replayed.
func New(cfg Config, opts Options) (*Emitter, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Source == "" {
		host, _ := os.Hostname()
		opts.Source = "gatehouse/" + host
	}
	if cfg.Sink == "" {
		cfg.Sink = SinkStdout
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.SpoolMaxBytes <= 0 {
		cfg.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("audit id prefix: %w", err)
	}
	e := &Emitter{
		cfg:      cfg,
		log:      opts.Logger.With("component", "audit", "sink", cfg.Sink),
		m:        opts.Metrics,
		c:        opts.Metrics.forSink(cfg.Sink),
		source:   opts.Source,
		now:      opts.Now,
		none:     cfg.Sink == SinkNone,
		allow:    cfg.wants("allow"),
		deny:     cfg.wants("deny"),
		stop:     make(chan context.Context, 1),
		done:     make(chan struct{}),
		idPrefix: hex.EncodeToString(rnd[:]),
	}
	if !strings.Contains(cfg.RabbitMQ.RoutingKey, "{reason}") {
		e.keyAllow = routingKey(cfg.RabbitMQ.RoutingKey, &Event{Decision: "allow"})
		e.keyDeny = routingKey(cfg.RabbitMQ.RoutingKey, &Event{Decision: "deny"})
	}
	if e.none {
		e.allow, e.deny = false, false
		close(e.done)
		return e, nil
	}
	e.q = make(chan *Event, cfg.QueueSize)
	switch cfg.Sink {
	case SinkStdout:
		go e.runWriter(opts.Stdout)
	case SinkFile:
		f, err := openFile(cfg.File)
		if err != nil {
			return nil, err
		}
		e.file = f
		go e.runWriter(f)
	case SinkRabbitMQ:
		r, err := newRabbit(e)
		if err != nil {
			return nil, err
		}
		e.rabbit = r
		go r.run()
	default:
		return nil, fmt.Errorf("audit: unknown sink %q", cfg.Sink)
	}
	e.m.add(e)
	return e, nil
}

// Wants reports whether decision is in audit.events (always false for sink
// none), so the proxy can skip building an Event nobody wants.
func (e *Emitter) Wants(decision string) bool {
	switch decision {
	case "allow":
		return e.allow
	case "deny":
		return e.deny
	}
	return false
}

// Emit hands ev to the queue and returns at once: a full queue drops the
// event (counted; logged at most every 10 s). String fields longer than
// maxField bytes are cut (see capFields), so a queued event holds at most a
// few KiB whatever the client sent. The worker moves queued events
// to the spool while the broker cannot take them, so with a spool the queue
// fills only when the spool is full too. Safe after Close (drops, counted).
func (e *Emitter) Emit(ev Event) {
	if !e.Wants(ev.Decision) {
		return
	}
	e.emitting.Add(1)
	if e.closed.Load() {
		e.emitting.Add(-1)
		e.dropped()
		return
	}
	p := eventPool.Get().(*Event)
	*p = ev
	capFields(p)
	select {
	case e.q <- p:
	default:
		*p = Event{}
		eventPool.Put(p)
		e.dropped()
	}
	e.emitting.Add(-1)
}

func (e *Emitter) dropped() {
	e.c.dropped.Inc()
	e.drops.Add(1)
}

// Reopen reopens the file of sink file (SIGHUP after logrotate moved it);
// a no-op for the other sinks.
func (e *Emitter) Reopen() error {
	if e.file == nil {
		return nil
	}
	return e.file.reopen()
}

// Close stops accepting events, delivers what is queued within ctx, spools
// what could not be delivered (when spool_dir is set; otherwise it is
// counted dropped), and stops every goroutine. It returns ctx.Err() when it
// ran out of time. Calling it again waits for the first call.
func (e *Emitter) Close(ctx context.Context) error {
	if e.none {
		return nil
	}
	if !e.closed.CompareAndSwap(false, true) {
		<-e.done
		return nil
	}
	// Let Emit calls that passed the closed check finish their send, so
	// that the worker's final drain sees every accepted event.
	for e.emitting.Load() != 0 {
		runtime.Gosched()
	}
	e.stop <- ctx
	select {
	case <-e.done:
	case <-ctx.Done():
		// The worker stops on its own once it sees ctx end; only a write
		// stuck in the kernel (a full stdout pipe, a hung NFS file) keeps
		// it, and then Close returns without it rather than hang shutdown.
		select {
		case <-e.done:
		case <-time.After(closeGrace):
			e.m.remove(e)
			return ctx.Err()
		}
	}
	e.m.remove(e)
	return e.closeErr
}

// nextID makes the CloudEvents id: a random per-emitter prefix and a counter.
func (e *Emitter) nextID() string {
	e.idSeq++
	var b [32]byte
	copy(b[:16], e.idPrefix)
	s := strconv.AppendUint(b[16:16], e.idSeq, 16)
	n := 16 + len(s)
	// Left-pad the counter to 16 hex digits so ids have a fixed width.
	if len(s) < 16 {
		copy(b[32-len(s):], s)
		for i := 16; i < 32-len(s); i++ {
			b[i] = '0'
		}
		n = 32
	}
	return string(b[:n])
}

// encode turns ev into a message (worker only).
func (e *Emitter) encode(ev *Event, buf []byte) message {
	t := ev.Time
	if t.IsZero() {
		t = e.now()
	}
	id := e.nextID()
	return message{id: id, typ: eventType(ev), key: e.keyOf(ev), time: t,
		body: appendCloudEvent(buf, ev, id, e.source, t)}
}

// keyOf is ev's routing key; no allocation unless the template has {reason}.
func (e *Emitter) keyOf(ev *Event) string {
	switch {
	case e.keyAllow == "" && e.keyDeny == "":
		return routingKey(e.cfg.RabbitMQ.RoutingKey, ev)
	case ev.Decision == "deny":
		return e.keyDeny
	case ev.Decision != "allow":
		return routingKey(e.cfg.RabbitMQ.RoutingKey, ev)
	}
	return e.keyAllow
}

// dropReporter logs drops counted since the last report, at most once per
// dropReportEvery (CoreDNS dnstap style).
type dropReporter struct {
	last uint64
}

func (r *dropReporter) report(e *Emitter) {
	if n := e.drops.Load(); n != r.last {
		e.log.Warn("audit events dropped", "count", n-r.last, "total", n)
		r.last = n
	}
}

// maxBatch bounds how many events one write or spool append takes.
const maxBatch = 256

// runWriter is the worker of sinks stdout and file: JSON lines, one write
// per batch of queued events.
func (e *Emitter) runWriter(w io.Writer) {
	defer close(e.done)
	tick := time.NewTicker(dropReportEvery)
	defer tick.Stop()
	var drops dropReporter
	buf := make([]byte, 0, 64<<10)
	var failing bool
	write := func(first Event, more bool) {
		buf = buf[:0]
		n := 1
		buf = e.encode(&first, buf).body
		buf = append(buf, '\n')
	batch:
		for more && n < maxBatch {
			select {
			case qp := <-e.q:
				ev := recv(qp)
				buf = e.encode(&ev, buf).body
				buf = append(buf, '\n')
				n++
			default:
				break batch
			}
		}
		if _, err := w.Write(buf); err != nil {
			e.c.failed.Add(float64(n))
			if !failing {
				e.log.Error("audit write failed", "err", err)
				failing = true
			}
			return
		}
		if failing {
			e.log.Info("audit writes recovered")
			failing = false
		}
		e.c.published.Add(float64(n))
	}
	for {
		select {
		case qp := <-e.q:
			ev := recv(qp)
			write(ev, true)
		case <-tick.C:
			drops.report(e)
		case ctx := <-e.stop:
		drain:
			for {
				if ctx.Err() != nil {
					// Out of time (a stuck stdout pipe): count the rest.
					n := len(e.q)
					for range n {
						recv(<-e.q)
					}
					e.c.dropped.Add(float64(n))
					e.drops.Add(uint64(n))
					e.closeErr = ctx.Err()
					break
				}
				select {
				case qp := <-e.q:
					ev := recv(qp)
					write(ev, true)
				default:
					break drain
				}
			}
			drops.report(e)
			if e.file != nil {
				if err := e.file.close(); err != nil {
					e.closeErr = err
				}
			}
			return
		}
	}
}

// fileWriter is the file sink's file, reopened by Reopen.
type fileWriter struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openFile(path string) (*fileWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	return &fileWriter{path: path, f: f}, nil
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, errors.New("audit file is closed")
	}
	return w.f.Write(p)
}

func (w *fileWriter) reopen() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("reopen audit file: %w", err)
	}
	w.mu.Lock()
	old := w.f
	w.f = f
	w.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (w *fileWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// eventPool recycles queued events. The queue holds pointers so that its
// buffer costs 8 bytes a slot instead of an Event's 224: the channel's ring
// is allocated whole at start, and under steady load its cursor walks every
// slot, so a value queue of the default 10,000 kept 2.2 MB resident (and,
// through the GC's heap goal, about twice that) for events in flight.
var eventPool = sync.Pool{New: func() any { return new(Event) }}

// recv copies a queued event out and recycles its slot; the copy is what the
// worker encodes, so the slot can be reused at once.
func recv(p *Event) Event {
	ev := *p
	*p = Event{}
	eventPool.Put(p)
	return ev
}
