package jwks

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/tlsca"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Defaults of an `issuers` entry (SPEC.md 2).
const (
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultMaxStale           = 24 * time.Hour
	DefaultLeeway             = 30 * time.Second
	DefaultRolesClaim         = "roles"
	DefaultScopesClaim        = "scope"
	DefaultSubjectClaim       = "sub"
)

var (
	defaultPublicAlgs = []string{"RS256", "ES256", "PS256", "EdDSA"}
	defaultHMACAlgs   = []string{"HS256"}
	// hmacMinLen is RFC 7518 3.2: a key of the same size as the hash output or larger.
	hmacMinLen = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}
	knownAlgs  = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"}
)

var issuerKeys = []string{
	"issuer", "audiences", "types", "ca_file",
	"jwks_url", "discovery_url", "jwks_file", "public_key_file", "public_key_url",
	"hmac_secret_env", "hmac_secret_file",
	"algorithms", "refresh_interval", "min_refresh_interval", "max_stale",
	"max_lifetime", "leeway", "required_claims", "roles_claim", "scopes_claim", "subject_claim",
}

var sourceKeys = []string{"jwks_url", "discovery_url", "jwks_file", "public_key_file",
	"public_key_url", "hmac_secret_env", "hmac_secret_file"}

// Issuer is one validated `issuers` entry with its local key material
// (jwks_file, public_key_file, HMAC secret, ca_file) already read.
type Issuer struct {
	Name string      // the configured `issuer`; "" for the entry that takes tokens without iss
	Pos  yamlpos.Pos // position of the entry in the config file

	Audiences   []string // accepted aud values; empty when AnyAudience
	AnyAudience bool     // `audiences: any`: aud not checked
	Types       []string // allowed JWS typ values; empty: not checked
	CAFile      string   // CA bundle for https key URLs; "" = system roots

	// Exactly one key source is set.
	JWKSURL        string
	DiscoveryURL   string
	JWKSFile       string
	PublicKeyFile  string
	PublicKeyURL   string
	HMACSecretEnv  string
	HMACSecretFile string

	Algorithms         []string      // allowed header alg values
	RefreshInterval    time.Duration // background refresh; default 15m
	MinRefreshInterval time.Duration // unknown-kid refetch at most this often; default 30s
	MaxStale           time.Duration // last good keys kept while refreshes fail; default 24h
	MaxLifetime        time.Duration // >0: iat required and exp-iat <= MaxLifetime; default 0 (off)
	Leeway             time.Duration // clock skew on exp, nbf, iat; default 30s
	RequiredClaims     []string      // claim paths that must be present; default [sub]
	RolesClaim         string        // default "roles"
	ScopesClaim        string        // default "scope"
	SubjectClaim       string        // claim path of Result.Subject (the audit subject); default "sub"

	static []*key            // keys of jwks_file, public_key_file, hmac secret
	ca     *tlsca.Bundle     // from CAFile; nil = system roots
	fp     [sha256.Size]byte // fingerprint of everything above except Pos

	requiredErrs []*Error // per RequiredClaims entry, made by compile
}

// compile prepares what verification reads often, once per key cache.
func (is *Issuer) compile() {
	is.requiredErrs = make([]*Error, len(is.RequiredClaims))
	for i, c := range is.RequiredClaims {
		is.requiredErrs[i] = requiredClaimError(c)
	}
}

// requiredErr is the refusal for the missing RequiredClaims[i].
func (is *Issuer) requiredErr(i int) *Error {
	if i < len(is.requiredErrs) {
		return is.requiredErrs[i]
	}
	return requiredClaimError(is.RequiredClaims[i])
}

// remote reports whether the issuer's keys come over the network.
func (is *Issuer) remote() bool {
	return is.JWKSURL != "" || is.DiscoveryURL != "" || is.PublicKeyURL != ""
}

// label is the issuer's name for metrics, logs and /readyz.
func (is *Issuer) label() string {
	if is.Name == "" {
		return "(no iss)"
	}
	return is.Name
}

