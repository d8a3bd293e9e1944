// Package yamlpos owns position-carrying configuration errors and the strict
// walk over a yaml.v3 node tree that every config section uses: unknown keys,
// duplicate keys and merge keys (<<) are errors, and every error carries the
// FILE:LINE:COL of the node it is about. It is a leaf package: yaml.v3 and the
// standard library only.
package yamlpos

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Pos is a place in a config file. The zero Pos means "the file as a whole".
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	line, col := p.Line, p.Col
	if line == 0 {
		line, col = 1, 1
	}
	return fmt.Sprintf("%s:%d:%d", p.File, line, col)
}

// Error is one configuration error at a position.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errorf makes an *Error at pos.
func Errorf(pos Pos, format string, args ...any) *Error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// List is every error found in one file, sorted by position. Its Error is
// one `FILE:LINE:COL: message` per line, the format `gatehouse -t` prints.
type List []*Error

func (l List) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Errors returns the individual errors of err: the elements of a List, an
// *Error alone, or any other error as one element without a position.
func Errors(err error) []error {
	if err == nil {
		return nil
	}
	var l List
	if errors.As(err, &l) {
		out := make([]error, len(l))
		for i, e := range l {
			out[i] = e
		}
		return out
	}
	return []error{err}
}

// Decoder walks one file's node tree and collects errors instead of stopping
// at the first, so that `gatehouse -t` can report them all at once.
type Decoder struct {
	File string
	// Source is the text Parse read: a value with a syntax of its own (a
	// `when` expression) maps positions inside it back to the file.
	Source []byte
	errs   List
}

// NewDecoder returns a decoder for file (the name used in error positions).
func NewDecoder(file string) *Decoder { return &Decoder{File: file} }

// Pos is the position of n in the decoder's file.
func (d *Decoder) Pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: d.File}
	}
	return Pos{File: d.File, Line: n.Line, Col: n.Column}
}

// Errorf records an error at n's position (the file as a whole when n is nil).
func (d *Decoder) Errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, Errorf(d.Pos(n), format, args...))
}

// Add records an error that already has a position.
func (d *Decoder) Add(e *Error) { d.errs = append(d.errs, e) }

// Failed reports whether any error has been recorded.
func (d *Decoder) Failed() bool { return len(d.errs) > 0 }

// Err returns every recorded error as a List sorted by position, or nil.
func (d *Decoder) Err() error {
	if len(d.errs) == 0 {
		return nil
	}
	l := slices.Clone(d.errs)
	slices.SortStableFunc(l, func(a, b *Error) int {
		if c := a.Pos.Line - b.Pos.Line; c != 0 {
			return c
		}
		return a.Pos.Col - b.Pos.Col
	})
	return l
}

// yamlLine finds the line yaml.v3 puts in its syntax errors ("yaml: line 7: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses data as one YAML document and returns its root node (nil for
// an empty document). A syntax error is recorded at FILE:LINE:1, since yaml.v3
// reports only the line.
func (d *Decoder) Parse(data []byte) *yaml.Node {
	d.Source = data
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 1
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		d.Add(&Error{Pos: Pos{File: d.File, Line: line, Col: 1}, Msg: "syntax error: " + msg})
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return resolve(doc.Content[0])
}

// ParseFile reads and parses file.
func ParseFile(file string) (*Decoder, *yaml.Node) {
	d := NewDecoder(file)
	data, err := os.ReadFile(file)
	if err != nil {
		d.Add(&Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("read config: %v", errors.Unwrap(err))})
		return d, nil
	}
	return d, d.Parse(data)
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is absent or an explicit YAML null (`key:` or `~`).
func IsNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// Map is a mapping node whose keys were checked against a known set.
type Map struct {
	Node   *yaml.Node // the mapping itself, for "missing key" errors
	keys   []string
	values []*yaml.Node
}

// Map checks that n is a mapping whose keys are all in known, each given
// once, with no merge key, and returns it. A nil or null n is an empty
// mapping (the section was left out). A wrong kind is recorded and yields an
// empty Map.
func (d *Decoder) Map(n *yaml.Node, known ...string) Map {
	n = resolve(n)
	if IsNull(n) {
		return Map{Node: n}
	}
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "expected a mapping, got %s", kindName(n))
		return Map{Node: n}
	}
	m := Map{Node: n}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.Errorf(k, "mapping keys must be plain strings")
			continue
		}
		switch {
		case k.Tag == "!!merge" || k.Value == "<<":
			d.Errorf(k, "merge keys (<<) are not supported")
			continue
		case slices.Contains(m.keys, k.Value):
			d.Errorf(k, "key %q given twice", k.Value)
			continue
		case known != nil && !slices.Contains(known, k.Value):
			d.Errorf(k, "unknown key %q", k.Value)
			continue
		}
		m.keys = append(m.keys, k.Value)
		m.values = append(m.values, resolve(v))
	}
	return m
}

