// Command audit-consumer prints gatehouse's audit events from RabbitMQ: it
// declares the audit exchange (with the producer's arguments), binds a queue
// to it, and writes every event as one JSON line on stdout, acking each
// message after its events are written. Messages carry one event
// (application/json) or a batch (application/cloudevents-batch+json, a JSON
// array, SPEC.md 12). A named queue is a quorum queue, replicated across a
// RabbitMQ cluster. It stops on SIGINT or SIGTERM.
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
	"strings"
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
	flag.StringVar(&o.url, "url", def, "broker URL, or a comma-separated list tried in order (a cluster's nodes); default $GATEHOUSE_AMQP_URL, else the local broker as guest")
	flag.StringVar(&o.exchange, "exchange", "gatehouse.audit", "audit exchange (durable topic, as gatehouse declares it)")
	flag.StringVar(&o.binding, "binding", "auth.#", "binding key: auth.# for every decision, auth.deny for denials only")
	flag.StringVar(&o.queue, "queue", "", `queue name (a durable quorum queue); "" = a server-named exclusive queue that goes away with this process`)
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
	var conn *amqp.Connection
	var err error
	// Each node of a cluster in turn: the first that answers.
	for i, u := range strings.Split(o.url, ",") {
		conn, err = amqp.DialConfig(strings.TrimSpace(u), amqp.Config{
			Dial:       amqp.DefaultDial(10 * time.Second),
			Properties: amqp.Table{"connection_name": "gatehouse audit-consumer"},
		})
		if err == nil {
			break
		}
		// amqp091 errors do not contain the password; say which URL by position.
		err = fmt.Errorf("connect to URL %d: %w", i+1, err)
		log.Warn("broker unreachable, trying the next", "err", err)
	}
	if err != nil {
		return err
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
	// away): a quorum queue, so that in a cluster it survives the loss of a
	// node. The default server-named one is exclusive and auto-deleted,
	// which a quorum queue cannot be.
	named := o.queue != ""
	var args amqp.Table
	if named {
		args = amqp.Table{"x-queue-type": "quorum"}
	}
	q, err := ch.QueueDeclare(o.queue, named, !named, !named, false, args)
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
			lines, err := eventLines(&line, d.ContentType, d.Body)
			if err != nil {
				log.Warn("not a JSON event or batch, skipped", "message_id", d.MessageId, "err", err)
			} else {
				w.Write(lines)
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

// batchContentType marks a message whose body is a JSON array of events
// (CloudEvents batched mode, SPEC.md 12).
const batchContentType = "application/cloudevents-batch+json"

// eventLines renders a message's events as compact JSON lines in buf: one
// for a single event, one per element for a batch, in order. A message
// that is not what its content type says is refused whole.
func eventLines(buf *bytes.Buffer, contentType string, body []byte) ([]byte, error) {
	buf.Reset()
	if contentType != batchContentType {
		if err := json.Compact(buf, body); err != nil {
			return nil, err
		}
		if buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return nil, errors.New("an event is a JSON object")
		}
		buf.WriteByte('\n')
		return buf.Bytes(), nil
	}
	var events []json.RawMessage
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	for _, ev := range events {
		if len(ev) == 0 || ev[0] != '{' {
			return nil, errors.New("batch: an element is not a JSON object")
		}
		if err := json.Compact(buf, ev); err != nil {
			return nil, err
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}
