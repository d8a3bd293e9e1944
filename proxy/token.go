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
			part = textproto.TrimString(part)
			k, v, _ := strings.Cut(part, "=")
			if k == name {
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
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if strings.ContainsAny(k, "%+") {
				if dk, err := url.QueryUnescape(k); err == nil && dk == name {
					n++ // an encoded spelling of the name counts as the same parameter
					ok = false
				}
			}
			continue
		}
		n++
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

func removeCookie(h http.Header, name string) {
	headers, ok := h["Cookie"]
	if !ok {
		return
	}
	if _, n := findCookie(headers, name); n == 0 {
		return
	}
	var kept []string
	for _, hv := range headers {
		for hv != "" {
			var part string
			part, hv, _ = strings.Cut(hv, ";")
			part = textproto.TrimString(part)
			if k, _, _ := strings.Cut(part, "="); k != name && part != "" {
				kept = append(kept, part)
			}
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = []string{strings.Join(kept, "; ")}
}

// removeQuery drops parameter name (in any encoded spelling) and keeps every
// other byte of the query as received.
func removeQuery(raw, name string) string {
	if _, n, _ := findQuery(raw, name); n == 0 {
		return raw
	}
	var b strings.Builder
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(part, "=")
		if k == name {
			continue
		}
		if strings.ContainsAny(k, "%+") {
			if dk, err := url.QueryUnescape(k); err == nil && dk == name {
				continue
			}
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}
