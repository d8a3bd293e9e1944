package audit

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

func uniqueName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// collector is a test consumer: a durable queue (deleted at cleanup) bound
// to the exchange, consumed with acks, reconnecting when its connection is
// closed. It checks every message's properties against its CloudEvent body.
type collector struct {
	t        testing.TB
	url      string
	exchange string
	queue    string
	bound    atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}
	conn     atomic.Pointer[amqp.Connection]

	mu     sync.Mutex
	counts map[string]int // request_id -> deliveries
	order  []string       // request ids in arrival order
	total  int
	bad    []string
	msgs   []delivered
}

func startCollector(t testing.TB, url, exchange string, bind bool) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{t: t, url: url, exchange: exchange, queue: uniqueName("gh-test-q-"), cancel: cancel,
		done: make(chan struct{}), counts: map[string]int{}}
	c.bound.Store(bind)
	ready := make(chan struct{})
	go c.run(ctx, ready)
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatal("test consumer did not start")
	}
	t.Cleanup(c.stop)
	return c
}

func (c *collector) run(ctx context.Context, ready chan struct{}) {
	defer close(c.done)
	for ctx.Err() == nil {
		if err := c.consume(ready); err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond): // reconnect pacing
			}
		}
	}
}

func (c *collector) consume(ready chan struct{}) error {
	conn, err := amqp.DialConfig(c.url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		return err
	}
	c.conn.Store(conn)
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(c.exchange, "topic", true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(c.queue, true, false, false, false, nil); err != nil {
		return err
	}
	if c.bound.Load() {
		if err := ch.QueueBind(c.queue, "auth.#", c.exchange, false, nil); err != nil {
			return err
		}
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(c.queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	select {
	case <-ready:
	default:
		close(ready)
	}
	for d := range deliveries {
		c.record(d)
		d.Ack(false)
	}
	return errors.New("deliveries closed")
}

func (c *collector) record(d amqp.Delivery) {
	var problems []string
	var events []cloudEvent
	switch d.ContentType {
	case contentSingle:
		var ce cloudEvent
		if err := json.Unmarshal(d.Body, &ce); err != nil {
			problems = append(problems, "body: "+err.Error())
		}
		events = []cloudEvent{ce}
		if d.MessageId == "" || d.MessageId != ce.ID {
			problems = append(problems, fmt.Sprintf("message_id %q, body id %q", d.MessageId, ce.ID))
		}
		if d.Type != ce.Type {
			problems = append(problems, "type "+d.Type)
		}
	case contentBatch:
		if err := json.Unmarshal(d.Body, &events); err != nil || len(events) == 0 {
			problems = append(problems, fmt.Sprintf("batch body: %v (%d events)", err, len(events)))
		}
		for _, ce := range events {
			if d.MessageId == "" || d.MessageId == ce.ID {
				problems = append(problems, fmt.Sprintf("batch message_id %q is not the batch's own", d.MessageId))
			}
			if d.Type != "" && d.Type != ce.Type {
				problems = append(problems, "batch type "+d.Type+", event type "+ce.Type)
			}
		}
	default:
		problems = append(problems, "content_type "+d.ContentType)
	}
	if d.DeliveryMode != amqp.Persistent {
		problems = append(problems, fmt.Sprintf("delivery mode %d", d.DeliveryMode))
	}
	if d.Exchange != c.exchange {
		problems = append(problems, "exchange "+d.Exchange)
	}
	if d.Timestamp.IsZero() {
		problems = append(problems, "no timestamp")
	}
	var rids []string
	for _, ce := range events {
		decision, _ := ce.Data["decision"].(string)
		if ce.Type != "gatehouse.auth."+decision {
			problems = append(problems, "event type "+ce.Type)
		}
		if d.RoutingKey != "auth."+decision {
			problems = append(problems, "routing key "+d.RoutingKey)
		}
		if d.ContentType == contentSingle {
			if ts, _ := time.Parse(time.RFC3339Nano, ce.Time); !d.Timestamp.Equal(ts.Truncate(time.Second)) {
				problems = append(problems, fmt.Sprintf("timestamp %v, event time %s", d.Timestamp, ce.Time))
			}
		}
		rid, _ := ce.Data["request_id"].(string)
		rids = append(rids, rid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rid := range rids {
		c.counts[rid]++
		c.order = append(c.order, rid)
		c.total++
	}
	c.msgs = append(c.msgs, delivered{contentType: d.ContentType, key: d.RoutingKey, ids: rids})
	if len(problems) > 0 && len(c.bad) < 10 {
		c.bad = append(c.bad, strings.Join(rids, ",")+": "+strings.Join(problems, "; "))
	}
}

// delivered is one AMQP message as the collector saw it.
type delivered struct {
	contentType string
	key         string
	ids         []string // request ids of its events, in body order
}

func (c *collector) messages() []delivered {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]delivered(nil), c.msgs...)
}

func (c *collector) bind() {
	c.t.Helper()
	conn, err := amqp.Dial(c.url)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		c.t.Fatal(err)
	}
	c.bound.Store(true)
	if err := ch.QueueBind(c.queue, "auth.#", c.exchange, false, nil); err != nil {
		c.t.Fatal(err)
	}
}

// missing returns the ids of want that never arrived.
func (c *collector) missing(want []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range want {
		if c.counts[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// waitAll waits until every id in want arrived, then checks properties.
func (c *collector) waitAll(t testing.TB, want []string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		miss := c.missing(want)
		if len(miss) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never arrived, e.g. %v", len(miss), len(want), miss[:min(5, len(miss))])
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 {
		t.Errorf("messages with wrong properties:\n%s", strings.Join(c.bad, "\n"))
	}
}

func (c *collector) stop() {
	c.cancel()
	if conn := c.conn.Load(); conn != nil {
		conn.Close()
	}
	<-c.done
	deleteTopology(c.url, c.exchange, c.queue)
}

// tcpProxy forwards 127.0.0.1:random to the broker; cut closes every
// connection and refuses new ones (accepted and closed at once) until restore.
type tcpProxy struct {
	ln     net.Listener
	target string
	cutOff atomic.Bool
	paused atomic.Bool // blackhole: nothing forwarded either way, nothing closed
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	downs  []*lockedConn // client sides, for inject
	ups    []net.Conn    // broker sides, for forceClose
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cutOff.Load() {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 3*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		down := &lockedConn{Conn: c}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.downs = append(p.downs, down)
		p.ups = append(p.ups, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				p.waitResumed()
				if n > 0 {
					if _, werr := up.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			up.Close()
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			copyFrames(down, up, p.waitResumed)
			up.Close()
			c.Close()
		}()
	}
}

// lockedConn serialises whole-frame writes, so inject lands between frames.
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (l *lockedConn) writeFrame(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.Write(b)
	return err
}

// copyFrames forwards the broker's AMQP frames (type, channel, size,
// payload, 0xCE) one whole frame at a time.
func copyFrames(dst *lockedConn, src net.Conn, wait func()) {
	br := bufio.NewReader(src)
	for {
		hdr := make([]byte, 7)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return
		}
		frame := make([]byte, 7+int(binary.BigEndian.Uint32(hdr[3:]))+1)
		copy(frame, hdr)
		if _, err := io.ReadFull(br, frame[7:]); err != nil {
			return
		}
		wait()
		if dst.writeFrame(frame) != nil {
			return
		}
	}
}

// forceClose is the broker closing every connection through p, as
// `rabbitmqctl close_all_connections` would: connection.close with reply
// code 320 (CONNECTION_FORCED) and reason, then the broker side of each
// connection is closed. New connections are accepted as before.
func (p *tcpProxy) forceClose(reason string) {
	args := binary.BigEndian.AppendUint16(nil, 320)
	args = append(args, byte(len(reason)))
	args = append(args, reason...)
	args = binary.BigEndian.AppendUint32(args, 0) // class-id, method-id: not caused by a method
	p.inject(10, 50, args)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.ups {
		up.Close()
	}
	p.ups, p.downs = nil, nil
}

// inject sends a connection-level method frame (channel 0) to every client.
func (p *tcpProxy) inject(classID, methodID uint16, args []byte) {
	payload := binary.BigEndian.AppendUint16(nil, classID)
	payload = binary.BigEndian.AppendUint16(payload, methodID)
	payload = append(payload, args...)
	frame := []byte{1, 0, 0}
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(payload)))
	frame = append(frame, payload...)
	frame = append(frame, 0xCE)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.downs {
		d.writeFrame(frame)
	}
}

func (p *tcpProxy) cut() {
	p.cutOff.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) restore() { p.cutOff.Store(false) }

// pause makes p a blackhole (false resumes): connections stay open, new ones
// are accepted, and nothing more is forwarded either way until resumed.
func (p *tcpProxy) pause(on bool) { p.paused.Store(on) }

func (p *tcpProxy) waitResumed() {
	for p.paused.Load() && !p.cutOff.Load() {
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *tcpProxy) url() string { return "amqp://guest:guest@" + p.ln.Addr().String() + "/" }

// logRecorder is a slog handler that remembers messages, for tests that
// wait for the emitter to notice something.
// newLogged starts an emitter on cfg whose log lines the test can read.
func newLogged(t *testing.T, cfg Config) (*Emitter, *logRecorder) {
	t.Helper()
	logs := &logRecorder{}
	e, err := New(cfg, Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	return e, logs
}

type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }
func (l *logRecorder) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}
func (l *logRecorder) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}
func (l *logRecorder) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}

func rabbitConfig(url, exchange string) Config {
	cfg := DefaultConfig()
	cfg.Sink = SinkRabbitMQ
	cfg.QueueSize = 20000
	cfg.RabbitMQ.URLs = []string{url}
	cfg.RabbitMQ.Exchange = exchange
	return cfg
}

func emitN(e *Emitter, prefix string, from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		d := "allow"
		if i%3 == 0 {
			d = "deny"
		}
		e.Emit(Event{Time: time.Now(), RequestID: id, Decision: d, Reason: "ok", Status: 200, Route: "/r", Method: "GET",
			Path: "/r/" + id, Host: "h", ClientIP: "127.0.0.1", Subject: "s", Roles: []string{"user"}, Duration: time.Millisecond})
		ids = append(ids, id)
	}
	return ids
}