func (is *Issuer) defaults() {
	is.RefreshInterval = DefaultRefreshInterval
	is.MinRefreshInterval = DefaultMinRefreshInterval
	is.MaxStale = DefaultMaxStale
	is.Leeway = DefaultLeeway
	is.RequiredClaims = []string{"sub"}
	is.RolesClaim = DefaultRolesClaim
	is.ScopesClaim = DefaultScopesClaim
	is.SubjectClaim = DefaultSubjectClaim
}

// DecodeIssuers decodes and validates the `issuers` list. It reads the local
// key material (jwks_file, public_key_file, hmac_secret_env/_file, ca_file)
// but never touches the network, so it is what `gatehouse -t` runs. Every
// error is recorded in d at the node it is about; entries with errors are
// left out of the result.
func DecodeIssuers(d *yamlpos.Decoder, n *yaml.Node) []Issuer {
	if yamlpos.IsNull(n) {
		d.Errorf(n, "issuers: at least one entry is required")
		return nil
	}
	elems := d.Seq(n)
	if len(elems) == 0 {
		if n.Kind == yaml.SequenceNode {
			d.Errorf(n, "issuers: at least one entry is required")
		}
		return nil
	}
	var out []Issuer
	seen := map[string]*yaml.Node{}
	for _, e := range elems {
		is, ok := decodeIssuer(d, e)
		if e == nil || e.Kind != yaml.MappingNode {
			continue
		}
		if prev, dup := seen[is.Name]; dup {
			if is.Name == "" {
				d.Errorf(e, "only one issuer entry may leave out issuer (the first is at line %d)", prev.Line)
			} else {
				d.Errorf(e, "issuer %q is configured twice (the first is at line %d)", is.Name, prev.Line)
			}
			ok = false
		} else {
			seen[is.Name] = e
		}
		if ok {
			out = append(out, is)
		}
	}
	return out
}

func decodeIssuer(d *yamlpos.Decoder, n *yaml.Node) (Issuer, bool) {
	nerr := func() int { return len(yamlpos.Errors(d.Err())) }
	start := nerr()

	var is Issuer
	is.defaults()
	is.Pos = d.Pos(n)
	if yamlpos.IsNull(n) || n.Kind != yaml.MappingNode {
		d.Map(n) // records "expected a mapping"
		if yamlpos.IsNull(n) {
			d.Errorf(n, "issuer entry must be a mapping")
		}
		return is, false
	}
	m := d.Map(n, issuerKeys...)
	is.decodeName(d, m)
	is.decodeAudiences(d, m)
	is.decodeTypes(d, m)
	srcs := is.decodeSources(d, m)
	is.decodeAlgorithms(d, m, srcs)
	is.decodeDurations(d, m)
	is.decodeClaims(d, m)
	// Local key material, only when the entry is otherwise sound enough to know what to read.
	if len(srcs) == 1 {
		is.loadLocal(d, m)
	}
	is.loadCA(d, m)

	ok := nerr() == start
	if ok {
		is.fp = is.fingerprint()
	}
	return is, ok
}

func (is *Issuer) decodeName(d *yamlpos.Decoder, m yamlpos.Map) {
	if v := m.Get("issuer"); v != nil {
		if d.String(v, &is.Name) && is.Name == "" {
			d.Errorf(v, "issuer must not be empty (leave the key out for tokens without iss)")
		}
	}
}

// decodeAudiences reads a list, or the scalar `any`.
func (is *Issuer) decodeAudiences(d *yamlpos.Decoder, m yamlpos.Map) {
	v := m.Get("audiences")
	switch {
	case yamlpos.IsNull(v):
		d.Errorf(m.Node, "missing required key %q (use `audiences: any` to turn the audience check off)", "audiences")
	case v.Kind == yaml.ScalarNode:
		if v.Value == "any" {
			is.AnyAudience = true
		} else {
			d.Errorf(v, "audiences must be a list or the word any, got %q", v.Value)
		}
	case d.Strings(v, &is.Audiences):
		if len(is.Audiences) == 0 {
			d.Errorf(v, "audiences must not be empty (use `audiences: any` to turn the audience check off)")
		}
		for i, a := range is.Audiences {
			if a == "" {
				d.Errorf(v.Content[i], "audience must not be empty")
			}
		}
	}
}

