// Command audit-consumer prints gatehouse's audit events from RabbitMQ: it
// declares the audit exchange (with the producer's arguments), binds a queue
// to it, and writes every event as one JSON line on stdout, acking each
// after it is written. It stops on SIGINT or SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type options struct {
	url, exchange, binding, queue string
}

func main() {
	def := os.Getenv("GATEHOUSE_AMQP_URL")
	if def == "" {
		def = "amqp://guest:guest@127.0.0.1:5672/"
	}
	var o options
	flag.StringVar(&o.url, "url", def, "broker URL (default $GATEHOUSE_AMQP_URL, else the local broker as guest)")
	flag.StringVar(&o.exchange, "exchange", "gatehouse.audit", "audit exchange (durable topic, as gatehouse declares it)")
	flag.StringVar(&o.binding, "binding", "auth.#", "binding key: auth.# for every decision, auth.deny for denials only")
	flag.StringVar(&o.queue, "queue", "", `queue name; "" = a server-named exclusive queue that goes away with this process`)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, o, os.Stdout, log); err != nil {
		log.Error("audit-consumer", "err", err)
		os.Exit(1)
	}
}

// run consumes until ctx ends (nil) or the connection fails (an error).
// ready, when not nil, is closed once the queue is bound.
func run(ctx context.Context, o options, stdout io.Writer, log *slog.Logger, ready ...chan struct{}) error {
	conn, err := amqp.DialConfig(o.url, amqp.Config{
		Dial:       amqp.DefaultDial(10 * time.Second),
		Properties: amqp.Table{"connection_name": "gatehouse audit-consumer"},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", err) // amqp091 errors do not contain the password
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	// Same arguments as the producer (durable topic), or the broker refuses.
	if err := ch.ExchangeDeclare(o.exchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", o.exchange, err)
	}
	// A named queue is durable and outlives us (events wait while we are
	// away); the default server-named one is exclusive and auto-deleted.
	named := o.queue != ""
	q, err := ch.QueueDeclare(o.queue, named, !named, !named, false, nil)
	if err != nil {
		return fmt.Errorf("declare queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, o.binding, o.exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", q.Name, err)
	}
	if err := ch.Qos(100, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", q.Name, err)
	}
	log.Info("consuming audit events", "exchange", o.exchange, "binding", o.binding, "queue", q.Name)
	for _, r := range ready {
		close(r)
	}
	w := bufio.NewWriter(stdout)
	var line bytes.Buffer
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("the broker closed the connection")
			}
			line.Reset()
			if err := json.Compact(&line, d.Body); err != nil {
				log.Warn("not a JSON event, skipped", "message_id", d.MessageId, "err", err)
			} else {
				line.WriteByte('\n')
				w.Write(line.Bytes())
				if err := w.Flush(); err != nil {
					d.Nack(false, true)
					return fmt.Errorf("write: %w", err)
				}
			}
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
}
