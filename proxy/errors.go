package proxy

import (
	"net/http"
	"strconv"

	"github.com/gatehouse/gatehouse/internal/jsonx"
)

// Reason codes a client sees in the `error` field (SPEC.md 4), and the
// `reason` label of gatehouse_requests_total.
const (
	codeOK                  = "ok"
	codePublic              = "public"
	codeMissingToken        = "missing_token"
	codeInvalidToken        = "invalid_token"
	codeTokenExpired        = "token_expired"
	codeInsufficientScope   = "insufficient_scope"
	codeForbidden           = "forbidden"
	codeBadRequest          = "bad_request"
	codeKeysUnavailable     = "keys_unavailable"
	codeUpstreamUnavailable = "upstream_unavailable"
	codeUpstreamTimeout     = "upstream_timeout"
	codePayloadTooLarge     = "payload_too_large"
)

// reasonIndex numbers the decision reasons for the per-route counter table.
var reasonCodes = [...]string{
	codeOK, codePublic, codeMissingToken, codeInvalidToken, codeTokenExpired,
	codeInsufficientScope, codeForbidden, codeBadRequest, codeKeysUnavailable,
}

func reasonIndex(code string) int {
	for i, c := range reasonCodes {
		if c == code {
			return i
		}
	}
	return len(reasonCodes) - 1
}

// denial is how one reason is answered. Client text is fixed per reason:
// never an err.Error() that could echo the token or internals back.
type denial struct {
	status  int
	message string
	www     string // WWW-Authenticate, "" for none
}

var denials = map[string]denial{
	codeMissingToken:        {401, "a bearer token is required", `Bearer realm="gatehouse"`},
	codeInvalidToken:        {401, "the token is not valid", `Bearer realm="gatehouse", error="invalid_token"`},
	codeTokenExpired:        {401, "the token has expired or is not yet valid", `Bearer realm="gatehouse", error="invalid_token"`},
	codeInsufficientScope:   {403, "the token does not grant access to this resource", `Bearer realm="gatehouse", error="insufficient_scope"`},
	codeForbidden:           {403, "no route allows this request", ""},
	codeBadRequest:          {400, "the request path or body is malformed", ""},
	codeKeysUnavailable:     {503, "the keys to verify this token are not available", ""},
	codeUpstreamUnavailable: {502, "the upstream could not be reached", ""},
	codeUpstreamTimeout:     {504, "the upstream did not answer in time", ""},
	codePayloadTooLarge:     {413, "the request body is too large", ""},
}

// writeError answers a denial or failure as SPEC.md 4: a JSON body with the
// code, a fixed message and the request id, and WWW-Authenticate for 401/403.
// description, when set, is the verifier's fixed text for error_description.
func writeError(w http.ResponseWriter, r *http.Request, code, requestID, description string) int {
	if isGRPC(r) {
		return writeGRPCError(w, code, requestID, description)
	}
	d, ok := denials[code]
	if !ok {
		d = denials[codeInvalidToken]
	}
	h := w.Header()
	if d.www != "" {
		www := d.www
		if description != "" && d.status == 401 && code != codeMissingToken {
			www += `, error_description=` + quoteHeader(description)
		}
		h["Www-Authenticate"] = []string{www}
	}
	h["X-Request-Id"] = []string{requestID}
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
