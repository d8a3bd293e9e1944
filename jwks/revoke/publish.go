package revoke

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/internal/broker"
)

// Validate checks r as a consumer will: a message that every instance
// would count invalid is refused before it is published.
func (r Revocation) Validate() error {
	if r.Kind >= numKinds {
		return errors.New("unknown kind")
	}
	if r.Value == "" {
		return fmt.Errorf("the %s to revoke is empty", r.Kind)
	}
	for name, v := range map[string]string{"value": r.Value, "issuer": r.Issuer, "reason": r.Reason} {
		if len(v) > maxField || !utf8.ValidString(v) {
			return fmt.Errorf("%s is longer than %d bytes or not UTF-8", name, maxField)
		}
	}
	if r.Reason == "" {
		return errors.New("a reason is required")
	}
	if !r.Before.IsZero() && r.Kind != KindSub {
		return errors.New("before applies to a subject revocation only")
	}
	return nil
}

// Publish appends r to the stream with publisher confirms and returns the
// message id once the broker confirmed it. Every broker of the list is
// tried once; ctx bounds the whole.
func Publish(ctx context.Context, cfg *Config, r Revocation, now time.Time) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	if !r.Until.IsZero() && !r.Until.After(now) {
		return "", errors.New("until is in the past: every instance would skip the revocation as expired")
	}
	host, _ := os.Hostname()
	body, id, err := encode(r, "gatehouse-revoke/"+host, now)
	if err != nil {
		return "", err
	}
	d := &broker.Dialer{URLs: cfg.URLs.List, Name: "gatehouse revoke"}
	conn, _, err := d.Dial(ctx, func(ctx context.Context, conn *amqp.Connection) error {
		c, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		if _, err := c.QueueDeclare(cfg.Stream, true, false, false, false, cfg.streamArgs()); err != nil {
			return fmt.Errorf("declare stream %s: %w", cfg.Stream, err)
		}
		if err := publishConfirmed(ctx, c, cfg.Stream, body, id); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	conn.Close()
	return id, nil
}
