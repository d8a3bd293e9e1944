package jwks

// Reason says why a token was refused; it maps to the error codes of SPEC.md 4.
type Reason uint8

const (
	ReasonInvalid         Reason = iota + 1 // invalid_token (401)
	ReasonExpired                           // token_expired (401): exp passed, or nbf ahead, beyond leeway
	ReasonKeysUnavailable                   // keys_unavailable (503): keys never obtained, or older than max_stale
)

// Code is the `error` body code of SPEC.md 4.
func (r Reason) Code() string {
	switch r {
	case ReasonInvalid:
		return "invalid_token"
	case ReasonExpired:
		return "token_expired"
	case ReasonKeysUnavailable:
		return "keys_unavailable"
	}
	return "invalid_token"
}

func (r Reason) String() string { return r.Code() }

// Error is a refused token. Msg is short fixed text for the client's
// error_description. Detail names the failed check in words for the audit
// event's data.detail and the debug log (SPEC.md 15): "signature",
// "audience", "unknown key id", "required claim user", ... Neither ever
// holds the token, a claim value or other bytes chosen by the caller; a
// claim path in Detail comes from the config. Errors are shared values: do
// not modify them.
type Error struct {
	Reason Reason
	Msg    string
	Detail string
}

func (e *Error) Error() string { return e.Reason.Code() + ": " + e.Msg }

func invalid(msg, detail string) *Error {
	return &Error{Reason: ReasonInvalid, Msg: msg, Detail: detail}
}

// The refusals, allocated once (a required claim's is made per issuer:
// requiredClaimError).
var (
	errTokenTooLarge   = invalid("token too large", "too large")
	errMalformed       = invalid("malformed token", "malformed")
	errNotCompact      = invalid("token is not a compact JWS", "malformed: not compact")
	errBadBase64       = invalid("token is not canonical base64url", "malformed: base64url")
	errBadHeader       = invalid("malformed token header", "malformed: header")
	errBadPayload      = invalid("malformed token claims", "malformed: claims")
	errDuplicateKey    = invalid("duplicate key in token JSON", "malformed: duplicate key")
	errAlgNotAllowed   = invalid("algorithm not allowed", "algorithm not allowed")
	errCrit            = invalid("unsupported critical header", "crit header")
	errB64             = invalid("unencoded payload not supported", "b64 header")
	errType            = invalid("token type not allowed", "type")
	errUnknownIssuer   = invalid("issuer not allowed", "issuer")
	errUnknownKid      = invalid("unknown key id", "unknown key id")
	errAlgKey          = invalid("algorithm does not match key", "algorithm does not fit the key")
	errSignature       = invalid("signature verification failed", "signature")
	errNoExp           = invalid("exp claim missing or not a number", "exp missing")
	errBadNbf          = invalid("nbf claim is not a number", "nbf not a number")
	errBadIat          = invalid("iat claim is not a number", "iat not a number")
	errIatFuture       = invalid("token issued in the future", "issued in the future")
	errNoIat           = invalid("iat claim required", "iat missing")
	errLifetime        = invalid("token lifetime too long", "lifetime")
	errAudience        = invalid("audience not allowed", "audience")
	errSubType         = invalid("claim has the wrong type", "sub not a string")
	errJTIType         = invalid("claim has the wrong type", "jti not a string")
	errExpired         = &Error{Reason: ReasonExpired, Msg: "token expired", Detail: "expired"}
	errNotYetValid     = &Error{Reason: ReasonExpired, Msg: "token not yet valid", Detail: "not yet valid"}
	errKeysUnavailable = &Error{Reason: ReasonKeysUnavailable, Msg: "signing keys unavailable", Detail: "keys unavailable"}
)

// requiredClaimError is the refusal for a missing required claim: the
// path is config, never token bytes.
func requiredClaimError(path string) *Error {
	return invalid("required claim missing", "required claim "+path)
}