func (is *Issuer) decodeTypes(d *yamlpos.Decoder, m yamlpos.Map) {
	if v := m.Get("types"); v != nil && d.Strings(v, &is.Types) {
		for i, t := range is.Types {
			if t == "" {
				d.Errorf(v.Content[i], "type must not be empty")
			}
		}
	}
}

// decodeSources reads the key source (exactly one) and ca_file, and returns
// the source keys present in the entry.
func (is *Issuer) decodeSources(d *yamlpos.Decoder, m yamlpos.Map) []string {
	var srcs []string
	for _, k := range sourceKeys {
		if m.Has(k) {
			srcs = append(srcs, k)
		}
	}
	switch len(srcs) {
	case 0:
		d.Errorf(m.Node, "missing key source: set exactly one of %s", strings.Join(sourceKeys, ", "))
	case 1:
	default:
		d.Errorf(m.KeyNode(srcs[1]), "%s and %s both set: an issuer takes exactly one key source", srcs[0], srcs[1])
	}
	for _, kv := range []struct {
		k   string
		dst *string
	}{{"jwks_url", &is.JWKSURL}, {"discovery_url", &is.DiscoveryURL}, {"public_key_url", &is.PublicKeyURL},
		{"jwks_file", &is.JWKSFile}, {"public_key_file", &is.PublicKeyFile},
		{"hmac_secret_env", &is.HMACSecretEnv}, {"hmac_secret_file", &is.HMACSecretFile}, {"ca_file", &is.CAFile}} {
		v := m.Get(kv.k)
		// ca_file: "" is SPEC.md 2's own example and means the system roots.
		if d.String(v, kv.dst) && *kv.dst == "" && kv.k != "ca_file" {
			d.Errorf(v, "%s must not be empty", kv.k)
		}
	}
	for _, k := range []string{"jwks_url", "discovery_url", "public_key_url"} {
		v := m.Get(k)
		if yamlpos.IsNull(v) || v.Kind != yaml.ScalarNode || v.Value == "" {
			continue
		}
		s := v.Value
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			d.Errorf(v, "%s must be an absolute http:// or https:// URL, got %q", k, s)
		}
	}
	if is.DiscoveryURL != "" && !m.Has("issuer") {
		// The discovery document's issuer must equal the configured one
		// (OpenID Connect Discovery 4.3); with none configured it never
		// does, and the entry would never get keys.
		d.Errorf(m.Node, "missing required key %q: discovery_url needs it (the discovery document's issuer must equal it, OpenID Connect Discovery 4.3)", "issuer")
	}
	if is.CAFile != "" && !is.remote() && len(srcs) == 1 {
		d.Errorf(m.KeyNode("ca_file"), "ca_file applies only to jwks_url, discovery_url and public_key_url")
	}
	return srcs
}

// decodeAlgorithms reads algorithms, or picks the default for the key source.
func (is *Issuer) decodeAlgorithms(d *yamlpos.Decoder, m yamlpos.Map, srcs []string) {
	hmacSrc := is.HMACSecretEnv != "" || is.HMACSecretFile != ""
	algsNode := m.Get("algorithms")
	if algsNode == nil {
		if hmacSrc {
			is.Algorithms = slices.Clone(defaultHMACAlgs)
		} else {
			is.Algorithms = slices.Clone(defaultPublicAlgs)
		}
		return
	}
	var algs []string
	if !d.Strings(algsNode, &algs) {
		return
	}
	if len(algs) == 0 {
		d.Errorf(algsNode, "algorithms must not be empty")
	}
	for i, a := range algs {
		el := algsNode.Content[i]
		switch {
		case !slices.Contains(knownAlgs, a):
			d.Errorf(el, "unsupported algorithm %q (supported: %s; none is never accepted)", a, strings.Join(knownAlgs, " "))
		case hmacSrc && !strings.HasPrefix(a, "HS"):
			d.Errorf(el, "algorithm %s needs a public key, but this issuer has an HMAC secret", a)
		case !hmacSrc && len(srcs) == 1 && strings.HasPrefix(a, "HS"):
			d.Errorf(el, "algorithm %s needs an HMAC secret (hmac_secret_env or hmac_secret_file), not %s", a, srcs[0])
		case slices.Contains(algs[:i], a):
			d.Errorf(el, "algorithm %s listed twice", a)
		}
	}
	is.Algorithms = algs
}

