package policy

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// routeKeys are the keys of one `routes` entry; the `default` route body has
// the same keys but `location` and `methods` (it catches whatever is left).
var (
	routeKeys   = []string{"location", "name", "paths", "auth", "methods", "roles", "scopes", "claims", "when", "shadow", "upstream", "upstream_protocol"}
	defaultKeys = []string{"auth", "roles", "scopes", "claims", "when", "shadow", "upstream", "upstream_protocol"}
)

// Decode decodes and validates the top-level `paths` mapping, the `routes`
// list and the `default` value of a config file and compiles them into an
// Engine. Any node may be nil: no `paths` is nginx's reading (case
// sensitive, strict trailing slash), undeclared; no `routes` is an empty
// list; no `default` is `deny`. Every error is recorded in d with its
// node's position, all of them in one pass; Decode returns nil when it
// recorded any. The Engine's Warnings are what `gatehouse -t` prints
// about locations a differently cased or slashed path could bypass.
func Decode(d *yamlpos.Decoder, paths, routes, def *yaml.Node) *Engine {
	before := len(yamlpos.Errors(d.Err()))
	global, _ := decodePaths(d, paths, semantics{})
	var list, located []*Route
	for _, n := range d.Seq(routes) {
		r, ok, keyOK := decodeRoute(d, n, global)
		if ok {
			list = append(list, r)
		}
		if keyOK {
			located = append(located, r)
		}
	}
	// Routes with errors elsewhere still take part, so that a duplicate is
	// reported in the same pass.
	checkDuplicates(d, located)
	checkNames(d, located)
	dr := decodeDefault(d, def, false)
	if len(yamlpos.Errors(d.Err())) > before || dr == nil {
		return nil
	}
	dr.sem = global
	e := compile(list, dr)
	e.shadowDef = dr.shadowOf
	e.warnings = e.computeWarnings(d.File, d.Pos(routes))
	return e
}

// decodeRoute decodes one `routes` entry. ok is false when it has an
// error (recorded); keyOK says its location and methods are valid, so it
// can take part in the duplicate check.
func decodeRoute(d *yamlpos.Decoder, n *yaml.Node, global semantics) (r *Route, ok, keyOK bool) {
	m := d.Map(n, routeKeys...)
	if m.Node == nil || m.Node.Kind != yaml.MappingNode {
		if yamlpos.IsNull(n) {
			d.Errorf(n, "route must be a mapping with at least a location")
		}
		return nil, false, false
	}
	r = &Route{}
	// paths first: it decides how the location compiles (~ becomes ~*).
	sem, semOK := decodePaths(d, m.Get("paths"), global)
	r.sem = sem
	keyOK = true
	if loc := d.Require(m, "location"); loc != nil {
		keyOK = decodeLocation(d, loc, r)
	} else {
		keyOK = false
	}
	if v := m.Get("methods"); !yamlpos.IsNull(v) {
		keyOK = decodeMethods(d, v, r) && keyOK
	}
	nameOK := true
	if v := m.Get("name"); v != nil {
		nameOK = decodeName(d, v, r)
	}
	ok = decodeBody(d, m, r) && keyOK && semOK && nameOK
	return r, ok, keyOK
}

// decodeName decodes a route's `name`: the metrics and audit label instead
// of the location string. Non-empty, printable (no control or other
// invisible characters, which would garble a log line or a label), and
// not "default", the default route's label.
func decodeName(d *yamlpos.Decoder, n *yaml.Node, r *Route) bool {
	var s string
	if !d.String(n, &s) {
		return false
	}
	switch {
	case s == "":
		d.Errorf(n, "name must not be empty (leave it out to use the location)")
		return false
	case s == "default":
		d.Errorf(n, "name %q is the default route's label; choose another", s)
		return false
	case !printable(s):
		d.Errorf(n, "name %q must be printable: no control or invisible characters", s)
		return false
	}
	r.Name = s
	r.nameLine, r.nameCol = n.Line, n.Column
	return true
}