func counter(e *Emitter, result string) float64 {
	return testutil.ToFloat64(e.m.events.WithLabelValues(e.cfg.Sink, result))
}

func TestRabbitMQPublish10000(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	logs := &logRecorder{}
	e, err := New(rabbitConfig(url, exchange), Options{Logger: slog.New(logs), Source: "gatehouse/test"})
	if err != nil {
		t.Fatal(err)
	}
	ids := emitN(e, "p", 0, 10000)
	c.waitAll(t, ids, 60*time.Second)
	closeOK(t, e)
	if got := counter(e, "published"); got != 10000 {
		t.Errorf("published = %v, want 10000", got)
	}
	if got := counter(e, "dropped"); got != 0 {
		t.Errorf("dropped = %v", got)
	}
	if strings.Contains(logs.all(), "guest:guest") {
		t.Errorf("logs hold the URL password:\n%s", logs.all())
	}
}

// TestRabbitMQReturned: with no queue bound the broker returns every
// message; none may count as published, and all arrive once a queue is bound.
func TestRabbitMQReturned(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, false)
	logs := &logRecorder{}
	e, err := New(rabbitConfig(url, exchange), Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ids := emitN(e, "ret", 0, 20)
	waitFor(t, 20*time.Second, "a returned message to be logged", func() bool { return logs.has("audit events returned") })
	if got := counter(e, "published"); got != 0 {
		t.Errorf("published = %v while every message was returned", got)
	}
	c.bind()
	c.waitAll(t, ids, 30*time.Second)
	waitFor(t, 10*time.Second, "published count", func() bool { return counter(e, "published") == 20 })
	closeOK(t, e)
}

