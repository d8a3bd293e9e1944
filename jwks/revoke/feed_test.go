package revoke

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
	"github.com/gatehouse/gatehouse/internal/broker"
)

// testStream returns a config for a stream of its own, deleted when the
// test ends.
func testStream(t *testing.T, url string) *Config {
	t.Helper()
	name := fmt.Sprintf("gatehouse.test.revocations.%x", rand.Uint64())
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
		}
	})
	return &Config{URLs: broker.URLs{List: []string{url}}, Stream: name, MaxAge: time.Hour, ReadyTimeout: 30 * time.Second}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func publishRaw(t *testing.T, url, stream string, body []byte) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := publishConfirmed(context.Background(), ch, stream, body, "raw"); err != nil {
		t.Fatal(err)
	}
}

// tcpCut is a forwarder whose connections the test can cut.
type tcpCut struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newTCPCut(t *testing.T, target string) *tcpCut {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCut{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.DialTimeout("tcp", target, 3*time.Second)
			if err != nil {
				a.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, a, b)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(a, b); a.Close(); b.Close() }()
			go func() { _, _ = io.Copy(b, a); a.Close(); b.Close() }()
		}
	}()
	return c
}

func (c *tcpCut) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
}

func TestFeedFollowsStream(t *testing.T) {
	url := audittest.BrokerURL(t)
	cfg := testStream(t, url)
	// Two revocations before the instance starts: its backlog.
	now := time.Now()
	ctx := context.Background()
	if _, err := Publish(ctx, cfg, Revocation{Kind: KindJTI, Issuer: "iss", Value: "j-before", Reason: "test"}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, cfg, Revocation{Kind: KindKid, Issuer: "iss", Value: "k-old", Reason: "test", Until: now.Add(-time.Minute)}, now); err == nil {
		t.Fatal("Publish accepted an until in the past")
	}
	// An invalid message, written raw: counted, never applied.
	publishRaw(t, url, cfg.Stream, []byte(`{"specversion":"1.0","type":"gatehouse.revocation","source":"x","id":"1","time":"2026-01-01T00:00:00Z","data":{"kind":"everything","value":"j-bad"}}`))
	publishRaw(t, url, cfg.Stream, []byte(`{"specversion":"1.0","type":"gatehouse.revocation","source":"x","id":"2","time":"`+now.UTC().Format(time.RFC3339)+`","data":{"kind":"jti","value":"j-bad","reason":"x","extra":1}}`))

	// The broker is reached through a forwarder the test cuts.
	fw := newTCPCut(t, strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/"))
	fcfg := *cfg
	fcfg.URLs = broker.URLs{List: []string{"amqp://guest:guest@" + fw.ln.Addr().String() + "/"}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	store := NewStore()
	f := Start(&fcfg, store, Options{Metrics: m})
	defer f.Close()
	waitFor(t, "the backlog", f.CaughtUp)
	if !f.Ready() {
		t.Error("caught up but not ready")
	}
	at := time.Now().UnixNano()
	if _, ok := store.Check("iss", "j-before", "", "", 0, at); !ok {
		t.Error("a revocation of the backlog is not in force")
	}
	if _, ok := store.Check("iss", "j-bad", "", "", 0, at); ok {
		t.Error("an invalid message was applied")
	}
	if got := testutil.ToFloat64(m.messages.WithLabelValues("invalid")); got != 2 {
		t.Errorf("invalid = %v, want 2", got)
	}

	// Cut the link, revoke meanwhile, and the feed resumes after its last
	// offset: the new one arrives, nothing is applied twice.
	fw.cut()
	if _, err := Publish(ctx, cfg, Revocation{Kind: KindSub, Issuer: "iss", Value: "alice", Reason: "test"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation published while the link was cut", func() bool {
		_, ok := store.Check("iss", "", "alice", "", 1, time.Now().UnixNano())
		return ok
	})
	if got := testutil.ToFloat64(m.messages.WithLabelValues("applied")); got != 2 {
		t.Errorf("applied = %v, want 2 (a replay after the reconnect applies twice)", got)
	}
	if got := testutil.ToFloat64(m.entries.WithLabelValues("sub")); got != 1 {
		t.Errorf("entries{kind=sub} = %v, want 1", got)
	}
	if testutil.ToFloat64(m.last) == 0 {
		t.Error("last message timestamp not set")
	}
}

func TestFeedFailClosed(t *testing.T) {
	url := audittest.BrokerURL(t)
	cfg := testStream(t, url)
	cfg.FailClosed = true
	cfg.ReadyTimeout = time.Minute
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	// A broker that is not there: the feed never comes up.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	cfg.URLs = broker.URLs{List: []string{"amqp://guest:guest@" + dead + "/"}}
	f := Start(cfg, NewStore(), Options{Now: now})
	defer f.Close()
	if f.Ready() || f.Refuse(clock.UnixNano()) {
		t.Fatal("ready or refusing before ready_timeout")
	}
	later := clock.Add(time.Minute)
	mu.Lock()
	clock = later
	mu.Unlock()
	if !f.Ready() {
		t.Error("not ready after ready_timeout")
	}
	if !f.Refuse(later.UnixNano()) {
		t.Error("fail_closed does not refuse after ready_timeout with the feed down")
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
