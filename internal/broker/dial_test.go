package broker

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

// closedPort returns an address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silent accepts connections and never answers: a broker that hangs.
func silent(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return ln.Addr().String()
}

func TestDialTriesInOrderAndNamesByPosition(t *testing.T) {
	good := audittest.BrokerURL(t)
	dead := "amqp://u:d34d@" + closedPort(t) + "/"
	hung := "amqp://u:hun9@" + silent(t) + "/"
	d := &Dialer{URLs: []string{dead, hung, good}, Name: "gatehouse broker test", SetupTimeout: time.Second}
	var setupRan int
	conn, i, err := d.Dial(context.Background(), func(ctx context.Context, c *amqp.Connection) error {
		setupRan++
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		return ch.Close()
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	conn.Close()
	if i != 2 || setupRan != 1 {
		t.Fatalf("connected to %d with setup run %d times, want broker 2 once", i, setupRan)
	}
	// The next round starts at the one that worked; after Failed, past it.
	d.Failed(2)
	d.URLs[2] = "amqp://u:g00d@" + closedPort(t) + "/"
	_, _, err = d.Dial(context.Background(), nil)
	if err == nil {
		t.Fatal("Dial succeeded with no reachable broker")
	}
	msg := err.Error()
	for _, want := range []string{"broker 1 of 3: dial:", "broker 2 of 3: dial:", "broker 3 of 3: dial:"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Index(msg, "broker 1 of 3") > strings.Index(msg, "broker 3 of 3") {
		t.Errorf("round did not start after the failed broker 3: %q", msg)
	}
	for _, secret := range []string{"d34d", "hun9", "g00d", "guest:guest"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error leaks a URL: %s", msg)
		}
	}
}

func TestDialSetupHonoursContext(t *testing.T) {
	good := audittest.BrokerURL(t)
	d := &Dialer{URLs: []string{good}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := d.Dial(ctx, func(ctx context.Context, c *amqp.Connection) error {
			cancel()
			<-ctx.Done()
			// The socket is closed under the connection: RPCs fail now.
			_, err := c.Channel()
			if err == nil {
				return errors.New("channel opened on a closed socket")
			}
			return err
		})
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Dial error %v, want context.Canceled in it", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Dial did not return after its context was cancelled")
	}
}
