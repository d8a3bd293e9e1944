package policy

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Normalize takes a request path exactly as received, in escaped form (the
// path part of the request-target), and returns the canonical path, also in
// escaped form, that is both matched and forwarded (SPEC.md 3). ok is false
// for a bad path: the client gets 400 and nothing is forwarded.
//
// The canonical form:
//   - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~, RFC 3986
//     2.3) are decoded; every other %XX stays encoded, with upper-case hex
//     (RFC 3986 6.2.2.1). %25 stays %25, so "%252e" is a literal segment and
//     is never decoded twice;
//   - raw bytes that may not appear in a path (space, `"`, `<`, `{`, `#`,
//     bytes >= 0x80, ...) are percent-encoded, so the result only holds
//     unreserved characters, sub-delims, ':', '@', '/' and %XX;
//   - "." and ".." segments are resolved, also when spelled %2e; a ".."
//     that would climb above the root is bad;
//   - repeated slashes are merged; a trailing slash is kept.
//
// Bad, raw or percent-encoded: '/' inside a segment (%2F), backslash (%5C),
// NUL and every other control character (0x00-0x1F, 0x7F), invalid or
// overlong UTF-8 (checked on the decoded bytes), broken percent-encoding
// (%zz, %4, a trailing %), a segment that starts with ".;" or "..;" (servlet
// containers strip path parameters and then resolve it as a dot segment),
// an empty path, or one that does not start with '/'.
//
// Normalize does not allocate when the input is already canonical (it
// returns the input), nor when the result is a prefix of it.
func Normalize(escaped string) (path string, ok bool) {
	if escaped == "" || escaped[0] != '/' {
		return "", false
	}
	b := lazybuf{s: escaped}
	b.append('/')
	i := 1
	for i < len(escaped) {
		if escaped[i] == '/' { // repeated slash: merge
			i++
			continue
		}
		segStart := b.w
		if b.buf == nil && b.w == i { // output still aligned with the input
			for i < len(escaped) && plain[escaped[i]] {
				i++
			}
			b.w = i
		}
		for i < len(escaped) && escaped[i] != '/' {
			if c := escaped[i]; plain[c] {
				b.append(c)
				i++
				continue
			}
			n, good := b.appendElem(escaped, i)
			if !good {
				return "", false
			}
			i = n
		}
		switch b.segKind(segStart) {
		case segDot:
			b.w = segStart
		case segDotDot:
			if segStart == 1 { // ".." at the root
				return "", false
			}
			// Drop the previous segment: back up to just after the slash
			// before it. The output always starts with '/', so one is found.
			j := segStart - 2
			for b.index(j) != '/' {
				j--
			}
			b.w = j + 1
		case segDotParam:
			return "", false
		default:
			if i < len(escaped) { // a slash follows
				b.append('/')
			}
		}
	}
	return b.string(), true
}

const (
	segOther = iota
	segDot
	segDotDot
	segDotParam
)

// segKind classifies the canonical segment written since start: ".", "..",
// or one that starts with ".;" or "..;" (the ';' raw or as %3B). Servlet
// containers such as Tomcat strip the ";params" of a segment and then treat
// it as a dot segment, so "/admin/..;/x" would reach the app as "/x" while a
// proxy matched "/admin/..;/x": such paths are bad.
func (b *lazybuf) segKind(start int) int {
	n := b.w - start
	dots := 0
	for dots < n && dots < 2 && b.index(start+dots) == '.' {
		dots++
	}
	switch {
	case dots == 0:
		return segOther
	case dots == n:
		return dots // segDot or segDotDot
	case b.index(start+dots) == ';':
		return segDotParam
	case n-dots >= 3 && b.index(start+dots) == '%' && b.index(start+dots+1) == '3' && b.index(start+dots+2) == 'B':
		return segDotParam
	}
	return segOther
}

// appendElem appends the canonical form of the path element (one raw byte or
// one %XX, or a whole UTF-8 sequence made of either) starting at s[i], and
// returns the index after it. good is false for a bad path.
func (b *lazybuf) appendElem(s string, i int) (next int, good bool) {
	c, enc, n, good := readByte(s, i)
	if !good {
		return 0, false
	}
	switch {
	case c < 0x20 || c == 0x7f || c == '\\':
		return 0, false
	case c == '/': // only reachable as %2F: a slash inside a segment
		return 0, false
	case c >= 0x80:
		return b.appendUTF8(s, i)
	case unreserved(c):
		b.append(c)
	case enc:
		b.appendEscaped(c)
	case rawOK(c):
		b.append(c)
	default: // a raw byte that has no place in a path: encode it
		b.appendEscaped(c)
	}
	return n, true
}

// appendUTF8 reads one UTF-8 sequence whose bytes are each raw or %XX,
// checks it (overlong forms, surrogates and values past U+10FFFF are
// invalid, as utf8.DecodeRune says) and appends it percent-encoded.
func (b *lazybuf) appendUTF8(s string, i int) (next int, good bool) {
	var seq [utf8.UTFMax]byte
	lead, _, n, _ := readByte(s, i)
	var size int
	switch {
	case lead >= 0xC2 && lead <= 0xDF:
		size = 2
	case lead >= 0xE0 && lead <= 0xEF:
		size = 3
	case lead >= 0xF0 && lead <= 0xF4:
		size = 4
	default: // continuation byte without a lead, C0/C1 (always overlong), F5-FF
		return 0, false
	}
	seq[0] = lead
	for k := 1; k < size; k++ {
		if n >= len(s) {
			return 0, false
		}
		c, _, m, ok := readByte(s, n)
		if !ok {
			return 0, false
		}
		seq[k] = c
		n = m
	}
	if _, got := utf8.DecodeRune(seq[:size]); got != size {
		return 0, false
	}
	for _, c := range seq[:size] {
		b.appendEscaped(c)
	}
	return n, true
}

// readByte decodes the byte at s[i]: a raw byte or a %XX escape. enc tells
// which; good is false for broken percent-encoding.
func readByte(s string, i int) (c byte, enc bool, next int, good bool) {
	if s[i] != '%' {
		return s[i], false, i + 1, true
	}
	if i+2 >= len(s) {
		return 0, false, 0, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	if !ok1 || !ok2 {
		return 0, false, 0, false
	}
	return hi<<4 | lo, true, i + 3, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unreserved is RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// plain marks the bytes that stand for themselves in a canonical path
// segment: unreserved characters and rawOK ones.
var plain = func() (t [256]bool) {
	for c := range 256 {
		t[c] = unreserved(byte(c)) || rawOK(byte(c))
	}
	return t
}()

// rawOK reports whether c may stand unencoded in a path besides the
// unreserved characters: sub-delims, ':' and '@' (RFC 3986 3.3 pchar).
func rawOK(c byte) bool {
	return strings.IndexByte("!$&'()*+,;=:@", c) >= 0
}

// lazybuf builds the output only once it differs from the input, so a
// canonical path costs no allocation (the idea of path.Clean's lazybuf).
// While buf is nil, the output is s[:w].
type lazybuf struct {
	s   string
	buf []byte
	w   int
}

func (b *lazybuf) index(i int) byte {
	if b.buf != nil {
		return b.buf[i]
	}
	return b.s[i]
}

func (b *lazybuf) append(c byte) {
	if b.buf == nil && b.w < len(b.s) && b.s[b.w] == c {
		b.w++ // still the input's prefix: the common case, kept inlinable
		return
	}
	b.appendSlow(c)
}

func (b *lazybuf) appendSlow(c byte) {
	if b.buf == nil {
		b.buf = make([]byte, b.w, len(b.s)+8)
		copy(b.buf, b.s[:b.w])
	}
	b.buf = append(b.buf[:b.w], c)
	b.w++
}

const upperHex = "0123456789ABCDEF"

func (b *lazybuf) appendEscaped(c byte) {
	b.append('%')
	b.append(upperHex[c>>4])
	b.append(upperHex[c&15])
}

func (b *lazybuf) string() string {
	if b.buf == nil {
		return b.s[:b.w]
	}
	// The buffer is never written again: hand it over without a copy, as
	// strings.Builder does.
	return unsafe.String(unsafe.SliceData(b.buf), b.w)
}
