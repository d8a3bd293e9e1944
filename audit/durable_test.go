package audit

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

// durableRabbit is a worker in durable mode on a fresh spool, driven step
// by step with the clock the test sets.
func durableRabbit(t *testing.T, interval time.Duration) (*rabbit, *time.Time) {
	t.Helper()
	e := stateEmitter(100)
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	e.cfg.Durable, e.cfg.FsyncInterval = true, interval
	e.cfg.SpoolDir = t.TempDir()
	r := &rabbit{e: e, log: e.log, returned: map[string]bool{}, holds: map[string]*keyHold{}}
	r.spool = mustOpen(t, e.cfg.SpoolDir, 1<<20, 1<<20)
	t.Cleanup(r.spool.close)
	if err := initDurable(r); err != nil {
		t.Fatal(err)
	}
	return r, &now
}

// spooledIDs reads the request ids in the spool's files as a new process
// would find them.
func spooledIDs(t *testing.T, dir string) []string {
	t.Helper()
	var ids []string
	for _, f := range segFiles(t, dir) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range strings.Split(string(b), `"request_id":"`)[1:] {
			ids = append(ids, id[:strings.IndexByte(id, '"')])
		}
	}
	return ids
}

// TestDurableSpoolsBeforePublish: in durable mode the worker reads the
// queue while the broker could take the events, and the event goes to the
// spool file (counted spooled), never straight to the broker: pump
// publishes only what it reads back from the spool.
func TestDurableSpoolsBeforePublish(t *testing.T) {
	r, now := durableRabbit(t, 50*time.Millisecond)
	r.ch = &amqp.Channel{} // a zero channel: a direct publish would fail the test
	r.inflight = make([]pending, window)
	r.e.q <- &Event{RequestID: "rq-1", Decision: "allow", Reason: "ok"}
	if !r.acceptQueue(*now, false) {
		t.Fatal("durable worker does not read the queue with the publish window full")
	}
	r.take(recv(<-r.e.q), *now)
	if len(r.inflight) != window || len(r.retry) != 0 {
		t.Fatalf("event went to memory (inflight %d, retry %d), want the spool", len(r.inflight), len(r.retry))
	}
	if got := spooledIDs(t, r.e.cfg.SpoolDir); len(got) != 1 || got[0] != "rq-1" {
		t.Fatalf("spool files hold %q, want [rq-1]", got)
	}
	if got, pub := counter(r.e, "spooled"), counter(r.e, "published"); got != 1 || pub != 0 {
		t.Errorf("spooled = %v, published = %v; want 1, 0", got, pub)
	}

	// With room in the window and nothing unread in the spool (rq-1 is
	// in flight), the ordinary mode would publish the event directly; the
	// durable one still writes it to the spool first, and pump does not
	// read the queue itself.
	m, seg, ok := r.spool.next()
	if !ok || m.id == "" {
		t.Fatal("rq-1 not readable from the spool")
	}
	r.inflight = []pending{{m: m, seg: seg, tag: 1}}
	r.e.q <- &Event{RequestID: "rq-2", Decision: "deny", Reason: "no_token"}
	r.take(recv(<-r.e.q), *now)
	if len(r.inflight) != 1 || len(r.retry) != 0 {
		t.Fatalf("take published directly (inflight %d, retry %d), want the spool", len(r.inflight), len(r.retry))
	}
	if got := spooledIDs(t, r.e.cfg.SpoolDir); fmt.Sprint(got) != "[rq-1 rq-2]" {
		t.Fatalf("spool files hold %q, want [rq-1 rq-2]", got)
	}
	r.e.q <- &Event{RequestID: "rq-3", Decision: "deny", Reason: "no_token"}
	r.ch = nil // pump stops at once; a queue read would be visible below
	r.pump(*now)
	if len(r.e.q) != 1 {
		t.Error("pump read the queue in durable mode")
	}
}

// TestDurableFallsBackWithoutSpool: when the spool is broken the durable
// worker behaves as the ordinary one (events still go out, in memory).
func TestDurableFallsBackWithoutSpool(t *testing.T) {
	r, now := durableRabbit(t, 50*time.Millisecond)
	r.spoolBroken = true
	r.inflight = make([]pending, window)
	r.ch = &amqp.Channel{}
	if r.acceptQueue(*now, false) {
		t.Error("worker with a broken spool and a full window reads the queue")
	}
}