func TestRabbitMQOutage(t *testing.T) {
	url := audittest.BrokerURL(t)
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("proxy cut spool=%v", spool), func(t *testing.T) {
			exchange := uniqueName("gh-test-x-")
			c := startCollector(t, url, exchange, true)
			p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
			cfg := rabbitConfig(p.url(), exchange)
			if spool {
				cfg.SpoolDir = t.TempDir()
			}
			e, logs := newLogged(t, cfg)
			ids := emitN(e, "a", 0, 1000)
			waitFor(t, 20*time.Second, "broker connection", func() bool { return logs.has("audit broker connected") })
			p.cut() // some of the first 1000 are in flight, unconfirmed
			restore := time.Now().Add(5 * time.Second)
			tick := time.NewTicker(100 * time.Millisecond)
			for i := 0; i < 2000; i += 100 { // 2000 events spread over 2 s of the cut
				<-tick.C
				ids = append(ids, emitN(e, "b", i, i+100)...)
			}
			tick.Stop()
			time.Sleep(time.Until(restore)) // the outage lasts 5 s: this is the scenario, not a wait for a condition
			p.restore()
			c.waitAll(t, ids, 60*time.Second)
			closeOK(t, e)
			if got := counter(e, "dropped"); got != 0 {
				t.Errorf("dropped = %v", got)
			}
			if !logs.has("audit broker connection lost") {
				t.Errorf("no connection loss logged:\n%s", logs.all())
			}
			if spool && counter(e, "spooled") == 0 {
				t.Errorf("nothing spooled during the outage")
			}
		})
	}
	t.Run("broker closes the connection", func(t *testing.T) {
		// What `rabbitmqctl close_all_connections` does to one connection
		// (connection.close 320 CONNECTION_FORCED, then the socket goes),
		// done through the test's own forwarder so that the shared
		// broker's other clients keep their connections.
		exchange := uniqueName("gh-test-x-")
		c := startCollector(t, url, exchange, true)
		p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
		cfg := rabbitConfig(p.url(), exchange)
		cfg.SpoolDir = t.TempDir()
		e, logs := newLogged(t, cfg)
		const closed = "audit broker connection lost err=Exception (320)"

		// Idle: everything confirmed, so the close notification is the
		// worker's only news and names the broker's reason.
		ids := emitN(e, "idle", 0, 10)
		c.waitAll(t, ids, 20*time.Second)
		waitFor(t, 10*time.Second, "published", func() bool { return counter(e, "published") == 10 })
		p.forceClose("CONNECTION_FORCED - gatehouse audit test")
		waitFor(t, 10*time.Second, "the close seen", func() bool { return logs.has(closed) })

		// Busy: closed with publishes in flight; they are re-sent.
		waitFor(t, 20*time.Second, "reconnect", func() bool { return logs.count("audit broker connected") == 2 })
		more := emitN(e, "a", 0, 1000)
		p.forceClose("CONNECTION_FORCED - gatehouse audit test")
		more = append(more, emitN(e, "b", 0, 2000)...)
		c.waitAll(t, more, 60*time.Second)
		closeOK(t, e)
		if got := logs.count("audit broker connection lost"); got != 2 {
			t.Errorf("%d connection losses logged, want 2:\n%s", got, logs.all())
		}
		if got := counter(e, "dropped"); got != 0 {
			t.Errorf("dropped = %v", got)
		}
	})
}

