package proxy

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/internal/tlsca"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// EgressConfig is the `egress` section (SPEC.md 11): the listener the app
// sends its outbound calls to, and the allow-list of where they may go.
type EgressConfig struct {
	Listen string // required when the section is present
	// InboundGrace is how long an inbound request's token stays available
	// to propagate after that request ended; default 5s.
	InboundGrace time.Duration
	Routes       []EgressRoute // file order
	IdP          *IdPConfig    // nil: no route needs the identity provider
}

// Strategy is an egress route's `token`: what Authorization the call gets.
type Strategy string

const (
	StrategyPropagate         Strategy = "propagate"
	StrategyExchange          Strategy = "exchange"
	StrategyClientCredentials Strategy = "client_credentials"
	StrategyNone              Strategy = "none"
)

// EgressRoute is one `egress.routes` entry.
type EgressRoute struct {
	// Host is the destination as the app names it, lower case. Without a
	// port it matches the name with any port; with one, only that port.
	Host       string
	PathPrefix string // "/" when absent; matched against the normalised path
	Upstream   string // http:// or https://
	CAFile     string // CA bundle for an https upstream; "": system roots
	Token      Strategy
	Audience   string   // exchange, client_credentials
	Scopes     []string // exchange, client_credentials

	cas *x509.CertPool
}

// IdPConfig is `egress.idp`: the OAuth client gatehouse is towards the
// identity provider for exchange and client_credentials. The secret or key
// is read at load, like every other secret (SPEC.md 2).
type IdPConfig struct {
	TokenEndpoint string // "": discovered from Issuer
	Issuer        string // an `issuers` entry: its ca_file is used for the IdP too
	ClientID      string
	ClientSecret  string        // from client_secret_env or client_secret_file
	PrivateKey    crypto.Signer // from private_key_file (private_key_jwt, RFC 7523)
	KeyID         string
	cas           *x509.CertPool // the named issuer's ca_file; nil: system roots
	caSum         [sha256.Size]byte
	digest        string // identifies the whole section, secret included, for sharing a client across reloads
}

const defaultInboundGrace = 5 * time.Second

func decodeEgress(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	if yamlpos.IsNull(n) {
		return
	}
	m := d.Map(n, "listen", "inbound_grace", "routes", "idp")
	e := &EgressConfig{InboundGrace: defaultInboundGrace}
	if ln := d.Require(m, "listen"); ln != nil && d.String(ln, &e.Listen) {
		if err := checkListen(e.Listen); err != nil {
			d.Errorf(ln, "egress.listen: %v", err)
		} else if !loopbackListen(e.Listen) {
			c.Warnings = append(c.Warnings, yamlpos.Errorf(d.Pos(ln),
				"warning: egress.listen %q is not a loopback address: anything that can reach it can have its calls sent with the tokens of requests in flight", e.Listen).Error())
		}
	}
	if gn := m.Get("inbound_grace"); d.Duration(gn, &e.InboundGrace) && e.InboundGrace < 0 {
		d.Errorf(gn, "egress.inbound_grace must not be negative")
	}
	needIdP := false
	var needNode *yaml.Node
	seen := map[string]bool{}
	for _, rn := range d.Seq(m.Get("routes")) {
		r, ok := decodeEgressRoute(d, rn)
		if !ok {
			continue
		}
		k := r.Host + " " + r.PathPrefix
		if seen[k] {
			d.Errorf(rn, "egress.routes: host %q with path_prefix %q is given twice", r.Host, r.PathPrefix)
			continue
		}
		seen[k] = true
		if (r.Token == StrategyExchange || r.Token == StrategyClientCredentials) && !needIdP {
			needIdP, needNode = true, rn
		}
		e.Routes = append(e.Routes, r)
	}
	if in := m.Get("idp"); !yamlpos.IsNull(in) {
		e.IdP = decodeIdP(d, in, c)
	} else if needIdP {
		d.Errorf(needNode, "egress.idp is needed: a route uses token exchange or client_credentials")
	}
	c.Egress = e
}

