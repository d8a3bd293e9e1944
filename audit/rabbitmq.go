package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/internal/broker"
)

// Tuning of the rabbitmq sink.
const (
	// window is how many publishes may wait for their confirm at once: enough
	// to keep the broker busy (>10k confirmed events/s locally) while bounding
	// what a connection loss makes us re-send.
	window       = 512
	dialTimeout  = 5 * time.Second
	setupTimeout = 10 * time.Second // dial + open + channel + confirm + exchange declare
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 10 * time.Second
	returnHold   = 250 * time.Millisecond // first pause of a routing key after a returned message
	returnMax    = 5 * time.Second
	logEvery     = 10 * time.Second
	// maxParked bounds the returned messages kept in memory for a re-send,
	// over all routing keys: a key nobody binds (a consumer that binds only
	// auth.deny) would otherwise collect every event sent to it.
	maxParked = window
	// maxBatchBytes closes a batch early so that it always fits one spool
	// record (maxRecord) and stays a reasonable AMQP message.
	maxBatchBytes = 1 << 20
	// maxInflightBytes bounds what waits for confirms besides the window's
	// count: 16 MiB is ~270 batches of 100 typical events, more than the
	// confirm round trip needs, and the memory of at most 16 full batches.
	maxInflightBytes = 16 << 20
	// maxKeptBatchBuf is the largest open-batch buffer kept for reuse.
	maxKeptBatchBuf = 256 << 10
)

// errConfirmTimeout is why a link is closed when the broker stops
// confirming: on a silent network (a blackhole) the heartbeat notices only
// after about three intervals, and events pile up meanwhile.
var errConfirmTimeout = errors.New("no publisher confirm within confirm_timeout")

// rabbit is the rabbitmq sink's worker state. Everything here is owned by
// the run goroutine except dial, which runs in its own goroutine and hands
// back a finished connection.
//
// Sources of messages, in the order they are published: retry (unconfirmed
// at a connection loss, nacked, or parked and released), then one probe per
// held routing key, then the spool, then the queue. While the spool holds
// unread records, new events are appended to it rather than published, so
// spooled events keep their order with newer ones.
//
// A returned message (mandatory, no queue bound for its routing key) holds
// only its own routing key: it and every later message for that key are
// parked (at most maxParked in all; beyond that they are dropped and
// counted), and after a pause that grows from returnHold to returnMax one
// parked message is re-sent as a probe. When a message for the key is
// confirmed and not returned, the key's parked messages go back to retry.
// Messages for other keys are published meanwhile as usual.
//
// Time comes from the emitter's clock (Options.Now): reconnect backoff, a
// held key's pause, the spool-lock poll and the log rate limits are
// decided on it, so tests can drive them. Only socket deadlines read the
// wall clock: the kernel measures them against it.
type rabbit struct {
	e     *Emitter
	cfg   RabbitMQConfig
	log   *slog.Logger
	spool *spool // nil without spool_dir

	ctx    context.Context // cancelled when the worker ends: aborts a dial
	cancel context.CancelFunc
	wg     sync.WaitGroup // dial goroutines

	link        // the current connection; zero while there is none
	broker  int // position of link's broker in cfg.URLs
	dialer  *broker.Dialer
	blocked bool
	tag     uint64 // delivery tag of the last publish on ch

	inflight []pending
	// inflightBytes is the bodies of inflight: with batches a message can
	// be up to maxBatchBytes, so window messages alone would not bound
	// memory (512 of 1 MiB).
	inflightBytes int
	retry         []pending
	returned      map[string]bool // message ids returned and not yet confirmed

	holds       map[string]*keyHold // routing keys whose messages were returned
	nParked     int                 // messages parked in holds, <= maxParked
	lastReturn  time.Time           // rate limit of the "returned" log line
	nReturned   int
	lastNoRoute time.Time // rate limit of the "no bound queue, dropped" log line
	nNoRoute    int

	dialing  bool
	dialRes  chan dialResult
	nextDial time.Time
	backoff  time.Duration
	down     bool // logged "unreachable" for the current outage

	spoolBroken bool      // a spool write failed: stop spooling, keep the queue
	spoolFull   bool      // the spool refused a record and has not shrunk since
	spoolFullAt int64     // its size then
	nextLockTry time.Time // while another emitter owns spool_dir
	lastSpool   time.Time
	encBuf      []byte
	batch       []message

	durable durableState // audit.durable: see durable.go
	// Batched mode (cfg.Batch.MaxEvents > 0): the open batch of each
	// routing key. Keys come from the routing_key template, so there are
	// few of them.
	open        map[string]*openBatch
	unblockedAt time.Time // confirm_timeout counts from here after connection.unblocked
}

