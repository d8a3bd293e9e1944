package jwks

import (
	"bytes"
	"encoding/json"
)

// hasDuplicateKeys reports whether any object in data, at any depth, has a
// key twice (compared after unescaping, so "a" and "\u0061" are the same).
// Parsers disagree on duplicates (first wins, last wins, error), so a token
// with one means different things to different readers: refuse it
// (RFC 7519 4, RFC 8725 3.12 spirit). data must already be valid JSON.
func hasDuplicateKeys(data []byte) bool {
	s := dupScanner{b: data}
	return s.value()
}

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
		s.str()
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

// str reads a string at s.i and returns its unescaped value (a sub-slice of
// the input unless it has escapes).
func (s *dupScanner) str() []byte {
	start := s.i
	s.i++ // opening quote
	escaped := false
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '\\' {
			escaped = true
			s.i += 2
			continue
		}
		s.i++
		if c == '"' {
			break
		}
	}
	raw := s.b[start:min(s.i, len(s.b))]
	if len(raw) < 2 {
		return raw
	}
	if !escaped {
		return raw[1 : len(raw)-1]
	}
	var out string
	if json.Unmarshal(raw, &out) != nil {
		return raw
	}
	return []byte(out)
}
