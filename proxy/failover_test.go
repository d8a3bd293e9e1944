package proxy_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

// TestFailoverTwoBrokers: gatehouse's audit URLs are a RabbitMQ node the
// test starts itself, then the shared broker. Under load the first node is
// stopped: gatehouse moves to the next URL, and every answered request's
// event reaches a consumer on one broker or the other (at least once,
// counted by request id). The stopped node is started again afterwards on
// its data, so the events it had confirmed but not yet delivered are
// counted too. The shared broker is only used, never stopped.
func TestFailoverTwoBrokers(t *testing.T) {
	shared := audittest.BrokerURL(t)
	node := audittest.StartNode(t)
	var rnd [6]byte
	rand.Read(rnd[:])
	exchange := "gatehouse.test.failover." + hex.EncodeToString(rnd[:])
	onNode := newEventCounter(t, node.URL, exchange)
	onShared := newEventCounter(t, shared, exchange)
	waitReady := func(c *eventCounter) {
		if !waitFor(30*time.Second, c.ready.Load) {
			t.Fatalf("the test's consumer on %s is not consuming", c.name)
		}
	}
	waitReady(onNode)
	waitReady(onShared)

	w := newFaultWorld(t)
	cfg := w.config(faultOpts{audit: fmt.Sprintf(`audit:
  sink: rabbitmq
  rabbitmq:
    url_env: GATEHOUSE_AMQP_URL
    exchange: %q
    batch: {max_events: 50, max_delay: 20ms}
    confirm_timeout: 2s
`, exchange)})
	// A comma-separated list in the variable: the node first.
	g := startProcess(t, cfg, "GATEHOUSE_AMQP_URL="+node.URL+","+shared)
	tl, tok := newTally("fo"), w.token(w.key)
	var n atomic.Int64
	stop := load(g, 3, func(c *http.Client) {
		n.Add(1)
		tl.expect(c, g.URL+"/api/x", tok, 200, "")
	})
	defer stop()
	if !waitFor(60*time.Second, func() bool { return onNode.distinct() >= 100 }) {
		t.Fatalf("no audit events on the first broker (%d on the shared one):\n%s", onShared.distinct(), g.Stderr.String())
	}
	node.Stop()
	stoppedAt := n.Load()
	if !g.WaitLog("audit broker connection lost", 30*time.Second) {
		t.Fatalf("gatehouse did not notice the stopped node:\n%s", g.Stderr.String())
	}
	// Keep the load on until events flow into the shared broker.
	if !waitFor(60*time.Second, func() bool { return onShared.distinct() >= 100 && n.Load() >= stoppedAt+200 }) {
		t.Fatalf("events did not move to the next broker (%d there):\n%s", onShared.distinct(), g.Stderr.String())
	}
	stop()
	tl.failIfBad(t)

	// What the node confirmed before it stopped is in its durable queue.
	node.Restart()
	var want []string
	tl.mu.Lock()
	for id, a := range tl.got {
		if a.status != 0 {
			want = append(want, id)
		}
	}
	tl.mu.Unlock()
	missing := func() (m []string) {
		for _, id := range want {
			if onNode.count(id)+onShared.count(id) == 0 {
				m = append(m, id)
			}
		}
		return m
	}
	if !waitFor(60*time.Second, func() bool { return len(missing()) == 0 }) {
		m := missing()
		t.Errorf("%d of %d audit events lost across the failover, e.g. %v", len(m), len(want), m[:min(5, len(m))])
	}
	if v := metric(t, g, `gatehouse_audit_events_total{result="dropped",sink="rabbitmq"}`); v > 0 {
		t.Errorf("%v events dropped", v)
	}
	dups := 0
	for _, id := range want {
		dups += max(onNode.count(id)+onShared.count(id)-1, 0)
	}
	noPanic(t, g)
	g.Stop()
	t.Logf("FIGURE failover: %d requests answered, %d events on the stopped node, %d on the next broker, %d lost, %d duplicates",
		len(want), onNode.distinct(), onShared.distinct(), len(missing()), dups)
}

