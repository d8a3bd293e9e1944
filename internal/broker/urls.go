package broker

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// URLKeys are the keys DecodeURLs reads; a section lists them among its
// known keys (URLKeysSingle when it takes no list).
var (
	URLKeys       = []string{"url_env", "url_file", "url", "urls"}
	URLKeysSingle = []string{"url_env", "url_file", "url"}
)

// URLs is a decoded broker URL setting.
type URLs struct {
	Env  string   // url_env as configured, or the default when no key was given
	File string   // url_file as configured
	List []string // resolved URLs in the order they are tried; they hold passwords: never log them
}

// Equal reports whether two settings resolve to the same brokers, so a
// reload can keep a connection: a rotated password in url_file is a change.
func (u URLs) Equal(o URLs) bool {
	if u.Env != o.Env || u.File != o.File || len(u.List) != len(o.List) {
		return false
	}
	for i := range u.List {
		if u.List[i] != o.List[i] {
			return false
		}
	}
	return true
}

// URLOptions says how a section takes its URL setting.
type URLOptions struct {
	// DefaultEnv is the variable read when no key is given; "" makes one of
	// the keys required.
	DefaultEnv string
	// Resolve reads the variable or file and checks every URL; false only
	// decodes the keys (the section is off).
	Resolve bool
	// List accepts `urls` and a comma-separated list in url_env or
	// url_file; without it those are rejected as the single-URL sections
	// always did.
	List bool
	// Context prefixes the "variable is not set" error, e.g. "sink rabbitmq".
	Context string
	// At are the nodes tried, in order, for errors about the default
	// variable when url_env is not written (the first non-nil is used).
	At []*yaml.Node
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxURLs bounds a list: every broker is one dial attempt per round.
const maxURLs = 16

// DecodeURLs decodes exactly one of url_env, url_file, url and urls from m
// (urls only with o.List) and, with o.Resolve, resolves it: an unset
// variable, an unreadable or empty file, or a URL amqp.ParseURI rejects is
// an error at the key's FILE:LINE:COL that names the key, never the URL.
func DecodeURLs(d *yamlpos.Decoder, m yamlpos.Map, o URLOptions) URLs {
	u := URLs{Env: o.DefaultEnv}
	keys := URLKeysSingle
	if o.List {
		keys = URLKeys
	}
	var given []string
	for _, k := range keys {
		if m.Has(k) {
			given = append(given, k)
		}
	}
	resolve := o.Resolve
	if len(given) > 1 {
		// Report at the key written last: the one that made it ambiguous.
		last := m.KeyNode(given[0])
		for _, k := range given[1:] {
			if kn := m.KeyNode(k); kn.Line > last.Line || (kn.Line == last.Line && kn.Column > last.Column) {
				last = kn
			}
		}
		d.Errorf(last, "give only one of %s (got %s)", andList(keys), strings.Join(given, ", "))
		resolve = false
	}
	if len(given) > 0 {
		u.Env = ""
	}
	envNode, fileNode, urlNode, urlsNode := m.Get("url_env"), m.Get("url_file"), m.Get("url"), m.Get("urls")
	if d.String(envNode, &u.Env) && !envName.MatchString(u.Env) {
		d.Errorf(envNode, "url_env %q is not an environment variable name", u.Env)
		resolve = false
	}
	d.String(fileNode, &u.File)
	var url string
	d.String(urlNode, &url)
	var list []string
	if o.List && !yamlpos.IsNull(urlsNode) {
		if !d.Strings(urlsNode, &list) {
			resolve = false
		}
	}
	if !resolve {
		return u
	}
	switch {
	case u.File != "":
		b, err := os.ReadFile(u.File)
		if err != nil {
			d.Errorf(fileNode, "read url_file: %v", unwrapPath(err))
			return u
		}
		if strings.TrimSpace(string(b)) == "" {
			d.Errorf(fileNode, "url_file %s is empty", u.File)
			return u
		}
		u.List = split(d, fileNode, string(b), "url_file", o.List)
	case !yamlpos.IsNull(urlNode):
		u.List = split(d, urlNode, url, "url", false)
	case !yamlpos.IsNull(urlsNode):
		elems := d.Seq(urlsNode)
		if len(list) == 0 {
			d.Errorf(urlsNode, "urls must list at least one URL")
			return u
		}
		if len(list) > maxURLs {
			d.Errorf(urlsNode, "urls lists %d brokers (at most %d)", len(list), maxURLs)
			return u
		}
		for i, s := range list {
			s = strings.TrimSpace(s)
			if checkURL(d, elems[i], s, fmt.Sprintf("urls[%d]", i)) {
				u.List = append(u.List, s)
			}
		}
		if len(u.List) != len(list) {
			u.List = nil
		}
	default:
		at := envNode
		for _, n := range o.At {
			if at != nil {
				break
			}
			at = n
		}
		v, ok := os.LookupEnv(u.Env)
		if !ok || strings.TrimSpace(v) == "" {
			prefix := ""
			if o.Context != "" {
				prefix = o.Context + ": "
			}
			d.Errorf(at, "%senvironment variable %s (url_env) is not set", prefix, u.Env)
			return u
		}
		u.List = split(d, at, v, "environment variable "+u.Env, o.List)
	}
	return u
}

// split trims s and, when lists are allowed, splits it at commas; every
// URL is checked. Any bad URL leaves the result empty.
func split(d *yamlpos.Decoder, n *yaml.Node, s, from string, list bool) []string {
	s = strings.TrimSpace(s)
	parts := []string{s}
	if list {
		parts = strings.Split(s, ",")
		if len(parts) > maxURLs {
			d.Errorf(n, "%s lists %d brokers (at most %d)", from, len(parts), maxURLs)
			return nil
		}
	}
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		what := from
		if len(parts) > 1 {
			what = fmt.Sprintf("%s (URL %d of %d)", from, i+1, len(parts))
		}
		if !checkURL(d, n, p, what) {
			return nil
		}
		out = append(out, p)
	}
	return out
}

// checkURL validates an AMQP URL without ever echoing it: url.Parse errors
// quote the whole URL, password included.
func checkURL(d *yamlpos.Decoder, n *yaml.Node, url, from string) bool {
	if _, err := amqp.ParseURI(url); err != nil {
		d.Errorf(n, "%s: not a valid amqp:// or amqps:// URL", from)
		return false
	}
	return true
}

func andList(keys []string) string {
	return strings.Join(keys[:len(keys)-1], ", ") + " and " + keys[len(keys)-1]
}

// unwrapPath drops the *PathError wrapper's repetition of the operation.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}
