package oauth

import (
	"container/list"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Grant is the OAuth grant type sent as grant_type.
type Grant string

const (
	// ClientCredentials is RFC 6749 section 4.4: the service's own token.
	ClientCredentials Grant = "client_credentials"
	// TokenExchange is RFC 8693: a token for another audience on behalf of
	// the subject of the inbound token.
	TokenExchange Grant = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// ErrUnavailable is wrapped by every error meaning the identity provider
// gave no token and no cached token is still valid; callers answer 502
// token_unavailable.
var ErrUnavailable = errors.New("token unavailable")

// Results passed to Config.Observe.
const (
	ResultOK          = "ok"          // a token was obtained
	ResultError       = "error"       // the identity provider answered, but no usable token (4xx, OAuth error, unusable response)
	ResultUnavailable = "unavailable" // it could not be reached, timed out, or answered 429/5xx (discovery failures included)
)

const (
	defaultMaxEntries = 10000
	// maxInflight bounds the requests to the identity provider in flight
	// (one per key): with the identity provider slow and many distinct
	// inbound tokens, callers beyond it get ErrUnavailable at once instead
	// of queueing goroutines and requests without limit.
	maxInflight    = 4096
	defaultTimeout = 10 * time.Second
	backoffBase    = time.Second
	backoffMax     = 30 * time.Second
	// refreshFraction of a token's lifetime before its exp, the cached token
	// is replaced (SPEC.md 11: exp minus 10 % of the lifetime).
	refreshFraction = 10
)

// Config configures a Client. ClientID and one of ClientSecret or
// PrivateKey are required; TokenEndpoint or Issuer is required.
type Config struct {
	// TokenEndpoint is the URL token requests are POSTed to. When empty it
	// is the token_endpoint of Issuer's /.well-known/openid-configuration,
	// fetched on first use and, after a failure, again with backoff.
	TokenEndpoint string
	// Issuer is the identity provider's issuer URL; the discovery document
	// must name exactly this issuer (OpenID Connect Discovery 4.3).
	Issuer   string
	ClientID string
	// ClientSecret, when set, authenticates the client with
	// client_secret_basic (RFC 6749 2.3.1).
	ClientSecret string
	// PrivateKey, when set, authenticates the client with private_key_jwt
	// (RFC 7523, OpenID Connect Core 9): EC P-256 (ES256), RSA ≥ 2048 bits
	// (RS256) or Ed25519 (EdDSA). KeyID is the assertion's kid; empty means
	// the key's RFC 7638 thumbprint.
	PrivateKey crypto.Signer
	KeyID      string
	// HTTPClient makes the discovery and token requests; its timeouts are
	// the caller's. Default: a client with a 10 s timeout. Redirects are
	// never followed (a token endpoint has no reason to redirect a POST
	// carrying credentials).
	HTTPClient *http.Client
	// MaxEntries bounds the token cache (least recently used out). Default
	// 10,000. Requests in flight are bounded apart, at 4,096.
	MaxEntries int
	// Clock is the time source for expiry, refresh and backoff. Default
	// time.Now.
	Clock func() time.Time
	// Observe, when set, is called once per attempt to get a token from the
	// identity provider with the grant, ResultOK, ResultError or
	// ResultUnavailable (for gatehouse_idp_requests_total), and how long
	// the attempt took on Clock. Cache hits are not attempts. It must not
	// block.
	Observe func(grant Grant, result string, took time.Duration)
	// Hit, when set, is called for every token served from the cache (a
	// refresh it starts is an attempt, observed when it ends). It runs on
	// the caller's path: it must not block or allocate.
	Hit func(grant Grant)
}

// Request names the token wanted.
type Request struct {
	Grant Grant
	// SubjectToken is the verified inbound token, for TokenExchange only.
	SubjectToken string
	// SubjectDigest, when not nil, is sha256.Sum256 of SubjectToken,
	// computed by a caller that sees the same token many times (the proxy
	// keeps it with the verified token): hashing a 1 KB token is most of a
	// cache hit's cost. It must be the digest of SubjectToken: it is the
	// token's part of the cache key.
	SubjectDigest *[sha256.Size]byte
	// Audience is sent as audience (RFC 8693 2.1; for client credentials
	// the parameter most identity providers take for it) when not empty.
	Audience string
	// Scopes are sent space-separated as scope; their order does not
	// matter. Passing them sorted spares a copy on every call.
	Scopes []string
}

// Token is an access token and when it stops being valid (zero: unknown,
// not cached).
type Token struct {
	AccessToken string
	Expiry      time.Time
}

// Client gets tokens from one identity provider for one client identity and
// caches them. Safe for concurrent use. Close it when its config is
// replaced.
type Client struct {
	cfg     Config
	hc      *http.Client
	now     func() time.Time
	timeout time.Duration // per fetch, when hc has none
	alg     string        // private_key_jwt signing algorithm
	basic   string        // the client_secret_basic Authorization value

	ctx    context.Context // ends background fetches on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	entries  map[string]*list.Element // of *entry
	lru      *list.List               // front: most recently used
	inflight map[string]*call

	disc discovery
}

type entry struct {
	key       string
	tok       Token
	refreshAt time.Time
	retryAt   time.Time // after a failed background refresh
	failures  int
}

// call is one fetch from the identity provider; waiters read tok and err
// after done is closed.
type call struct {
	done chan struct{}
	tok  Token
	err  error
}

// New checks cfg and returns a Client. It makes no network request.
func New(cfg Config) (*Client, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("oauth: client_id is required")
	}
	switch {
	case cfg.ClientSecret != "" && cfg.PrivateKey != nil:
		return nil, errors.New("oauth: client secret and private key both set; choose one client authentication")
	case cfg.ClientSecret == "" && cfg.PrivateKey == nil:
		return nil, errors.New("oauth: a client secret or a private key is required")
	}
	if cfg.TokenEndpoint == "" && cfg.Issuer == "" {
		return nil, errors.New("oauth: token endpoint or issuer is required")
	}
	if cfg.TokenEndpoint != "" {
		if err := checkEndpoint(cfg.TokenEndpoint, ""); err != nil {
			return nil, fmt.Errorf("oauth: token endpoint: %w", err)
		}
	}
	if cfg.Issuer != "" {
		if err := checkEndpoint(cfg.Issuer, ""); err != nil {
			return nil, fmt.Errorf("oauth: issuer: %w", err)
		}
	}
	if cfg.MaxEntries < 0 {
		return nil, errors.New("oauth: max entries must not be negative")
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = defaultMaxEntries
	}
	c := &Client{
		cfg:      cfg,
		now:      cfg.Clock,
		entries:  make(map[string]*list.Element),
		lru:      list.New(),
		inflight: make(map[string]*call),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.PrivateKey != nil {
		alg, err := signingAlg(cfg.PrivateKey.Public())
		if err != nil {
			return nil, fmt.Errorf("oauth: private key: %w", err)
		}
		c.alg = alg
		if c.cfg.KeyID == "" {
			if c.cfg.KeyID, err = thumbprint(cfg.PrivateKey.Public()); err != nil {
				return nil, fmt.Errorf("oauth: private key: %w", err)
			}
		}
	} else {
		// RFC 6749 2.3.1: both are form-urlencoded before base64.
		c.basic = basicAuth(cfg.ClientID, cfg.ClientSecret)
	}
	hc := http.Client{Timeout: defaultTimeout}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	if hc.Timeout == 0 {
		c.timeout = defaultTimeout
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close ends fetches in flight and waits for them. Token answers
// ErrUnavailable afterwards.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Token returns a token for r: from the cache while it is fresh, else from
// the identity provider (one request per key at a time). Between exp − 10 %
// and exp the cached token is returned and one background fetch replaces
// it. Errors from the identity provider wrap ErrUnavailable; a malformed r
// gives an error that does not.
func (c *Client) Token(ctx context.Context, r Request) (Token, error) {
	if err := r.check(); err != nil {
		return Token{}, err
	}
	var kb [256]byte
	k := appendKey(kb[:0], &r)
	now := c.now()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Token{}, fmt.Errorf("%w: oauth client closed", ErrUnavailable)
	}
	if el, ok := c.entries[string(k)]; ok {
		e := el.Value.(*entry)
		if now.Before(e.tok.Expiry) {
			c.lru.MoveToFront(el)
			tok := e.tok
			if !now.Before(e.refreshAt) && !now.Before(e.retryAt) && c.inflight[string(k)] == nil && len(c.inflight) < maxInflight {
				c.startLocked(e.key, &r)
			}
			c.mu.Unlock()
			if c.cfg.Hit != nil {
				c.cfg.Hit(r.Grant)
			}
			return tok, nil
		}
		c.removeLocked(el)
	}
	cl := c.inflight[string(k)]
	if cl == nil {
		if len(c.inflight) >= maxInflight {
			c.mu.Unlock()
			return Token{}, fmt.Errorf("%w: %d requests to the identity provider already in flight", ErrUnavailable, maxInflight)
		}
		cl = c.startLocked(string(k), &r)
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.tok, cl.err
	case <-ctx.Done():
		return Token{}, fmt.Errorf("%w: waiting for the identity provider: %w", ErrUnavailable, ctx.Err())
	}
}

// startLocked starts the one fetch for key; c.mu is held.
func (c *Client) startLocked(key string, r *Request) *call {
	cl := &call{done: make(chan struct{})}
	c.inflight[key] = cl
	req := Request{Grant: r.Grant, SubjectToken: r.SubjectToken, Audience: r.Audience, Scopes: slices.Clone(r.Scopes)}
	c.wg.Add(1)
	go c.run(key, req, cl)
	return cl
}

// run fetches in the background, detached from the caller's context so a
// caller giving up does not fail the others waiting for the same key; the
// client's context (Close) and the fetch timeout bound it.
func (c *Client) run(key string, r Request, cl *call) {
	defer c.wg.Done()
	start := c.now()
	tok, lifetime, err := c.fetch(r, start)
	now := c.now()

	c.mu.Lock()
	delete(c.inflight, key)
	switch {
	case err == nil && !tok.Expiry.IsZero():
		c.putLocked(key, tok, tok.Expiry.Add(-lifetime/refreshFraction))
	case err != nil:
		// A background refresh failed: keep the valid token, try again
		// later rather than on every call.
		if el, ok := c.entries[key]; ok {
			e := el.Value.(*entry)
			e.failures++
			e.retryAt = now.Add(backoff(e.failures, rand.Float64()))
		}
	}
	cl.tok, cl.err = tok, err
	c.mu.Unlock()
	close(cl.done)
}

func (c *Client) putLocked(key string, tok Token, refreshAt time.Time) {
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*entry)
		e.tok, e.refreshAt, e.retryAt, e.failures = tok, refreshAt, time.Time{}, 0
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.cfg.MaxEntries {
		c.removeLocked(c.lru.Back())
	}
	c.entries[key] = c.lru.PushFront(&entry{key: key, tok: tok, refreshAt: refreshAt})
}

func (c *Client) removeLocked(el *list.Element) {
	delete(c.entries, el.Value.(*entry).key)
	c.lru.Remove(el)
}

// backoff after n consecutive failures: 1 s doubling to 30 s, with equal
// jitter (half fixed, half random; jitter in [0, 1)).
func backoff(n int, jitter float64) time.Duration {
	d := backoffMax
	if n <= 5 {
		d = min(backoffBase<<(n-1), backoffMax)
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

func (r *Request) check() error {
	switch r.Grant {
	case TokenExchange:
		if r.SubjectToken == "" {
			return errors.New("oauth: token exchange needs a subject token")
		}
	case ClientCredentials:
		if r.SubjectToken != "" {
			return errors.New("oauth: client credentials take no subject token")
		}
	default:
		return fmt.Errorf("oauth: unknown grant %q", r.Grant)
	}
	for _, s := range r.Scopes {
		if !isScopeToken(s) {
			return fmt.Errorf("oauth: invalid scope %q (RFC 6749 3.3)", s)
		}
	}
	return nil
}

// isScopeToken: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) (RFC 6749 3.3).
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// appendKey appends r's cache key: grant, SHA-256 of the subject token,
// audience and sorted scopes, each length-prefixed so no two requests share
// a key. The subject token is only hashed, never kept.
func appendKey(b []byte, r *Request) []byte {
	b = appendField(b, string(r.Grant))
	switch {
	case r.SubjectToken == "":
	case r.SubjectDigest != nil:
		b = append(b, r.SubjectDigest[:]...)
	default:
		// unsafe: Sum256 only reads; converting would copy every token on
		// the cache-hit path.
		sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(r.SubjectToken), len(r.SubjectToken)))
		b = append(b, sum[:]...)
	}
	b = appendField(b, r.Audience)
	scopes := r.Scopes
	if !slices.IsSorted(scopes) {
		var arr [16]string
		scopes = append(arr[:0], scopes...)
		slices.Sort(scopes)
	}
	b = binary.AppendUvarint(b, uint64(len(scopes)))
	for _, s := range scopes {
		b = appendField(b, s)
	}
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// checkEndpoint accepts an absolute http(s) URL without userinfo or
// fragment. With issuer set (a discovered endpoint), an https issuer's
// endpoint must be https too: discovery must not downgrade.
func checkEndpoint(raw, issuer string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" || strings.ContainsAny(raw, " \t\r\n") {
		return errors.New("must be an absolute URL with a host, no userinfo and no fragment")
	}
	if issuer != "" && strings.HasPrefix(issuer, "https:") && u.Scheme != "https" {
		return errors.New("must be https for an https issuer")
	}
	return nil
}

func basicAuth(id, secret string) string {
	return "Basic " + b64std(url.QueryEscape(id)+":"+url.QueryEscape(secret))
}