// loopbackListen reports whether addr binds only loopback: an IP in
// 127.0.0.0/8 or ::1, or localhost. ":port" binds every interface.
func loopbackListen(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func decodeEgressRoute(d *yamlpos.Decoder, n *yaml.Node) (EgressRoute, bool) {
	m := d.Map(n, "host", "path_prefix", "upstream", "ca_file", "token", "audience", "scopes")
	r := EgressRoute{PathPrefix: "/"}
	ok := true
	if hn := d.Require(m, "host"); hn == nil || !d.String(hn, &r.Host) {
		ok = false
	} else if err := checkEgressHost(r.Host); err != nil {
		d.Errorf(hn, "egress.routes: host: %v", err)
		ok = false
	} else {
		r.Host = strings.ToLower(r.Host)
	}
	if pn := m.Get("path_prefix"); d.String(pn, &r.PathPrefix) {
		if canon, good := policy.Normalize(r.PathPrefix); !good || canon != r.PathPrefix || !strings.HasPrefix(r.PathPrefix, "/") {
			d.Errorf(pn, "egress.routes: path_prefix %q must be a canonical path starting with /", r.PathPrefix)
			ok = false
		}
	}
	if un := d.Require(m, "upstream"); un == nil || !d.String(un, &r.Upstream) {
		ok = false
	} else if err := policy.CheckUpstream(r.Upstream); err != nil {
		d.Errorf(un, "egress.routes: upstream: %v", err)
		ok = false
	} else if !strings.HasPrefix(r.Upstream, "http://") && !strings.HasPrefix(r.Upstream, "https://") {
		d.Errorf(un, "egress.routes: upstream must be http:// or https://")
		ok = false
	}
	if cn := m.Get("ca_file"); d.String(cn, &r.CAFile) && r.CAFile != "" {
		if !strings.HasPrefix(r.Upstream, "https://") {
			d.Errorf(cn, "egress.routes: ca_file applies only to an https:// upstream")
			ok = false
		} else if b, err := tlsca.Load(r.CAFile); err != nil {
			d.Errorf(cn, "egress.routes: ca_file: %v", err)
			ok = false
		} else {
			r.cas = b.Pool
		}
	}
	var tok string
	if tn := d.Require(m, "token"); tn == nil || !d.String(tn, &tok) {
		ok = false
	} else {
		switch s := Strategy(tok); s {
		case StrategyPropagate, StrategyExchange, StrategyClientCredentials, StrategyNone:
			r.Token = s
		default:
			d.Errorf(tn, "egress.routes: token must be propagate, exchange, client_credentials or none, got %q", tok)
			ok = false
		}
	}
	an, sn := m.Get("audience"), m.Get("scopes")
	d.String(an, &r.Audience)
	d.Strings(sn, &r.Scopes)
	for i, s := range r.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			d.Errorf(d.Seq(sn)[i], "egress.routes: scope %q is not a valid scope token (RFC 6749 3.3)", s)
			ok = false
		}
	}
	if r.Token == StrategyPropagate || r.Token == StrategyNone {
		for _, x := range []*yaml.Node{an, sn} {
			if !yamlpos.IsNull(x) {
				d.Errorf(x, "egress.routes: audience and scopes apply only to exchange and client_credentials")
				ok = false
			}
		}
	}
	return r, ok
}

// checkEgressHost accepts a host name or IP, with an optional port: what
// an app puts in Host or in an absolute-form URL.
func checkEgressHost(h string) error {
	if h == "" {
		return fmt.Errorf("must not be empty")
	}
	name := h
	if strings.Contains(h, "]") || strings.Count(h, ":") == 1 {
		host, port, err := net.SplitHostPort(h)
		if err != nil || port == "" || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("%q: want NAME or NAME:PORT", h)
		}
		name = host
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("%q: want NAME or NAME:PORT", h)
		}
	}
	return nil
}

