package audit

import (
	"fmt"
	"log/slog"
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
		{name: "returned: holding with spool", connected: true, hold: true, spool: true, readsQueue: true},
		{name: "returned: holding without spool", connected: true, hold: true},
		{name: "disconnected without spool", spool: false},
		{name: "disconnected with spool", spool: true, readsQueue: true},
		{name: "stopping while window full with spool", connected: true, inflight: window, spool: true, stopping: true, readsQueue: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Emitter{q: make(chan *Event, 10)}
			for range tt.queued {
				e.q <- &Event{}
			}
			r := &rabbit{e: e, log: slog.New(slog.DiscardHandler), blocked: tt.blocked, inflight: make([]pending, tt.inflight)}
			if tt.connected {
				r.ch = &amqp.Channel{} // never called by these decisions
			}
			if tt.hold {
				r.holdUntil = now.Add(time.Second)
			}
			if tt.spool {
				r.spool = mustOpen(t, t.TempDir(), 1<<20, 1<<20)
				defer r.spool.close()
			}
			if got := r.canPublish(now); got != tt.publish {
				t.Errorf("canPublish = %v, want %v", got, tt.publish)
			}
			if got := r.acceptQueue(now, tt.stopping); got != tt.readsQueue {
				t.Errorf("acceptQueue = %v, want %v", got, tt.readsQueue)
			}
		})
	}
}

// TestRabbitConfirmReturned: a message returned before its ack is re-queued
// for retry and not counted, an acked one is counted and its spool record
// released, a nacked one is retried.
func TestRabbitConfirmReturned(t *testing.T) {
	m := NewMetrics(nil)
	e := &Emitter{cfg: Config{Sink: SinkRabbitMQ}, m: m, c: m.forSink(SinkRabbitMQ)}
	r := &rabbit{e: e, log: slog.New(slog.DiscardHandler), returned: map[string]bool{}, returns: make(chan amqp.Return, 4)}
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
	r.confirm(amqp.Confirmation{DeliveryTag: 1, Ack: true})
	r.confirm(amqp.Confirmation{DeliveryTag: 2, Ack: true})
	r.confirm(amqp.Confirmation{DeliveryTag: 3, Ack: false})
	var retried []string
	for _, p := range r.retry {
		retried = append(retried, p.m.id)
	}
	if fmt.Sprint(retried) != "[id-0002 id-0003]" {
		t.Errorf("retry = %v, want [id-0002 id-0003]", retried)
	}
	if got := counter(e, "published"); got != 1 {
		t.Errorf("published = %v, want 1", got)
	}
	if r.spool.bytes() != 0 {
		t.Errorf("confirmed spool record not released: %d bytes", r.spool.bytes())
	}
	if !r.holdUntil.After(time.Now()) {
		t.Error("a returned message did not pause publishing")
	}
}

// TestRabbitLostWithClosedNotifications: when the channel dies, amqp091
// closes the return and confirm channels; lost drains what was buffered
// and must not spin on the closed ones (a closed channel is always ready).
func TestRabbitLostWithClosedNotifications(t *testing.T) {
	m := NewMetrics(nil)
	e := &Emitter{cfg: Config{Sink: SinkRabbitMQ}, m: m, c: m.forSink(SinkRabbitMQ)}
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
