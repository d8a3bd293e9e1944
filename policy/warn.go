package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Warnings returns what `gatehouse -t` prints (exit 0) and a start or
// reload logs about the config, each already formatted as
// "FILE:LINE:COL: warning: message", sorted by position: a location that
// requires a token and that a differently cased or slashed spelling of
// one of its paths can bypass, by reaching a weaker route (auth none or
// optional, or fewer requirements) or `default`, while the upstream
// serves that spelling as the protected path (SPEC.md 15). nil when there
// is nothing to say. The slice must not be changed.
func (e *Engine) Warnings() []string { return e.warnings }

// bypass is one spelling of a protected path that reaches a weaker route.
type bypass struct {
	path, variant, method string
	fold, slash           bool   // what the spelling changes: letter case, the trailing slash
	to                    *Route // the weaker route it reaches
}

// warnings probes every location that requires a token with spellings of
// its own paths that differ in case or in the trailing slash: a spelling
// that Match sends to a weaker route whose upstream (the same as the
// location's) reads it as the protected path is a bypass. With `paths`
// declared, the reading is the declared one; without it, gatehouse cannot
// know, so it names what an app that folds case or ignores the trailing
// slash (Express, ASP.NET, Rails...) would expose, and says `paths` is
// undeclared, once. Configs where nothing is exposed get no warning, so
// that a warning is always worth reading.
//
// The probes are sample paths of each location: an exact path, a prefix
// and a path under it, and for a regex with a literal start such as
// ^/admin(/|$) that literal with and without a slash and a segment. A
// regex without a literal start is not probed.
func (e *Engine) computeWarnings(file string, routesPos yamlpos.Pos) []string {
	var out []*yamlpos.Error
	undeclared := false
	methods := e.probeMethods()
	for _, l := range e.routes[:len(e.routes)-1] {
		if l.Auth != AuthRequired {
			continue
		}
		bs := e.findBypasses(l, methods)
		if len(bs) == 0 {
			continue
		}
		pos := yamlpos.Pos{File: file, Line: l.line, Col: l.col}
		if sem := bs[0].to.sem; sem.declared {
			b := bs[0]
			out = append(out, yamlpos.Errorf(pos, "warning: location %q can be bypassed: %s %q reaches %s, and its upstream reads that as %q (paths: %s); make this location match it (paths) or add one that does",
				l.Location, b.method, b.variant, describe(b.to, l), b.path, describeSem(sem)))
			continue
		}
		undeclared = true
		var how, what []string
		for _, b := range bs {
			if r := reading(b); !slices.Contains(how, r) {
				how = append(how, r)
			}
			what = append(what, fmt.Sprintf("%s %q reaches %s", b.method, b.variant, describe(b.to, l)))
		}
		out = append(out, yamlpos.Errorf(pos, "warning: location %q is exposed if the upstream reads paths %s: %s; declare paths",
			l.Location, strings.Join(how, " or "), strings.Join(what, ", ")))
	}
	if undeclared {
		out = append(out, yamlpos.Errorf(routesPos, "warning: paths is not declared: gatehouse matches paths case-sensitively with a strict trailing slash, and the locations warned about are exposed if the upstream reads them otherwise; set paths.preset (%s) or paths.case and paths.trailing_slash", presetNames))
	}
	slices.SortStableFunc(out, func(a, b *yamlpos.Error) int {
		if c := a.Pos.Line - b.Pos.Line; c != 0 {
			return c
		}
		return a.Pos.Col - b.Pos.Col
	})
	var lines []string
	for _, w := range out {
		lines = append(lines, w.Error())
	}
	return lines
}

// findBypasses returns the bypasses of l, trying l's methods (or, when it
// admits every method, GET and every method some route names): with
// declared paths the first one; without, the first that changes the case
// and the first that changes only the trailing slash, so the warning names
// both kinds of spelling.
func (e *Engine) findBypasses(l *Route, all []string) []bypass {
	methods := l.methods
	if methods == nil {
		methods = all
	}
	var out []bypass
	var fold, slash bool
	for _, m := range methods {
		for _, s := range l.samples() {
			if e.Match(m, s) != l {
				continue // not a path l decides for m
			}
			for _, v := range variants(s) {
				if v.fold && fold || !v.fold && slash {
					continue
				}
				w := e.Match(m, v.path)
				if w == l || w.deny || w.Upstream != l.Upstream || !weaker(w, l) {
					continue
				}
				sem := w.sem
				if sem.declared && (v.fold && !sem.fold || v.slash && !sem.ignoreSlash) {
					continue // the upstream tells the spellings apart
				}
				out = append(out, bypass{path: s, variant: v.path, method: m, fold: v.fold, slash: v.slash, to: w})
				if sem.declared {
					return out
				}
				fold, slash = fold || v.fold, slash || !v.fold
				if fold && slash {
					return out
				}
			}
		}
	}
	return out
}