func (is *Issuer) decodeDurations(d *yamlpos.Decoder, m yamlpos.Map) {
	for _, kv := range []struct {
		k   string
		dst *time.Duration
	}{{"refresh_interval", &is.RefreshInterval}, {"min_refresh_interval", &is.MinRefreshInterval},
		{"max_stale", &is.MaxStale}, {"max_lifetime", &is.MaxLifetime}, {"leeway", &is.Leeway}} {
		v := m.Get(kv.k)
		if d.Duration(v, kv.dst) && *kv.dst == 0 && kv.k != "max_lifetime" && kv.k != "leeway" {
			d.Errorf(v, "%s must be greater than 0", kv.k)
		}
	}
	if is.MinRefreshInterval > 0 && is.RefreshInterval > 0 && is.MinRefreshInterval > is.RefreshInterval {
		d.Errorf(firstNode(m.Get("min_refresh_interval"), m.Get("refresh_interval"), m.Node),
			"min_refresh_interval (%s) must not exceed refresh_interval (%s)", is.MinRefreshInterval, is.RefreshInterval)
	}
}

// decodeClaims reads required_claims and the claim paths roles, scopes and
// the subject come from.
func (is *Issuer) decodeClaims(d *yamlpos.Decoder, m yamlpos.Map) {
	if v := m.Get("required_claims"); v != nil && d.Strings(v, &is.RequiredClaims) {
		for i, c := range is.RequiredClaims {
			if c == "" {
				d.Errorf(v.Content[i], "claim path must not be empty")
			}
		}
	}
	for _, kv := range []struct {
		k   string
		dst *string
	}{{"roles_claim", &is.RolesClaim}, {"scopes_claim", &is.ScopesClaim}, {"subject_claim", &is.SubjectClaim}} {
		v := m.Get(kv.k)
		if d.String(v, kv.dst) && *kv.dst == "" {
			d.Errorf(v, "%s must not be empty", kv.k)
		}
	}
}

// loadCA reads ca_file (the one loader, internal/tlsca, that
// upstream_ca_file uses too).
func (is *Issuer) loadCA(d *yamlpos.Decoder, m yamlpos.Map) {
	if is.CAFile == "" {
		return
	}
	b, err := tlsca.Load(is.CAFile)
	switch {
	case errors.Is(err, tlsca.ErrNoCertificate):
		d.Errorf(m.Get("ca_file"), "ca_file %v", err)
	case err != nil:
		d.Errorf(m.Get("ca_file"), "read ca_file: %v", unwrapPath(err))
	default:
		is.ca = b
	}
}

