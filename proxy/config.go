package proxy

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/internal/tlsca"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/revoke"
	"github.com/gatehouse/gatehouse/policy"
)

// Config is the whole gatehouse configuration file, validated, with the
// files it names already read. It is immutable once loaded: a reload loads a
// new one and builds a new Handler from it.
type Config struct {
	File string

	Listen         string
	TLS            *TLSConfig // nil: plain HTTP
	Upstream       string     // http://, https:// or unix:///path.sock
	UpstreamCAFile string
	upstreamCAs    *x509.CertPool // nil: system roots

	// ListenProtocols is `listen_protocols`; nil: http1, h2 (with tls) and
	// h2c (without). UpstreamProtocol is `upstream_protocol`; "": http1.
	ListenProtocols  []string
	UpstreamProtocol string

	AdminListen string // "" disables the admin listener
	WatchConfig bool

	Timeouts Timeouts
	Limits   Limits

	Issuers      []jwks.Issuer
	Token        TokenConfig
	ForwardToken bool
	Headers      []HeaderRule // injected claim headers, in file order
	StripHeaders []string     // name prefixes removed from every request

	TrustedProxies []netip.Prefix

	Policy *policy.Engine
	CORS   CORSConfig
	Audit  audit.Config
	// Revocation is the `revocation` section; nil when absent (off).
	Revocation *revoke.Config

	// Assertion is `upstream_assertion` (SPEC.md 11); nil: off.
	Assertion *AssertionConfig

	// Egress is the `egress` section (SPEC.md 11); nil: no egress listener.
	Egress *EgressConfig

	// Warnings are what `-t` prints to stderr (exit 0) and a start or
	// reload logs, each "FILE:LINE:COL: warning: message" (SPEC.md 15).
	Warnings []string

	LogLevel slog.Level
}

// TLSConfig is the `tls` section; the key pair is loaded at config load so
// that `-t` and reload see a broken certificate.
type TLSConfig struct {
	CertFile, KeyFile string
	cert              tls.Certificate
}

// Timeouts is the `timeouts` section.
type Timeouts struct {
	ReadHeader time.Duration // default 10s
	Upstream   time.Duration // dial + response headers; default 30s
	Idle       time.Duration // keep-alive idle; default 90s
	Shutdown   time.Duration // graceful stop bound; default 15s
}

// Limits is the `limits` section.
type Limits struct {
	MaxHeaderBytes int64 // request line + headers; default 32768; larger: 431
	MaxBodyBytes   int64 // 0: unlimited; larger: 413
	// FailedAuth is `limits.failed_auth` (SPEC.md 12); nil: off.
	FailedAuth *FailedAuth
}

// FailedAuth is `limits.failed_auth`: a token bucket per client IP on 401
// answers. Each field has its default when the section is present.
type FailedAuth struct {
	Rate    float64 // 401 answers per second per client IP; default 10
	Burst   int64   // bucket size; default 20
	Clients int64   // addresses remembered, least recently seen out; default 65536
}

// Bounds of limits.failed_auth. A table entry is about 40 bytes plus the
// index's share: maxFailedAuthClients is some 100 MiB, far past any need
// of one instance. The rate's cap keeps the refill interval at least 1µs.
const (
	maxFailedAuthClients = 1 << 21
	maxFailedAuthRate    = 1e6
	maxFailedAuthBurst   = 1e6
)

// TokenConfig is the `token` section.
type TokenConfig struct {
	Sources   []TokenSource
	MaxSize   int64 // default 8192
	CacheSize int64 // default 10000
}

// TokenSource is one `token.sources` entry.
type TokenSource struct {
	Kind SourceKind
	Name string // header name (canonical), cookie name or query parameter
}

// SourceKind says where a token is read from.
type SourceKind uint8

const (
	SourceBearer SourceKind = iota // header:Authorization, Bearer scheme only
	SourceHeader                   // header:NAME, the raw value
	SourceCookie
	SourceQuery
)

// HeaderRule maps one injected request header to a claim path.
type HeaderRule struct {
	Name  string // canonical header name
	Claim string
}

// alwaysStripped are the headers frameworks use to rewrite the path or method
// behind the proxy's back, and the forwarding headers that only gatehouse may
// set (SPEC.md 5). They go whatever the config says.
var alwaysStripped = []string{
	"Forwarded", "X-Real-IP", "X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Uri",
	"X-Forwarded-Prefix", "X-Forwarded-Path", "X-Forwarded-Port", "X-HTTP-Method",
	"X-HTTP-Method-Override", "X-Method-Override",
}

