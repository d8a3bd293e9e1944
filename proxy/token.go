package proxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// tokenStatus is what reading the configured token sources found.
type tokenStatus uint8

const (
	tokenAbsent  tokenStatus = iota
	tokenFound               // raw holds the token
	tokenInvalid             // present but unusable: given twice, or `Bearer` with nothing after it
)

// extractToken reads the first present source in order (SPEC.md 4). A source
// given twice is invalid rather than "pick one": two parsers picking
// different copies is how smuggling starts.
func extractToken(r *http.Request, sources []TokenSource) (raw string, src int, st tokenStatus, why string) {
	for i, s := range sources {
		switch s.Kind {
		case SourceBearer:
			v := r.Header["Authorization"]
			if len(v) == 0 {
				continue
			}
			if len(v) > 1 {
				return "", i, tokenInvalid, "more than one Authorization header"
			}
			tok, isBearer := bearer(v[0])
			if !isBearer {
				continue // another scheme is no token
			}
			if tok == "" {
				return "", i, tokenInvalid, "empty bearer token"
			}
			return tok, i, tokenFound, ""
		case SourceHeader:
			v := r.Header[s.Name]
			if len(v) == 0 {
				continue
			}
			if len(v) > 1 {
				return "", i, tokenInvalid, "token header given more than once"
			}
			tok := textproto.TrimString(v[0])
			if tok == "" {
				return "", i, tokenInvalid, "empty token header"
			}
			return tok, i, tokenFound, ""
		case SourceCookie:
			tok, n := findCookie(r.Header["Cookie"], s.Name)
			if n == 0 {
				continue
			}
			if n > 1 {
				return "", i, tokenInvalid, "token cookie given more than once"
			}
			if tok == "" {
				return "", i, tokenInvalid, "empty token cookie"
			}
			return tok, i, tokenFound, ""
		case SourceQuery:
			tok, n, ok := findQuery(r.URL.RawQuery, s.Name)
			if n == 0 {
				continue
			}
			if n > 1 {
				return "", i, tokenInvalid, "token query parameter given more than once"
			}
			if !ok || tok == "" {
				return "", i, tokenInvalid, "malformed token query parameter"
			}
			return tok, i, tokenFound, ""
		}
	}
	return "", -1, tokenAbsent, ""
}

// bearer splits an Authorization value; the scheme is case-insensitive
// (RFC 7235 2.1).
func bearer(v string) (token string, ok bool) {
	v = textproto.TrimString(v)
	if len(v) < 6 || !strings.EqualFold(v[:6], "bearer") {
		return "", false
	}
	if len(v) == 6 {
		return "", true
	}
	if v[6] != ' ' && v[6] != '\t' {
		return "", false // "Bearerx": another scheme
	}
	return textproto.TrimString(v[7:]), true
}

// findCookie returns the value of cookie name and how often it appears across
// every Cookie header.
func findCookie(headers []string, name string) (string, int) {
	var val string
	n := 0
	for _, h := range headers {
		for h != "" {
			var part string
			part, h, _ = strings.Cut(h, ";")
			if cookieName(part) == name {
				_, v, _ := strings.Cut(part, "=")
				n++
				val = strings.Trim(textproto.TrimString(v), `"`)
			}
		}
	}
	return val, n
}

// findQuery returns the decoded value of parameter name and how often it
// appears. Query parameters are split on '&' only, as Go's url.ParseQuery does.
func findQuery(raw, name string) (string, int, bool) {
	var val string
	n, ok := 0, true
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if queryName(part) != name {
			continue
		}
		n++
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			ok = false // an encoded spelling of the name: counted, never used
			continue
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				ok = false
			}
			v = dv
		}
		val = v
	}
	return val, n, ok
}

// removeTokens takes every configured token source off the request except
// source keep (-1: none), so that the upstream never sees a token gatehouse
// did not verify on this request (SPEC.md 5).
func removeTokens(r *http.Request, sources []TokenSource, keep int) {
	for i, s := range sources {
		if i == keep {
			continue
		}
		switch s.Kind {
		case SourceBearer:
			removeBearer(r.Header)
		case SourceHeader:
			delete(r.Header, s.Name)
		case SourceCookie:
			removeCookie(r.Header, s.Name)
		case SourceQuery:
			if r.URL.RawQuery != "" {
				r.URL.RawQuery = removeQuery(r.URL.RawQuery, s.Name)
			}
		}
	}
}

// removeBearer deletes Authorization values with the Bearer scheme; other
// schemes pass (an `auth: none` route may use Basic auth of its own).
func removeBearer(h http.Header) {
	v, ok := h["Authorization"]
	if !ok {
		return
	}
	keep := v[:0:0]
	for _, a := range v {
		if _, isBearer := bearer(a); !isBearer {
			keep = append(keep, a)
		}
	}
	if len(keep) == 0 {
		delete(h, "Authorization")
	} else {
		h["Authorization"] = keep
	}
}

// removeCookie drops every pair named name from each Cookie header and keeps
// the rest of that header byte for byte; other Cookie headers (HTTP/2 sends
// one per cookie, RFC 9113 8.2.3) are not touched. A pair is named name by
// the same reading findCookie uses, so what counts as the token cookie and
// what is removed cannot differ.
func removeCookie(h http.Header, name string) {
	headers, ok := h["Cookie"]
	if !ok {
		return
	}
	if _, n := findCookie(headers, name); n == 0 {
		return
	}
	kept := make([]string, 0, len(headers))
	for _, hv := range headers {
		if _, n := findCookie([]string{hv}, name); n == 0 {
			kept = append(kept, hv)
			continue
		}
		var b strings.Builder
		for more := true; more; {
			var part string
			part, hv, more = strings.Cut(hv, ";")
			if cookieName(part) == name {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(';')
			} else {
				// The pair before was removed: no leading "; " left behind.
				part = strings.TrimLeft(part, " \t")
			}
			b.WriteString(part)
		}
		if v := b.String(); textproto.TrimString(v) != "" {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

// cookieName is the name of one `;`-separated part of a Cookie header, as
// findCookie reads it.
func cookieName(part string) string {
	k, _, _ := strings.Cut(textproto.TrimString(part), "=")
	return k
}

// removeQuery drops parameter name (in any encoded spelling findQuery
// counts) and keeps every other byte of the query as received, empty
// parameters and separators included.
func removeQuery(raw, name string) string {
	if _, n, _ := findQuery(raw, name); n == 0 {
		return raw
	}
	var b strings.Builder
	kept := 0
	for more := true; more; {
		var part string
		part, raw, more = strings.Cut(raw, "&")
		if queryName(part) == name {
			continue
		}
		if kept > 0 {
			b.WriteByte('&')
		}
		kept++
		b.WriteString(part)
	}
	return b.String()
}

// queryName is the decoded name of one `&`-separated query parameter as
// findQuery reads it; a name that does not decode is returned raw.
func queryName(part string) string {
	k, _, _ := strings.Cut(part, "=")
	if strings.ContainsAny(k, "%+") {
		if dk, err := url.QueryUnescape(k); err == nil {
			return dk
		}
	}
	return k
}
