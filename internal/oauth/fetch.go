package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	// maxTokenResponse bounds what is read from the token endpoint: a token
	// response is a few KiB at most.
	maxTokenResponse = 64 << 10
	// maxDiscovery bounds the discovery document (the same cap as a JWKS).
	maxDiscovery = 1 << 20

	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	assertionType        = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// fetch gets one token from the identity provider and calls Observe once.
// It returns the token and its lifetime (for the refresh margin).
func (c *Client) fetch(r Request, start time.Time) (Token, time.Duration, error) {
	ctx := c.ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	t0 := c.now()
	tok, lifetime, result, err := c.fetchOnce(ctx, r, start)
	if c.cfg.Observe != nil {
		c.cfg.Observe(r.Grant, result, c.now().Sub(t0))
	}
	if err != nil {
		return Token{}, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, grantName(r.Grant), err)
	}
	return tok, lifetime, nil
}

func grantName(g Grant) string {
	if g == TokenExchange {
		return "token exchange"
	}
	return "client credentials"
}

func (c *Client) fetchOnce(ctx context.Context, r Request, start time.Time) (Token, time.Duration, string, error) {
	endpoint, err := c.tokenEndpoint(ctx)
	if err != nil {
		return Token{}, 0, ResultUnavailable, err
	}
	form := url.Values{"grant_type": {string(r.Grant)}}
	if r.Grant == TokenExchange {
		form.Set("subject_token", r.SubjectToken)
		form.Set("subject_token_type", tokenTypeAccessToken)
		form.Set("requested_token_type", tokenTypeAccessToken)
	}
	if r.Audience != "" {
		form.Set("audience", r.Audience)
	}
	if len(r.Scopes) > 0 {
		form.Set("scope", strings.Join(r.Scopes, " "))
	}
	if c.cfg.PrivateKey != nil {
		a, err := c.assertion(endpoint, start)
		if err != nil {
			return Token{}, 0, ResultError, err
		}
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_assertion_type", assertionType)
		form.Set("client_assertion", a)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, 0, ResultError, fmt.Errorf("token request to %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.basic != "" {
		req.Header.Set("Authorization", c.basic)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Token{}, 0, ResultUnavailable, fmt.Errorf("token request to %s: %s", endpoint, transportError(err))
	}
	defer resp.Body.Close()
	body, err := readCapped(resp.Body, maxTokenResponse)
	if err != nil {
		result := ResultUnavailable // the connection broke
		if errors.Is(err, errTooLarge) {
			result = ResultError // it answered, with garbage
		}
		return Token{}, 0, result, fmt.Errorf("token endpoint %s answered %d: %w", endpoint, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		result := ResultError
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			result = ResultUnavailable
		}
		return Token{}, 0, result, fmt.Errorf("token endpoint %s answered %d%s", endpoint, resp.StatusCode, oauthErrorCode(body))
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return Token{}, 0, ResultError, fmt.Errorf("token endpoint %s answered 200 without application/json", endpoint)
	}
	tok, lifetime, err := parseTokenResponse(body, r.Grant, r.Audience, start)
	if err != nil {
		return Token{}, 0, ResultError, fmt.Errorf("token endpoint %s answered 200 with an unusable token response: %w", endpoint, err)
	}
	return tok, lifetime, ResultOK, nil
}

// transportError describes a failed HTTP exchange without the *url.Error
// wrapping (which repeats the method and URL).
func transportError(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

var errTooLarge = errors.New("body too large")

func readCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %s", transportError(err))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: over %d KiB", errTooLarge, limit>>10)
	}
	return b, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// registeredErrors are the OAuth error codes an error text may repeat:
// RFC 6749 5.2, RFC 8693 2.2.2 (invalid_target) and RFC 6749 4.1.2.1's
// server_error and temporarily_unavailable. Anything else the identity
// provider says is not repeated, so a hostile one cannot make gatehouse log
// a token by putting it in "error".
var registeredErrors = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
	"invalid_target": true, "server_error": true, "temporarily_unavailable": true,
}

// oauthErrorCode returns " <code>" for an RFC 6749 5.2 error body with a
// registered code, " (unregistered OAuth error)" for another code, "" when
// the body is no OAuth error. error_description is never repeated.
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return ""
	}
	if registeredErrors[e.Error] {
		return " " + e.Error
	}
	return " (unregistered OAuth error)"
}

// discovery is the lazily fetched token endpoint.
type discovery struct {
	mu       sync.Mutex
	endpoint string
	fetching chan struct{} // closed when the fetch in progress ends
	err      error         // of the last failed fetch
	retryAt  time.Time
	failures int
}

// tokenEndpoint returns the configured endpoint, or the discovered one,
// fetching the discovery document once at a time; after a failure, until
// its backoff ends, it answers that failure without a request.
func (c *Client) tokenEndpoint(ctx context.Context) (string, error) {
	if c.cfg.TokenEndpoint != "" {
		return c.cfg.TokenEndpoint, nil
	}
	d := &c.disc
	for {
		d.mu.Lock()
		if d.endpoint != "" {
			ep := d.endpoint
			d.mu.Unlock()
			return ep, nil
		}
		if ch := d.fetching; ch != nil {
			d.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return "", fmt.Errorf("waiting for discovery: %s", transportError(ctx.Err()))
			}
		}
		now := c.now()
		if d.err != nil && now.Before(d.retryAt) {
			err := d.err
			d.mu.Unlock()
			return "", err
		}
		ch := make(chan struct{})
		d.fetching = ch
		d.mu.Unlock()

		ep, err := c.discover(ctx)

		d.mu.Lock()
		d.fetching = nil
		if err == nil {
			d.endpoint, d.err, d.failures = ep, nil, 0
		} else {
			d.failures++
			d.err = err
			d.retryAt = c.now().Add(backoff(d.failures, rand.Float64()))
		}
		d.mu.Unlock()
		close(ch)
		return ep, err
	}
}

// discover reads token_endpoint from Issuer's OpenID Connect discovery
// document (OpenID Connect Discovery 1.0, sections 4 and 4.3).
func (c *Client) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(c.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("discovery %s: %s", u, transportError(err))
	}
	defer resp.Body.Close()
	body, err := readCapped(resp.Body, maxDiscovery)
	if err != nil {
		return "", fmt.Errorf("discovery %s answered %d: %w", u, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery %s answered %d", u, resp.StatusCode)
	}
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := decodeStrict(body, &doc); err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	if doc.Issuer != c.cfg.Issuer {
		return "", fmt.Errorf("discovery %s names another issuer", u)
	}
	if err := checkEndpoint(doc.TokenEndpoint, c.cfg.Issuer); err != nil {
		return "", fmt.Errorf("discovery %s: token_endpoint: %w", u, err)
	}
	return doc.TokenEndpoint, nil
}

// decodeStrict decodes exactly one JSON object into v: no trailing data,
// fields of the wrong type rejected. Unknown fields are allowed (identity
// providers add their own).
func decodeStrict(body []byte, v any) error {
	if len(body) == 0 || firstNonSpace(body) != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		// Only the field name (ours) is repeated, never a value.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s has the wrong JSON type", te.Field)
		}
		return errors.New("invalid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}