type pending struct {
	m    message
	seg  *segment // spool segment the message came from, nil for memory
	tag  uint64
	sent time.Time // publish time on the worker's clock, for confirm_timeout
}

// openBatch collects the events of one routing key until max_events,
// maxBatchBytes or max_delay closes it into one message.
type openBatch struct {
	buf   []byte    // "[" then the events, comma-separated; reused
	n     int       // events in buf
	since time.Time // when the first event went in
	typ   string    // the events' CloudEvents type, or "" when they differ
}

// keyHold is the state of a routing key the broker returned a message for.
type keyHold struct {
	until  time.Time     // no probe before
	delay  time.Duration // last pause, doubled on each return up to returnMax
	probe  string        // id of the parked message in flight as a probe; "" none
	parked []pending     // waiting for the key to be routable, oldest first
}

// link is a broker connection, its channel, and their notifications.
type link struct {
	conn      *amqp.Connection
	ch        *amqp.Channel
	confirms  chan amqp.Confirmation
	returns   chan amqp.Return
	connClose chan *amqp.Error
	chClose   chan *amqp.Error
	blockedC  chan amqp.Blocking
}

type dialResult struct {
	link
	broker int // position in the URL list
	err    error
}

func newRabbit(e *Emitter) (*rabbit, error) {
	r := &rabbit{
		e:        e,
		cfg:      e.cfg.RabbitMQ,
		log:      e.log,
		returned: map[string]bool{},
		holds:    map[string]*keyHold{},
		dialRes:  make(chan dialResult, 1),
		backoff:  backoffMin,
		open:     map[string]*openBatch{},
	}
	if r.cfg.ConfirmTimeout <= 0 {
		r.cfg.ConfirmTimeout = DefaultConfirmTimeout
	}
	if len(r.cfg.URLs) == 0 {
		return nil, errors.New("audit: sink rabbitmq needs a broker URL")
	}
	for i, u := range r.cfg.URLs {
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, fmt.Errorf("audit: rabbitmq URL %d of %d is not a valid amqp:// or amqps:// URL", i+1, len(r.cfg.URLs))
		}
	}
	r.dialer = &broker.Dialer{
		URLs:         r.cfg.URLs,
		Name:         "gatehouse audit",
		Heartbeat:    r.cfg.Heartbeat,
		DialTimeout:  dialTimeout,
		SetupTimeout: setupTimeout,
		// A silent network fills the socket buffers and a publish would
		// block the worker, which then could not see confirm_timeout.
		WriteTimeout: r.cfg.ConfirmTimeout,
	}
	if e.cfg.SpoolDir != "" {
		s, err := openSpool(e.cfg.SpoolDir, e.cfg.SpoolMaxBytes, defaultSegment, r.log)
		if err != nil {
			return nil, err
		}
		r.spool = s
		if !s.locked {
			r.log.Info("audit spool_dir in use by the emitter being replaced, waiting for it", "spool_dir", e.cfg.SpoolDir)
		} else if !s.empty() {
			r.log.Info("audit spool from a previous run will be replayed", "bytes", s.bytes())
		}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if err := initDurable(r); err != nil {
		r.cancel()
		return nil, err
	}
	return r, nil
}