// TestRabbitMQUnboundRoutingKey: a consumer binds only auth.deny, so the
// broker returns every allow event. The returned events must hold only
// their own routing key: every deny event emitted after many allow events
// arrives, Close returns in time, and every allow event is accounted for
// (parked ones spooled or dropped at Close, the excess dropped at once).
func TestRabbitMQUnboundRoutingKey(t *testing.T) {
	url := audittest.BrokerURL(t)
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			exchange := uniqueName("gh-test-x-")
			conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			defer deleteTopology(url, exchange, "")
			q, err := ch.QueueDeclare("", false, true, true, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.QueueBind(q.Name, "auth.deny", exchange, false, nil); err != nil {
				t.Fatal(err)
			}
			deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			got := map[string]bool{}
			go func() {
				for d := range deliveries { // ends when conn closes
					var ce cloudEvent
					if json.Unmarshal(d.Body, &ce) == nil {
						rid, _ := ce.Data["request_id"].(string)
						mu.Lock()
						got[rid] = true
						mu.Unlock()
					}
				}
			}()

			cfg := rabbitConfig(url, exchange)
			if spool {
				cfg.SpoolDir = t.TempDir()
			}
			e, logs := newLogged(t, cfg)
			const nAllow, nDeny = 3 * window, 200
			for i := range nAllow {
				e.Emit(Event{Decision: "allow", Reason: "ok", RequestID: fmt.Sprint("allow-", i)})
			}
			// Deny events are emitted once the allow events have come back:
			// they must not wait behind them.
			waitFor(t, 20*time.Second, "allow events returned", func() bool { return logs.has("audit events returned") })
			var deny []string
			for i := range nDeny {
				id := fmt.Sprint("deny-", i)
				e.Emit(Event{Decision: "deny", Reason: "forbidden", RequestID: id})
				deny = append(deny, id)
			}
			waitFor(t, 20*time.Second, "every deny event delivered", func() bool {
				mu.Lock()
				defer mu.Unlock()
				for _, id := range deny {
					if !got[id] {
						return false
					}
				}
				return true
			})
			waitFor(t, 20*time.Second, "excess allow events dropped", func() bool { return counter(e, "dropped") >= nAllow-maxParked })
			if !logs.has("audit events dropped: the routing key has no bound queue") {
				t.Errorf("unroutable drops not logged:\n%s", logs.all())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			closed := make(chan error, 1)
			go func() { closed <- e.Close(ctx) }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close = %v, want nil (parked events do not keep it waiting)", err)
				}
			case <-time.After(5*time.Second + closeGrace + time.Second):
				t.Fatal("Close did not return within its deadline")
			}
			mu.Lock()
			for i := range nAllow {
				if got[fmt.Sprint("allow-", i)] {
					t.Errorf("allow-%d delivered to the auth.deny queue", i)
					break
				}
			}
			mu.Unlock()
			published, dropped, spooled := counter(e, "published"), counter(e, "dropped"), counter(e, "spooled")
			if published != nDeny {
				t.Errorf("published = %v, want %d (the deny events)", published, nDeny)
			}
			if !spool {
				if published+dropped+spooled != nAllow+nDeny {
					t.Errorf("published %v + dropped %v + spooled %v = %v, want every event accounted for (%d)",
						published, dropped, spooled, published+dropped+spooled, nAllow+nDeny)
				}
				return
			}
			// With a spool, events written while connecting count spooled
			// and may be dropped later, and a segment keeps a dropped
			// record until its others are confirmed: check that every allow
			// event left is in the spool or counted dropped.
			s := mustOpen(t, cfg.SpoolDir, cfg.SpoolMaxBytes, defaultSegment)
			defer s.close()
			msgs, _ := drain(s)
			left := map[string]bool{}
			for _, m := range msgs {
				var ce cloudEvent
				if err := json.Unmarshal(m.body, &ce); err != nil {
					t.Fatal(err)
				}
				left[ce.Data["request_id"].(string)] = true
			}
			if len(left) == 0 {
				t.Error("parked allow events not spooled at Close")
			}
			if float64(len(left))+dropped < nAllow {
				t.Errorf("%d allow events in the spool + %v dropped < %d emitted: some lost uncounted", len(left), dropped, nAllow)
			}
		})
	}
}

