package claimpath

import (
	"encoding/json"
	"reflect"
	"testing"
)

const claimsJSON = `{
	"sub": "u1",
	"https://example.com/roles": ["a"],
	"realm_access": {"roles": ["admin"], "deep": {"x": 1}},
	"a.b": "dotted top-level",
	"a": {"b": "nested"},
	"s": "not an object"
}`

func TestInMap(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal([]byte(claimsJSON), &m); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       any
		ok         bool
	}{
		{"top", "sub", "u1", true},
		{"top name with dots and slashes", "https://example.com/roles", []any{"a"}, true},
		{"descend", "realm_access.roles", []any{"admin"}, true},
		{"descend twice", "realm_access.deep.x", 1.0, true},
		{"exact top-level wins over descent", "a.b", "dotted top-level", true},
		{"missing top", "nope", nil, false},
		{"missing member", "realm_access.nope", nil, false},
		{"through a non-object", "s.x", nil, false},
		{"past a leaf", "realm_access.roles.x", nil, false},
		{"empty path", "", nil, false},
		{"trailing dot", "realm_access.", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := InMap(m, tt.path)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("InMap(%q) = %v, %v, want %v, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRoot(t *testing.T) {
	has := func(n string) bool { return n == "a.b" || n == "realm_access" }
	tests := []struct{ path, want string }{
		{"a.b", "a.b"},
		{"realm_access.roles", "realm_access"},
		{"sub", "sub"},
		{"x.y.z", "x"},
	}
	for _, tt := range tests {
		if got := Root(tt.path, has); got != tt.want {
			t.Errorf("Root(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestInMapDoesNotAllocate(t *testing.T) {
	m := map[string]any{"realm_access": map[string]any{"roles": []any{"admin"}}}
	if n := testing.AllocsPerRun(100, func() { InMap(m, "realm_access.roles") }); n != 0 {
		t.Errorf("InMap allocates %v times, want 0", n)
	}
}