func (is *Issuer) loadLocal(d *yamlpos.Decoder, m yamlpos.Map) {
	switch {
	case is.JWKSFile != "":
		v := m.Get("jwks_file")
		data, err := os.ReadFile(is.JWKSFile)
		if err != nil {
			d.Errorf(v, "read jwks_file: %v", unwrapPath(err))
			return
		}
		ks, err := parseJWKS(data)
		if err != nil {
			d.Errorf(v, "jwks_file %s: %v", is.JWKSFile, err)
			return
		}
		is.requireFit(d, firstNode(m.Get("algorithms"), v), is.JWKSFile, ks.keys)
		is.static = ks.keys
	case is.PublicKeyFile != "":
		v := m.Get("public_key_file")
		data, err := os.ReadFile(is.PublicKeyFile)
		if err != nil {
			d.Errorf(v, "read public_key_file: %v", unwrapPath(err))
			return
		}
		k, err := parsePEM(data)
		if err != nil {
			d.Errorf(v, "public_key_file %s: %v", is.PublicKeyFile, err)
			return
		}
		is.requireFit(d, firstNode(m.Get("algorithms"), v), is.PublicKeyFile, []*key{k})
		is.static = []*key{k}
	case is.HMACSecretEnv != "" || is.HMACSecretFile != "":
		var secret []byte
		var where string
		var v *yaml.Node
		if is.HMACSecretEnv != "" {
			v = m.Get("hmac_secret_env")
			where = "environment variable " + is.HMACSecretEnv
			secret = []byte(os.Getenv(is.HMACSecretEnv))
			if len(secret) == 0 {
				d.Errorf(v, "%s is not set or empty", where)
				return
			}
		} else {
			v = m.Get("hmac_secret_file")
			where = "file " + is.HMACSecretFile
			data, err := os.ReadFile(is.HMACSecretFile)
			if err != nil {
				d.Errorf(v, "read hmac_secret_file: %v", unwrapPath(err))
				return
			}
			// A trailing newline is what editors and `echo` add; it is not part of the secret.
			secret = []byte(strings.TrimRight(string(data), "\r\n"))
			if len(secret) == 0 {
				d.Errorf(v, "%s is empty", where)
				return
			}
		}
		need, needAlg := 0, ""
		for _, a := range is.Algorithms {
			if n := hmacMinLen[a]; n > need {
				need, needAlg = n, a
			}
		}
		if len(secret) < need {
			d.Errorf(v, "HMAC secret in %s is %d bytes; %s needs at least %d bytes (RFC 7518 3.2): generate a new one, e.g. `openssl rand -base64 %d`",
				where, len(secret), needAlg, need, need)
			return
		}
		is.static = []*key{{kind: kindHMAC, raw: secret}}
	}
}

// fingerprint identifies the entry's configuration and local key material,
// so that a reload can tell an unchanged issuer (keep its key cache) from a
// changed one. Pos is left out: moving an entry in the file changes nothing.
func (is *Issuer) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	w := func(parts ...string) {
		for _, p := range parts {
			var n [8]byte
			binary.BigEndian.PutUint64(n[:], uint64(len(p)))
			h.Write(n[:])
			h.Write([]byte(p))
		}
	}
	w(is.Name, fmt.Sprint(is.AnyAudience), strings.Join(is.Audiences, "\x00"), strings.Join(is.Types, "\x00"), is.CAFile,
		is.JWKSURL, is.DiscoveryURL, is.JWKSFile, is.PublicKeyFile, is.PublicKeyURL, is.HMACSecretEnv, is.HMACSecretFile,
		strings.Join(is.Algorithms, "\x00"), is.RefreshInterval.String(), is.MinRefreshInterval.String(),
		is.MaxStale.String(), is.MaxLifetime.String(), is.Leeway.String(), strings.Join(is.RequiredClaims, "\x00"),
		is.RolesClaim, is.ScopesClaim, is.SubjectClaim)
	for _, k := range is.static {
		w(k.id())
	}
	if is.ca != nil {
		w(string(is.ca.Sum[:]))
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// requireFit reports at n when no key of a key file fits any of the
// issuer's algorithms: such an entry could never verify a token.
func (is *Issuer) requireFit(d *yamlpos.Decoder, n *yaml.Node, file string, keys []*key) {
	if slices.ContainsFunc(keys, func(k *key) bool { return slices.ContainsFunc(is.Algorithms, k.fits) }) {
		return
	}
	algs := strings.Join(is.Algorithms, " ")
	if len(keys) == 1 {
		d.Errorf(n, "none of the algorithms %s fits the %s key in %s", algs, keys[0].kind, file)
		return
	}
	d.Errorf(n, "none of the algorithms %s fits any key in %s (%s)", algs, file, describeKeys(keys))
}

// describeKeys lists the keys of a set for an error message: kid, type and
// alg when the key names one.
func describeKeys(keys []*key) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		p := string(k.kind)
		if k.alg != "" {
			p += " alg " + k.alg
		}
		if k.kid != "" {
			p = strconv.Quote(k.kid) + ": " + p
		}
		parts[i] = p
	}
	return "keys: " + strings.Join(parts, ", ")
}

func firstNode(ns ...*yaml.Node) *yaml.Node {
	for _, n := range ns {
		if n != nil {
			return n
		}
	}
	return nil
}

// unwrapPath drops the *PathError prefix (the path is already in the message context).
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}