func printable(s string) bool {
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

// checkNames reports a route `name` that another route's label already
// is: an earlier route's name, or the location of a route without a name
// (its label). Two unnamed routes on one location with different methods
// share the location as their label, as before names existed.
func checkNames(d *yamlpos.Decoder, list []*Route) {
	labels := map[string]*Route{}
	for _, r := range list {
		if r.nameLine == 0 {
			if _, ok := labels[r.Name]; !ok {
				labels[r.Name] = r
			}
		}
	}
	for _, r := range list {
		if r.nameLine == 0 {
			continue
		}
		if p, ok := labels[r.Name]; ok && p != r {
			pos := yamlpos.Pos{File: d.File, Line: r.nameLine, Col: r.nameCol}
			what := "the name of the route"
			if p.nameLine == 0 {
				what = "the label of the unnamed route"
			}
			d.Add(yamlpos.Errorf(pos, "duplicate name %q: already %s at line %d (names must be unique: they are the metrics and audit route label)", r.Name, what, p.line))
			continue
		}
		labels[r.Name] = r
	}
}

// decodeDefault decodes `default`: absent or `deny` is the deny route, a
// mapping is a route body. nil when it has an error.
//
// The body may carry `shadow`: another default (deny or a body) that is
// decided for every unmatched request only to be recorded, the default one
// means to move to. shadow is true for that inner one.
func decodeDefault(d *yamlpos.Decoder, n *yaml.Node, shadow bool) *Route {
	r := &Route{Name: "default", kind: kindDefault, Shadow: shadow}
	if shadow {
		r.Index = -1 // not among Engine.Routes
	}
	if yamlpos.IsNull(n) {
		r.deny = true
		return r
	}
	if n.Kind == yaml.ScalarNode {
		if n.Value != "deny" {
			d.Errorf(n, "default must be deny or a route body such as { auth: required }, got %q", n.Value)
			return nil
		}
		r.deny = true
		return r
	}
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "default must be deny or a route body such as { auth: required }")
		return nil
	}
	m := d.Map(n, defaultKeys...)
	ok := decodeBody(d, m, r)
	if v := m.Get("shadow"); !yamlpos.IsNull(v) {
		if shadow {
			d.Errorf(v, "the shadow of default cannot have a shadow of its own")
			return nil
		}
		if v.Kind == yaml.ScalarNode && (v.Value == "true" || v.Value == "false") {
			d.Errorf(v, "default.shadow is the default to record instead (deny or a route body such as { auth: required }), not %s", v.Value)
			return nil
		}
		if r.shadowOf = decodeDefault(d, v, true); r.shadowOf == nil {
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return r
}

// decodeBody decodes the keys a route and the default route share.
func decodeBody(d *yamlpos.Decoder, m yamlpos.Map, r *Route) bool {
	ok := true
	if v := m.Get("auth"); !yamlpos.IsNull(v) {
		var s string
		if d.String(v, &s) {
			switch s {
			case "required":
				r.Auth = AuthRequired
			case "optional":
				r.Auth = AuthOptional
			case "none":
				r.Auth = AuthNone
			default:
				d.Errorf(v, "unknown auth %q: want required, optional or none", s)
				ok = false
			}
		} else {
			ok = false
		}
	}
	if v := m.Get("roles"); !yamlpos.IsNull(v) {
		ok = decodeRequirement(d, v, "roles", &r.roles) && ok
	}
	if v := m.Get("scopes"); !yamlpos.IsNull(v) {
		ok = decodeRequirement(d, v, "scopes", &r.scopes) && ok
	}
	if v := m.Get("claims"); !yamlpos.IsNull(v) {
		ok = decodeClaims(d, v, r) && ok
	}
	if v := m.Get("when"); !yamlpos.IsNull(v) {
		ok = decodeWhen(d, v, r) && ok
	}
	if v := m.Get("shadow"); !yamlpos.IsNull(v) && r.kind != kindDefault {
		ok = d.Bool(v, &r.Shadow) && ok
	}
	if v := m.Get("upstream"); !yamlpos.IsNull(v) {
		var s string
		if d.String(v, &s) {
			if err := CheckUpstream(s); err != nil {
				d.Errorf(v, "invalid upstream %q: %v", s, err)
				ok = false
			}
			r.Upstream = s
		} else {
			ok = false
		}
	}
	if v := m.Get("upstream_protocol"); !yamlpos.IsNull(v) {
		var s string
		if d.String(v, &s) {
			switch s {
			case "http1", "h2c", "h2":
				r.UpstreamProtocol = s
			default:
				d.Errorf(v, "unknown upstream_protocol %q: want http1, h2c or h2", s)
				ok = false
			}
		} else {
			ok = false
		}
	}
	if ok && r.Auth == AuthNone && r.hasRequirements() {
		// A route that looks at no token cannot require anything of one.
		d.Errorf(m.Get("auth"), "auth: none cannot be combined with roles, scopes or claims (no token is looked at)")
		ok = false
	}
	if ok && r.Auth == AuthOptional && r.hasRequirements() {
		// optional never denies for a missing token (SPEC.md 2), and
		// requirements cannot hold without one: either rule would be broken.
		d.Errorf(m.Get("auth"), "auth: optional cannot be combined with roles, scopes or claims (they cannot hold without a token, and optional never denies for its absence): use auth: required")
		ok = false
	}
	return ok
}

// decodeLocation parses the location string (SPEC.md 3) into r.
func decodeLocation(d *yamlpos.Decoder, n *yaml.Node, r *Route) bool {
	var s string
	if !d.String(n, &s) {
		return false
	}
	if r.Name == "" {
		r.Name = s
	}
	r.Location = s
	r.line, r.col = n.Line, n.Column
	k, v, msg := parseLocation(s)
	if msg != "" {
		d.Errorf(n, "invalid location %q: %s", s, msg)
		return false
	}
	r.kind, r.value = k, v
	switch k {
	case kindExact:
		canon, good := Normalize(v)
		switch {
		case !good:
			d.Errorf(n, "location %q can never match: %q is a bad path that requests are refused for (400)", s, v)
			return false
		case canon != v:
			d.Errorf(n, "location %q can never match: paths are matched in normalised form, write %q", s, "= "+canon)
			return false
		}
	case kindPrefix, kindPrefixStop:
		if !prefixCanMatch(v) {
			mod := strings.TrimSuffix(s, v)
			if canon, good := Normalize(v); good && prefixCanMatch(canon) {
				d.Errorf(n, "location %q can never match: paths are matched in normalised form, write %q", s, mod+canon)
			} else {
				d.Errorf(n, "location %q can never match: no normalised path starts with %q", s, v)
			}
			return false
		}
	case kindRegex, kindRegexFold:
		expr := v
		if k == kindRegexFold || r.sem.fold {
			// paths case: insensitive turns ~ into ~* (SPEC.md 15)
			expr = "(?i)" + v
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			d.Errorf(n, "invalid location %q: regex: %s", s, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return false
		}
		r.re = re
		r.rePre, r.rePreFold, r.reSuf, r.reSufFold = anchoredLiterals(expr)
	}
	return true
}

// parseLocation splits a location string into its form and value; msg is
// the error, if any.
func parseLocation(s string) (k kind, value, msg string) {
	const want = `want "= /path", "^~ /prefix", "~ regex", "~* regex" or "/prefix"`
	mods := []struct {
		mod string
		k   kind
	}{{"=", kindExact}, {"^~", kindPrefixStop}, {"~*", kindRegexFold}, {"~", kindRegex}}
	for _, m := range mods {
		rest, found := strings.CutPrefix(s, m.mod)
		if !found {
			continue
		}
		if !strings.HasPrefix(rest, " ") {
			if rest == "" {
				return 0, "", "nothing after " + strconv.Quote(m.mod) + "; " + want
			}
			return 0, "", "put one space after " + strconv.Quote(m.mod) + "; " + want
		}
		rest = rest[1:]
		switch {
		case rest == "":
			return 0, "", "nothing after " + strconv.Quote(m.mod) + "; " + want
		case rest[0] == ' ' || rest[0] == '\t':
			return 0, "", "one space only after " + strconv.Quote(m.mod)
		case (m.k == kindExact || m.k == kindPrefixStop) && rest[0] != '/':
			return 0, "", "the path must start with /"
		}
		return m.k, rest, ""
	}
	if !strings.HasPrefix(s, "/") {
		return 0, "", want
	}
	return kindPrefix, s, ""
}

// prefixCanMatch reports whether some canonical path starts with p. Append
// a completion and see whether the result is canonical and keeps p: "/a/."
// can match "/a/.x", but "/a//", "/a/%2e" or "/a/%7e" never can. A prefix
// that ends inside an escape ("/a%", "/a%2") is completed to one.
func prefixCanMatch(p string) bool {
	for _, tail := range []string{"x", "20", "0"} {
		c, ok := Normalize(p + tail)
		if ok && c == p+tail {
			return true
		}
	}
	return false
}

// decodeMethods decodes `methods`: upper-case HTTP method tokens, at least one.
func decodeMethods(d *yamlpos.Decoder, n *yaml.Node, r *Route) bool {
	var ms []string
	if !d.Strings(n, &ms) {
		return false
	}
	if len(ms) == 0 {
		d.Errorf(n, "methods must not be empty (leave it out to allow every method)")
		return false
	}
	ok := true
	elems := d.Seq(n)
	for i, m := range ms {
		switch {
		case !methodToken(m):
			d.Errorf(elems[i], "invalid method %q: want an upper-case HTTP method such as GET", m)
			ok = false
		case slices.Contains(ms[:i], m):
			d.Errorf(elems[i], "method %q listed twice", m)
			ok = false
		}
	}
	r.methods = ms
	return ok
}

// methodToken reports whether m is an RFC 9110 token without lower-case
// letters (methods are case-sensitive; the registered ones are upper-case).
func methodToken(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// decodeRequirement decodes a `roles` or `scopes` mapping {any, all}.
func decodeRequirement(d *yamlpos.Decoder, n *yaml.Node, what string, q *requirement) bool {
	m := d.Map(n, "any", "all")
	if m.Node == nil || m.Node.Kind != yaml.MappingNode {
		return false
	}
	ok := true
	for _, k := range []string{"any", "all"} {
		v := m.Get(k)
		if yamlpos.IsNull(v) {
			if v != nil {
				d.Errorf(v, "%s.%s must be a list of strings", what, k)
				ok = false
			}
			continue
		}
		var list []string
		if !d.Strings(v, &list) {
			ok = false
			continue
		}
		if len(list) == 0 {
			d.Errorf(v, "%s.%s must not be empty", what, k)
			ok = false
			continue
		}
		for i, s := range list {
			if s == "" {
				d.Errorf(d.Seq(v)[i], "%s.%s: empty name", what, k)
				ok = false
			}
		}
		if k == "any" {
			q.any, q.anyDetail = list, fmt.Sprintf("%s any %v", what, list)
		} else {
			q.all, q.allDetail = list, fmt.Sprintf("%s all %v", what, list)
		}
	}
	if ok && q.empty() && len(m.Node.Content) == 0 {
		d.Errorf(n, "%s must have any and/or all (an empty requirement is always met: leave it out instead)", what)
		return false
	}
	return ok
}

// decodeClaims decodes `claims`: claim path -> required scalar.
func decodeClaims(d *yamlpos.Decoder, n *yaml.Node, r *Route) bool {
	m := d.Map(n)
	if m.Node == nil || m.Node.Kind != yaml.MappingNode {
		return false
	}
	ok := true
	keys, values := m.Entries()
	if len(keys) == 0 && len(m.Node.Content) == 0 {
		d.Errorf(n, "claims must not be empty (leave it out instead)")
		return false
	}
	for i, k := range keys {
		v := values[i]
		if k == "" {
			d.Errorf(m.KeyNode(k), "claims: empty claim path")
			ok = false
			continue
		}
		c := claimReq{path: k, detail: "claim " + k}
		if !decodeClaimValue(d, k, v, &c) {
			ok = false
			continue
		}
		r.claims = append(r.claims, c)
	}
	return ok
}

func decodeClaimValue(d *yamlpos.Decoder, k string, v *yaml.Node, c *claimReq) bool {
	const want = "want a string, true/false or a number"
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		d.Errorf(v, "claim %q: %s", k, want)
		return false
	}
	switch v.Tag {
	case "!!str":
		c.kind, c.str = claimString, v.Value
	case "!!bool":
		var b bool
		if err := v.Decode(&b); err != nil {
			d.Errorf(v, "claim %q: %s", k, want)
			return false
		}
		c.kind, c.bool = claimBool, b
	case "!!int", "!!float":
		var x any
		if err := v.Decode(&x); err != nil {
			d.Errorf(v, "claim %q: %s", k, want)
			return false
		}
		var f float64
		switch n := x.(type) {
		case int:
			f = float64(n)
		case int64:
			f = float64(n)
		case uint64:
			f = float64(n)
		case float64:
			f = n
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.Errorf(v, "claim %q: %q is not a finite number", k, v.Value)
			return false
		}
		c.kind, c.num = claimNumber, f
	default:
		d.Errorf(v, "claim %q: %s, got %s", k, want, v.Tag)
		return false
	}
	return true
}

// CheckUpstream validates an upstream URL (the global `upstream` and a
// route's): http://host[:port][/path] or https://... with a port in
// 1-65535 and no credentials, query or fragment, or unix:///abs/path.sock.
// It is the one validator; proxy uses it for the global upstream.
func CheckUpstream(raw string) error {
	const want = "want http://host[:port][/path], https://host[:port][/path] or unix:///path.sock"
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New(want)
	}
	switch u.Scheme {
	case "http", "https":
		switch {
		case u.Host == "" || u.Hostname() == "":
			return errors.New("no host; " + want)
		case u.User != nil:
			return errors.New("credentials in the URL are not supported")
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			return errors.New("no query or fragment allowed; " + want)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return errors.New("bad port " + strconv.Quote(p))
			}
		} else if strings.HasSuffix(u.Host, ":") {
			return errors.New("empty port; " + want)
		}
	case "unix":
		switch {
		case u.Host != "" || u.User != nil:
			return errors.New("a unix socket has no host: write unix:///abs/path.sock")
		case !strings.HasPrefix(u.Path, "/") || strings.HasSuffix(u.Path, "/"):
			return errors.New("want an absolute socket path: unix:///abs/path.sock")
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			return errors.New("no query or fragment allowed; " + want)
		}
	default:
		return errors.New(want)
	}
	return nil
}

