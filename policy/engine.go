package policy

import (
	"slices"
	"strings"
)

// Engine is a compiled route set: built once per config by Decode,
// immutable afterwards and safe for concurrent use.
type Engine struct {
	routes []*Route            // file order, then the default route
	exact  map[string][]*Route // = /path, case sensitive and strict, by path; file order
	// loose holds the other exact routes by looseKey of their path, file
	// order; nil when there are none, so the default semantics pay nothing.
	loose      map[uint64][]*Route
	prefix     pnode        // case-sensitive plain and ^~ prefixes, a radix tree
	prefixFold pnode        // case-insensitive ones, keyed in ASCII lower case
	regex      []regexEntry // ~ and ~*, file order
	def        *Route
	warnings   []string

	// enforced is the index without shadow routes, which Match uses; nil
	// when there is none. shadowDef is the default's `shadow`.
	enforced  *Engine
	shadowDef *Route
}

// regexEntry holds a regex route's literal prefilters inline, so that the
// scan over many regex routes reads one contiguous slice.
type regexEntry struct {
	pre, suf         string
	preFold, sufFold bool
	ignoreSlash      bool // also try the path without its trailing slash
	r                *Route
}

// pnode is a node of a prefix radix tree. The path from the root to a
// node spells a prefix; routes holds the prefix routes with exactly that
// location, in file order (they differ by methods). In the case-insensitive
// tree edges and labels are ASCII lower case.
type pnode struct {
	edge   string // the bytes from the parent to this node
	routes []*Route
	labels string // labels[i] is the first byte of kids[i].edge
	kids   []*pnode
}

func compile(list []*Route, def *Route) *Engine {
	var enforced []*Route
	for i, r := range list {
		r.Index = i
		if !r.Shadow {
			enforced = append(enforced, r)
		}
	}
	def.Index = len(list)
	e := index(list, def)
	if len(enforced) < len(list) {
		e.enforced = index(enforced, def)
	}
	return e
}

// index builds the lookup structures over list, in file order.
func index(list []*Route, def *Route) *Engine {
	e := &Engine{exact: map[string][]*Route{}, def: def}
	for _, r := range list {
		e.routes = append(e.routes, r)
		switch r.kind {
		case kindExact:
			if !r.sem.fold && !r.sem.ignoreSlash {
				e.exact[r.value] = append(e.exact[r.value], r)
				break
			}
			if e.loose == nil {
				e.loose = map[uint64][]*Route{}
			}
			k := looseKey(r.value)
			e.loose[k] = append(e.loose[k], r)
		case kindPrefix, kindPrefixStop:
			if r.sem.fold {
				e.prefixFold.insert(foldString(r.value), r)
			} else {
				e.prefix.insert(r.value, r)
			}
		case kindRegex, kindRegexFold:
			e.regex = append(e.regex, regexEntry{r.rePre, r.reSuf, r.rePreFold, r.reSufFold, r.sem.ignoreSlash, r})
		}
	}
	e.routes = append(e.routes, def)
	return e
}

// foldString is s in ASCII lower case (at load only).
func foldString(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lowerASCII(c)
	}
	return string(b)
}

func (n *pnode) insert(key string, r *Route) {
	for key != "" {
		i := strings.IndexByte(n.labels, key[0])
		if i < 0 {
			n.labels += key[:1]
			n.kids = append(n.kids, &pnode{edge: key, routes: []*Route{r}})
			return
		}
		c := n.kids[i]
		common := 0
		for common < len(c.edge) && common < len(key) && c.edge[common] == key[common] {
			common++
		}
		if common < len(c.edge) { // split c's edge at the divergence
			mid := &pnode{edge: c.edge[:common], labels: c.edge[common : common+1], kids: []*pnode{c}}
			c.edge = c.edge[common:]
			n.kids[i] = mid
			c = mid
		}
		n, key = c, key[common:]
	}
	n.routes = append(n.routes, r)
}

func (n *pnode) empty() bool { return n.routes == nil && n.kids == nil }

