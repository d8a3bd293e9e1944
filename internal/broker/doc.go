// Package broker owns what the audit sink and the revocation feed share
// about RabbitMQ: the broker URL setting (url_env, url_file, url or urls,
// resolved and checked at load, never echoed) and dialling a list of
// brokers in order with a bounded, cancellable setup. Errors name a broker
// by its position ("broker 2 of 3"), never by its URL: the URL carries a
// password.
package broker
