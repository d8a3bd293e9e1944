package jwks

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// A token's header and claims are read through object, not decoded into a
// map[string]any: json.Valid checks the syntax, one scan splits the top
// level into raw members (and refuses duplicate keys at every depth), and
// only the values a check reads are decoded. Decoding every claim into
// boxed values was about a fifth of a cold RS256 verification and most of
// its allocations.

// member is one top-level member of a JSON object: its name unescaped, its
// value as raw JSON without surrounding whitespace.
type member struct {
	name []byte
	raw  []byte
}

// object is a JSON object's members in document order.
type object []member

// parseObject splits data, which must be valid JSON (json.Valid), into its
// top-level members, appending to buf. isObj is false when data is not an
// object; dup is true when any object in it, at any depth, has a key twice.
func parseObject(data []byte, buf []member) (o object, isObj, dup bool) {
	s := dupScanner{b: data}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil, false, false
	}
	s.i++
	o = buf[:0]
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] == '}' {
			return o, true, false
		}
		if s.b[s.i] == ',' {
			s.i++
			continue
		}
		k := s.str()
		for _, m := range o {
			if bytes.Equal(m.name, k) {
				return o, true, true
			}
		}
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ':' {
			s.i++
		}
		s.ws()
		start := s.i
		if s.value() {
			return o, true, true
		}
		o = append(o, member{name: k, raw: s.b[start:s.i]})
	}
}

// get returns the raw value of the member name.
func (o object) get(name string) ([]byte, bool) {
	for i := range o {
		if string(o[i].name) == name {
			return o[i].raw, true
		}
	}
	return nil, false
}

// rawString decodes a JSON string value; ok is false for any other value.
// The input passed utf8.Valid, so the unescaped fast path returns what
// encoding/json would.
func rawString(raw []byte) (string, bool) {
	body, plain, ok := stringBody(raw)
	if !ok {
		return "", false
	}
	if plain {
		return string(body), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// stringBody returns the bytes between a string value's quotes; plain is
// false when they hold an escape and so are not the value itself.
func stringBody(raw []byte) (body []byte, plain, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false, false
	}
	body = raw[1 : len(raw)-1]
	return body, bytes.IndexByte(body, '\\') < 0, true
}

// rawStringIn reports whether raw is a JSON string equal to one of list,
// without allocating for a string with no escapes.
func rawStringIn(raw []byte, list []string) bool {
	body, plain, ok := stringBody(raw)
	if !ok {
		return false
	}
	if plain {
		for _, x := range list {
			if string(body) == x {
				return true
			}
		}
		return false
	}
	s, ok := rawString(raw)
	return ok && slices.Contains(list, s)
}

// rawNumber decodes a JSON number value as encoding/json does into any
// (float64); ok is false for any other value and for a number beyond
// float64's range.
func rawNumber(raw []byte) (float64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

// rawValue decodes a raw value as encoding/json decodes it into any. The
// common kept claims (plain strings, numbers) skip encoding/json.
func rawValue(raw []byte) (any, bool) {
	if body, plain, ok := stringBody(raw); ok && plain {
		return string(body), true
	}
	if f, ok := rawNumber(raw); ok {
		return f, true
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil, false
	}
	return v, true
}

// elements calls fn with each element of the JSON array raw, as raw JSON;
// it does nothing when raw is not an array.
func elements(raw []byte, fn func(elem []byte)) {
	if len(raw) == 0 || raw[0] != '[' {
		return
	}
	s := dupScanner{b: raw, i: 1}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] == ']' {
			return
		}
		if s.b[s.i] == ',' {
			s.i++
			continue
		}
		start := s.i
		s.value()
		fn(s.b[start:s.i])
	}
}

// audienceOK reports whether aud (a string, or an array of strings) names
// one of the allowed audiences.
func audienceOK(aud []byte, allowed []string) bool {
	if rawStringIn(aud, allowed) {
		return true
	}
	found := false
	elements(aud, func(e []byte) {
		found = found || rawStringIn(e, allowed)
	})
	return found
}

// stringList reads a roles/scopes claim: an array of strings (other
// elements ignored), or a string separated by spaces and/or commas. Any
// other value is no list (nil); an array is a list even when empty.
func stringList(raw []byte) []string {
	if s, ok := rawString(raw); ok {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	out := make([]string, 0, 4)
	elements(raw, func(e []byte) {
		if s, ok := rawString(e); ok {
			out = append(out, s)
		}
	})
	return out
}

// dupScanner walks valid JSON and finds duplicate keys: any object, at any
// depth, with a key twice (compared after unescaping, so "a" and "\u0061"
// are the same). Parsers disagree on duplicates (first wins, last wins,
// error), so a token with one means different things to different readers:
// it is refused (RFC 7519 4, RFC 8725 3.12 spirit).
type dupScanner struct {
	b []byte
	i int
}

func (s *dupScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value skips one value and reports whether it contained a duplicate key.
func (s *dupScanner) value() bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '{':
		s.i++
		var buf [16][]byte
		keys := buf[:0]
		for {
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			if s.b[s.i] == '}' {
				s.i++
				return false
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			k := s.str()
			for _, o := range keys {
				if bytes.Equal(o, k) {
					return true
				}
			}
			keys = append(keys, k)
			s.ws()
			if s.i < len(s.b) && s.b[s.i] == ':' {
				s.i++
			}
			if s.value() {
				return true
			}
		}
	case '[':
		s.i++
		for {
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ']':
				s.i++
				return false
			case ',':
				s.i++
				continue
			}
			if s.value() {
				return true
			}
		}
	case '"':
		s.skipStr()
		return false
	default:
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return false
			}
			s.i++
		}
		return false
	}
}

// skipStr moves past the string at s.i.
func (s *dupScanner) skipStr() {
	s.i++ // opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '\\' {
			s.i += 2
			continue
		}
		s.i++
		if c == '"' {
			return
		}
	}
}

// str reads a string at s.i and returns its unescaped value (a sub-slice of
// the input unless it has escapes).
func (s *dupScanner) str() []byte {
	start := s.i
	s.skipStr()
	raw := s.b[start:min(s.i, len(s.b))]
	body, plain, ok := stringBody(raw)
	if !ok {
		return raw
	}
	if plain {
		return body
	}
	var out string
	if json.Unmarshal(raw, &out) != nil {
		return raw
	}
	return []byte(out)
}
