package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// TestRun publishes two events as gatehouse does and checks that the
// consumer prints the bound one as one JSON line and skips the other.
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
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &proxytest.SyncBuffer{}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{url: url, exchange: exchange, binding: "auth.deny"}, out, slog.New(slog.DiscardHandler), ready)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not bind")
	}
	for _, d := range []string{"allow", "deny"} {
		body := `{ "specversion": "1.0", "type": "gatehouse.auth.` + d + `", "id": "id-` + d + `", "data": {"decision": "` + d + `"} }`
		if err := ch.Publish(exchange, "auth."+d, false, false, amqp.Publishing{ContentType: "application/json", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "\n") {
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
	if len(lines) != 1 {
		t.Fatalf("printed %q, want the deny event only", lines)
	}
	var ev struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.ID != "id-deny" || strings.Contains(lines[0], " ") {
		t.Errorf("line %q: want compact JSON of the deny event (%v)", lines[0], err)
	}
}