func decodeIdP(d *yamlpos.Decoder, n *yaml.Node, c *Config) *IdPConfig {
	m := d.Map(n, "token_endpoint", "issuer", "client_id", "client_secret_env", "client_secret_file", "private_key_file")
	p := &IdPConfig{}
	ok := true
	if en := m.Get("token_endpoint"); d.String(en, &p.TokenEndpoint) && p.TokenEndpoint != "" {
		if err := checkIdPURL(p.TokenEndpoint); err != nil {
			d.Errorf(en, "egress.idp.token_endpoint: %v", err)
			ok = false
		}
	}
	in := m.Get("issuer")
	if d.String(in, &p.Issuer) && p.Issuer != "" {
		i := slices.IndexFunc(c.Issuers, func(is jwks.Issuer) bool { return is.Name == p.Issuer })
		if i < 0 {
			d.Errorf(in, "egress.idp.issuer %q is not an entry of issuers", p.Issuer)
			ok = false
		} else if f := c.Issuers[i].CAFile; f != "" {
			if b, err := tlsca.Load(f); err == nil {
				p.cas, p.caSum = b.Pool, b.Sum
			} // a broken ca_file is reported at its issuer entry
		}
		if p.TokenEndpoint == "" {
			if err := checkIdPURL(p.Issuer); err != nil {
				d.Errorf(in, "egress.idp.issuer: discovery: %v", err)
				ok = false
			}
		}
	} else if p.TokenEndpoint == "" {
		d.Errorf(n, "egress.idp needs token_endpoint or issuer (whose discovery document names it)")
		ok = false
	}
	if cn := d.Require(m, "client_id"); cn == nil || !d.String(cn, &p.ClientID) {
		ok = false
	} else if p.ClientID == "" {
		d.Errorf(cn, "egress.idp.client_id must not be empty")
		ok = false
	}
	var srcs []string
	for _, k := range []string{"client_secret_env", "client_secret_file", "private_key_file"} {
		if m.Has(k) {
			srcs = append(srcs, k)
		}
	}
	if len(srcs) != 1 {
		d.Errorf(n, "egress.idp needs exactly one of client_secret_env, client_secret_file, private_key_file (got %d)", len(srcs))
		return nil
	}
	sn := m.Get(srcs[0])
	var v string
	if !d.String(sn, &v) {
		return nil
	}
	switch srcs[0] {
	case "client_secret_env":
		p.ClientSecret = os.Getenv(v)
		if p.ClientSecret == "" {
			d.Errorf(sn, "egress.idp.client_secret_env: environment variable %q is empty or unset", v)
			ok = false
		}
	case "client_secret_file":
		b, err := os.ReadFile(v)
		if err != nil {
			d.Errorf(sn, "egress.idp.client_secret_file: %v", err)
			ok = false
		}
		p.ClientSecret = strings.TrimRight(string(b), "\r\n")
		if err == nil && p.ClientSecret == "" {
			d.Errorf(sn, "egress.idp.client_secret_file: %s is empty", v)
			ok = false
		}
	case "private_key_file":
		k, kid, err := oauth.LoadPrivateKey(v)
		if err != nil {
			d.Errorf(sn, "egress.idp.private_key_file: %v", err)
			ok = false
		}
		p.PrivateKey, p.KeyID = k, kid
	}
	if !ok {
		return nil
	}
	p.digest = idpDigest(p)
	return p
}

// checkIdPURL accepts an https URL, or http to a loopback host (a local
// IdP, tests): the client secret and the tokens travel on it.
func checkIdPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q: want an absolute https:// URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if a, err := netip.ParseAddr(u.Hostname()); (err == nil && a.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("%q: want https:// (http:// only to a loopback address)", raw)
}

// idpDigest identifies an idp section, secret and key included, without
// holding them: handlers of successive reloads with the same section share
// one client and its token cache.
func idpDigest(p *IdPConfig) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %q %q %x", p.TokenEndpoint, p.Issuer, p.ClientID, p.ClientSecret, p.KeyID, p.caSum)
	if p.PrivateKey != nil {
		if der, err := x509.MarshalPKIXPublicKey(p.PrivateKey.Public()); err == nil {
			h.Write(der)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