func (r *rabbit) run() {
	e := r.e
	defer close(e.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	tick := time.NewTicker(dropReportEvery)
	defer tick.Stop()
	var drops dropReporter
	var stopCtx context.Context
	var stopDone <-chan struct{}
	stopC := e.stop
	for {
		now := e.now()
		if r.conn == nil && !r.dialing && !now.Before(r.nextDial) {
			r.startDial()
		}
		if r.confirmOverdue(now) {
			r.lost(errConfirmTimeout)
		}
		r.flushBatches(now, stopCtx != nil)
		r.pump(now)
		r.commit(now)
		if stopCtx != nil && r.finished() {
			r.shutdown()
			drops.report(e)
			return
		}
		var q <-chan *Event
		if r.acceptQueue(now, stopCtx != nil) {
			q = e.q
		}
		if wake, ok := r.nextWake(now); ok {
			timer.Reset(wake)
		} else {
			timer.Stop()
		}
		select {
		case qp := <-q:
			ev := recv(qp)
			// The event's own time, not the loop's: after a quiet spell
			// now is old, and a batch opened with it would be due at once.
			r.take(ev, e.now())
		case c, ok := <-r.confirms:
			if !ok {
				r.confirms = nil
				continue
			}
			r.confirm(c)
		case ret, ok := <-r.returns:
			if !ok { // channel shut down; chClose follows
				r.returns = nil
				continue
			}
			r.returned[ret.MessageId] = true
		case b, ok := <-r.blockedC:
			if !ok { // connection shut down; connClose follows
				r.blockedC = nil
				continue
			}
			if b.Active != r.blocked {
				r.blocked = b.Active
				if b.Active {
					r.log.Warn("audit broker blocked publishing", "reason", b.Reason)
				} else {
					r.unblockedAt = e.now()
					r.log.Info("audit broker unblocked publishing")
				}
			}
		case err := <-r.connClose:
			r.lost(err)
		case err := <-r.chClose:
			r.lost(err)
		case res := <-r.dialRes:
			r.connected(res)
		case err := <-r.durable.done:
			r.synced(err)
		case <-timer.C:
		case <-tick.C:
			drops.report(e)
		case ctx := <-stopC:
			stopCtx, stopDone, stopC = ctx, ctx.Done(), nil
		case <-stopDone:
			r.shutdown()
			drops.report(e)
			e.closeErr = stopCtx.Err()
			return
		}
	}
}

// spoolOK reports whether the spool can be used now.
func (r *rabbit) spoolOK() bool {
	if r.spool == nil || r.spoolBroken {
		return false
	}
	if !r.spool.locked {
		now := r.e.now()
		if now.Before(r.nextLockTry) {
			return false
		}
		r.nextLockTry = now.Add(100 * time.Millisecond)
		ok, err := r.spool.tryLock()
		if err != nil {
			r.spoolBroken = true
			r.log.Error("audit spool unusable", "err", err)
			return false
		}
		if !ok {
			return false
		}
		r.log.Info("audit spool lock taken", "bytes", r.spool.bytes())
	}
	return true
}

// canPublish reports whether a message may be published now. A returned
// message does not stop publishing: it holds only its routing key.
func (r *rabbit) canPublish() bool {
	return r.ch != nil && !r.blocked && len(r.inflight) < window && r.inflightBytes < maxInflightBytes
}

// pump publishes from retry, held keys' probes, spool and queue until the
// window is full or nothing is left. Messages for a held routing key are
// parked instead of published.
func (r *rabbit) pump(now time.Time) {
	for r.canPublish() {
		var p pending
		switch {
		case len(r.retry) > 0:
			p = r.retry[0]
			r.retry = r.retry[1:]
		case r.nextProbe(now, &p):
			r.publish(p)
			continue
		case r.spoolOK() && !r.spool.empty():
			m, seg, ok := r.spool.next()
			if !ok {
				return
			}
			p = pending{m: m, seg: seg}
		case r.durableSpool():
			return // the queue goes to the spool first (take)
		default:
			select {
			case qp := <-r.e.q:
				ev := recv(qp)
				if r.cfg.Batch.MaxEvents == 0 {
					p = pending{m: r.encode(&ev)}
					break
				}
				m, full := r.addToBatch(&ev, now)
				if !full {
					continue
				}
				p = pending{m: m}
			default:
				return
			}
		}
		r.send(p, now)
	}
}

// addToBatch encodes ev into its routing key's open batch and returns the
// batch as a message when that made it full.
func (r *rabbit) addToBatch(ev *Event, now time.Time) (message, bool) {
	key := r.e.keyOf(ev)
	b := r.open[key]
	if b == nil {
		b = &openBatch{}
		r.open[key] = b
	}
	typ := eventType(ev)
	if b.n == 0 {
		b.buf = append(b.buf[:0], '[')
		b.since, b.typ = now, typ
	} else {
		b.buf = append(b.buf, ',')
		if b.typ != typ {
			b.typ = ""
		}
	}
	b.buf = r.e.encode(ev, b.buf).body
	b.n++
	if b.n >= r.cfg.Batch.MaxEvents || len(b.buf) >= maxBatchBytes {
		return r.closeBatch(key, b, now), true
	}
	return message{}, false
}

// closeBatch turns b into a message with its own id (SPEC.md 12: the
// batch's message_id is not any event's) and empties b.
func (r *rabbit) closeBatch(key string, b *openBatch, now time.Time) message {
	body := make([]byte, len(b.buf)+1)
	copy(body, b.buf)
	body[len(b.buf)] = ']'
	m := message{id: r.e.nextID(), typ: b.typ, key: key, time: now, body: body, batch: b.n}
	b.n = 0
	if cap(b.buf) > maxKeptBatchBuf {
		// One batch of huge events must not pin a megabyte per routing key.
		b.buf = nil
	}
	return m
}

// flushBatches closes the batches whose first event waited max_delay (all
// of them while stopping) and hands each on as take would an event.
func (r *rabbit) flushBatches(now time.Time, all bool) {
	for key, b := range r.open {
		if b.n > 0 && (all || now.Sub(b.since) >= r.cfg.Batch.MaxDelay) {
			r.dispatch(r.closeBatch(key, b, now), now)
		}
	}
}

// openEvents is how many events wait in open batches.
func (r *rabbit) openEvents() int {
	n := 0
	for _, b := range r.open {
		n += b.n
	}
	return n
}

// dispatch hands on a new message: published at once when nothing older
// waits, else spooled behind the older ones, else kept in retry.
func (r *rabbit) dispatch(m message, now time.Time) {
	spoolOK := r.spoolOK()
	switch {
	case r.canPublish() && len(r.retry) == 0 && (!spoolOK || r.spool.empty()):
		r.send(pending{m: m}, now)
	case spoolOK:
		r.spoolMessages([]message{m})
	default:
		r.retry = append(r.retry, pending{m: m})
	}
}

// confirmOverdue reports whether the oldest publish waited confirm_timeout
// for its confirm. A blocked connection is not dead: the broker stopped
// reading on purpose, so the wait counts only from the unblock.
func (r *rabbit) confirmOverdue(now time.Time) bool {
	if r.ch == nil || r.blocked || len(r.inflight) == 0 {
		return false
	}
	return now.Sub(r.confirmSince()) >= r.cfg.ConfirmTimeout
}

func (r *rabbit) confirmSince() time.Time {
	since := r.inflight[0].sent
	if r.unblockedAt.After(since) {
		since = r.unblockedAt
	}
	return since
}

// send publishes p, or parks it when its routing key is held.
func (r *rabbit) send(p pending, now time.Time) {
	if h := r.holds[p.m.key]; h != nil {
		r.park(h, p, now)
		return
	}
	r.publish(p)
}

// nextProbe takes the oldest parked message of a key whose pause is over
// and which has no probe in flight.
func (r *rabbit) nextProbe(now time.Time, p *pending) bool {
	if r.nParked == 0 {
		return false
	}
	for _, h := range r.holds {
		if h.probe != "" || len(h.parked) == 0 || now.Before(h.until) {
			continue
		}
		*p = h.parked[0]
		h.parked[0] = pending{}
		h.parked = h.parked[1:]
		r.nParked--
		h.probe = p.m.id
		return true
	}
	return false
}

// park keeps p until its routing key is routable again, or drops it when
// maxParked messages are parked already: a key without a bound queue must
// not take the memory of, nor stop, the events that can be delivered.
func (r *rabbit) park(h *keyHold, p pending, now time.Time) {
	if r.nParked < maxParked {
		h.parked = append(h.parked, p)
		r.nParked++
		return
	}
	r.e.c.dropped.Add(float64(p.m.events()))
	r.e.drops.Add(uint64(p.m.events()))
	if p.seg != nil {
		r.spool.ack(p.seg) // given up: its record need not be replayed
	}
	r.nNoRoute++
	if now.Sub(r.lastNoRoute) >= logEvery {
		r.log.Warn("audit events dropped: the routing key has no bound queue",
			"exchange", r.cfg.Exchange, "routing_key", p.m.key, "parked", r.nParked, "count", r.nNoRoute)
		r.lastNoRoute, r.nNoRoute = now, 0
	}
}

func (r *rabbit) encode(ev *Event) message {
	m := r.e.encode(ev, r.encBuf[:0])
	// The body is held until confirmed: give it its own exact-size copy
	// and keep the scratch buffer.
	r.encBuf = m.body
	m.body = append([]byte(nil), m.body...)
	return m
}

// Content types of a published message (SPEC.md 8 and 12).
const (
	contentSingle = "application/json"
	contentBatch  = "application/cloudevents-batch+json"
)

func (r *rabbit) publish(p pending) {
	ct := contentSingle
	if p.m.batch > 0 {
		ct = contentBatch
	}
	_, err := r.ch.PublishWithDeferredConfirmWithContext(r.ctx, r.cfg.Exchange, p.m.key, true, false, amqp.Publishing{
		ContentType:  ct,
		DeliveryMode: amqp.Persistent,
		MessageId:    p.m.id,
		Type:         p.m.typ,
		Timestamp:    p.m.time,
		AppId:        "gatehouse",
		Body:         p.m.body,
	})
	if err != nil {
		r.retry = append([]pending{p}, r.retry...)
		r.lost(fmt.Errorf("publish: %w", err))
		return
	}
	r.tag++
	p.tag, p.sent = r.tag, r.e.now()
	r.inflight = append(r.inflight, p)
	r.inflightBytes += len(p.m.body)
}

// acceptQueue decides whether the worker reads the queue while it waits:
// to publish, or to move events to the spool while the broker cannot take
// them (or the queue is filling up), so that the queue drops only when the
// spool is full too.
func (r *rabbit) acceptQueue(now time.Time, stopping bool) bool {
	if r.durableSpool() {
		return !r.spool.full(1024) && !r.spoolRefusing()
	}
	if r.canPublish() {
		return true
	}
	if !r.spoolOK() || r.spool.full(1024) || r.spoolRefusing() {
		return false
	}
	return r.ch == nil || r.blocked || stopping || len(r.e.q) > cap(r.e.q)/2
}

func countEvents(msgs []message) int {
	n := 0
	for i := range msgs {
		n += msgs[i].events()
	}
	return n
}

// spoolRefusing reports whether the spool refused a record and has not
// shrunk since. Reading the queue then would only move events from the
// bounded queue to retry, in memory without bound; leaving them in the
// queue makes Emit drop (and count) once it is full.
func (r *rabbit) spoolRefusing() bool {
	if r.spoolFull && r.spool.bytes() < r.spoolFullAt {
		r.spoolFull = false
	}
	return r.spoolFull
}

// take handles an event read from the queue: published at once when
// nothing older waits, else spooled with whatever else is queued.
func (r *rabbit) take(ev Event, now time.Time) {
	if r.cfg.Batch.MaxEvents > 0 {
		r.takeBatched(ev, now)
		return
	}
	spoolOK := r.spoolOK()
	if r.canPublish() && len(r.retry) == 0 && (!spoolOK || r.spool.empty()) && !r.durableSpool() {
		r.send(pending{m: r.encode(&ev)}, now)
		return
	}
	if !spoolOK {
		// acceptQueue only lets this happen while we may publish.
		r.retry = append(r.retry, pending{m: r.encode(&ev)})
		return
	}
	r.batch = append(r.batch[:0], r.encode(&ev))
fill:
	for len(r.batch) < maxBatch {
		select {
		case qp := <-r.e.q:
			ev := recv(qp)
			r.batch = append(r.batch, r.encode(&ev))
		default:
			break fill
		}
	}
	r.spoolMessages(r.batch)
}

// takeBatched adds ev and whatever else is queued (up to maxBatch events)
// to the open batches, handing on each batch that fills.
func (r *rabbit) takeBatched(ev Event, now time.Time) {
	for i := 0; ; i++ {
		if m, full := r.addToBatch(&ev, now); full {
			r.dispatch(m, now)
		}
		if i == maxBatch {
			return
		}
		select {
		case qp := <-r.e.q:
			ev = recv(qp)
		default:
			return
		}
	}
}

// spoolMessages appends msgs to the spool; what does not fit waits in retry
// (at most one batch: acceptQueue stops reading the queue once the spool
// refuses a record, until it shrinks).
func (r *rabbit) spoolMessages(msgs []message) {
	n, err := r.spool.append(msgs)
	r.e.c.spooled.Add(float64(countEvents(msgs[:n])))
	if err != nil {
		if !errors.Is(err, errSpoolFull) {
			r.spoolBroken = true
			r.log.Error("audit spool write failed, spooling stopped", "err", err)
		} else {
			r.spoolFull, r.spoolFullAt = true, r.spool.bytes()
			if now := r.e.now(); now.Sub(r.lastSpool) >= logEvery {
				r.lastSpool = now
				r.log.Warn("audit spool full", "bytes", r.spool.bytes())
			}
		}
		for _, m := range msgs[n:] {
			r.retry = append(r.retry, pending{m: m})
		}
	}
}

func (r *rabbit) confirm(c amqp.Confirmation) {
	// A message's basic.return is dispatched before its basic.ack by the
	// library's single reader goroutine, so draining returns here sees it.
	for drained := false; !drained; {
		select {
		case ret, ok := <-r.returns:
			if !ok {
				// Closed with the channel: a closed channel is always
				// ready, so stop reading it or this never ends.
				r.returns = nil
				drained = true
				continue
			}
			r.returned[ret.MessageId] = true
		default:
			drained = true
		}
	}
	for len(r.inflight) > 0 && r.inflight[0].tag <= c.DeliveryTag {
		p := r.inflight[0]
		r.inflight = r.inflight[1:]
		r.inflightBytes -= len(p.m.body)
		if p.tag != c.DeliveryTag {
			// Confirms arrive one per tag, in order; a gap means the
			// channel's bookkeeping broke: re-send to be safe.
			r.retry = append(r.retry, p)
			continue
		}
		h := r.holds[p.m.key]
		if h != nil && h.probe == p.m.id {
			h.probe = ""
		}
		switch {
		case r.returned[p.m.id]:
			delete(r.returned, p.m.id)
			r.onReturned(h, p)
		case !c.Ack:
			r.retry = append(r.retry, p)
		default:
			r.e.c.published.Add(float64(p.m.events()))
			if p.seg != nil {
				r.spool.ack(p.seg)
			}
			if h != nil {
				// The key is routable again: re-send what it parked.
				r.retry = append(r.retry, h.parked...)
				r.nParked -= len(h.parked)
				delete(r.holds, p.m.key)
			}
		}
	}
}

// onReturned holds p's routing key: a returned message means no queue is
// bound for it, and re-sending at once would spin. p is parked; messages
// for other keys go on.
func (r *rabbit) onReturned(h *keyHold, p pending) {
	now := r.e.now()
	if h == nil {
		if r.holds == nil {
			r.holds = map[string]*keyHold{}
		}
		h = &keyHold{}
		r.holds[p.m.key] = h
	}
	// Several messages in flight come back for one outage of the key:
	// only the first return after a pause lengthens it.
	if !now.Before(h.until) {
		h.delay = min(max(h.delay*2, returnHold), returnMax)
		h.until = now.Add(h.delay)
	}
	r.park(h, p, now)
	r.nReturned++
	if now.Sub(r.lastReturn) >= logEvery {
		r.log.Warn("audit events returned by the broker (no queue bound for the routing key?), will retry",
			"exchange", r.cfg.Exchange, "routing_key", p.m.key, "count", r.nReturned)
		r.lastReturn, r.nReturned = now, 0
	}
}

// lost tears down the connection: unconfirmed messages go back to retry
// (re-sent with the same message_id) and a reconnect is scheduled.
func (r *rabbit) lost(err error) {
	if r.conn == nil {
		return
	}
	r.requeueUnconfirmed()
	r.log.Warn("audit broker connection lost", "err", err, "unconfirmed", len(r.retry), "broker", r.brokerLabel())
	// The next dial starts with the broker after this one: a node that
	// stopped answering confirms may well still accept connections.
	if r.dialer != nil {
		r.dialer.Failed(r.broker)
	}
	r.closeConn()
	r.scheduleDial()
}

// requeueUnconfirmed handles the confirms that arrived before the channel
// died and moves every message still unconfirmed to retry.
func (r *rabbit) requeueUnconfirmed() {
	for drained := false; !drained && r.confirms != nil; {
		select {
		case c, ok := <-r.confirms:
			if !ok {
				r.confirms = nil
				continue
			}
			r.confirm(c)
		default:
			drained = true
		}
	}
	r.retry = append(r.retry, r.inflight...)
	r.inflight, r.inflightBytes = nil, 0
	clear(r.returned)
	for _, h := range r.holds {
		h.probe = "" // the probe is in retry now, and parked again when its turn comes
	}
}

func (r *rabbit) closeConn() {
	if r.conn != nil {
		conn := r.conn
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			_ = conn.CloseDeadline(time.Now().Add(time.Second))
		}()
	}
	r.link = link{}
	r.blocked, r.tag = false, 0
}

