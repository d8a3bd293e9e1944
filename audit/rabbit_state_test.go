package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestRabbitDecisions checks the worker's choices as functions of its
// state: when it publishes, and when it reads the queue to spool.
func TestRabbitDecisions(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		connected  bool
		blocked    bool
		hold       bool
		inflight   int
		spool      bool
		queued     int // of 10
		stopping   bool
		publish    bool
		readsQueue bool
	}{
		{name: "connected", connected: true, publish: true, readsQueue: true},
		{name: "window full, queue low", connected: true, inflight: window, spool: true, queued: 2},
		{name: "window full, queue half full spills to spool", connected: true, inflight: window, spool: true, queued: 6, readsQueue: true},
		{name: "blocked without spool keeps the queue", connected: true, blocked: true},
		{name: "blocked with spool", connected: true, blocked: true, spool: true, readsQueue: true},
		// A returned message holds only its routing key (issue: one unbound
		// key used to stop every event).
		{name: "returned key held, with spool", connected: true, hold: true, spool: true, publish: true, readsQueue: true},
		{name: "returned key held, without spool", connected: true, hold: true, publish: true, readsQueue: true},
		{name: "disconnected without spool", spool: false},
		{name: "disconnected with spool", spool: true, readsQueue: true},
		{name: "stopping while window full with spool", connected: true, inflight: window, spool: true, stopping: true, readsQueue: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Emitter{q: make(chan *Event, 10), now: func() time.Time { return now }}
			for range tt.queued {
				e.q <- &Event{}
			}
			r := &rabbit{e: e, log: slog.New(slog.DiscardHandler), blocked: tt.blocked, inflight: make([]pending, tt.inflight)}
			if tt.connected {
				r.ch = &amqp.Channel{} // never called by these decisions
			}
			if tt.hold {
				r.onReturned(nil, pending{m: testMsg(1)})
			}
			if tt.spool {
				r.spool = mustOpen(t, t.TempDir(), 1<<20, 1<<20)
				defer r.spool.close()
			}
			if got := r.canPublish(); got != tt.publish {
				t.Errorf("canPublish = %v, want %v", got, tt.publish)
			}
			if got := r.acceptQueue(now, tt.stopping); got != tt.readsQueue {
				t.Errorf("acceptQueue = %v, want %v", got, tt.readsQueue)
			}
		})
	}
}

// TestRabbitConfirmReturned: a message returned before its ack is parked
// under its routing key and not counted, an acked one is counted and its
// spool record released, a nacked one is retried.
func TestRabbitConfirmReturned(t *testing.T) {
	m := NewMetrics(nil)
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e := &Emitter{cfg: Config{Sink: SinkRabbitMQ}, m: m, c: m.forSink(SinkRabbitMQ), now: func() time.Time { return now }}
	r := &rabbit{e: e, log: slog.New(slog.DiscardHandler), returned: map[string]bool{}, link: link{returns: make(chan amqp.Return, 4)}}
	r.spool = mustOpen(t, t.TempDir(), 1<<20, 1<<20)
	defer r.spool.close()
	if _, err := r.spool.append([]message{testMsg(1)}); err != nil {
		t.Fatal(err)
	}
	sm, seg, _ := r.spool.next()
	for i, p := range []pending{{m: sm, seg: seg}, {m: testMsg(2)}, {m: testMsg(3)}} {
		p.tag = uint64(i + 1)
		r.inflight = append(r.inflight, p)
	}
	r.returns <- amqp.Return{MessageId: testMsg(2).id}
	r.inflight[1].m.key = "auth.allow" // returned: no queue bound for auth.allow
	r.confirm(amqp.Confirmation{DeliveryTag: 1, Ack: true})
	r.confirm(amqp.Confirmation{DeliveryTag: 2, Ack: true})
	r.confirm(amqp.Confirmation{DeliveryTag: 3, Ack: false})
	var retried []string
	for _, p := range r.retry {
		retried = append(retried, p.m.id)
	}
	if fmt.Sprint(retried) != "[id-0003]" {
		t.Errorf("retry = %v, want [id-0003]", retried)
	}
	h := r.holds["auth.allow"]
	if h == nil || len(h.parked) != 1 || h.parked[0].m.id != "id-0002" || r.nParked != 1 {
		t.Errorf("holds = %v, nParked = %d; want id-0002 parked under auth.allow", r.holds, r.nParked)
	} else if want := now.Add(returnHold); !h.until.Equal(want) {
		t.Errorf("held until %v, want %v (the emitter's clock + %v)", h.until, want, returnHold)
	}
	if r.holds["auth.deny"] != nil {
		t.Error("a returned message held another routing key")
	}
	if got := counter(e, "published"); got != 1 {
		t.Errorf("published = %v, want 1", got)
	}
	if r.spool.bytes() != 0 {
		t.Errorf("confirmed spool record not released: %d bytes", r.spool.bytes())
	}
}