// probeMethods is GET and every method some route lists, sorted.
func (e *Engine) probeMethods() []string {
	out := []string{"GET"}
	for _, r := range e.routes {
		for _, m := range r.methods {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// samples returns paths the route's location matches, to probe.
func (r *Route) samples() []string {
	var cands []string
	switch r.kind {
	case kindExact:
		return []string{r.value}
	case kindPrefix, kindPrefixStop:
		sub := r.value + "x"
		if !strings.HasSuffix(r.value, "/") {
			sub = r.value + "/x"
		}
		cands = []string{r.value, sub}
	case kindRegex, kindRegexFold:
		if !strings.HasPrefix(r.rePre, "/") {
			return nil
		}
		p := trimSlash(r.rePre)
		cands = []string{p, p + "/", p + "/x", p + "x"}
	}
	var out []string
	for _, c := range cands {
		if canon, ok := Normalize(c); ok && canon == c && r.matchesPath(c) {
			out = append(out, c)
		}
	}
	return out
}

type variant struct {
	path        string
	fold, slash bool
}

// variants returns the spellings of p that differ in letter case, in the
// trailing slash, or both; each canonical (escapes keep upper-case hex).
func variants(p string) []variant {
	toggled := p + "/"
	if strings.HasSuffix(p, "/") {
		toggled = trimSlash(p)
	}
	var out []variant
	add := func(v string, fold, slash bool) {
		if v == p || v == "" {
			return
		}
		for _, o := range out {
			if o.path == v {
				return
			}
		}
		out = append(out, variant{v, fold, slash})
	}
	for _, c := range []string{mapCase(p, true), mapCase(p, false)} {
		add(c, true, false)
	}
	add(toggled, false, true)
	for _, c := range []string{mapCase(toggled, true), mapCase(toggled, false)} {
		add(c, c != toggled, true)
	}
	return out
}

// mapCase changes the case of the ASCII letters of a canonical path,
// leaving the hex digits of %XX escapes upper case.
func mapCase(p string, upper bool) string {
	b := []byte(p)
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '%':
			i += 2
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// weaker reports whether w asks less of a request than l does: no token
// needed, or a requirement of l missing from w.
func weaker(w, l *Route) bool {
	if w.Auth != AuthRequired {
		return true
	}
	have := w.requirementKeys()
	for _, k := range l.requirementKeys() {
		if !slices.Contains(have, k) {
			return true
		}
	}
	return false
}

// requirementKeys names each requirement of r, configured values included
// (for comparing routes at load, never for output).
func (r *Route) requirementKeys() []string {
	var out []string
	for _, d := range []string{r.roles.anyDetail, r.roles.allDetail, r.scopes.anyDetail, r.scopes.allDetail} {
		if d != "" {
			out = append(out, d)
		}
	}
	for _, c := range r.claims {
		out = append(out, fmt.Sprintf("claim %q %d %q %v %v", c.path, c.kind, c.str, c.num, c.bool))
	}
	return out
}

// describe names w and how it is weaker than l.
func describe(w, l *Route) string {
	what := "location " + fmt.Sprintf("%q", w.Location)
	if w.kind == kindDefault {
		what = "default"
	}
	switch {
	case w.Auth == AuthNone:
		return what + " (auth none)"
	case w.Auth == AuthOptional:
		return what + " (auth optional)"
	case l.hasRequirements() && !w.hasRequirements():
		return what + " (a token without this location's requirements)"
	}
	return what + " (fewer requirements)"
}

func describeSem(s semantics) string {
	c, t := "sensitive", "strict"
	if s.fold {
		c = "insensitive"
	}
	if s.ignoreSlash {
		t = "ignore"
	}
	return "case " + c + ", trailing_slash " + t
}

// reading says which app reading a bypass needs.
func reading(b bypass) string {
	switch {
	case b.fold && b.slash:
		return "case-insensitively and ignoring a trailing slash"
	case b.fold:
		return "case-insensitively"
	}
	return "ignoring a trailing slash"
}
