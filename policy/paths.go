package policy

import (
	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// semantics is how an upstream reads a path (SPEC.md 15 `paths`): whether
// it compares letters regardless of case, and whether it treats /p and /p/
// as the same resource. The zero value is nginx's reading: case sensitive,
// strict trailing slash.
type semantics struct {
	fold        bool // case: insensitive
	ignoreSlash bool // trailing_slash: ignore
	// declared says a `paths` key (global or the route's own) set these;
	// -t warns differently about an upstream nobody described.
	declared bool
}

// preset is what a framework's router does with a path by default, with the
// source that says so. A framework that REDIRECTS the other spelling (Flask,
// Django, FastAPI, Gin) is strict here: the app does not serve the other
// spelling, it sends the client back through gatehouse, where the
// redirected path is matched and checked like any other request. What
// counts is what the app SERVES for exactly the path it is given.
//
//	preset   case         trailing slash  source
//	express  insensitive  ignore          https://expressjs.com/en/4x/api.html#app.settings.table
//	                                      (and /en/5x/): "case sensitive routing" and "strict routing"
//	                                      are disabled by default: "/Foo" and "/foo" are the same route,
//	                                      and so are "/foo" and "/foo/"
//	flask    sensitive    strict          https://werkzeug.palletsprojects.com/en/stable/routing/ (Rule
//	                                      strict_slashes=True: a rule ending in / redirects the slashless
//	                                      form with 308, a rule without / answers 404 to the slashed form);
//	                                      rules match case-sensitively
//	django   sensitive    strict          https://docs.djangoproject.com/en/stable/topics/http/urls/ (patterns
//	                                      are matched case-sensitively) and
//	                                      https://docs.djangoproject.com/en/stable/ref/settings/#append-slash
//	                                      (APPEND_SLASH, CommonMiddleware: a 301 redirect to the slashed
//	                                      form, never the slashed view served at the slashless path)
//	spring   sensitive    strict          Spring Framework 6 / Boot 3: trailing slash matching is off by
//	                                      default, https://github.com/spring-projects/spring-framework/issues/28552;
//	                                      PathPatternParser is case sensitive by default,
//	                                      https://docs.spring.io/spring-framework/docs/current/javadoc-api/org/springframework/web/util/pattern/PathPatternParser.html
//	                                      (Spring 5 / Boot 2 matched /p/ for /p: declare trailing_slash: ignore there)
//	aspnet   insensitive  ignore          https://learn.microsoft.com/en-us/aspnet/core/fundamentals/routing#route-templates
//	                                      (literal segments match case-insensitively) and
//	                                      https://github.com/dotnet/aspnetcore/issues/4220 (a trailing slash
//	                                      matches the slashless template)
//	rails    sensitive    ignore          https://guides.rubyonrails.org/routing.html; Journey strips one
//	                                      trailing slash before matching (Router::Utils.normalize_path,
//	                                      https://github.com/rails/rails/blob/main/actionpack/lib/action_dispatch/journey/router/utils.rb)
//	                                      and matches case-sensitively
//	fastapi  sensitive    strict          https://www.starlette.io/routing/ (Router redirect_slashes=True:
//	                                      a 307 redirect to the other form, not the other form served);
//	                                      routes match case-sensitively
//	gin      sensitive    strict          https://pkg.go.dev/github.com/gin-gonic/gin#Engine
//	                                      (RedirectTrailingSlash=true: 301 for GET, 307 otherwise;
//	                                      RedirectFixedPath=false, so no case-correcting redirect)
var presets = map[string]semantics{
	"express": {fold: true, ignoreSlash: true},
	"flask":   {},
	"django":  {},
	"spring":  {},
	"aspnet":  {fold: true, ignoreSlash: true},
	"rails":   {ignoreSlash: true},
	"fastapi": {},
	"gin":     {},
}

// presetNames is the order error messages list the presets in.
const presetNames = "express, flask, django, spring, aspnet, rails, fastapi or gin"

// decodePaths decodes a `paths` mapping over base: a preset ("" is none)
// first replaces
// both settings, then `case` and `trailing_slash` given beside it win. A
// route's `paths` is decoded over the global one, so it overrides it per
// key (a route preset replaces both, again with the route's own keys
// winning). ok is false when it recorded an error.
func decodePaths(d *yamlpos.Decoder, n *yaml.Node, base semantics) (semantics, bool) {
	if yamlpos.IsNull(n) {
		return base, true
	}
	m := d.Map(n, "preset", "case", "trailing_slash")
	if m.Node == nil || m.Node.Kind != yaml.MappingNode {
		return base, false
	}
	s, ok := base, true
	var v string
	if pn := m.Get("preset"); !yamlpos.IsNull(pn) {
		if !d.String(pn, &v) {
			ok = false
		} else if p, found := presets[v]; found {
			s = p
		} else if v != "" {
			d.Errorf(pn, "paths.preset: unknown preset %q: want %s", v, presetNames)
			ok = false
		}
	}
	if cn := m.Get("case"); !yamlpos.IsNull(cn) {
		if !d.String(cn, &v) {
			ok = false
		} else if v == "sensitive" || v == "insensitive" {
			s.fold = v == "insensitive"
		} else {
			d.Errorf(cn, "paths.case must be sensitive or insensitive, got %q", v)
			ok = false
		}
	}
	if tn := m.Get("trailing_slash"); !yamlpos.IsNull(tn) {
		if !d.String(tn, &v) {
			ok = false
		} else if v == "strict" || v == "ignore" {
			s.ignoreSlash = v == "ignore"
		} else {
			d.Errorf(tn, "paths.trailing_slash must be strict or ignore, got %q", v)
			ok = false
		}
	}
	s.declared = true
	return s, ok
}

// trimSlash drops one trailing slash, but never the root's.
func trimSlash(p string) string {
	if len(p) > 1 && p[len(p)-1] == '/' {
		return p[:len(p)-1]
	}
	return p
}

// lowerASCII folds ASCII upper-case letters only. Canonical paths are ASCII
// (Normalize percent-encodes every other byte, with upper-case hex digits),
// so folding ASCII is folding the whole path; a non-ASCII letter is an
// escape such as %C3%89 and is never folded into %C3%A9: an app that folds
// Unicode case is not described by `case: insensitive`.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// looseKey hashes p the way every exact route that is not case sensitive
// and strict is indexed: ASCII-folded, one trailing slash dropped (FNV-1a,
// no allocation). Routes in one bucket are then compared exactly under
// their own semantics, so the fold and trim here only need to be at least
// as loose as any route's.
func looseKey(p string) uint64 {
	p = trimSlash(p)
	h := uint64(14695981039346656037)
	for i := 0; i < len(p); i++ {
		h ^= uint64(lowerASCII(p[i]))
		h *= 1099511628211
	}
	return h
}
