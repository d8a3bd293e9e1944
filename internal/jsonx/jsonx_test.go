package jsonx

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"plain", "/api/orders/42", `"/api/orders/42"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"short escapes", "\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"other controls", "\x00\x1f", `"\u0000\u001f"`},
		{"DEL is not escaped", "\x7f", "\"\x7f\""},
		{"html", "<a&b>", `"\u003ca\u0026b\u003e"`},
		{"line separators", "a\u2028b\u2029", `"a\u2028b\u2029"`},
		{"non-ASCII kept", "é€😀", `"é€😀"`},
		{"invalid UTF-8", "a\xffb\xc3", "\"a\ufffdb\ufffd\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendString([]byte("x"), tt.in)); got != "x"+tt.want {
				t.Errorf("AppendString(%q) = %s, want x%s", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzAppendString holds AppendString to encoding/json's output, byte for
// byte.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\\n\t\x00\b\f\x7f", "é\u2028\u2029\xff\xfe", "<>&", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendString(nil, s)
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q) = %s, encoding/json %s", s, got, want)
		}
	})
}

var benchStrings = []string{
	"/api/orders/42",                         // the common case: nothing to escape
	"gatehouse.auth.deny",                    // short
	"/search?q=<script>&x=\"y\"\n",           // escapes
	"/caf\u00e9/\u2028/\xff" + "/more/path/", // non-ASCII, separator, invalid UTF-8
}

// BenchmarkAppendString is the escaper against encoding/json on the same
// strings; the package comment cites it.
func BenchmarkAppendString(b *testing.B) {
	b.Run("jsonx", func(b *testing.B) {
		buf := make([]byte, 0, 256)
		b.ReportAllocs()
		for b.Loop() {
			for _, s := range benchStrings {
				buf = AppendString(buf[:0], s)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		buf := make([]byte, 0, 256)
		b.ReportAllocs()
		for b.Loop() {
			for _, s := range benchStrings {
				q, _ := json.Marshal(s)
				buf = append(buf[:0], q...)
			}
		}
	})
}