func defaultConfig(file string) *Config {
	return &Config{
		File:         file,
		ForwardToken: true,
		Timeouts: Timeouts{
			ReadHeader: 10 * time.Second,
			Upstream:   30 * time.Second,
			Idle:       90 * time.Second,
			Shutdown:   15 * time.Second,
		},
		Limits: Limits{MaxHeaderBytes: 32768},
		Token: TokenConfig{
			Sources:   []TokenSource{{Kind: SourceBearer, Name: "Authorization"}},
			MaxSize:   8192,
			CacheSize: 10000,
		},
		StripHeaders: []string{"X-Auth-"},
		CORS:         CORSConfig{MaxAge: defaultCORSMaxAge},
		LogLevel:     slog.LevelInfo,
	}
}

var topLevelKeys = []string{
	"listen", "tls", "upstream", "upstream_ca_file", "admin", "watch_config", "timeouts", "limits",
	"issuers", "token", "forward_token", "headers", "strip_headers", "trusted_proxies",
	"paths", "routes", "default", "audit", "log", "cors", "listen_protocols", "upstream_protocol",
	"upstream_assertion",
	"revocation",
	"egress",
}

// LoadConfig reads, parses and validates the config file at path, reading
// every file and secret it names (no network). On failure the error is a
// yamlpos.List holding every error found, each as FILE:LINE:COL: message.
func LoadConfig(path string) (*Config, error) {
	d, root := yamlpos.ParseFile(path)
	if d.Failed() {
		return nil, d.Err()
	}
	return decodeConfig(d, root)
}

// ParseConfig is LoadConfig for config text already in memory; file names
// the text in error positions.
func ParseConfig(file string, data []byte) (*Config, error) {
	d := yamlpos.NewDecoder(file)
	root := d.Parse(data)
	if d.Failed() {
		return nil, d.Err()
	}
	return decodeConfig(d, root)
}