// longest returns the route of the longest prefix of path that admits
// method, and the length of that prefix. fold says the tree is the
// case-insensitive one. A prefix route that ignores the trailing slash and
// whose location is path+"/" matches too, with the length of its location:
// the app reads path as that location.
func (n *pnode) longest(method, path string, fold bool) (best *Route, blen int) {
	i := 0
	for {
		if r := n.first(method, false); r != nil {
			best, blen = r, i
		}
		if i == len(path) {
			if k := strings.IndexByte(n.labels, '/'); k >= 0 && n.kids[k].edge == "/" {
				if r := n.kids[k].first(method, true); r != nil {
					best, blen = r, i+1
				}
			}
			return best, blen
		}
		c := path[i]
		if fold {
			c = lowerASCII(c)
		}
		k := strings.IndexByte(n.labels, c)
		if k < 0 {
			return best, blen
		}
		n = n.kids[k]
		if !hasPrefix(path[i:], n.edge, fold) {
			// path ends one slash short of this node: /p for /p/
			if rest := path[i:]; len(n.edge) == len(rest)+1 && n.edge[len(rest)] == '/' && equal(rest, n.edge[:len(rest)], fold) {
				if r := n.first(method, true); r != nil {
					best, blen = r, len(path)+1
				}
			}
			return best, blen
		}
		i += len(n.edge)
	}
}

// first returns the node's first route that admits method; with
// slashOnly, only among routes that ignore the trailing slash.
func (n *pnode) first(method string, slashOnly bool) *Route {
	for _, r := range n.routes {
		if (!slashOnly || r.sem.ignoreSlash) && r.admits(method) {
			return r
		}
	}
	return nil
}

// Match returns the route for method and path, a path returned by
// Normalize. It is never nil: the default route when nothing matches.
// The order is nginx's (SPEC.md 3), among the routes that admit method:
// an exact match wins; else the longest matching prefix is remembered, and
// wins if it is ^~; else the first regex in file order that matches; else
// the remembered prefix; else the default. Regexes see the canonical
// escaped path (a space is %20, non-ASCII is %XX), the one forwarded.
//
// Each route matches under its own `paths` semantics (SPEC.md 15): with
// case insensitive, exact and prefix locations compare ASCII letters
// regardless of case and ~ is ~*; with trailing_slash ignore, = /p matches
// /p/ and = /p/ matches /p, a prefix /p/ matches /p (counted as the length
// of /p/ for the longest-prefix rule), and a regex is also tried on the
// path without its trailing slash. Between two exact matches, or two
// prefixes of equal length, the earlier route in the file wins.
// Match does not allocate. Shadow routes never take part (Shadow).
func (e *Engine) Match(method, path string) *Route {
	if e.enforced != nil {
		return e.enforced.match(method, path)
	}
	return e.match(method, path)
}

// Shadow returns the shadow route that would win for method and path if
// shadow routes took part in matching (the default's `shadow` when nothing
// matches), nil when the winner is not one. Match gives the route that
// decides instead: the request is handled as if the shadow route did not
// exist. With two shadow routes in line, only the first is recorded.
func (e *Engine) Shadow(method, path string) *Route {
	if e.enforced == nil && e.shadowDef == nil {
		return nil
	}
	w := e.match(method, path)
	switch {
	case w.Shadow:
		return w
	case w == e.def:
		return e.shadowDef
	}
	return nil
}

// HasShadow reports whether any route is a shadow.
func (e *Engine) HasShadow() bool { return e.enforced != nil || e.shadowDef != nil }

func (e *Engine) match(method, path string) *Route {
	if r := e.matchExact(method, path); r != nil {
		return r
	}
	best, blen := e.prefix.longest(method, path, false)
	if !e.prefixFold.empty() {
		if r, l := e.prefixFold.longest(method, path, true); r != nil && (best == nil || l > blen || l == blen && r.Index < best.Index) {
			best = r
		}
	}
	if best != nil && best.kind == kindPrefixStop {
		return best
	}
	for i := range e.regex {
		x := &e.regex[i]
		if x.matches(method, path) || x.ignoreSlash && len(path) > 1 && path[len(path)-1] == '/' && x.matches(method, path[:len(path)-1]) {
			return x.r
		}
	}
	if best != nil {
		return best
	}
	return e.def
}

