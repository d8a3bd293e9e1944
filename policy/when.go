package policy

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/policy/expr"
)

// Request is what a route's `when` condition reads of a request (SPEC.md
// 13). The caller fills Method, Path, Host, Header and RawQuery, and
// ClientIP and Now when the route's condition needs them
// (Route.When().Needs()); Claims is set by Decide from the subject.
type Request = expr.Input

// When returns the route's compiled `when` condition, nil when it has none.
func (r *Route) When() *expr.Program { return r.when }

// decodeWhen compiles the `when` expression of n. Each compile error is
// reported at the file position of the character it is about.
func decodeWhen(d *yamlpos.Decoder, n *yaml.Node, r *Route) bool {
	var src string
	if !d.String(n, &src) {
		return false
	}
	if strings.TrimSpace(src) == "" {
		d.Errorf(n, "when must not be empty (leave it out instead)")
		return false
	}
	p, errs := expr.Compile(src, r.re)
	for _, e := range errs {
		line, col := exprPos(d.Source, n, src, e.Line, e.Col)
		d.Add(yamlpos.Errorf(yamlpos.Pos{File: d.File, Line: line, Col: col}, "when: %s", e.Msg))
	}
	if len(errs) > 0 {
		return false
	}
	r.when = p
	return true
}

// exprPos maps a place inside the expression (line 1-based, col 0-based in
// runes, as CEL reports it) to the file. Exact for the forms expressions are
// written in: a plain or quoted scalar on one line, and a literal block
// (`|`). Elsewhere (a plain or quoted scalar folded over several lines, a
// folded block `>`) the expression's text no longer lines up with the file:
// the error is put at the line the expression's own line would start on.
func exprPos(src []byte, n *yaml.Node, value string, line, col int) (int, int) {
	lines := strings.Split(value, "\n")
	if line < 1 || line > len(lines) {
		return n.Line, n.Column
	}
	runes := []rune(lines[line-1])
	col = min(col, len(runes))
	switch n.Style {
	case 0, yaml.TaggedStyle:
		if len(lines) == 1 && sameLine(src, n, value) {
			return n.Line, n.Column + col
		}
	case yaml.SingleQuotedStyle:
		if len(lines) == 1 {
			// '' stands for one '
			return n.Line, n.Column + 1 + col + strings.Count(string(runes[:col]), "'")
		}
	case yaml.DoubleQuotedStyle:
		if len(lines) == 1 {
			w := 0
			for _, c := range runes[:col] {
				w += escapedWidth(c)
			}
			return n.Line, n.Column + 1 + w
		}
	case yaml.LiteralStyle:
		// The content starts on the line after the indicator, at the
		// indentation of its first non-empty line.
		return n.Line + line, blockIndent(src, n.Line) + 1 + col
	}
	if line > 1 {
		return n.Line + line - 1, 1
	}
	return n.Line, n.Column
}

// sameLine reports whether a plain scalar is written on one line as is
// (yaml folds a plain scalar over several lines into one).
func sameLine(src []byte, n *yaml.Node, value string) bool {
	l := lineOf(src, n.Line)
	if l == nil {
		return true // no source: assume so
	}
	i := 0
	for c := 1; c < n.Column && i < len(l); c++ { // columns count runes
		_, size := utf8.DecodeRune(l[i:])
		i += size
	}
	return bytes.HasPrefix(l[i:], []byte(value))
}

// lineOf returns line n (1-based) of src, nil when out of range.
func lineOf(src []byte, n int) []byte {
	if src == nil {
		return nil
	}
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(src, '\n')
		if j < 0 {
			return nil
		}
		src = src[j+1:]
	}
	if j := bytes.IndexByte(src, '\n'); j >= 0 {
		src = src[:j]
	}
	return src
}

// blockIndent is the indentation of the first non-empty line after the
// block indicator on line ind.
func blockIndent(src []byte, ind int) int {
	for n := ind + 1; ; n++ {
		l := lineOf(src, n)
		if l == nil {
			return 0
		}
		if t := bytes.TrimLeft(l, " "); len(t) > 0 {
			return len(l) - len(t)
		}
	}
}

// escapedWidth is how many characters c takes inside a double-quoted YAML
// scalar when written the usual way.
func escapedWidth(c rune) int {
	switch {
	case c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == 0:
		return 2
	case c < 0x20 || c == 0x7f:
		return 4 // \xXX
	}
	return 1
}

// evalWhen evaluates the route's condition for s and req (nil req: an empty
// request). It reports false, with the error, when the condition cannot be
// evaluated: the caller denies.
func (r *Route) evalWhen(s *Subject, req *Request) (bool, error) {
	var in Request
	if req != nil {
		in = *req
	}
	in.Claims = nil
	if s != nil && s.Claims != nil {
		in.Claims = s.Claims
	}
	return r.when.Eval(&in)
}