func decodeConfig(d *yamlpos.Decoder, root *yaml.Node) (*Config, error) {
	c := defaultConfig(d.File)
	if root == nil {
		d.Errorf(nil, "empty config: listen, upstream, issuers and routes are needed")
		return nil, d.Err()
	}
	m := d.Map(root, topLevelKeys...)

	if n := d.Require(m, "listen"); n != nil && d.String(n, &c.Listen) {
		if err := checkListen(c.Listen); err != nil {
			d.Errorf(n, "listen: %v", err)
		}
	}
	if n := d.Require(m, "upstream"); n != nil && d.String(n, &c.Upstream) {
		if err := policy.CheckUpstream(c.Upstream); err != nil {
			d.Errorf(n, "upstream: %v", err)
		}
	}
	if n := m.Get("upstream_ca_file"); d.String(n, &c.UpstreamCAFile) && c.UpstreamCAFile != "" {
		if b, err := tlsca.Load(c.UpstreamCAFile); err != nil {
			d.Errorf(n, "upstream_ca_file: %v", err)
		} else {
			c.upstreamCAs = b.Pool
		}
	}
	decodeTLS(d, m.Get("tls"), c)
	decodeProtocols(d, m, c)
	admin := d.Map(m.Get("admin"), "listen")
	if n := admin.Get("listen"); d.String(n, &c.AdminListen) && c.AdminListen != "" {
		if err := checkListen(c.AdminListen); err != nil {
			d.Errorf(n, "admin.listen: %v", err)
		}
	}
	d.Bool(m.Get("watch_config"), &c.WatchConfig)

	t := d.Map(m.Get("timeouts"), "read_header", "upstream", "idle", "shutdown")
	d.Duration(t.Get("read_header"), &c.Timeouts.ReadHeader)
	d.Duration(t.Get("upstream"), &c.Timeouts.Upstream)
	d.Duration(t.Get("idle"), &c.Timeouts.Idle)
	d.Duration(t.Get("shutdown"), &c.Timeouts.Shutdown)

	l := d.Map(m.Get("limits"), "max_header_bytes", "max_body_bytes", "failed_auth")
	d.Int(l.Get("max_header_bytes"), 1024, &c.Limits.MaxHeaderBytes)
	d.Int(l.Get("max_body_bytes"), 0, &c.Limits.MaxBodyBytes)
	c.Limits.FailedAuth = decodeFailedAuth(d, l)

	if n := m.Get("issuers"); yamlpos.IsNull(n) {
		d.Errorf(m.Node, "missing required key %q", "issuers")
	} else {
		c.Issuers = jwks.DecodeIssuers(d, n)
	}
	decodeToken(d, m.Get("token"), c)
	d.Bool(m.Get("forward_token"), &c.ForwardToken)
	decodeHeaders(d, m, c)
	decodeTrusted(d, m.Get("trusted_proxies"), c)

	// routes may be absent (SPEC.md 2 does not require it): then default
	// decides every request, e.g. `default: { auth: required }`.
	c.Policy = policy.Decode(d, m.Get("paths"), m.Get("routes"), m.Get("default"))
	decodeCORS(d, m.Get("cors"), c)
	checkRouteProtocols(d, cmp.Or(m.Get("routes"), m.Node), c)
	c.Audit = audit.DecodeConfig(d, m.Get("audit"))
	decodeAssertion(d, m.Get("upstream_assertion"), c)
	checkAssertionHeader(d, c)
	c.Revocation = revoke.Decode(d, m.Get("revocation"))
	decodeEgress(d, m.Get("egress"), c)

	lg := d.Map(m.Get("log"), "level")
	if n := lg.Get("level"); !yamlpos.IsNull(n) {
		var s string
		if d.String(n, &s) {
			if err := c.LogLevel.UnmarshalText([]byte(s)); err != nil || !validLevel(s) {
				d.Errorf(n, "log.level must be debug, info, warn or error, got %q", s)
			}
		}
	}

	if err := d.Err(); err != nil {
		return nil, err
	}
	if pw := c.Policy.Warnings(); len(pw) > 0 {
		c.Warnings = append(slices.Clip(pw), c.Warnings...)
	}
	if c.Assertion != nil && c.AdminListen == "" {
		// Signed, but nobody can fetch the keys to check it.
		c.Warnings = append(c.Warnings, yamlpos.Errorf(d.Pos(m.Get("upstream_assertion")),
			"warning: upstream_assertion is on but admin.listen is empty: its public keys (/.well-known/jwks.json) are served nowhere").Error())
	}
	return c, nil
}

// decodeFailedAuth reads limits.failed_auth; absent or null is off. An
// empty mapping (`failed_auth: {}`) turns it on with the defaults.
func decodeFailedAuth(d *yamlpos.Decoder, l yamlpos.Map) *FailedAuth {
	n := l.Get("failed_auth")
	if yamlpos.IsNull(n) {
		return nil
	}
	m := d.Map(n, "rate", "burst", "clients")
	fa := &FailedAuth{Rate: 10, Burst: 20, Clients: 65536}
	if rn := m.Get("rate"); !yamlpos.IsNull(rn) {
		// yamlpos has integers only; a rate may be fractional (0.5: one
		// failure every 2s).
		v, err := strconv.ParseFloat(rn.Value, 64)
		switch {
		case rn.Kind != yaml.ScalarNode || (rn.Tag != "!!int" && rn.Tag != "!!float") || err != nil:
			d.Errorf(rn, "limits.failed_auth.rate: expected a number, got %q", rn.Value)
		case !(v > 0) || v > maxFailedAuthRate:
			d.Errorf(rn, "limits.failed_auth.rate must be more than 0 and at most %g, got %s", float64(maxFailedAuthRate), rn.Value)
		default:
			fa.Rate = v
		}
	}
	if bn := m.Get("burst"); d.Int(bn, 1, &fa.Burst) && fa.Burst > maxFailedAuthBurst {
		d.Errorf(bn, "limits.failed_auth.burst must be at most %d, got %d", int64(maxFailedAuthBurst), fa.Burst)
	}
	if cn := m.Get("clients"); d.Int(cn, 1, &fa.Clients) && fa.Clients > maxFailedAuthClients {
		d.Errorf(cn, "limits.failed_auth.clients must be at most %d, got %d", maxFailedAuthClients, fa.Clients)
	}
	return fa
}

func validLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

