package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// policyCase is one entry of a cases file (SPEC.md 13).
type policyCase struct {
	name, method, url string
	header            http.Header
	id                identity
	expect, route     string
}

// PolicyTest runs `gatehouse test [-config FILE] CASES.yaml` (SPEC.md 13):
// each case is decided as `explain` would; a failing case prints one line
// and its explanation; the last line is `N passed, N failed`. Exit 0 when
// every case passed, 1 when any failed, 2 on a usage or config error.
// Cases give claims directly, so no key is fetched and nothing is signed.
func PolicyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatehouse test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfigPath(), "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: gatehouse test [-config FILE] CASES.yaml")
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	cases, err := loadCases(fs.Arg(0), cfg)
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	x := newExplainer(cfg)
	passed, failed := 0, 0
	for _, c := range cases {
		ex := x.explain(context.Background(), c.method, c.url, c.header, c.id)
		got := ex.Reason
		if ex.Decision == "allow" {
			got = "allow"
		}
		var why []string
		if got != c.expect {
			why = append(why, fmt.Sprintf("got %s, want %s", got, c.expect))
		}
		if c.route != "" && ex.Route != c.route {
			why = append(why, fmt.Sprintf("route %q, want %q", ex.Route, c.route))
		}
		if len(why) == 0 {
			passed++
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL %s: %s\n", c.name, joinWords(why))
		writeExplanation(stdout, ex, "    ")
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func joinWords(s []string) string {
	var b bytes.Buffer
	for i, w := range s {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(w)
	}
	return b.String()
}

// expectations are the values `expect` takes: allow or the code of a
// denial in the reason table.
var expectations = func() map[string]bool {
	m := map[string]bool{"allow": true}
	for rs := reason(0); rs < numReasons; rs++ {
		if !rs.allowed() {
			m[rs.String()] = true
		}
	}
	return m
}()

// loadCases reads and checks a cases file, every error at its position.
func loadCases(file string, cfg *Config) ([]policyCase, error) {
	d, root := yamlpos.ParseFile(file)
	if root == nil {
		if !d.Failed() {
			d.Errorf(nil, "no cases")
		}
		return nil, d.Err()
	}
	top := d.Map(root, "cases")
	var out []policyCase
	for i, n := range d.Seq(d.Require(top, "cases")) {
		m := d.Map(n, "name", "request", "claims", "anonymous", "issuer", "expect", "route")
		if m.Node == nil || m.Node.Kind != yaml.MappingNode {
			continue
		}
		c := policyCase{name: fmt.Sprintf("case %d", i+1), method: "GET"}
		if v := m.Get("name"); v != nil {
			d.String(v, &c.name)
		}
		req := d.Map(d.Require(m, "request"), "method", "url", "headers")
		if v := req.Get("method"); v != nil {
			d.String(v, &c.method)
		}
		if v := d.Require(req, "url"); v != nil {
			d.String(v, &c.url)
		}
		if v := req.Get("headers"); !yamlpos.IsNull(v) {
			hm := d.Map(v)
			keys, values := hm.Entries()
			c.header = http.Header{}
			for j, k := range keys {
				var s string
				if d.String(values[j], &s) {
					c.header.Add(k, s)
				}
			}
		}
		var anon bool
		if v := m.Get("anonymous"); v != nil {
			d.Bool(v, &anon)
		}
		claims := m.Get("claims")
		switch {
		case anon && !yamlpos.IsNull(claims):
			d.Errorf(claims, "give claims or anonymous: true, not both")
		case !anon && yamlpos.IsNull(claims):
			d.Errorf(m.Node, "give claims (the token's) or anonymous: true")
		case !anon:
			var raw any
			if err := claims.Decode(&raw); err != nil {
				d.Errorf(claims, "claims: %v", err)
				break
			}
			// through JSON: numbers become float64, as in a verified token
			b, err := json.Marshal(raw)
			if err == nil {
				err = json.Unmarshal(b, &c.id.claims)
			}
			if err != nil || c.id.claims == nil {
				d.Errorf(claims, "claims must be a mapping of JSON values")
			}
		}
		if v := m.Get("issuer"); v != nil && d.String(v, &c.id.issuer) {
			found := false
			for _, is := range cfg.Issuers {
				found = found || is.Name == c.id.issuer
			}
			if !found {
				d.Errorf(v, "no issuer entry %q in %s", c.id.issuer, cfg.File)
			}
		}
		if v := d.Require(m, "expect"); v != nil && d.String(v, &c.expect) && !expectations[c.expect] {
			d.Errorf(v, "expect must be allow or a denial code of SPEC.md 4 (missing_token, invalid_token, insufficient_scope, forbidden, ...), got %q", c.expect)
		}
		if v := m.Get("route"); v != nil {
			d.String(v, &c.route)
		}
		out = append(out, c)
	}
	if d.Failed() {
		return nil, d.Err()
	}
	return out, nil
}
