package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

func batchConfig(url, exchange string, maxEvents int, maxDelay time.Duration) Config {
	cfg := rabbitConfig(url, exchange)
	cfg.RabbitMQ.Batch = Batch{MaxEvents: maxEvents, MaxDelay: maxDelay}
	return cfg
}

// TestRabbitMQBatch: full batches go out as one message each, one routing
// key per batch, with the batch content type and the events in emit order.
func TestRabbitMQBatch(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	// max_delay far beyond the test: only a full batch is published.
	e, logs := newLogged(t, batchConfig(url, exchange, 25, time.Hour))
	ids := emitN(e, "b", 0, 300) // 100 deny, 200 allow
	c.waitAll(t, ids, 60*time.Second)
	msgs := c.messages()
	if len(msgs) != 12 {
		t.Fatalf("%d messages for 300 events in batches of 25, want 12 (4 deny, 8 allow)", len(msgs))
	}
	last := map[string]int{}
	for _, m := range msgs {
		if m.contentType != "application/cloudevents-batch+json" || len(m.ids) != 25 {
			t.Errorf("message %s with %d events, want application/cloudevents-batch+json with 25", m.contentType, len(m.ids))
		}
		for _, id := range m.ids {
			var n int
			fmt.Sscanf(id, "b-%d", &n)
			if n <= last[m.key] && last[m.key] != 0 || (n%3 == 0) != (m.key == "auth.deny") {
				t.Errorf("event %s in a batch of %s after b-%d: out of order or wrong key", id, m.key, last[m.key])
			}
			last[m.key] = n
		}
	}
	closeOK(t, e)
	if got := counter(e, "published"); got != 300 {
		t.Errorf("published = %v, want 300 (every event of a confirmed batch)", got)
	}
	if strings.Contains(logs.all(), "guest:guest") {
		t.Errorf("logs hold the URL password:\n%s", logs.all())
	}
}

// TestRabbitMQBatchMaxDelay: a batch that does not fill goes out once its
// first event waited max_delay, without Close.
func TestRabbitMQBatchMaxDelay(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	e, _ := newLogged(t, batchConfig(url, exchange, 1000, time.Second))
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("d-%d", i)
		e.Emit(Event{Time: time.Now(), RequestID: id, Decision: "allow", Reason: "ok", Status: 200})
		ids = append(ids, id)
	}
	c.waitAll(t, ids, 30*time.Second)
	msgs := c.messages()
	if len(msgs) != 1 || len(msgs[0].ids) != 7 || strings.Join(msgs[0].ids, ",") != strings.Join(ids, ",") {
		t.Errorf("messages = %+v, want one batch of the 7 events in order", msgs)
	}
	waitFor(t, 10*time.Second, "published count", func() bool { return counter(e, "published") == 7 })
	closeOK(t, e)
}

// TestRabbitMQBatchReturned: a returned batch is parked and re-sent like a
// single message; none of its events counts as published until a queue is
// bound and the batch is confirmed.
func TestRabbitMQBatchReturned(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, false)
	logs := &logRecorder{}
	e, err := New(batchConfig(url, exchange, 20, 50*time.Millisecond), Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 60 {
		id := fmt.Sprintf("r-%d", i)
		e.Emit(Event{Time: time.Now(), RequestID: id, Decision: "deny", Reason: "token_expired", Status: 401})
		ids = append(ids, id)
	}
	waitFor(t, 20*time.Second, "a returned batch to be logged", func() bool { return logs.has("audit events returned") })
	if got := counter(e, "published"); got != 0 {
		t.Errorf("published = %v while every batch was returned", got)
	}
	c.bind()
	c.waitAll(t, ids, 30*time.Second)
	waitFor(t, 10*time.Second, "published count", func() bool { return counter(e, "published") == 60 })
	closeOK(t, e)
	if got := counter(e, "dropped"); got != 0 {
		t.Errorf("dropped = %v", got)
	}
	for _, m := range c.messages() {
		if m.contentType != contentBatch {
			t.Errorf("a %s message after a returned batch", m.contentType)
		}
	}
}

// TestRabbitMQBatchOutageSpool: batches made while the broker is cut off
// go to the spool and are replayed as batches, nothing lost.
func TestRabbitMQBatchOutageSpool(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
	cfg := batchConfig(p.url(), exchange, 50, 20*time.Millisecond)
	cfg.SpoolDir = t.TempDir()
	e, logs := newLogged(t, cfg)
	ids := emitN(e, "a", 0, 1000)
	waitFor(t, 20*time.Second, "broker connection", func() bool { return logs.has("audit broker connected") })
	p.cut()
	waitFor(t, 20*time.Second, "the cut seen", func() bool { return logs.has("audit broker connection lost") })
	tick := time.NewTicker(50 * time.Millisecond)
	for i := 0; i < 2000; i += 100 {
		<-tick.C
		ids = append(ids, emitN(e, "b", i, i+100)...)
	}
	tick.Stop()
	waitFor(t, 20*time.Second, "events spooled", func() bool { return counter(e, "spooled") > 0 })
	p.restore()
	c.waitAll(t, ids, 60*time.Second)
	closeOK(t, e)
	if got := counter(e, "dropped"); got != 0 {
		t.Errorf("dropped = %v", got)
	}
	for _, m := range c.messages() {
		if m.contentType != contentBatch {
			t.Fatalf("a %s message in batched mode", m.contentType)
		}
	}
}

