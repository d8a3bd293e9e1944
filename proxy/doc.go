// Package proxy owns the HTTP side of gatehouse: the root configuration,
// the main and admin listeners, the request pipeline (request id, path
// normalisation, header stripping, route match, token verification,
// decision, claim header injection, forwarding), reload and shutdown.
//
// # The pipeline
//
// Handler.ServeHTTP (handler.go) is the whole pipeline in one readable
// function. Every answer gatehouse makes itself is a reason of the one
// reason table (reason.go): the steps set outcome.reason, finish records
// it once (gatehouse_requests_total, the audit event), and answer renders
// it. policy and jwks keep their own typed reasons; fromPolicy and fromJWKS
// are the only places where those become gatehouse's. A panic is recovered
// at the top of ServeHTTP, answered 500 internal_error and counted.
//
// What survives a reload (the audit emitter and its broker connection,
// the revocation feed, key and token caches with the jwks side) lives in
// the server's internal/refpool pools (lifetime.go): a reload acquires, the
// replaced handler releases when its last request has ended. The
// revocation store is the server's alone and outlives every feed, so a
// reload never forgets a revocation. The revocation check runs right after
// the verifier answers (revoked in handler.go), so cached tokens are
// checked too; `gatehouse revoke` is revoke.go. New builds a Handler
// in-process (tests, other listeners); proxytest is the shared test harness.
//
// # Where new things go
//
// The next features plug into the pipeline rather than beside it, so that
// every protocol gets the same canonical path, header strip, token
// reading, reasons, metrics and audit (SPEC.md part two, "everything in
// sections 1 to 8 still holds"):
//
//   - HTTP/2, h2c and gRPC: proxy/protocols.go (listener and upstream
//     protocols) and proxy/grpc.go. The listener is the same Handler; the
//     gRPC trailers-only answer is the second writer of the reason table,
//     chosen in writeError (one table, two renderings).
//   - Decision mode: proxy/decision.go, and the gRPC ext_authz adapter in
//     proxy/extauthz.go: thin adapters that put their protocol's question to
//     the same authorize step and turn the outcome back. Built with New.
//   - Upstream assertion (SPEC.md 11): proxy/assertion.go signs, per
//     verified token and upstream, in the token's Result.Memo; the JWKS of
//     its keys is served by admin.go.
//   - Egress (calls between services): proxy/egress.go for the listener
//     (egress_config.go its section), proxy/inbound.go for the bounded
//     table of inbound tokens the main listener fills and propagate reads;
//     the OAuth client side (client credentials, token exchange) is
//     internal/oauth, one client per idp section in the parts' refpool.
//   - CEL conditions: policy/expr. Compiled at load with positions, held by
//     policy.Route; proxy only passes the subject, as it does for roles.
//   - Revocation: jwks/revoke. Lookups sit on the verifier's hit path and
//     must stay lock-free; the stream consumer feeding it lives there too.
//   - Broker code shared by audit and revocation (URL lists, dial with
//     backoff, confirms, returns): internal/broker, because audit and jwks
//     must not import each other.
//   - Tracing: internal/telemetry owns the OTel provider and exporter
//     lifecycle; spans are started where the work is (here, in jwks, in
//     audit), so no package needs to import another for them.
package proxy