func (r *rabbit) scheduleDial() {
	// Full jitter in [d/2, d): many gatehouse pods must not reconnect in step.
	d := r.backoff
	d = d/2 + rand.N(d/2+1)
	r.nextDial = r.e.now().Add(d)
	r.backoff = min(r.backoff*2, backoffMax)
}

func (r *rabbit) nextWake(now time.Time) (time.Duration, bool) {
	var at time.Time
	if r.conn == nil && !r.dialing {
		at = r.nextDial
	}
	if r.ch != nil {
		for _, h := range r.holds {
			if h.probe == "" && len(h.parked) > 0 && now.Before(h.until) && (at.IsZero() || h.until.Before(at)) {
				at = h.until
			}
		}
	}
	for _, b := range r.open {
		if b.n > 0 {
			if due := b.since.Add(r.cfg.Batch.MaxDelay); at.IsZero() || due.Before(at) {
				at = due
			}
		}
	}
	if r.ch != nil && !r.blocked && len(r.inflight) > 0 {
		if due := r.confirmSince().Add(r.cfg.ConfirmTimeout); at.IsZero() || due.Before(at) {
			at = due
		}
	}
	if r.spool != nil && !r.spool.locked && !r.spoolBroken {
		// Poll for the lock the replaced emitter releases when it closes.
		if poll := now.Add(100 * time.Millisecond); at.IsZero() || poll.Before(at) {
			at = poll
		}
	}
	at = r.commitWake(at)
	if at.IsZero() {
		return 0, false
	}
	return max(at.Sub(now), time.Millisecond), true
}