// identity is what makes two locations the same for the duplicate check:
// "/x" and "^~ /x" are the same prefix (nginx refuses that pair as a
// duplicate location too). Under `paths`, so are locations that match the
// same paths: "/admin/" and "/ADMIN/" when both are case insensitive,
// "= /p" and "= /p/" when both ignore the trailing slash.
type identity struct {
	class       kind
	value       string
	fold, slash bool
}

func identityOf(r *Route) identity {
	id := identity{class: r.kind, value: r.value, fold: r.sem.fold}
	if id.class == kindPrefixStop {
		id.class = kindPrefix
	}
	if id.fold && id.class != kindRegex && id.class != kindRegexFold {
		id.value = foldString(id.value)
	}
	if r.kind == kindExact && r.sem.ignoreSlash {
		id.value, id.slash = trimSlash(id.value), true
	}
	return id
}

// checkDuplicates reports a route whose location and methods overlap an
// earlier route's: the later one could never match for those methods.
func checkDuplicates(d *yamlpos.Decoder, list []*Route) {
	seen := map[identity][]*Route{}
	for _, r := range list {
		id := identityOf(r)
		for _, p := range seen[id] {
			m, overlap := overlapMethod(p, r)
			if !overlap {
				continue
			}
			pos := yamlpos.Pos{File: d.File, Line: r.line, Col: r.col}
			if m == "" {
				d.Add(yamlpos.Errorf(pos, "duplicate location %q: already defined at line %d (give both routes methods that do not overlap)", r.Name, p.line))
			} else {
				d.Add(yamlpos.Errorf(pos, "duplicate location %q for method %s: already defined at line %d", r.Name, m, p.line))
			}
			break
		}
		seen[id] = append(seen[id], r)
	}
}

