// Package audit owns audit events: the CloudEvents encoding, the bounded
// queue that keeps Emit off the request path, the on-disk spool, and the
// stdout, file and RabbitMQ sinks. It must not import proxy, policy or jwks
// (nor jwx): the proxy copies a decision's fields into an Event.
//
// # Request path
//
// Emit copies the Event into a bounded channel (audit.queue_size) and
// returns; a full queue drops the event and counts it. Encoding happens in
// the emitter's single worker goroutine.
//
// # Encoding (SPEC.md 8)
//
// One CloudEvents 1.0 JSON object per event: specversion "1.0", type
// gatehouse.auth.<decision>, source from Options, id = a random per-emitter
// 64-bit prefix and a counter (32 hex digits, made once per event in the
// worker and kept across re-sends and spooling), time in UTC with
// microseconds, datacontenttype application/json. data always holds
// request_id, decision, reason, status, route, method, path, host,
// client_ip and duration_ms (float, milliseconds); subject, issuer, jti and
// roles are left out when empty (roles is never []).
//
// # Results (gatehouse_audit_events_total{sink,result})
//
//   - published: written (stdout, file) or confirmed by the broker (ack, and
//     not returned)
//   - spooled: written to the spool; counted published again once the broker
//     confirms it after replay
//   - dropped: lost: full queue and no spool room, Emit after Close, or
//     left in memory when Close ran out of time without a spool
//   - failed: a stdout/file write failed (not retried)
//
// # RabbitMQ delivery
//
// At-least-once: publisher confirms, mandatory publishes (a returned message
// is kept and re-sent after a pause that grows from 250 ms to 5 s), nacked or
// unconfirmed messages re-sent after a reconnect, with the same message_id.
// Consumers deduplicate on the id. Up to 512 publishes await confirms at once.
// Reconnects back off from 100 ms to 10 s with jitter; a blocked connection
// (connection.blocked) pauses publishing.
//
// # Spool and ordering
//
// With spool_dir, events the broker cannot take now (disconnected, blocked,
// returns pending, or the queue half full) are appended to segment files and
// replayed before newer events: while the spool holds unread records, new
// events go through it too. So events reach the exchange in emit order,
// except that messages needing a re-send (returned, nacked, unconfirmed at a
// connection loss) are re-sent ahead of the rest. A segment is removed only
// after every record in it was confirmed; a crash replays the segments left
// (duplicates possible, same ids). Segments (8 MiB) are fsynced when
// finished and at Close: kill -9 loses nothing, a power cut may lose the
// unsynced tail of the current segment. The spool's directory is locked (flock):
// during a reload the new emitter waits for the old one's Close before it
// uses the spool, and publishes directly meanwhile. stdout and file sinks do
// not use the spool.
package audit
