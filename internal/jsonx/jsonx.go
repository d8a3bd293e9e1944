// Package jsonx owns the one JSON string escaper gatehouse writes by hand:
// the audit encoder and the proxy's error bodies append JSON strings
// without an allocation. It is a leaf (stdlib only) so every package may
// import it.
//
// Why not encoding/json: json.Marshal of a string allocates (the boxed
// value and the result). Measured with the audit encoder's appendString
// swapped for json.Marshal (go test -run '^$' -bench 'Emit$|Encode'
// -benchmem -count 8 ./audit/, benchstat medians, 2 shared cores):
// BenchmarkEncode 1.06 µs and 0 allocs/op → 20.9 µs and 48 allocs/op, and
// BenchmarkEmit 328 ns and 0 allocs/op → 859 ns and 3 allocs/op (the
// worker's garbage, collected while requests run). Not noise, so gatehouse
// keeps this one escaper. jsontext.AppendQuote (encoding/json/v2) would do
// but needs GOEXPERIMENT=jsonv2. BenchmarkAppendString compares the two on
// single strings (236 ns, 0 allocs vs 1.30 µs, 12 allocs for four
// strings); FuzzAppendString holds the output to encoding/json's, byte for
// byte.
package jsonx

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// safeASCII marks the ASCII bytes AppendString copies unescaped.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// AppendString appends s as a JSON string, exactly as encoding/json's
// Marshal writes it: what RFC 8259 requires escaped, plus <, >, & and
// U+2028/U+2029 (so the output is safe inside HTML or JavaScript), with
// each invalid UTF-8 byte replaced by U+FFFD (written as the character, not
// escaped, as encoding/json does).
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
