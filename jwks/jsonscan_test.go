package jwks

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// oracleStringList is how roles and scopes were read from encoding/json's
// decoding into any before object: the reference the raw reader must match.
func oracleStringList(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.FieldsFunc(x, func(r rune) bool { return r == ' ' || r == ',' })
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// oracleDuplicates finds a key twice in any object of data from
// encoding/json's token stream, which unescapes keys: the reference for
// parseObject's duplicate scan. data is valid JSON.
func oracleDuplicates(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object bool
		keys   map[string]bool
		atKey  bool // in an object, the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.object {
					top.atKey = true
				}
				stack = append(stack, &frame{object: v == '{', keys: map[string]bool{}, atKey: v == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.object && top.atKey {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.atKey = false
				continue
			}
		}
		if top != nil && top.object {
			top.atKey = true
		}
	}
}

// checkObjectAgainstJSON asserts that object reads data exactly as
// encoding/json's map[string]any does: same members, same values, same
// claim-path lookups, same string and number readings, and duplicate keys
// found exactly where encoding/json's token stream shows them.
func checkObjectAgainstJSON(t *testing.T, data []byte, paths []string) {
	t.Helper()
	if !utf8.Valid(data) || !json.Valid(data) {
		return
	}
	var m map[string]any
	mapErr := json.Unmarshal(data, &m)
	o, isObj, dup := parseObject(data, nil)
	if want := oracleDuplicates(data); dup != want {
		t.Fatalf("%s: parseObject dup %v, encoding/json's tokens say %v", data, dup, want)
	}
	if dup {
		return
	}
	if isObj != (mapErr == nil && m != nil) {
		// A number beyond float64 fails the map decode of an object: object
		// then still splits it, and the reader of that value refuses it.
		if !(isObj && mapErr != nil && strings.Contains(mapErr.Error(), "number")) {
			t.Fatalf("%s: isObj %v, but encoding/json: map %v, err %v", data, isObj, m, mapErr)
		}
		return
	}
	if !isObj {
		return
	}
	if len(o) != len(m) {
		t.Fatalf("%s: %d members, encoding/json %d", data, len(o), len(m))
	}
	for _, mem := range o {
		want, ok := m[string(mem.name)]
		if !ok {
			t.Fatalf("%s: member %q not in encoding/json's map", data, mem.name)
		}
		got, ok := rawValue(mem.raw)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: member %q = %#v (%v), encoding/json %#v", data, mem.name, got, ok, want)
		}
		s, sok := rawString(mem.raw)
		ws, wsok := want.(string)
		if sok != wsok || s != ws {
			t.Fatalf("%s: rawString(%s) = %q, %v; want %q, %v", data, mem.raw, s, sok, ws, wsok)
		}
		f, fok := rawNumber(mem.raw)
		wf, wfok := want.(float64)
		if fok != wfok || f != wf {
			t.Fatalf("%s: rawNumber(%s) = %v, %v; want %v, %v", data, mem.raw, f, fok, wf, wfok)
		}
		if got, want := stringList(mem.raw), oracleStringList(want); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: stringList(%s) = %#v, want %#v", data, mem.raw, got, want)
		}
		for _, allowed := range [][]string{{"api"}, {"x", "y"}, {""}} {
			wantAud := false
			switch a := want.(type) {
			case string:
				wantAud = slices.Contains(allowed, a)
			case []any:
				for _, e := range a {
					if s, ok := e.(string); ok && slices.Contains(allowed, s) {
						wantAud = true
					}
				}
			}
			if got := audienceOK(mem.raw, allowed); got != wantAud {
				t.Fatalf("%s: audienceOK(%s, %q) = %v, want %v", data, mem.raw, allowed, got, wantAud)
			}
		}
		paths = append(paths, string(mem.name))
	}
	for _, p := range paths {
		want, wok := (&Result{claims: m}).Claim(p)
		raw, ok := o.lookup(p)
		if ok != wok {
			t.Fatalf("%s: lookup(%q) found %v, encoding/json %v", data, p, ok, wok)
		}
		if !ok {
			continue
		}
		if got, _ := rawValue(raw); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: lookup(%q) = %#v, encoding/json %#v", data, p, got, want)
		}
	}
}

func TestObjectAgainstJSON(t *testing.T) {
	for _, in := range objectSeeds {
		t.Run(in, func(t *testing.T) { checkObjectAgainstJSON(t, []byte(in), objectPaths) })
	}
}

var objectSeeds = []string{
	`{}`, ` { } `, `[]`, `null`, `"s"`, `1`,
	`{"iss":"https://idp.example","sub":"u-1","aud":["x","api"],"exp":1.7e9,"iat":1700000000,"roles":"a, b"}`,
	`{"a":{"b":{"c":[1,"2",{"d":null}]}},"a.b":"exact"}`,
	`{"\u0069ss":"x","s\"ub":"q\\u0041","t":"\ud800","n":-0.5e-3,"z":true,"f":false,"nil":null}`,
	`{"realm_access":{"roles":["admin","\u0075ser"]},"scope":"read write,admin"}`,
	`{"a":1,"\u0061":2}`, `{"a":[{"x":1,"x":2}]}`, `{"k":1e400}`, `{"k":[1e400]}`,
	"{\"a\"\t:\n[ 1 ,\r\"b\" ] , \"c\" : { } }",
	`{"aud":"api","x":["api"],"y":[["api"]],"e":"","arr":[]}`,
}

var objectPaths = []string{"a.b", "a.b.c", "a.x", "realm_access.roles", "missing", "missing.deep", "", ".", "a..b", "s\"ub"}

// FuzzObject: for any valid JSON, the raw reader agrees with encoding/json.
func FuzzObject(f *testing.F) {
	for _, s := range objectSeeds {
		f.Add(s, "a.b")
	}
	f.Fuzz(func(t *testing.T, data, path string) {
		checkObjectAgainstJSON(t, []byte(data), []string{path})
	})
}