// TestRabbitLostWithClosedNotifications: when the channel dies, amqp091
// closes the return and confirm channels; lost drains what was buffered
// and must not spin on the closed ones (a closed channel is always ready).
func TestRabbitLostWithClosedNotifications(t *testing.T) {
	m := NewMetrics(nil)
	e := &Emitter{cfg: Config{Sink: SinkRabbitMQ}, m: m, c: m.forSink(SinkRabbitMQ), now: time.Now}
	r := &rabbit{e: e, log: slog.New(slog.DiscardHandler), returned: map[string]bool{}, backoff: backoffMin}
	r.confirms = make(chan amqp.Confirmation, 4)
	r.returns = make(chan amqp.Return, 4)
	for i := range 3 {
		r.inflight = append(r.inflight, pending{m: testMsg(i), tag: uint64(i + 1)})
	}
	r.confirms <- amqp.Confirmation{DeliveryTag: 1, Ack: true}
	close(r.confirms)
	close(r.returns)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.requeueUnconfirmed()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("requeueUnconfirmed spins on closed notification channels")
	}
	if got := counter(e, "published"); got != 1 {
		t.Errorf("published = %v, want 1 (the buffered ack)", got)
	}
	if len(r.retry) != 2 || len(r.inflight) != 0 {
		t.Errorf("retry = %d, inflight = %d; want the 2 unconfirmed moved to retry", len(r.retry), len(r.inflight))
	}
}

// stateEmitter is an Emitter without a worker, for tests that drive the
// rabbitmq worker's steps themselves.
func stateEmitter(queueSize int) *Emitter {
	m := NewMetrics(nil)
	cfg := DefaultConfig()
	cfg.Sink = SinkRabbitMQ
	return &Emitter{cfg: cfg, m: m, c: m.forSink(SinkRabbitMQ), log: slog.New(slog.DiscardHandler),
		source: "gatehouse/test", now: time.Now, idPrefix: "0123456789abcdef", q: make(chan *Event, queueSize)}
}

func allowMsg(i int) message {
	m := testMsg(i)
	m.typ, m.key = "gatehouse.auth.allow", "auth.allow"
	return m
}

