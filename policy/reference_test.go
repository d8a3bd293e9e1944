package policy

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// referenceMatch is nginx's order written the plain way: a linear scan with
// no map, tree or regex prefilter. Engine.Match must agree with it.
func referenceMatch(e *Engine, method, path string) *Route {
	var best *Route
	for _, r := range e.routes[:len(e.routes)-1] {
		if !r.admits(method) {
			continue
		}
		switch r.kind {
		case kindExact:
			if path == r.value {
				return r
			}
		case kindPrefix, kindPrefixStop:
			if strings.HasPrefix(path, r.value) && (best == nil || len(r.value) > len(best.value)) {
				best = r
			}
		}
	}
	if best != nil && best.kind == kindPrefixStop {
		return best
	}
	for _, r := range e.routes {
		if (r.kind == kindRegex || r.kind == kindRegexFold) && r.admits(method) && r.re.MatchString(path) {
			return r
		}
	}
	if best != nil {
		return best
	}
	return e.def
}

func TestMatchAgainstReference(t *testing.T) {
	methods := []string{"GET", "HEAD", "POST", "DELETE"}
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		locs := generateLocations(rng, 5+rng.IntN(200))
		var doc strings.Builder
		doc.WriteString("routes:\n")
		for i, l := range locs {
			doc.WriteString("  - location: " + quoteYAML(l) + "\n")
			// Some routes get methods; a same location twice would
			// overlap, generateLocations already made them distinct.
			if i%3 == 0 {
				doc.WriteString("    methods: [" + methods[rng.IntN(len(methods))] + "]\n")
			}
		}
		e := load(t, doc.String())
		for range 3000 {
			p, ok := Normalize(generatePath(rng, locs))
			if !ok {
				continue
			}
			m := methods[rng.IntN(len(methods))]
			if got, want := e.Match(m, p), referenceMatch(e, m, p); got != want {
				t.Fatalf("seed %d: Match(%s, %q) = %q, reference %q", seed, m, p, got.Name, want.Name)
			}
		}
	}
}

func quoteYAML(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func TestAnchoredLiterals(t *testing.T) {
	for _, tt := range []struct {
		expr    string
		pre     string
		preFold bool
		suf     string
		sufFold bool
	}{
		{"^/admin(/|$)", "/admin", false, "", false},
		{"^/admin", "/admin", false, "", false},
		{"^/admin$", "/admin", false, "/admin", false},
		{"(?i)^/admin/", "/ADMIN/", true, "", false},
		{"(?i)^/static/", "", false, "", false}, // 's' folds with U+017F
		{"(?i)^/kit", "", false, "", false},     // 'k' folds with U+212A
		{`\.php$`, "", false, ".php", false},
		{`(?i)\.php$`, "", false, ".PHP", true},
		{`\.(gif|jpg)$`, "", false, "", false},
		{"/admin", "", false, "", false},
		{"^(/admin|/root)", "", false, "", false},
		{"^/a*", "/", false, "", false},
		{"^/caf\u00e9", "", false, "", false},
		{"^/x/(?i:abc)$", "/x/", false, "ABC", true},
	} {
		t.Run(tt.expr, func(t *testing.T) {
			pre, preFold, suf, sufFold := anchoredLiterals(tt.expr)
			if pre != tt.pre || preFold != tt.preFold || suf != tt.suf || sufFold != tt.sufFold {
				t.Fatalf("anchoredLiterals(%q) = %q %v %q %v, want %q %v %q %v", tt.expr, pre, preFold, suf, sufFold, tt.pre, tt.preFold, tt.suf, tt.sufFold)
			}
		})
	}
}
