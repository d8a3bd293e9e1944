package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

var update = flag.Bool("update", false, "rewrite testdata/config/*.golden from the current output")

// TestDecodeGolden decodes every testdata/config/NAME.yaml and compares
// every error, as `gatehouse -t` prints them, with NAME.golden.
func TestDecodeGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/config/*.yaml: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			e, err := decodeDoc(filepath.Base(file), data)
			if err != nil {
				got = err.Error() + "\n"
			} else if e == nil {
				t.Fatal("no engine and no error")
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -run TestDecodeGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("errors of %s:\n%s\nwant:\n%s", file, got, want)
			}
		})
	}
}

// TestDecodeOtherSectionErrors: errors recorded by other sections before
// Decode do not make it fail; its own errors do, and are all kept.
func TestDecodeOtherSectionErrors(t *testing.T) {
	d := yamlpos.NewDecoder("x.yaml")
	root := d.Parse([]byte("listen: 1\nroutes:\n  - location: /a/\n"))
	d.Errorf(root, "some other section's error")
	m := d.Map(root)
	if e := Decode(d, m.Get("paths"), m.Get("routes"), m.Get("default")); e == nil {
		t.Fatal("Decode = nil for valid routes after another section's error")
	}
	root = d.Parse([]byte("routes:\n  - location: a\n  - location: b\n"))
	m = d.Map(root)
	if e := Decode(d, m.Get("paths"), m.Get("routes"), m.Get("default")); e != nil {
		t.Fatal("Decode returned an engine for invalid routes")
	}
	if n := len(yamlpos.Errors(d.Err())); n != 3 {
		t.Fatalf("%d errors recorded, want 3:\n%v", n, d.Err())
	}
}

func TestDecodeDefault(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		deny      bool
		auth      Auth
	}{
		{"absent", "routes: []\n", true, AuthRequired},
		{"null", "default:\n", true, AuthRequired},
		{"deny", "default: deny\n", true, AuthRequired},
		{"route body", "default: { auth: optional }\n", false, AuthOptional},
		{"empty body", "default: {}\n", false, AuthRequired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := load(t, tt.doc)
			r := e.Default()
			if r.Name != "default" || r.deny != tt.deny || r.Auth != tt.auth {
				t.Fatalf("default route = {%q deny=%v %v}, want {default deny=%v %v}", r.Name, r.deny, r.Auth, tt.deny, tt.auth)
			}
		})
	}
}

// FuzzDecode: any document decodes without a panic, and Decode returns an
// engine exactly when it recorded no error.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(specExample))
	f.Add([]byte(nginxDocExample))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := yamlpos.NewDecoder("fuzz.yaml")
		root := d.Parse(data)
		if root == nil {
			return
		}
		m := d.Map(root)
		before := d.Failed()
		e := Decode(d, m.Get("paths"), m.Get("routes"), m.Get("default"))
		if before {
			return
		}
		if (e == nil) != d.Failed() {
			t.Fatalf("Decode = %v with errors %v", e != nil, d.Err())
		}
		if e != nil {
			for _, p := range []string{"/", "/admin", "/api/orders/1"} {
				got, want := e.Match("GET", p), referenceMatch(e, "GET", p)
				if got != want {
					t.Fatalf("Match(GET, %q) = %q, reference %q", p, got.Name, want.Name)
				}
				got.Decide(nil)
			}
		}
	})
}

// TestCheckUpstream: the one upstream validator, for the global upstream
// (proxy) and per-route ones alike.
func TestCheckUpstream(t *testing.T) {
	tests := []struct {
		raw  string
		want string // "" when valid; else a part of the error
	}{
		{"http://127.0.0.1:3000", ""},
		{"https://app.internal/base", ""},
		{"http://[::1]:8080", ""},
		{"unix:///run/app.sock", ""},
		{"http://127.0.0.1:0", `bad port "0"`},
		{"http://127.0.0.1:65536", `bad port "65536"`},
		{"http://127.0.0.1:", "empty port"},
		{"http://user:pw@app", "credentials"},
		{"http://app/?q=1", "no query or fragment"},
		{"http://app/#f", "no query or fragment"},
		{"http:///x", "no host"},
		{"ftp://x", "want http://"},
		{"unix://host/x.sock", "no host"},
		{"unix:///run/", "absolute socket path"},
		{"unix:relative.sock", "absolute socket path"},
		{"::", "want http://"},
	}
	for _, tt := range tests {
		err := CheckUpstream(tt.raw)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckUpstream(%q) = %v, want nil", tt.raw, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckUpstream(%q) = %v, want an error containing %q", tt.raw, err, tt.want)
		}
	}
}