func decodeTLS(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	if yamlpos.IsNull(n) {
		return
	}
	m := d.Map(n, "cert_file", "key_file")
	t := &TLSConfig{}
	cn, kn := d.Require(m, "cert_file"), d.Require(m, "key_file")
	if cn == nil || kn == nil || !d.String(cn, &t.CertFile) || !d.String(kn, &t.KeyFile) {
		return
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		d.Errorf(cn, "tls: load key pair: %v", err)
		return
	}
	t.cert = cert
	c.TLS = t
}

func decodeToken(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	m := d.Map(n, "sources", "max_size", "cache_size")
	d.Int(m.Get("max_size"), 64, &c.Token.MaxSize)
	d.Int(m.Get("cache_size"), 0, &c.Token.CacheSize)
	sn := m.Get("sources")
	if yamlpos.IsNull(sn) {
		return
	}
	elems := d.Seq(sn)
	if len(elems) == 0 {
		d.Errorf(sn, "token.sources must name at least one source")
		return
	}
	var out []TokenSource
	for _, e := range elems {
		var s string
		if !d.String(e, &s) {
			continue
		}
		src, err := parseSource(s)
		if err != nil {
			d.Errorf(e, "token.sources: %v", err)
			continue
		}
		for _, o := range out {
			if o == src {
				d.Errorf(e, "token.sources: %q given twice", s)
			}
		}
		out = append(out, src)
	}
	c.Token.Sources = out
}

func parseSource(s string) (TokenSource, error) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return TokenSource{}, fmt.Errorf("%q: want header:NAME, cookie:NAME or query:NAME", s)
	}
	switch kind {
	case "header":
		if !validHeaderName(name) {
			return TokenSource{}, fmt.Errorf("%q: invalid header name", s)
		}
		name = canonicalHeader(name)
		if name == "Authorization" {
			return TokenSource{Kind: SourceBearer, Name: name}, nil
		}
		return TokenSource{Kind: SourceHeader, Name: name}, nil
	case "cookie":
		if !validHeaderName(name) {
			return TokenSource{}, fmt.Errorf("%q: invalid cookie name", s)
		}
		return TokenSource{Kind: SourceCookie, Name: name}, nil
	case "query":
		if strings.ContainsAny(name, "&=;#% ") {
			return TokenSource{}, fmt.Errorf("%q: invalid query parameter name", s)
		}
		return TokenSource{Kind: SourceQuery, Name: name}, nil
	}
	return TokenSource{}, fmt.Errorf("%q: unknown source kind %q (header, cookie or query)", s, kind)
}

func decodeHeaders(d *yamlpos.Decoder, m yamlpos.Map, c *Config) {
	if n := m.Get("headers"); !yamlpos.IsNull(n) {
		hm := d.Map(n) // keys are header names: any
		keys, vals := hm.Entries()
		seen := map[string]bool{}
		for i, k := range keys {
			kn := hm.KeyNode(k)
			if !validHeaderName(k) {
				d.Errorf(kn, "headers: invalid header name %q", k)
				continue
			}
			if f := foldName(k); seen[f] {
				d.Errorf(kn, "headers: %q is the same header as an earlier entry (names compare case-insensitively, _ as -)", k)
				continue
			} else {
				seen[f] = true
			}
			if reservedHeader(k) {
				d.Errorf(kn, "headers: %q cannot carry a claim", k)
				continue
			}
			var claim string
			if d.String(vals[i], &claim) {
				if claim == "" {
					d.Errorf(vals[i], "headers: claim path for %q is empty", k)
					continue
				}
				c.Headers = append(c.Headers, HeaderRule{Name: canonicalHeader(k), Claim: claim})
			}
		}
	}
	if n := m.Get("strip_headers"); !yamlpos.IsNull(n) {
		var list []string
		if d.Strings(n, &list) {
			for i, p := range list {
				if p == "" || !validHeaderName(strings.TrimSuffix(p, "-")) && !validHeaderName(p) {
					d.Errorf(d.Seq(n)[i], "strip_headers: invalid header name prefix %q", p)
				}
			}
			c.StripHeaders = list
		}
	}
}

func decodeTrusted(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	for _, e := range d.Seq(n) {
		var s string
		if !d.String(e, &s) {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				d.Errorf(e, "trusted_proxies: %q is not a CIDR or an address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, p.Masked())
	}
}

// checkListen accepts HOST:PORT or :PORT with a numeric port (0 picks a
// free one), as net.Listen("tcp", addr) would bind it.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT or :PORT", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}