// eventCounter consumes a durable queue bound to every key of exchange on
// one broker, reconnecting until the test ends, and counts the request ids
// of the events it gets, one per message or batched.
type eventCounter struct {
	name  string
	ready atomic.Bool
	mu    sync.Mutex
	seen  map[string]int
}

func newEventCounter(t *testing.T, url, exchange string) *eventCounter {
	t.Helper()
	c := &eventCounter{name: exchange, seen: map[string]int{}}
	queue := exchange + ".q"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			c.consume(ctx, url, exchange, queue)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)}); err == nil {
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(queue, false, false, false)
				ch.ExchangeDelete(exchange, false, false)
			}
			conn.Close()
		}
	})
	return c
}

func (c *eventCounter) consume(ctx context.Context, url, exchange, queue string) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil) != nil {
		return
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return
	}
	if ch.QueueBind(queue, "#", exchange, false, nil) != nil {
		return
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return
	}
	c.ready.Store(true)
	type event struct {
		Data struct {
			RequestID string `json:"request_id"`
		} `json:"data"`
	}
	for d := range deliveries {
		var evs []event
		if d.ContentType == "application/cloudevents-batch+json" {
			json.Unmarshal(d.Body, &evs)
		} else {
			var ev event
			json.Unmarshal(d.Body, &ev)
			evs = []event{ev}
		}
		c.mu.Lock()
		for _, ev := range evs {
			c.seen[ev.Data.RequestID]++
		}
		c.mu.Unlock()
	}
}

func (c *eventCounter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id]
}

func (c *eventCounter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// TestRevocationFailoverTwoBrokers: the revocation feed's URLs are a
// RabbitMQ node the test starts itself, then the shared broker. A
// revocation published while the node is up is applied; the node is
// stopped; `gatehouse revoke` (the real binary, same URL list) then
// publishes on the shared broker, and the feed, moved there, reads that
// broker's stream from its start: the new revocation is applied and the
// one learnt from the stopped node is kept. Offsets are a stream's own, so
// resuming at the stopped node's offset would skip the shared stream's
// first messages.
func TestRevocationFailoverTwoBrokers(t *testing.T) {
	shared := audittest.BrokerURL(t)
	node := audittest.StartNode(t)
	stream := revocationStream(t, shared)
	w := newWorld(t)
	cfg := w.config(fmt.Sprintf("revocation:\n  rabbitmq:\n    urls: [%q, %q]\n    stream: %q\n    max_age: 1h\n  ready_timeout: 30s\n",
		node.URL, shared, stream), "")
	g := startProcess(t, cfg)
	waitUntil(t, "/readyz 200", func() bool { return readyz(t, g) == http.StatusOK })
	before, after := w.token(map[string]any{"jti": "fo-before"}), w.token(map[string]any{"jti": "fo-after"})
	for _, tok := range []string{before, after} {
		if code, e := statusOf(t, g, tok); code != http.StatusOK {
			t.Fatalf("before any revocation: %d %s", code, e)
		}
	}
	revoked := func(tok string) func() bool {
		return func() bool {
			code, e := statusOf(t, g, tok)
			return code == http.StatusUnauthorized && e == "token_revoked"
		}
	}

	runRevoke(t, g.ConfigPath, "-jti", "fo-before", "-issuer", issuer, "-reason", "published on the first broker")
	waitUntil(t, "fo-before refused (revocation on the first broker)", revoked(before))

	node.Stop()
	runRevoke(t, g.ConfigPath, "-jti", "fo-after", "-issuer", issuer, "-reason", "published on the second broker")
	waitUntil(t, "fo-after refused (revocation on the second broker, after failover)", revoked(after))
	if !revoked(before)() {
		t.Error("the revocation read from the stopped broker was forgotten after failover")
	}
	if !strings.Contains(g.Stderr.String(), "revocation feed moved to another broker cluster") {
		t.Errorf("no log line says the feed re-read the stream from its start:\n%s", g.Stderr.String())
	}
}
