package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

func benchEvent() Event {
	ev := fullEvent()
	ev.Time = time.Now()
	return ev
}

// BenchmarkEmit is the request path's cost when the event is queued: the
// worker (stdout to io.Discard) encodes about ten times slower than Emit
// queues, so the benchmark drains the queue itself, off the clock, whenever
// it is half full; otherwise it would mostly time the drop path (about 90%
// of calls dropped). drops/op must be 0.
func BenchmarkEmit(b *testing.B) {
	e := benchEmitter(b, io.Discard)
	defer e.Close(context.Background())
	ev := benchEvent()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		e.Emit(ev)
		if n++; n%1024 == 0 && len(e.q) > cap(e.q)/2 {
			b.StopTimer()
			drainQueue(e)
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(e.drops.Load())/float64(b.N), "drops/op")
}

// BenchmarkEmitDrop is the cost of Emit on a full queue: a counted drop.
func BenchmarkEmitDrop(b *testing.B) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	e := benchEmitter(b, w)
	ev := benchEvent()
	e.Emit(ev)
	<-w.entered // the worker is stuck in Write: the queue stays full
	for range cap(e.q) {
		e.Emit(ev)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Emit(ev)
	}
	b.StopTimer()
	b.ReportMetric(float64(e.drops.Load())/float64(b.N), "drops/op")
	close(w.release)
	e.Close(context.Background())
}

// benchEmitter is an emitter with the default config writing to w.
func benchEmitter(b *testing.B, w io.Writer) *Emitter {
	b.Helper()
	e, err := New(DefaultConfig(), Options{Stdout: w})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// drainQueue empties e's queue as the worker would, without encoding.
func drainQueue(e *Emitter) {
	for {
		select {
		case p := <-e.q:
			recv(p)
		default:
			return
		}
	}
}

// BenchmarkEmitParallel is Emit from concurrent requests. The worker
// cannot keep up, so most calls take the drop path: drops/op says how many.
func BenchmarkEmitParallel(b *testing.B) {
	e := benchEmitter(b, io.Discard)
	defer e.Close(context.Background())
	ev := benchEvent()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Emit(ev)
		}
	})
	b.ReportMetric(float64(e.drops.Load())/float64(b.N), "drops/op")
}

// BenchmarkEmitBrokerCut is Emit while the broker refuses connections:
// queue then spool (when set) fill, then Emit drops and counts.
func BenchmarkEmitBrokerCut(b *testing.B) {
	for _, tt := range []struct {
		name           string
		spool, durable bool
	}{{"nospool", false, false}, {"spool", true, false}, {"durable", true, true}} {
		b.Run(tt.name, func(b *testing.B) {
			cfg := rabbitConfig(closedPortURL(b), "gh-bench-unused")
			cfg.QueueSize = DefaultQueueSize
			if tt.spool {
				cfg.SpoolDir = b.TempDir()
				cfg.SpoolMaxBytes = 64 << 20
				cfg.Durable = tt.durable
			}
			e, err := New(cfg, Options{})
			if err != nil {
				b.Fatal(err)
			}
			ev := benchEvent()
			b.ReportAllocs()
			for b.Loop() {
				e.Emit(ev)
			}
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			e.Close(ctx)
		})
	}
}

