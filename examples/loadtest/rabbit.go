package main

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitExchange is the loadtest's own exchange, with one bounded queue
// bound to it: gatehouse publishes with mandatory set, and an unrouted
// event would be returned and retried instead of measured.
const (
	rabbitExchange = "gatehouse.loadtest"
	rabbitQueue    = "gatehouse.loadtest"
)

func prepareRabbit(u string) error {
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	if err := ch.ExchangeDeclare(rabbitExchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange: %w", err)
	}
	// No consumer: the queue keeps the newest 10,000 events and drops the
	// oldest, so the broker's memory stays flat for any run length.
	args := amqp.Table{"x-max-length": int32(10000), "x-overflow": "drop-head"}
	if _, err := ch.QueueDeclare(rabbitQueue, false, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue: %w", err)
	}
	if err := ch.QueueBind(rabbitQueue, "auth.#", rabbitExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue: %w", err)
	}
	return nil
}

func cleanupRabbit(u string) {
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	_, _ = ch.QueueDelete(rabbitQueue, false, false, false)
	_ = ch.ExchangeDelete(rabbitExchange, false, false)
}
