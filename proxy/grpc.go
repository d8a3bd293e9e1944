package proxy

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// gRPC answers (SPEC.md 9): a gRPC client reads only grpc-status and
// grpc-message, so every answer gatehouse makes itself to a gRPC request is
// the reason table of errors.go rendered a second way, as a trailers-only
// response (gRPC over HTTP/2, "Responses": HTTP 200 with the status in the
// one HEADERS frame that ends the stream). grpc-go's status package and
// Envoy's grpc_http1_bridge map HTTP statuses the same way.

// isGRPC reports whether r is a gRPC request: content-type
// application/grpc, application/grpc+proto (any +subtype) or with
// parameters. gRPC-Web (application/grpc-web*) is not: it is proxied as
// ordinary HTTP and its denials are the JSON ones.
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	const prefix = "application/grpc"
	v := ct[0]
	if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return false
	}
	rest := v[len(prefix):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// gRPC status codes (grpc/codes) that gatehouse answers with.
const (
	grpcUnknown           = 2
	grpcInvalidArgument   = 3
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcStatusOf maps the HTTP status of SPEC.md 4 to SPEC.md 9's grpc-status.
func grpcStatusOf(status int) int {
	switch status {
	case 400:
		return grpcInvalidArgument
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 413, 429, 431:
		return grpcResourceExhausted
	case 502, 503:
		return grpcUnavailable
	case 504:
		return grpcDeadlineExceeded
	case 500:
		return grpcInternal // SPEC.md 9 is silent; gRPC's own code for a server fault
	}
	return grpcUnknown
}

var grpcContentType = []string{"application/grpc"}

// writeGRPCError is writeError's rendering for gRPC: the same reason, message
// and WWW-Authenticate, as metadata of a trailers-only response. It returns
// the SPEC.md 4 status, which metrics and audit keep recording.
func writeGRPCError(w http.ResponseWriter, rs reason, requestID, description string) int {
	d := rs.info()
	h := w.Header()
	setIdentity(h, rs, requestID, description)
	h["Content-Type"] = grpcContentType
	h["Grpc-Status"] = []string{strconv.Itoa(grpcStatusOf(d.status))}
	h["Grpc-Message"] = []string{grpcPercentEncode(d.message)}
	// A Content-Length: 0 would be harmless, but the stream ends with this
	// HEADERS frame: nothing is written after it.
	w.WriteHeader(http.StatusOK)
	return d.status
}

// grpcPercentEncode encodes a grpc-message value as the gRPC HTTP/2 protocol
// says: bytes outside printable ASCII (0x20-0x7E), and '%' itself, become
// %XX (upper-case hex, as grpc-go writes them).
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// parseGRPCTimeout reads a grpc-timeout value: 1 to 8 ASCII digits and a
// unit, H M S m u n (gRPC over HTTP/2, "Requests"). A malformed value is
// ignored (ok false), as grpc-go's server does not reject the call for it
// either: the upstream then has timeouts.upstream only.
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	// 99,999,999 hours overflows a Duration: such a deadline is no deadline.
	if unit == time.Hour && n > int64(time.Duration(1<<63-1)/time.Hour) ||
		unit == time.Minute && n > int64(time.Duration(1<<63-1)/time.Minute) {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// withGRPCDeadline gives a gRPC request its grpc-timeout as a deadline for
// the whole call to the upstream (SPEC.md 9). timeouts.upstream still
// bounds the wait for the response headers: whichever ends first ends the
// call, and an ended call before the headers is answered 504,
// DEADLINE_EXCEEDED. The caller must call cancel.
func withGRPCDeadline(r *http.Request) (*http.Request, context.CancelFunc) {
	v := r.Header["Grpc-Timeout"]
	if len(v) != 1 || !isGRPC(r) {
		return r, func() {}
	}
	d, ok := parseGRPCTimeout(v[0])
	if !ok {
		return r, func() {}
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return r.WithContext(ctx), cancel
}