// TestRabbitMQEmitWithBrokerAway: twice the queue emitted with the broker
// cut returns promptly; without a spool the excess is dropped and counted,
// with one nothing is dropped.
func TestRabbitMQEmitWithBrokerAway(t *testing.T) {
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			cfg := rabbitConfig(closedPortURL(t), "gh-test-unused")
			cfg.QueueSize = 1000
			if spool {
				cfg.SpoolDir = t.TempDir()
			}
			e, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				emitN(e, "x", 0, 2*cfg.QueueSize)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Emit blocked with the broker away")
			}
			if spool {
				// Emit may outrun the spool's disk writes, so some may drop;
				// everything is either spooled or dropped, and the queue
				// alone holds QueueSize of them.
				n := float64(2 * cfg.QueueSize)
				waitFor(t, 10*time.Second, "every event spooled or dropped", func() bool {
					return counter(e, "spooled")+counter(e, "dropped") == n
				})
				if got := counter(e, "spooled"); got < float64(cfg.QueueSize) {
					t.Errorf("spooled = %v, want at least %d", got, cfg.QueueSize)
				}
				t.Logf("spooled %v, dropped %v", counter(e, "spooled"), counter(e, "dropped"))
			} else if got := counter(e, "dropped"); got != float64(cfg.QueueSize) {
				t.Errorf("dropped = %v, want %d", got, cfg.QueueSize)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err = e.Close(ctx)
			if spool {
				if err != nil {
					t.Errorf("Close with everything spooled = %v, want nil", err)
				}
				s := mustOpen(t, cfg.SpoolDir, cfg.SpoolMaxBytes, defaultSegment)
				defer s.close()
				if got, _ := drain(s); float64(len(got)) != counter(e, "spooled") {
					t.Errorf("spool holds %d records, %v counted spooled", len(got), counter(e, "spooled"))
				}
			}
			if !spool {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Close = %v, want deadline exceeded", err)
				}
				if got := counter(e, "dropped"); got != float64(2*cfg.QueueSize) {
					t.Errorf("dropped after Close = %v, want %d", got, 2*cfg.QueueSize)
				}
			}
		})
	}
}

