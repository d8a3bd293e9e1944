package proxy

import (
	"net/http"
	"strconv"

	"github.com/gatehouse/gatehouse/internal/jsonx"
)

// writeError is the JSON writer of the reason table: it answers a denial or
// failure as SPEC.md 4, a JSON body with the code, a fixed message and the
// request id, and WWW-Authenticate for 401/403. description, when set, is
// the verifier's fixed text for error_description. A gRPC request gets the
// table's second rendering, a trailers-only answer (proxy/grpc.go).
func writeError(w http.ResponseWriter, r *http.Request, rs reason, requestID, description string) int {
	if isGRPC(r) {
		return writeGRPCError(w, rs, requestID, description)
	}
	d := rs.info()
	code := d.code
	h := w.Header()
	setIdentity(h, rs, requestID, description)
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = nosniff
	body := make([]byte, 0, 160)
	body = append(body, `{"error":`...)
	body = jsonx.AppendString(body, code)
	body = append(body, `,"message":`...)
	body = jsonx.AppendString(body, d.message)
	body = append(body, `,"request_id":`...)
	body = jsonx.AppendString(body, requestID)
	body = append(body, "}\n"...)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(d.status)
	_, _ = w.Write(body)
	return d.status
}

// setIdentity sets what both renderings of a refusal carry: the
// WWW-Authenticate of SPEC.md 4 (with the verifier's error_description on
// a 401 for a presented token) and the request id.
func setIdentity(h http.Header, rs reason, requestID, description string) {
	d := rs.info()
	if d.www != "" {
		www := d.www
		if description != "" && d.status == 401 && rs != reasonMissingToken {
			www += `, error_description=` + quoteHeader(description)
		}
		h["Www-Authenticate"] = []string{www}
	}
	h["X-Request-Id"] = []string{requestID}
}

var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	nosniff         = []string{"nosniff"}
)

// quoteHeader makes an RFC 7230 quoted-string, dropping bytes that cannot
// appear in one.
func quoteHeader(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f || c >= 0x80:
			// not in a quoted-string: drop
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}
