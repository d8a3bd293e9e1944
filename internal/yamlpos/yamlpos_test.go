package yamlpos

import (
	"strings"
	"testing"
	"time"
)

func TestMapRejectsUnknownDuplicateAndMergeKeys(t *testing.T) {
	src := "base: &b {a: 1}\n" +
		"top:\n" +
		"  a: 1\n" +
		"  a: 2\n" +
		"  zz: 3\n" +
		"  <<: *b\n"
	d := NewDecoder("c.yaml")
	root := d.Map(d.Parse([]byte(src)), "base", "top")
	d.Map(root.Get("top"), "a")
	want := []string{
		`c.yaml:4:3: key "a" given twice`,
		`c.yaml:5:3: unknown key "zz"`,
		`c.yaml:6:3: merge keys (<<) are not supported`,
	}
	got := strings.Split(d.Err().Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyntaxErrorCarriesLine(t *testing.T) {
	d := NewDecoder("c.yaml")
	if n := d.Parse([]byte("a: 1\nb: [\n")); n != nil {
		t.Fatalf("Parse returned a node for broken YAML")
	}
	err := d.Err()
	if err == nil || !strings.HasPrefix(err.Error(), "c.yaml:") || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("Err() = %v, want a positioned syntax error", err)
	}
}

func TestScalarsAndErrorsSorted(t *testing.T) {
	src := "d: 15m\nn: 7\nb: true\ns: [x, y]\nbad_d: 5 parsecs\nbad_n: -1\nbad_b: yes please\nneg: -3s\n"
	d := NewDecoder("f.yaml")
	m := d.Map(d.Parse([]byte(src)))
	var (
		dur  time.Duration
		n    int64
		b    bool
		list []string
	)
	d.Duration(m.Get("d"), &dur)
	d.Int(m.Get("n"), 0, &n)
	d.Bool(m.Get("b"), &b)
	d.Strings(m.Get("s"), &list)
	if dur != 15*time.Minute || n != 7 || !b || strings.Join(list, ",") != "x,y" {
		t.Fatalf("decoded %v %d %v %q", dur, n, b, list)
	}
	// Recorded out of order on purpose: Err sorts by position.
	d.Bool(m.Get("bad_b"), &b)
	d.Int(m.Get("bad_n"), 0, &n)
	d.Duration(m.Get("bad_d"), &dur)
	d.Duration(m.Get("neg"), &dur)
	d.Require(m, "missing")
	got := d.Err().Error()
	want := strings.Join([]string{
		`f.yaml:1:1: missing required key "missing"`,
		`f.yaml:5:8: invalid duration "5 parsecs" (use Go durations such as 30s or 15m)`,
		`f.yaml:6:8: must be at least 0, got -1`,
		`f.yaml:7:8: expected true or false, got "yes please"`,
		`f.yaml:8:6: duration "-3s" must not be negative`,
	}, "\n")
	if got != want {
		t.Fatalf("Err() =\n%s\nwant\n%s", got, want)
	}
	if len(Errors(d.Err())) != 5 {
		t.Fatalf("Errors() split into %d, want 5", len(Errors(d.Err())))
	}
}

func TestWrongKinds(t *testing.T) {
	d := NewDecoder("k.yaml")
	m := d.Map(d.Parse([]byte("m: [1]\nl: {a: 1}\ns: {a: 1}\n")))
	d.Map(m.Get("m"))
	d.Seq(m.Get("l"))
	var s string
	d.String(m.Get("s"), &s)
	want := "k.yaml:1:4: expected a mapping, got a list\nk.yaml:2:4: expected a list, got a mapping\nk.yaml:3:4: expected a string, got a mapping"
	if got := d.Err().Error(); got != want {
		t.Fatalf("Err() =\n%s\nwant\n%s", got, want)
	}
}
