package policy

import "strings"

// Engine is a compiled route set: built once per config by Decode,
// immutable afterwards and safe for concurrent use.
type Engine struct {
	routes []*Route            // file order, then the default route
	exact  map[string][]*Route // = /path, by path; routes in file order
	prefix pnode               // plain and ^~ prefixes, a radix tree
	regex  []regexEntry        // ~ and ~*, file order
	def    *Route
}

// regexEntry holds a regex route's literal prefilters inline, so that the
// scan over many regex routes reads one contiguous slice.
type regexEntry struct {
	pre, suf         string
	preFold, sufFold bool
	r                *Route
}

// pnode is a node of the prefix radix tree. The path from the root to a
// node spells a prefix; routes holds the prefix routes with exactly that
// location, in file order (they differ by methods).
type pnode struct {
	edge   string // the bytes from the parent to this node
	routes []*Route
	labels string // labels[i] is the first byte of kids[i].edge
	kids   []*pnode
}

func compile(list []*Route, def *Route) *Engine {
	e := &Engine{exact: map[string][]*Route{}, def: def}
	for _, r := range list {
		r.Index = len(e.routes)
		e.routes = append(e.routes, r)
		switch r.kind {
		case kindExact:
			e.exact[r.value] = append(e.exact[r.value], r)
		case kindPrefix, kindPrefixStop:
			e.prefix.insert(r.value, r)
		case kindRegex, kindRegexFold:
			e.regex = append(e.regex, regexEntry{r.rePre, r.reSuf, r.rePreFold, r.reSufFold, r})
		}
	}
	def.Index = len(e.routes)
	e.routes = append(e.routes, def)
	return e
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

// longest returns the route of the longest prefix of path that admits method.
func (n *pnode) longest(method, path string) *Route {
	var best *Route
	i := 0
	for {
		for _, r := range n.routes {
			if r.admits(method) {
				best = r
				break
			}
		}
		if i == len(path) {
			return best
		}
		k := strings.IndexByte(n.labels, path[i])
		if k < 0 {
			return best
		}
		n = n.kids[k]
		if !strings.HasPrefix(path[i:], n.edge) {
			return best
		}
		i += len(n.edge)
	}
}

// Match returns the route for method and path, a path returned by
// Normalize. It is never nil: the default route when nothing matches.
// The order is nginx's (SPEC.md 3), among the routes that admit method:
// an exact match wins; else the longest matching prefix is remembered, and
// wins if it is ^~; else the first regex in file order that matches; else
// the remembered prefix; else the default. Regexes see the canonical
// escaped path (a space is %20, non-ASCII is %XX), the one forwarded.
// Match does not allocate.
func (e *Engine) Match(method, path string) *Route {
	if rs, ok := e.exact[path]; ok {
		for _, r := range rs {
			if r.admits(method) {
				return r
			}
		}
	}
	best := e.prefix.longest(method, path)
	if best != nil && best.kind == kindPrefixStop {
		return best
	}
	for i := range e.regex {
		x := &e.regex[i]
		if x.pre != "" && !hasPrefix(path, x.pre, x.preFold) ||
			x.suf != "" && !hasSuffix(path, x.suf, x.sufFold) {
			continue
		}
		if x.r.admits(method) && x.r.re.MatchString(path) {
			return x.r
		}
	}
	if best != nil {
		return best
	}
	return e.def
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