func (r *rabbit) startDial() {
	r.dialing = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.dialRes <- dial(r.ctx, r.dialer, r.cfg.Exchange)
	}()
}

func (r *rabbit) connected(res dialResult) {
	r.dialing = false
	if res.err != nil {
		if !r.down {
			r.down = true
			r.log.Warn("audit broker unreachable, retrying with backoff", "err", res.err)
		} else {
			r.log.Debug("audit broker still unreachable", "err", res.err)
		}
		r.scheduleDial()
		return
	}
	r.link, r.broker = res.link, res.broker
	r.backoff, r.down = backoffMin, false
	r.log.Info("audit broker connected", "exchange", r.cfg.Exchange, "broker", r.brokerLabel())
}

// brokerLabel names the current broker for logs ("broker 2 of 3"), never
// by its URL.
func (r *rabbit) brokerLabel() string {
	if r.dialer == nil {
		return "broker"
	}
	return r.dialer.Label(r.broker)
}

// dial connects to the first broker of the list that answers (starting
// after the last one that failed), opens a confirming channel and declares
// the exchange, each attempt bounded by setupTimeout and ctx. Errors name a
// broker by its position, never by its URL.
func dial(ctx context.Context, d *broker.Dialer, exchange string) dialResult {
	var res dialResult
	conn, i, err := d.Dial(ctx, func(_ context.Context, conn *amqp.Connection) error {
		res = dialResult{link: link{conn: conn}}
		res.connClose = conn.NotifyClose(make(chan *amqp.Error, 1))
		res.blockedC = conn.NotifyBlocked(make(chan amqp.Blocking, 16))
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		res.ch = ch
		res.chClose = ch.NotifyClose(make(chan *amqp.Error, 1))
		res.confirms = ch.NotifyPublish(make(chan amqp.Confirmation, 2*window))
		res.returns = ch.NotifyReturn(make(chan amqp.Return, 2*window))
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("enable publisher confirms: %w", err)
		}
		if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", exchange, err)
		}
		return nil
	})
	if err != nil {
		return dialResult{err: err}
	}
	res.conn, res.broker = conn, i
	return res
}

