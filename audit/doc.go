// Package audit owns audit events: the CloudEvents encoding, the bounded
// queue that keeps Emit off the request path, the on-disk spool, and the
// stdout, file and RabbitMQ sinks. It must not import proxy, policy or jwks
// (nor jwx): the proxy copies a decision's fields into an Event.
//
// # Request path
//
// Emit copies the Event into a bounded channel (audit.queue_size) and
// returns; a full queue drops the event and counts it. Encoding happens in
// the emitter's single worker goroutine. String fields longer than 2048
// bytes (a client's path or Host can be 32 KiB) are cut at a UTF-8 boundary
// and end in "...(truncated)"; the kept prefix is copied so a queued event
// never pins the request's memory. Shorter fields are not copied.
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
// roles are left out when empty (roles is never []). Strings are written
// by internal/jsonx.AppendString: encoding/json's bytes without its
// allocations (the measurement is in that package's comment).
//
// # Results (gatehouse_audit_events_total{sink,result})
//
//   - published: written (stdout, file) or confirmed by the broker (ack, and
//     not returned)
//   - spooled: written to the spool; counted published again once the broker
//     confirms it after replay. With audit.durable every event is counted
//     spooled when the worker has written its record to the spool file
//     (write(2): from then on a kill -9 cannot lose it; a power cut can until
//     the next fsync, at most fsync_interval later). That is what "queued"
//     means in durable mode: spooled - published is the backlog on disk, and
//     an event neither spooled nor dropped is still in the in-memory queue
//   - dropped: lost: full queue and no spool room, Emit after Close, left
//     in memory when Close ran out of time (or parked, see below) without a
//     spool, or returned by the broker while 512 returned events are parked
//   - failed: a stdout/file write failed (not retried)
//
// # RabbitMQ delivery
//
// At-least-once: publisher confirms, mandatory publishes, nacked or
// unconfirmed messages re-sent after a reconnect, with the same message_id.
// A returned message (no queue bound for its routing key) holds only that
// key: it and later messages for the key are parked in memory, one is
// re-sent as a probe after a pause that grows from 250 ms to 5 s, and all
// are re-sent once a probe is confirmed; other keys publish meanwhile. At
// most 512 messages are parked; beyond that a message for a held key is
// dropped, counted and logged ("the routing key has no bound queue", at
// most every 10 s). Close does not wait for parked messages: it spools them
// (or counts them dropped).
// Consumers deduplicate on the id. Up to 512 publishes await confirms at once.
// Reconnects back off from 100 ms to 10 s with jitter; a blocked connection
// (connection.blocked) pauses publishing. A publish not confirmed within
// confirm_timeout (default 5 s; a blocked connection's wait counts from the
// unblock) closes the link: a silent network is noticed then rather than
// after three heartbeats, and every socket write has the same deadline so
// a full send buffer cannot block the worker. With several URLs
// (urls, or a comma-separated url_env/url_file) internal/broker dials them
// in order, starting after the broker whose link was lost.
//
// # Batches (audit.rabbitmq.batch, SPEC.md 12)
//
// Each routing key has an open batch: events are encoded into it as they
// are read from the queue ("[" ev "," ev ... "]"), and it becomes one
// message (content_type application/cloudevents-batch+json, message_id a
// fresh id from the same sequence as event ids, type the events' type or
// empty when they differ) when it holds max_events, reaches 1 MiB, or its
// first event waited max_delay on the emitter's clock; Close flushes every
// open batch. From then on a batch is a message like any other: confirmed,
// returned, parked, re-sent and spooled whole, and counted as its number of
// events in every result.
//
// # Spool and ordering
//
// With spool_dir, events the broker cannot take now (disconnected, blocked,
// or the queue half full) are appended to segment files and
// replayed before newer events: while the spool holds unread records, new
// events go through it too. So events reach the exchange in emit order,
// except that messages needing a re-send (returned, nacked, unconfirmed at a
// connection loss) are re-sent ahead of the rest. When the spool refuses a
// record (full), the worker stops reading the queue until the spool shrinks,
// so memory stays bounded by queue_size and one batch; Emit then drops. A
// segment is removed only after every record in it was confirmed; a crash replays the segments left
// (duplicates possible, same ids). Segments (8 MiB) are fsynced when
// finished and at Close: kill -9 loses nothing, a power cut may lose the
// unsynced tail of the current segment. The spool's directory is locked (flock):
// during a reload the new emitter waits for the old one's Close before it
// uses the spool, and publishes directly meanwhile. stdout and file sinks do
// not use the spool.
//
// # Durable mode (durable.go)
//
// With audit.durable (sink rabbitmq, spool_dir required) the worker
// appends every event it takes from the queue to the spool, at once, and
// publishes only what it reads back from the spool; a record is released
// once confirmed, as in a replay. Group commit: the spool is fsynced at most
// every fsync_interval (default 50 ms; the first record after a quiet spell
// at once), on the emitter's clock. Emit does not change: a kill -9 loses
// only the events still in the in-memory queue, which the worker empties
// batch by batch as they come; a power cut also loses the records written
// since the last fsync. While the spool is unusable (a write or fsync
// failed; a reload's old emitter still holds spool_dir) the worker works as
// without durable mode, which the log says.
//
// # Where new things go
//
// New event kinds (egress decisions, revocations applied) are Events with
// their own type and the same envelope: fields here, filled by proxy.
// What audit and the revocation feed share about RabbitMQ (URL lists, the
// dial over them) is in internal/broker: jwks/revoke must not import audit.
package audit