func (e *Engine) matchExact(method, path string) *Route {
	var best *Route
	if rs, ok := e.exact[path]; ok {
		for _, r := range rs {
			if r.admits(method) {
				best = r
				break
			}
		}
	}
	if e.loose != nil {
		for _, r := range e.loose[looseKey(path)] {
			if (best == nil || r.Index < best.Index) && r.admits(method) && r.exactMatches(path) {
				return r
			}
		}
	}
	return best
}

// matches runs the literal prefilters (inline in the entry, so most
// entries are ruled out without touching the route), then the method and
// the regex.
func (x *regexEntry) matches(method, path string) bool {
	if x.pre != "" && !hasPrefix(path, x.pre, x.preFold) ||
		x.suf != "" && !hasSuffix(path, x.suf, x.sufFold) {
		return false
	}
	return x.r.admits(method) && x.r.re.MatchString(path)
}

// exactMatches reports whether the exact location matches path under the
// route's semantics.
func (r *Route) exactMatches(path string) bool {
	v := r.value
	if r.sem.ignoreSlash {
		v, path = trimSlash(v), trimSlash(path)
	}
	return len(v) == len(path) && equal(path, v, r.sem.fold)
}

// matchesPath reports whether the route's location matches path, by path
// alone (methods and the other routes play no part). The default route
// matches nothing.
func (r *Route) matchesPath(path string) bool {
	switch r.kind {
	case kindExact:
		return r.exactMatches(path)
	case kindPrefix, kindPrefixStop:
		v := r.value
		return hasPrefix(path, v, r.sem.fold) ||
			r.sem.ignoreSlash && len(v) == len(path)+1 && v[len(path)] == '/' && equal(path, v[:len(path)], r.sem.fold)
	case kindRegex, kindRegexFold:
		return r.re.MatchString(path) || r.sem.ignoreSlash && trimSlash(path) != path && r.re.MatchString(trimSlash(path))
	}
	return false
}

// Methods returns what methods a route serves at path, for the default
// allow_methods of a CORS preflight answer (SPEC.md 15): every route whose
// location matches path by path alone (methods ignored; not only the route
// nginx order would pick) contributes its methods. every is true when one
// of them admits every method (no `methods` key), or when no route matches
// and `default` is not deny (the default route admits every method); then
// methods is nil. Otherwise methods is the sorted union, nil when nothing
// serves path (only `default: deny`). The slice is new on every call.
func (e *Engine) Methods(path string) (methods []string, every bool) {
	matched := false
	for _, r := range e.routes[:len(e.routes)-1] {
		if !r.matchesPath(path) {
			continue
		}
		matched = true
		if r.methods == nil {
			return nil, true
		}
		for _, m := range r.methods {
			if !slices.Contains(methods, m) {
				methods = append(methods, m)
			}
		}
	}
	if !matched {
		return nil, !e.def.deny
	}
	slices.Sort(methods)
	return methods, false
}

// Routes returns every route in file order followed by the default route;
// Route.Index is the position in this slice. The slice must not be changed.
func (e *Engine) Routes() []*Route { return e.routes }

// Default returns the default route (the last of Routes).
func (e *Engine) Default() *Route { return e.def }

// hasPrefix is strings.HasPrefix, ASCII case-insensitive when fold.
func hasPrefix(s, prefix string, fold bool) bool {
	return len(s) >= len(prefix) && equal(s[:len(prefix)], prefix, fold)
}

// hasSuffix is strings.HasSuffix, ASCII case-insensitive when fold.
func hasSuffix(s, suffix string, fold bool) bool {
	return len(s) >= len(suffix) && equal(s[len(s)-len(suffix):], suffix, fold)
}

// equal compares strings of equal length, ASCII case-insensitively when fold.
func equal(a, b string, fold bool) bool {
	if !fold {
		return a == b
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