// TestRabbitMQConfirmTimeout: a link that goes silent (a blackhole: the
// forwarder stops forwarding and closes nothing) is noticed through
// confirm_timeout long before the heartbeat would, the unconfirmed events
// are re-sent once the network is back, and none is lost.
func TestRabbitMQConfirmTimeout(t *testing.T) {
	url := audittest.BrokerURL(t)
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			exchange := uniqueName("gh-test-x-")
			c := startCollector(t, url, exchange, true)
			p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
			cfg := rabbitConfig(p.url(), exchange)
			if batch {
				cfg.RabbitMQ.Batch = Batch{MaxEvents: 50, MaxDelay: 20 * time.Millisecond}
			}
			cfg.SpoolDir = t.TempDir()
			// The heartbeat alone would notice after about 3 minutes.
			cfg.RabbitMQ.Heartbeat = time.Minute
			cfg.RabbitMQ.ConfirmTimeout = time.Second
			e, logs := newLogged(t, cfg)
			ids := emitN(e, "a", 0, 200)
			c.waitAll(t, ids, 30*time.Second)
			p.pause(true)
			ids = append(ids, emitN(e, "b", 0, 500)...)
			waitFor(t, 40*time.Second, "the silent link noticed", func() bool { return logs.has("audit broker connection lost") })
			if !logs.has("audit broker connection lost err=" + errConfirmTimeout.Error()) {
				t.Errorf("the link was not closed for confirm_timeout:\n%s", logs.all())
			}
			ids = append(ids, emitN(e, "c", 0, 500)...)
			p.pause(false)
			c.waitAll(t, ids, 60*time.Second)
			closeOK(t, e)
			if got := counter(e, "dropped"); got != 0 {
				t.Errorf("dropped = %v", got)
			}
		})
	}
}

// TestRabbitMQConfirmTimeoutNextURL: the first URL goes silent (a
// blackhole that never resumes); confirm_timeout closes the link and the
// events arrive through the next URL of the list.
func TestRabbitMQConfirmTimeoutNextURL(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
	cfg := rabbitConfig(p.url(), exchange)
	cfg.RabbitMQ.URLs = []string{p.url(), url}
	cfg.RabbitMQ.Batch = Batch{MaxEvents: 50, MaxDelay: 20 * time.Millisecond}
	cfg.RabbitMQ.Heartbeat = time.Minute
	cfg.RabbitMQ.ConfirmTimeout = time.Second
	e, logs := newLogged(t, cfg)
	ids := emitN(e, "a", 0, 200)
	c.waitAll(t, ids, 30*time.Second)
	if !logs.has("audit broker connected exchange=" + exchange + " broker=broker 1 of 2") {
		t.Fatalf("not connected to the first URL:\n%s", logs.all())
	}
	p.pause(true)
	ids = append(ids, emitN(e, "b", 0, 1000)...)
	c.waitAll(t, ids, 60*time.Second)
	if !logs.has("audit broker connection lost err="+errConfirmTimeout.Error()) ||
		!logs.has("audit broker connected exchange="+exchange+" broker=broker 2 of 2") {
		t.Errorf("want the link closed for confirm_timeout and the second URL used:\n%s", logs.all())
	}
	closeOK(t, e)
	if got := counter(e, "dropped"); got != 0 {
		t.Errorf("dropped = %v", got)
	}
	if strings.Contains(logs.all(), "guest:guest") {
		t.Errorf("logs hold a URL password:\n%s", logs.all())
	}
}

// TestBatchFlushUsesClock: max_delay is decided on the emitter's clock, and
// the worker wakes for the oldest open batch.
func TestBatchFlushUsesClock(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e := stateEmitter(1)
	e.now = func() time.Time { return now }
	e.keyAllow, e.keyDeny = "auth.allow", "auth.deny"
	r := &rabbit{e: e, log: e.log, open: map[string]*openBatch{},
		cfg: RabbitMQConfig{Batch: Batch{MaxEvents: 3, MaxDelay: 50 * time.Millisecond}, ConfirmTimeout: time.Second}}
	for i := range 2 {
		if _, full := r.addToBatch(&Event{Decision: "allow", RequestID: fmt.Sprint(i)}, now); full {
			t.Fatalf("batch full after %d events, max_events 3", i+1)
		}
	}
	if wake, ok := r.nextWake(now.Add(10 * time.Millisecond)); !ok || wake != 40*time.Millisecond {
		t.Errorf("nextWake = %v, %v; want 40ms (the open batch's max_delay)", wake, ok)
	}
	r.flushBatches(now.Add(49*time.Millisecond), false)
	if len(r.retry) != 0 || r.openEvents() != 2 {
		t.Fatalf("flushed before max_delay: retry %d, open %d", len(r.retry), r.openEvents())
	}
	r.flushBatches(now.Add(50*time.Millisecond), false)
	if len(r.retry) != 1 || r.openEvents() != 0 {
		t.Fatalf("not flushed at max_delay: retry %d, open %d", len(r.retry), r.openEvents())
	}
	m := r.retry[0].m
	if m.batch != 2 || m.typ != "gatehouse.auth.allow" || m.key != "auth.allow" || !strings.HasPrefix(string(m.body), "[{") ||
		!strings.HasSuffix(string(m.body), "}]") || strings.Count(string(m.body), `"specversion"`) != 2 {
		t.Errorf("batch message = %+v %s", m, m.body)
	}
	if _, ok := r.nextWake(now.Add(time.Hour)); ok {
		t.Error("nextWake set with no open batch")
	}
}

// TestInflightBytesBoundPublishing: with batches of up to 1 MiB, the
// window's message count alone would let 512 MiB wait for confirms; the
// bytes unconfirmed stop publishing too.
func TestInflightBytesBoundPublishing(t *testing.T) {
	r := &rabbit{}
	r.ch = &amqp.Channel{}
	if !r.canPublish() {
		t.Fatal("nothing in flight, and publishing is refused")
	}
	r.inflightBytes = maxInflightBytes
	if r.canPublish() {
		t.Error("publishing with maxInflightBytes unconfirmed")
	}
}
