package jwks

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestKeepClaims: the kept claims answer every kept path exactly as the full
// claims do, and hold nothing else.
func TestKeepClaims(t *testing.T) {
	full := map[string]any{
		"sub": "1", "email": "a@b.c", "big": "x",
		"https://example.com/roles": []any{"admin"},
		"realm_access":              map[string]any{"roles": []any{"user"}},
		"a.b":                       "exact wins",
		"a":                         map[string]any{"b": "nested"},
	}
	paths := []string{"sub", "https://example.com/roles", "realm_access.roles", "a.b", "missing", "missing.deep"}
	all := &Result{claims: full}
	payload, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	obj, isObj, dup := parseObject(payload, nil)
	if !isObj || dup {
		t.Fatalf("parseObject(%s) = object %v, duplicate %v", payload, isObj, dup)
	}
	keptClaims, ok := keepClaims(obj, append(paths, "sub"))
	if !ok {
		t.Fatal("keepClaims: a claim did not decode")
	}
	kept := &Result{kept: keptClaims}
	for _, p := range append(paths, "realm_access.roles.x", "sub.x", "email") {
		want, wok := all.Claim(p)
		if p == "email" {
			want, wok = nil, false // not kept
		}
		got, gok := kept.Claim(p)
		if wok != gok || !reflect.DeepEqual(got, want) {
			t.Errorf("Claim(%q) on kept = %v, %v; want %v, %v", p, got, gok, want, wok)
		}
	}
	if len(kept.kept) != 4 {
		t.Errorf("kept %d claims, want 4 (sub once, the roles URL, realm_access, a.b)", len(kept.kept))
	}
	for _, c := range kept.kept {
		if c.name == "email" || c.name == "big" || c.name == "a" {
			t.Errorf("kept %q, which no path reaches", c.name)
		}
	}
}