// Entries returns the mapping's keys and values in file order, for maps
// whose keys are data (header names, claim paths) rather than fields.
// Pair the key with KeyNode for its position.
func (m Map) Entries() (keys []string, values []*yaml.Node) { return m.keys, m.values }

// KeyNode returns the node of key k (for errors about the key itself), or nil.
func (m Map) KeyNode(k string) *yaml.Node {
	if m.Node == nil {
		return nil
	}
	for i := 0; i+1 < len(m.Node.Content); i += 2 {
		if m.Node.Content[i].Value == k {
			return m.Node.Content[i]
		}
	}
	return nil
}

// Get returns the value node of key k, or nil when the key is absent.
func (m Map) Get(k string) *yaml.Node {
	if i := slices.Index(m.keys, k); i >= 0 {
		return m.values[i]
	}
	return nil
}

// Has reports whether key k is present with a non-null value.
func (m Map) Has(k string) bool { return !IsNull(m.Get(k)) }

// Require returns the value of k, recording "missing required key" at the
// mapping's position when it is absent or null.
func (d *Decoder) Require(m Map, k string) *yaml.Node {
	v := m.Get(k)
	if IsNull(v) {
		d.Errorf(m.Node, "missing required key %q", k)
		return nil
	}
	return v
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unsupported node"
}

func (d *Decoder) scalar(n *yaml.Node, what string) (string, bool) {
	if IsNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, "expected %s, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// String stores n's value in dst when n is a string scalar. Absent or null
// leaves dst unchanged (the default stays).
func (d *Decoder) String(n *yaml.Node, dst *string) bool {
	v, ok := d.scalar(n, "a string")
	if ok {
		*dst = v
	}
	return ok
}

// Bool stores a YAML boolean.
func (d *Decoder) Bool(n *yaml.Node, dst *bool) bool {
	v, ok := d.scalar(n, "true or false")
	if !ok {
		return false
	}
	if n.Tag != "!!bool" {
		d.Errorf(n, "expected true or false, got %q", v)
		return false
	}
	*dst = v == "true"
	return true
}

// Int stores an integer that must be at least minimum.
func (d *Decoder) Int(n *yaml.Node, minimum int64, dst *int64) bool {
	v, ok := d.scalar(n, "an integer")
	if !ok {
		return false
	}
	i, err := strconv.ParseInt(v, 0, 64)
	if err != nil || n.Tag != "!!int" {
		d.Errorf(n, "expected an integer, got %q", v)
		return false
	}
	if i < minimum {
		d.Errorf(n, "must be at least %d, got %d", minimum, i)
		return false
	}
	*dst = i
	return true
}

// Duration stores a Go duration (`30s`, `15m`) that must not be negative.
func (d *Decoder) Duration(n *yaml.Node, dst *time.Duration) bool {
	v, ok := d.scalar(n, "a duration")
	if !ok {
		return false
	}
	t, err := time.ParseDuration(v)
	if err != nil {
		d.Errorf(n, "invalid duration %q (use Go durations such as 30s or 15m)", v)
		return false
	}
	if t < 0 {
		d.Errorf(n, "duration %q must not be negative", v)
		return false
	}
	*dst = t
	return true
}

// Seq returns the elements of a sequence node (nil when absent or null).
func (d *Decoder) Seq(n *yaml.Node) []*yaml.Node {
	n = resolve(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.Errorf(n, "expected a list, got %s", kindName(n))
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out
}

// Strings stores a list of strings. Absent leaves dst unchanged; an explicit
// empty list `[]` stores an empty, non-nil slice.
func (d *Decoder) Strings(n *yaml.Node, dst *[]string) bool {
	if IsNull(n) {
		return false
	}
	elems := d.Seq(n)
	if elems == nil && resolve(n).Kind != yaml.SequenceNode {
		return false
	}
	out := make([]string, 0, len(elems))
	ok := true
	for _, e := range elems {
		var s string
		if d.String(e, &s) {
			out = append(out, s)
		} else {
			if IsNull(e) {
				d.Errorf(e, "list elements must not be null")
			}
			ok = false
		}
	}
	if ok {
		*dst = out
	}
	return ok
}
