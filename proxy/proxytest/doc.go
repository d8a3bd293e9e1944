// Package proxytest is the shared test harness of gatehouse, in the manner
// of net/http/httptest: a recording upstream, configs from YAML text, a
// gatehouse served in-process (proxy.Run, the code the binary runs) or as
// the real binary (for what only a process shows: signals, reload by
// SIGHUP, -t, exit codes), a TCP forwarder the test can cut, and a
// goroutine-safe buffer for logs and audit output.
//
// It is imported by proxy's external tests and by the examples' tests; the
// audit package keeps its own forwarder because it must not import proxy.
package proxytest
