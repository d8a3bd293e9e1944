package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchEngine builds n routes: with mixed, a fifth exact, a fifth ^~ prefix,
// two fifths plain prefix and a fifth regex (alternating anchored ones such
// as ^/reN/[0-9]+$ and unanchored ones such as \.extN$ that every request
// falling through to the regexes must try); without mixed, n plain prefixes.
// It returns request paths that hit each kind and miss.
//
// paths, when not "", is the global `paths` value (e.g. "{ preset: express }"):
// the same table then matches case-insensitively or ignoring the trailing
// slash, and the sample paths are spelled in upper case.
func benchEngine(b *testing.B, n int, mixed bool, pathsValue string) (*Engine, []string) {
	var doc strings.Builder
	if pathsValue != "" {
		fmt.Fprintf(&doc, "paths: %s\n", pathsValue)
	}
	doc.WriteString("routes:\n")
	var paths []string
	for i := range n {
		var loc string
		switch k := i % 5; {
		case !mixed || k == 1 || k == 2:
			loc = fmt.Sprintf("/svc%d/v1/", i)
			paths = append(paths, fmt.Sprintf("/svc%d/v1/items/42", i))
		case k == 0:
			loc = fmt.Sprintf("= /svc%d/health", i)
			paths = append(paths, fmt.Sprintf("/svc%d/health", i))
		case k == 3:
			loc = fmt.Sprintf("^~ /svc%d/static/", i)
			paths = append(paths, fmt.Sprintf("/svc%d/static/app.js", i))
		case k == 4 && i%10 == 4:
			loc = fmt.Sprintf(`~ ^/re%d/[0-9]+$`, i)
			paths = append(paths, fmt.Sprintf("/re%d/123", i))
		default:
			loc = fmt.Sprintf(`~* \.ext%d$`, i)
			paths = append(paths, fmt.Sprintf("/files/a.EXT%d", i))
		}
		fmt.Fprintf(&doc, "  - location: %s\n", quoteYAML(loc))
	}
	paths = append(paths, "/nothing/here", "/svc1/other")
	fold := strings.Contains(pathsValue, "express")
	e := load(b, doc.String())
	// A fixed pseudo-random sample of 64 paths over the whole table, so
	// every kind of route is hit in its share.
	rng := rand.New(rand.NewPCG(uint64(n), 5))
	sample := make([]string, 64)
	for i := range sample {
		sample[i] = paths[rng.IntN(len(paths))]
		if fold {
			sample[i] = strings.ToUpper(sample[i])
		}
	}
	return e, sample
}

func BenchmarkMatch(b *testing.B) {
	for _, bc := range []struct {
		name  string
		n     int
		mixed bool
		paths string
	}{
		{"mixed-10", 10, true, ""},
		{"mixed-100", 100, true, ""},
		{"mixed-1000", 1000, true, ""},
		{"prefix-100", 100, false, ""},
		{"prefix-1000", 1000, false, ""},
		{"express-mixed-100", 100, true, "{ preset: express }"},
		{"express-prefix-1000", 1000, false, "{ preset: express }"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, paths := benchEngine(b, bc.n, bc.mixed, bc.paths)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				e.Match("GET", paths[i%len(paths)])
				i++
			}
		})
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"canonical", "/api/orders/42/items/7"},
		{"canonical-escaped", "/files/caf%C3%A9/a%20b.txt"},
		{"dot-segments", "/api/./orders/../orders//42/"},
		{"decode", "/%61pi/%6Frders/%7euser/a%3fb"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Normalize(bc.path)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	e := load(b, decideConfig)
	s := &Subject{Roles: []string{"user", "admin"}, Scopes: []string{"x", "orders:read"}, Claims: claimMap{"tenant": "acme"}}
	for _, path := range []string{"/mixed", "/all", "/public"} {
		r := e.Match("GET", path)
		b.Run(strings.TrimPrefix(path, "/"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Decide(s)
			}
		})
	}
}

// BenchmarkRequest is the policy part of one request: normalise, match,
// decide.
func BenchmarkRequest(b *testing.B) {
	e := load(b, specExample)
	s := &Subject{Roles: []string{"user"}}
	b.ReportAllocs()
	for b.Loop() {
		p, _ := Normalize("/api/orders/42")
		e.Match("GET", p).Decide(s)
	}
}