// closedPortURL is an AMQP URL whose port refuses connections.
func closedPortURL(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "amqp://guest:guest@" + addr + "/"
}

// TestHelperProcess is the child of TestRabbitMQKill9: it spools events
// with the broker away, says so on stdout, and waits to be killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("GATEHOUSE_AUDIT_HELPER_SPOOL")
	if dir == "" {
		t.Skip("helper process for TestRabbitMQKill9")
	}
	cfg := rabbitConfig(os.Getenv("GATEHOUSE_AUDIT_HELPER_URL"), "gh-test-unused")
	cfg.SpoolDir = dir
	e, err := New(cfg, Options{})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	emitN(e, "kill", 0, 3000)
	for counter(e, "spooled") < 3000 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("SPOOLED")
	time.Sleep(time.Minute) // killed long before
	os.Exit(2)
}

func TestRabbitMQKill9(t *testing.T) {
	url := audittest.BrokerURL(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GATEHOUSE_AUDIT_HELPER_SPOOL="+dir, "GATEHOUSE_AUDIT_HELPER_URL="+closedPortURL(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "SPOOLED" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("helper exited cleanly, want killed")
	}

	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	cfg := rabbitConfig(url, exchange)
	cfg.SpoolDir = dir
	e, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3000 {
		ids = append(ids, fmt.Sprintf("kill-%d", i))
	}
	c.waitAll(t, ids, 60*time.Second)
	// Replay keeps the spool's order: first arrivals are in emit order.
	c.mu.Lock()
	seen, next := map[string]bool{}, 0
	for _, id := range c.order {
		if seen[id] {
			continue
		}
		seen[id] = true
		if id != ids[next] {
			t.Errorf("arrival %d is %s, want %s (spool replay out of order)", next, id, ids[next])
			break
		}
		next++
	}
	c.mu.Unlock()
	waitFor(t, 20*time.Second, "spool emptied", func() bool { return len(segFiles(t, dir)) == 0 })
	closeOK(t, e)
}

// TestRabbitMQCloseTimeoutSpools: events the broker keeps returning are
// still in memory at Close; they go to the spool, and the next emitter on
// that spool delivers them once a queue is bound.
func TestRabbitMQCloseTimeoutSpools(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, false)
	cfg := rabbitConfig(url, exchange)
	cfg.SpoolDir = t.TempDir()
	e, logs := newLogged(t, cfg)
	ids := emitN(e, "ct", 0, 50)
	waitFor(t, 20*time.Second, "returned messages", func() bool { return logs.has("audit events returned") })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// Returned (parked) messages do not keep Close waiting: they are
	// spooled at once. Close may still run out of time when some of the 50
	// are in flight, awaiting their return.
	if err := e.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want nil or deadline exceeded", err)
	}
	if got := counter(e, "published") + counter(e, "dropped"); got != 0 {
		t.Errorf("published+dropped = %v, want 0", got)
	}
	if got := counter(e, "spooled"); got != 50 {
		t.Errorf("spooled = %v, want 50", got)
	}
	c.bind()
	e2, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, ids, 30*time.Second)
	waitFor(t, 10*time.Second, "spool emptied", func() bool { return len(segFiles(t, cfg.SpoolDir)) == 0 })
	closeOK(t, e2)
}

