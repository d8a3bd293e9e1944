// Package revoke owns token revocation (SPEC.md 12): the in-memory store
// the request path consults after a token verifies (cache hits included),
// the RabbitMQ stream consumer that feeds it, the `revocation` config
// section and the publisher behind `gatehouse revoke`.
//
// The store is read without locks: a check loads one atomic pointer to an
// immutable snapshot and looks up at most three maps. Writers (the consumer,
// a sweep of expired entries) build a new snapshot under a mutex; the
// consumer applies a backlog in batches so a replay of many entries does not
// rebuild the snapshot per message.
package revoke
