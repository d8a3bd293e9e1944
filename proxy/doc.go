// Package proxy owns the HTTP side of gatehouse: the root configuration,
// the main and admin listeners, the request pipeline (request id, path
// normalisation, header stripping, route match, token verification,
// decision, claim header injection, forwarding), reload and shutdown.
package proxy