// TestRabbitMQReloadSharedSpool: a reload starts the new emitter before
// closing the old one on the same spool_dir; the new one waits for the
// directory and then delivers what the old one spooled.
func TestRabbitMQReloadSharedSpool(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	dir := t.TempDir()
	oldCfg := rabbitConfig(closedPortURL(t), exchange)
	oldCfg.SpoolDir = dir
	old, err := New(oldCfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := emitN(old, "old", 0, 200)
	waitFor(t, 10*time.Second, "old events spooled", func() bool { return counter(old, "spooled") == 200 })
	newCfg := rabbitConfig(url, exchange)
	newCfg.SpoolDir = dir
	e, logs := newLogged(t, newCfg)
	ids = append(ids, emitN(e, "new", 0, 200)...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, ids, 30*time.Second)
	if !logs.has("audit spool_dir in use") || !logs.has("audit spool lock taken") {
		t.Errorf("lock hand-over not logged:\n%s", logs.all())
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRabbitMQCloseStopsGoroutines: Close leaves no goroutine behind, with
// the broker connected and with it away (a dial in progress).
func TestRabbitMQCloseStopsGoroutines(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	startCollector(t, url, exchange, true)
	before := runtime.NumGoroutine()
	for _, u := range []string{url, closedPortURL(t)} {
		cfg := rabbitConfig(u, exchange)
		cfg.SpoolDir = t.TempDir()
		e, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		emitN(e, "g", 0, 100)
		if u == url {
			waitFor(t, 20*time.Second, "published", func() bool { return counter(e, "published") == 100 })
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = e.Close(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestRabbitMQBlocked: while the broker says connection.blocked (RabbitMQ's
// memory or disk alarm), nothing is published and events go to the spool;
// after connection.unblocked they are delivered. The frames are injected by
// the test proxy: raising a real alarm would block every client of the
// shared broker.
func TestRabbitMQBlocked(t *testing.T) {
	url := audittest.BrokerURL(t)
	exchange := uniqueName("gh-test-x-")
	c := startCollector(t, url, exchange, true)
	p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
	cfg := rabbitConfig(p.url(), exchange)
	cfg.SpoolDir = t.TempDir()
	e, logs := newLogged(t, cfg)
	ids := emitN(e, "before", 0, 10)
	c.waitAll(t, ids, 20*time.Second)
	waitFor(t, 10*time.Second, "published", func() bool { return counter(e, "published") == 10 })

	reason := "low on memory"
	p.inject(10, 60, append([]byte{byte(len(reason))}, reason...)) // connection.blocked
	waitFor(t, 10*time.Second, "blocked noticed", func() bool { return logs.has("audit broker blocked publishing") })
	spooled := counter(e, "spooled") // the first events may have been spooled while connecting
	blocked := emitN(e, "blocked", 0, 100)
	waitFor(t, 10*time.Second, "events spooled", func() bool { return counter(e, "spooled") == spooled+100 })
	if got := counter(e, "published"); got != 10 {
		t.Errorf("published = %v while blocked, want 10", got)
	}
	if miss := c.missing(blocked); len(miss) != len(blocked) {
		t.Errorf("%d events arrived while blocked", len(blocked)-len(miss))
	}
	p.inject(10, 61, nil) // connection.unblocked
	c.waitAll(t, blocked, 20*time.Second)
	closeOK(t, e)
	if got := counter(e, "published"); got != 110 {
		t.Errorf("published = %v, want 110", got)
	}
}

// closeOK closes e within 15 s and fails the test on any error.
func closeOK(t *testing.T, e *Emitter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