// finished reports whether Close may end: nothing queued or unconfirmed in
// memory (what is in the spool stays there for the next process). Parked
// messages do not keep Close waiting: their routing key had no bound queue
// at the last try; shutdown spools them (or counts them dropped).
func (r *rabbit) finished() bool {
	if len(r.e.q) > 0 || len(r.inflight) > 0 || r.openEvents() > 0 {
		return false
	}
	return len(r.retry) == 0 || (r.ch == nil && r.spoolOK())
}

// shutdown saves what memory still holds to the spool (or counts it
// dropped), closes the connection and waits for every goroutine.
func (r *rabbit) shutdown() {
	var left []message
	all := append(r.retry, r.inflight...)
	for _, h := range r.holds {
		all = append(all, h.parked...)
	}
	for _, p := range all {
		if p.seg == nil { // spooled ones are still in their segment file
			left = append(left, p.m)
		}
	}
	r.retry, r.inflight, r.inflightBytes, r.holds, r.nParked = nil, nil, 0, nil, 0
	now := r.e.now()
	for drained := false; !drained; {
		select {
		case qp := <-r.e.q:
			ev := recv(qp)
			if r.cfg.Batch.MaxEvents == 0 {
				left = append(left, r.encode(&ev))
			} else if m, full := r.addToBatch(&ev, now); full {
				left = append(left, m)
			}
		default:
			drained = true
		}
	}
	for key, b := range r.open {
		if b.n > 0 {
			left = append(left, r.closeBatch(key, b, now))
		}
	}
	if len(left) > 0 {
		n := 0
		if r.spoolOK() {
			n, _ = r.spool.append(left)
			r.e.c.spooled.Add(float64(countEvents(left[:n])))
		}
		if d := countEvents(left[n:]); d > 0 {
			r.e.c.dropped.Add(float64(d))
			r.e.drops.Add(uint64(d))
			r.log.Error("audit events lost at shutdown", "count", d)
		}
	}
	if r.spool != nil {
		r.spool.close()
	}
	r.closeConn()
	r.cancel()
	r.wg.Wait()
	select {
	case res := <-r.dialRes:
		if res.conn != nil {
			res.conn.Close()
		}
	default:
	}
}
