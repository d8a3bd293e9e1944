package proxy

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/internal/ratelimit"
)

// Failed-auth throttling (SPEC.md 12, limits.failed_auth). The decisions,
// written down in README "Failed-auth throttling":
//   - Only 401 answers take a token. A 429 is not a 401: a throttled
//     request takes nothing, so the bucket refills at its rate whatever the
//     client keeps sending, and Retry-After is the truth.
//   - The check runs right after the path is normalised and before anything
//     else (CORS preflight, route decision, token reading, verification):
//     a throttled client is refused on every route, auth: none included, as
//     SPEC.md says, and no token of it is parsed.
//   - The client is the SPEC.md 5 client IP (trusted_proxies aware); IPv6
//     clients are counted by /64 (ratelimit.Key).
//   - The table is per instance, and survives a reload while the
//     failed_auth section is unchanged (a refpool keyed by it).

// throttleKey identifies a limits.failed_auth section: handlers of
// successive reloads with the same section share one table.
type throttleKey [sha256.Size]byte

func keyOfFailedAuth(fa FailedAuth) throttleKey {
	return sha256.Sum256(fmt.Appendf(nil, "%#v", fa))
}

// newThrottle builds the table for fa, for refpool.
func newThrottle(fa FailedAuth) func() (*ratelimit.Table, error) {
	return func() (*ratelimit.Table, error) {
		return ratelimit.New(fa.Rate, int(fa.Burst), int(fa.Clients)), nil
	}
}

// throttled reports whether r's client is over its failed-auth budget; if
// so, o holds the 429 and Retry-After is set on w. It records r's client
// in o for countFailure either way.
func (h *Handler) throttled(w http.ResponseWriter, r *http.Request, o *outcome) bool {
	if h.throttle == nil {
		return false
	}
	o.client = clientAddr(r.RemoteAddr, r.Header["X-Forwarded-For"], h.cfg.TrustedProxies)
	if !o.client.IsValid() {
		return false
	}
	wait := h.throttle.Wait(o.client, o.start)
	if wait <= 0 {
		return false
	}
	w.Header()["Retry-After"] = []string{retryAfter(wait)}
	o.reason, o.detail = reasonTooManyRequests, "failed-auth rate"
	o.route = h.engine.Match(r.Method, o.path)
	return true
}

// countFailure takes a token from the client's bucket when o is a 401.
func (h *Handler) countFailure(o *outcome) {
	if h.throttle != nil && o.client.IsValid() && o.reason.info().status == http.StatusUnauthorized {
		h.throttle.Fail(o.client, o.start)
	}
}

// retryAfter is the Retry-After value for wait: whole seconds rounded up,
// at least 1 (RFC 9110 10.2.3 has no fractions, and 0 would invite an
// immediate retry that is still refused).
func retryAfter(wait time.Duration) string {
	s := int64((wait + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}

// clientAddr is clientIP as an address, without clientIP's allocation in
// the common case of an untrusted peer; the zero Addr when the peer is no
// IP address (a unix socket listener).
func clientAddr(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(clientIP(remoteAddr, xff, trusted))
		return a
	}
	if len(trusted) == 0 || !isTrusted(ap.Addr(), trusted) {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(clientIP(remoteAddr, xff, trusted))
	return a
}