// BenchmarkEncode is the worker's cost to encode one CloudEvent.
func BenchmarkEncode(b *testing.B) {
	ev := benchEvent()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendCloudEvent(buf[:0], &ev, "0123456789abcdef0123456789abcdef", "gatehouse/bench", ev.Time)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkEncodeJSON is encoding/json on the same document, for comparison.
func BenchmarkEncodeJSON(b *testing.B) {
	ev := benchEvent()
	type data struct {
		RequestID  string   `json:"request_id"`
		Decision   string   `json:"decision"`
		Reason     string   `json:"reason"`
		Status     int      `json:"status"`
		Route      string   `json:"route"`
		Method     string   `json:"method"`
		Path       string   `json:"path"`
		Host       string   `json:"host"`
		ClientIP   string   `json:"client_ip"`
		Subject    string   `json:"subject,omitempty"`
		Issuer     string   `json:"issuer,omitempty"`
		JTI        string   `json:"jti,omitempty"`
		Roles      []string `json:"roles,omitempty"`
		DurationMS float64  `json:"duration_ms"`
	}
	type envelope struct {
		SpecVersion     string `json:"specversion"`
		Type            string `json:"type"`
		Source          string `json:"source"`
		ID              string `json:"id"`
		Time            string `json:"time"`
		DataContentType string `json:"datacontenttype"`
		Data            data   `json:"data"`
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = json.Marshal(envelope{"1.0", EventType(ev.Decision), "gatehouse/bench", "0123456789abcdef0123456789abcdef",
			ev.Time.UTC().Format(timeLayout), "application/json", data{ev.RequestID, ev.Decision, ev.Reason, ev.Status, ev.Route,
				ev.Method, ev.Path, ev.Host, ev.ClientIP, ev.Subject, ev.Issuer, ev.JTI, ev.Roles, float64(ev.Duration) / 1e6}})
	}
}

// BenchmarkPublishConfirmed is the sustained rate of events confirmed by
// the local broker into a bound durable queue (persistent messages), as
// events/s: with the queue idle (messages pile up on disk) and with a
// consumer draining it, as a SIEM would; "durable" rows go through the
// spool (audit.durable, fsync_interval 50ms).
func BenchmarkPublishConfirmed(b *testing.B) {
	for _, durable := range []bool{false, true} {
		for _, consumer := range []bool{false, true} {
			name := "idle-queue"
			if consumer {
				name = "consumed-queue"
			}
			if durable {
				name += "-durable"
			}
			b.Run(name, func(b *testing.B) { benchPublish(b, audittest.BrokerURL(b), consumer, Batch{}, durable, 0) })
			if durable {
				continue // durable and batch are not combined (config.go)
			}
			b.Run(name+"/batch100", func(b *testing.B) {
				benchPublish(b, audittest.BrokerURL(b), consumer, Batch{MaxEvents: 100, MaxDelay: 50 * time.Millisecond}, false, 0)
			})
		}
	}
}

// BenchmarkBrokerCPU is the broker's CPU time per confirmed event (its
// beam.smp's utime+stime from /proc over the events published), one event
// per message against batches of 10, 100 and 1000, into a consumed durable
// queue. The broker is a node of the benchmark's own, so other clients of
// the shared broker do not count.
func BenchmarkBrokerCPU(b *testing.B) {
	node := audittest.StartNode(b)
	pid := node.PID()
	if pid == 0 {
		b.Fatal("no pid for the node")
	}
	b.Run("single", func(b *testing.B) { benchPublish(b, node.URL, true, Batch{}, false, pid) })
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			benchPublish(b, node.URL, true, Batch{MaxEvents: n, MaxDelay: 50 * time.Millisecond}, false, pid)
		})
	}
}

// cpuTime is a process's user+system CPU time from /proc/PID/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses:
	// state is field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// benchPublish measures events/s confirmed by the broker at url (and, with
// brokerPID, the broker's CPU time per event).
func benchPublish(b *testing.B, url string, consume bool, batch Batch, durable bool, brokerPID int) {
	exchange, queue := uniqueName("gh-bench-x-"), uniqueName("gh-bench-q-")
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	// Clean up on a fresh connection: this one may be gone by then (a
	// benchmark that failed half way).
	defer deleteTopology(url, exchange, queue)
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(queue, "auth.#", exchange, false, nil); err != nil {
		b.Fatal(err)
	}
	if consume {
		deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range deliveries { // ends when conn closes
			}
		}()
	}
	cfg := rabbitConfig(url, exchange)
	cfg.QueueSize = max(b.N+1, 100)
	if durable {
		cfg.SpoolDir, cfg.Durable = b.TempDir(), true
	}
	cfg.RabbitMQ.Batch = batch
	e, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ev := benchEvent()
	e.Emit(ev) // warm up: wait for the connection
	waitFor(b, 20*time.Second, "first confirm", func() bool { return counter(e, "published") == 1 })
	b.ReportAllocs()
	b.ResetTimer()
	var cpu0 time.Duration
	if brokerPID > 0 {
		cpu0 = cpuTime(b, brokerPID)
	}
	start := time.Now()
	for range b.N {
		e.Emit(ev)
	}
	for counter(e, "published") < float64(b.N+1) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if brokerPID > 0 {
		cpu := cpuTime(b, brokerPID) - cpu0
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "broker-ns/event")
	}
	if d := counter(e, "dropped"); d != 0 {
		b.Fatalf("%v dropped", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.Close(ctx)
}

// deleteTopology removes a test's queue and exchange.
func deleteTopology(url, exchange, queue string) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		if queue != "" {
			ch.QueueDelete(queue, false, false, false)
		}
		ch.ExchangeDelete(exchange, false, false)
	}
}