// overlapMethod returns a method both routes admit, "" when both admit
// every method.
func overlapMethod(a, b *Route) (string, bool) {
	switch {
	case a.methods == nil && b.methods == nil:
		return "", true
	case b.methods == nil:
		return a.methods[0], true
	}
	for _, m := range b.methods {
		if a.admits(m) {
			return m, true
		}
	}
	return "", false
}

// anchoredLiterals returns the literal text every match of expr must start
// with (expr begins with ^ and literal text) and the one it must end with
// (expr ends with literal text and $), each with whether it compares
// case-insensitively; "" when there is none. Only ASCII literals qualify,
// and case-folded ones without k or s (RE2 folds them with U+212A KELVIN
// SIGN and U+017F LONG S), so a literal check never rules out a path the
// regex would match.
func anchoredLiterals(expr string) (pre string, preFold bool, suf string, sufFold bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil || re.Op != syntax.OpConcat || len(re.Sub) < 2 {
		return "", false, "", false
	}
	if re.Sub[0].Op == syntax.OpBeginText {
		pre, preFold = literal(re.Sub[1])
	}
	if n := len(re.Sub); re.Sub[n-1].Op == syntax.OpEndText {
		suf, sufFold = literal(re.Sub[n-2])
	}
	return pre, preFold, suf, sufFold
}

func literal(re *syntax.Regexp) (string, bool) {
	if re.Op != syntax.OpLiteral {
		return "", false
	}
	fold := re.Flags&syntax.FoldCase != 0
	for _, c := range re.Rune {
		if c >= 0x80 || fold && (c == 'k' || c == 'K' || c == 's' || c == 'S') {
			return "", false
		}
	}
	return string(re.Rune), fold
}