// TestRabbitReturnedKeyParked: messages for a routing key the broker
// returned are parked, at most maxParked, the rest dropped, counted and
// logged; one probe is re-sent after the pause, and once it is confirmed
// the key's parked messages go back to retry.
func TestRabbitReturnedKeyParked(t *testing.T) {
	e := stateEmitter(1)
	logs := &logRecorder{}
	r := &rabbit{e: e, log: slog.New(logs), returned: map[string]bool{}, holds: map[string]*keyHold{}}
	r.ch = &amqp.Channel{} // never called: every message here is parked
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	r.onReturned(nil, pending{m: allowMsg(0)})
	for i := 1; i <= maxParked+10; i++ {
		r.send(pending{m: allowMsg(i)}, now)
	}
	if r.nParked != maxParked || len(r.holds["auth.allow"].parked) != maxParked {
		t.Errorf("nParked = %d, want %d", r.nParked, maxParked)
	}
	if got := counter(e, "dropped"); got != 11 || e.drops.Load() != 11 {
		t.Errorf("dropped = %v (drops %d), want 11", got, e.drops.Load())
	}
	if !logs.has("audit events dropped: the routing key has no bound queue") || !strings.Contains(logs.all(), "routing_key=auth.allow") {
		t.Errorf("drops not logged with the routing key:\n%s", logs.all())
	}
	if !r.canPublish() {
		t.Error("parked messages stop publishing")
	}
	var p pending
	if r.nextProbe(now.Add(returnHold-time.Nanosecond), &p) {
		t.Error("probe before the pause is over")
	}
	later := now.Add(returnHold)
	if !r.nextProbe(later, &p) || p.m.id != allowMsg(0).id {
		t.Fatalf("probe = %q, want the oldest parked %q", p.m.id, allowMsg(0).id)
	}
	var p2 pending
	if r.nextProbe(later, &p2) {
		t.Error("second probe while one is in flight")
	}
	p.tag = 1
	r.inflight = []pending{p}
	r.confirm(amqp.Confirmation{DeliveryTag: 1, Ack: true})
	if got := counter(e, "published"); got != 1 {
		t.Errorf("published = %v, want 1", got)
	}
	if len(r.holds) != 0 || r.nParked != 0 || len(r.retry) != maxParked-1 {
		t.Errorf("after the probe's confirm: holds %d, parked %d, retry %d; want 0, 0, %d",
			len(r.holds), r.nParked, len(r.retry), maxParked-1)
	}
}

// TestRabbitSpoolRefusesBoundsMemory: with the broker away and the spool
// nearly full (room for less than the next record but more than 1 KiB), the
// worker must stop reading the queue once the spool refuses a record;
// reading on moved every queued event into retry, in memory without bound.
func TestRabbitSpoolRefusesBoundsMemory(t *testing.T) {
	e := stateEmitter(100)
	r := &rabbit{e: e, log: e.log, returned: map[string]bool{}, holds: map[string]*keyHold{}}
	r.spool = mustOpen(t, t.TempDir(), 64<<10, 1<<20)
	defer r.spool.close()
	path := "/" + strings.Repeat("p", 2580) // records of about 3 KiB
	now := time.Now()
	pushed := 0
	for range 50 {
		for len(e.q) < cap(e.q) {
			e.q <- &Event{Decision: "allow", Reason: "ok", Path: path}
			pushed++
		}
		// The worker's turns (run): read the queue while acceptQueue says so.
	turns:
		for range cap(e.q) {
			if !r.acceptQueue(now, false) {
				break
			}
			select {
			case qp := <-e.q:
				r.take(recv(qp), now)
			default:
				break turns
			}
		}
	}
	if r.spool.full(1024) {
		t.Fatalf("spool holds %d of %d bytes: the scenario needs more than 1 KiB free", r.spool.bytes(), r.spool.max)
	}
	if len(r.retry) > maxBatch {
		t.Errorf("retry holds %d events after the spool filled, want at most one batch (%d)", len(r.retry), maxBatch)
	}
	if got := int(counter(e, "spooled")) + len(r.retry) + len(e.q); got != pushed {
		t.Errorf("spooled+retry+queued = %d, want %d", got, pushed)
	}
}

// TestRabbitReconnectUsesClock: the reconnect schedule is decided on the
// emitter's clock (Options.Now), with full jitter in [backoff/2, backoff],
// and the backoff doubles up to backoffMax.
func TestRabbitReconnectUsesClock(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e := stateEmitter(1)
	e.now = func() time.Time { return now }
	r := &rabbit{e: e, log: e.log, backoff: backoffMin}
	for want := backoffMin; ; want = min(want*2, backoffMax) {
		r.scheduleDial()
		if d := r.nextDial.Sub(now); d < want/2 || d > want {
			t.Fatalf("backoff %v: next dial in %v, want within [%v, %v] of the emitter's clock", want, d, want/2, want)
		}
		if want == backoffMax {
			break
		}
	}
	if wake, ok := r.nextWake(now); !ok || wake != r.nextDial.Sub(now) {
		t.Errorf("nextWake = %v, %v; want %v", wake, ok, r.nextDial.Sub(now))
	}
}