// TestDurableFsyncCadence: group commit on the emitter's clock: the first
// record after a quiet spell is fsynced at once, later ones at most every
// fsync_interval, and nothing is fsynced without new records.
func TestDurableFsyncCadence(t *testing.T) {
	const every = 50 * time.Millisecond
	r, now := durableRabbit(t, every)
	t0 := *now
	step := func(at time.Duration, events int) {
		t.Helper()
		*now = t0.Add(at)
		for i := range events {
			r.take(Event{RequestID: fmt.Sprintf("e-%v-%d", at, i), Decision: "allow", Reason: "ok"}, *now)
		}
		r.commit(*now)
		select { // the syncer's part, done here so the test owns every step
		case j := <-r.durable.req:
			r.synced(j.run())
		default:
		}
	}
	tests := []struct {
		at     time.Duration
		events int
		syncs  int
		dirty  bool
		wake   time.Duration // nextWake from at; 0: none
	}{
		{at: 0, events: 1, syncs: 1},
		{at: 10 * time.Millisecond, events: 3, syncs: 1, dirty: true, wake: 40 * time.Millisecond},
		{at: 49 * time.Millisecond, events: 1, syncs: 1, dirty: true, wake: time.Millisecond},
		{at: 50 * time.Millisecond, syncs: 2},
		{at: 60 * time.Millisecond, syncs: 2},
		{at: 500 * time.Millisecond, syncs: 2},
		{at: 501 * time.Millisecond, events: 2, syncs: 3},
		{at: 520 * time.Millisecond, events: 1, syncs: 3, dirty: true, wake: 31 * time.Millisecond},
		{at: 551 * time.Millisecond, syncs: 4},
	}
	for _, tt := range tests {
		step(tt.at, tt.events)
		if r.durable.syncs != tt.syncs || r.dirty() != tt.dirty {
			t.Errorf("at %v: %d fsyncs, dirty %v; want %d, %v", tt.at, r.durable.syncs, r.dirty(), tt.syncs, tt.dirty)
		}
		wake, ok := r.nextWake(*now)
		if ok != (tt.wake != 0) || wake != tt.wake {
			t.Errorf("at %v: nextWake = %v, %v; want %v", tt.at, wake, ok, tt.wake)
		}
	}
	if got := len(spooledIDs(t, r.e.cfg.SpoolDir)); got != 8 {
		t.Errorf("spool holds %d records, want 8", got)
	}

	// One fsync at a time: while one runs, no second starts, and the
	// worker waits for its answer rather than a timer.
	*now = t0.Add(time.Second)
	r.take(Event{RequestID: "late-1", Decision: "allow", Reason: "ok"}, *now)
	r.commit(*now)
	if !r.durable.syncing {
		t.Fatal("no fsync started for a record after a quiet spell")
	}
	*now = now.Add(time.Second)
	r.take(Event{RequestID: "late-2", Decision: "allow", Reason: "ok"}, *now)
	r.commit(*now)
	if len(r.durable.req) != 1 {
		t.Errorf("%d fsyncs queued, want the one running", len(r.durable.req))
	}
	if wake, ok := r.nextWake(*now); ok {
		t.Errorf("nextWake = %v while an fsync runs, want none (its answer wakes the worker)", wake)
	}
	r.synced((<-r.durable.req).run())
	if !r.dirty() {
		t.Error("late-2 came after the fsync started, but the spool is not dirty")
	}
	r.commit(*now)
	r.synced((<-r.durable.req).run())
	if r.dirty() || r.durable.syncs != 6 {
		t.Errorf("dirty %v, %d fsyncs; want false, 6", r.dirty(), r.durable.syncs)
	}
}

// TestDurableConfigNeedsSpool: New refuses durable mode without spool_dir
// (DecodeConfig reports it at the key; this is for programmatic configs).
func TestDurableConfigNeedsSpool(t *testing.T) {
	cfg := rabbitConfig(closedPortURL(t), "gh-test-unused")
	cfg.Durable = true
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "durable needs spool_dir") {
		t.Fatalf("New = %v, want a durable needs spool_dir error", err)
	}
}

// TestRabbitMQDurable: with a live broker, durable mode delivers every
// event through the spool, counts each spooled then published, and leaves
// no segment behind.
func TestRabbitMQDurable(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	cfg := rabbitConfig(url, exchange)
	cfg.SpoolDir = t.TempDir()
	cfg.Durable, cfg.FsyncInterval = true, 5*time.Millisecond
	e, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := emitN(e, "dur", 0, 3000)
	c.waitAll(t, ids, 60*time.Second)
	waitFor(t, 20*time.Second, "all confirmed", func() bool { return counter(e, "published") == 3000 })
	closeOK(t, e)
	if got := counter(e, "spooled"); got != 3000 {
		t.Errorf("spooled = %v, want 3000 (every event goes through the spool)", got)
	}
	if files := segFiles(t, cfg.SpoolDir); len(files) != 0 {
		t.Errorf("segments left after every event was confirmed: %v", files)
	}
}

// TestRabbitMQDurableTornTail: a kill -9 in the middle of a spool write
// leaves a torn record at the end of the segment. The next durable emitter
// publishes every whole record, skips the torn one (logged), never
// publishes it as garbage, and releases the segment.
func TestRabbitMQDurableTornTail(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	dir := t.TempDir()
	cfg := rabbitConfig(closedPortURL(t), exchange)
	cfg.SpoolDir = dir
	cfg.Durable = true
	first, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := emitN(first, "torn", 0, 100)
	waitFor(t, 10*time.Second, "events spooled", func() bool { return counter(first, "spooled") == 100 })
	closeOK(t, first)
	files := segFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("segments %v, want one", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	// Cut the last record in its middle, as a write interrupted by kill -9
	// leaves it (its header promises more bytes than follow).
	last := strings.LastIndex(string(b), `"request_id":"torn-99"`)
	if err := os.WriteFile(files[0], b[:last], 0o640); err != nil {
		t.Fatal(err)
	}

	cfg.RabbitMQ.URLs = []string{url}
	e, logs := newLogged(t, cfg)
	c.waitAll(t, ids[:99], 30*time.Second)
	waitFor(t, 20*time.Second, "spool emptied", func() bool { return len(segFiles(t, dir)) == 0 })
	if !logs.has("audit spool: torn or corrupt record") {
		t.Errorf("torn record not logged:\n%s", logs.all())
	}
	closeOK(t, e)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 || c.counts["torn-99"] != 0 || c.counts[""] != 0 {
		t.Errorf("torn record published: bad %q, torn-99 %d, without request id %d", c.bad, c.counts["torn-99"], c.counts[""])
	}
}
