package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// TestRun publishes events as gatehouse does, one per message and batched,
// and checks that the consumer prints the bound ones as JSON lines in order,
// skips the others, and consumes from a quorum queue.
func TestRun(t *testing.T) {
	url := audittest.BrokerURL(t)
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rnd [6]byte
	rand.Read(rnd[:])
	exchange := "gh-test-consumer-" + hex.EncodeToString(rnd[:])
	queue := "gh-test-consumer-q-" + hex.EncodeToString(rnd[:])
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// On a fresh connection: the test's own may be gone by then (a
		// test that failed half way).
		c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			return
		}
		defer c.Close()
		if ch, err := c.Channel(); err == nil {
			ch.ExchangeDelete(exchange, false, false)
			ch.QueueDelete(queue, false, false, false)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &proxytest.SyncBuffer{}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{url: "amqp://guest:guest@127.0.0.1:1/," + url, exchange: exchange, binding: "auth.deny", queue: queue}, out, slog.New(slog.DiscardHandler), ready)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not bind")
	}
	event := func(d, id string) string {
		return `{ "specversion": "1.0", "type": "gatehouse.auth.` + d + `", "id": "` + id + `", "data": {"decision": "` + d + `"} }`
	}
	for _, m := range []struct{ key, ct, body string }{
		{"auth.allow", "application/json", event("allow", "id-allow")},
		{"auth.deny", "application/json", event("deny", "id-deny")},
		{"auth.deny", "application/cloudevents-batch+json", "[ " + event("deny", "id-b1") + ",\n" + event("deny", "id-b2") + " ]"},
		{"auth.deny", "application/cloudevents-batch+json", `{"not": "an array"}`},
		{"auth.deny", "application/json", `["not an object"]`},
		{"auth.deny", "application/json", event("deny", "id-last")},
	} {
		if err := ch.Publish(exchange, m.key, false, false, amqp.Publishing{ContentType: m.ct, Body: []byte(m.body)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(out.String(), "\n") < 4 {
		if time.Now().After(deadline) {
			t.Fatal("no event printed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var got []string
	for _, l := range lines {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || strings.Contains(l, " ") {
			t.Errorf("line %q: want compact JSON of an event (%v)", l, err)
		}
		got = append(got, ev.ID)
	}
	if want := "id-deny id-b1 id-b2 id-last"; strings.Join(got, " ") != want {
		t.Errorf("printed events %q, want %q (deny ones only, a batch's in order, malformed skipped)", got, want)
	}
	// A quorum queue refuses to be declared again as a classic one.
	_, err = ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "classic"})
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.PreconditionFailed {
		t.Errorf("declaring %s as classic: %v, want PRECONDITION_FAILED (it must be a quorum queue)", queue, err)
	}
}
