package proxy

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/jwks"
)

// headerTable is the compiled `headers` map of one config.
type headerTable struct {
	rules []HeaderRule
	// lists holds, per issuer name, the claim paths that are its roles_claim
	// or scopes_claim: the app may split those headers on spaces too.
	lists map[string][2]string
	log   *slog.Logger
}

// newHeaderTable compiles cfg's `headers` for one Handler.
func newHeaderTable(cfg *Config, log *slog.Logger) *headerTable {
	t := &headerTable{rules: cfg.Headers, lists: map[string][2]string{}, log: log}
	for _, is := range cfg.Issuers {
		t.lists[is.Name] = [2]string{is.RolesClaim, is.ScopesClaim}
	}
	return t
}

// rendered is the claim headers of one verified token under one headerTable,
// kept in the token cache's Result.Memo so that a repeated token renders
// nothing. It lives as long as the cache entry (up to token.cache_size of
// them), so it is kept small: one values slice whose one-element windows are
// the header values, shared read-only between requests.
type rendered struct {
	table  *headerTable
	values []string // per rule
	set    []bool   // per rule: false when the claim gives no header
}

func (t *headerTable) inject(h http.Header, res *jwks.Result) {
	if len(t.rules) == 0 {
		return
	}
	m := memoOf(res)
	r := m.headers.Load()
	if r == nil || r.table != t {
		r = t.render(res)
		m.headers.Store(r)
	}
	for i := range r.values {
		if r.set[i] {
			// A full slice expression: an append by the upstream side can
			// never write into the next value.
			h[t.rules[i].Name] = r.values[i : i+1 : i+1]
		}
	}
}

func (t *headerTable) render(res *jwks.Result) *rendered {
	r := &rendered{table: t, values: make([]string, len(t.rules)), set: make([]bool, len(t.rules))}
	lists := t.lists[res.Issuer]
	for i, rule := range t.rules {
		v, ok := res.Claim(rule.Claim)
		if !ok {
			continue
		}
		seps := ","
		if rule.Claim == lists[0] || rule.Claim == lists[1] {
			seps = ", "
		}
		s, why := renderClaim(v, seps)
		switch why {
		case renderOK:
			r.values[i] = s
			r.set[i] = true
		case renderSeparator:
			// Once per token and config: render runs again only for a token
			// the cache does not hold. The value stays out of the log.
			if t.log != nil {
				t.log.Warn("claim array element holds a separator, header not set",
					"header", rule.Name, "claim", rule.Claim, "issuer", res.Issuer)
			}
		}
	}
	return r
}

// renderFail says why a claim gives no header.
type renderFail uint8

const (
	renderOK        renderFail = iota
	renderUnusable             // null, or a control character: nothing to log
	renderSeparator            // an array element holds a separator the app splits on
)

// claimString is renderClaim for a header that is not a roles or scopes claim.
func claimString(v any) (string, bool) {
	s, why := renderClaim(v, ",")
	return s, why == renderOK
}

// renderClaim renders a claim value as SPEC.md 5 says: strings as is,
// numbers in plain decimal, booleans, arrays joined with ",", objects as
// compact JSON. A null claim, or a value with a control character (which
// would split or smuggle a header), gives no header. Nor does an array with
// an element holding a byte of seps: ["user,admin"] is one role to the
// policy, but `user,admin` is two to an app that splits the header.
func renderClaim(v any, seps string) (string, renderFail) {
	var s string
	switch x := v.(type) {
	case nil:
		return "", renderUnusable
	case []any:
		parts := make([]string, 0, len(x))
		split := false
		for _, e := range x {
			var p string
			switch e.(type) {
			case []any, map[string]any:
				b, err := json.Marshal(e)
				if err != nil {
					return "", renderUnusable
				}
				p = string(b)
			default:
				var ok bool
				if p, ok = scalarString(e); !ok {
					return "", renderUnusable
				}
			}
			split = split || strings.ContainsAny(p, seps)
			parts = append(parts, p)
		}
		s = strings.Join(parts, ",")
		if split {
			if hasControl(s) {
				return "", renderUnusable
			}
			return "", renderSeparator
		}
	case map[string]any:
		b, err := json.Marshal(x)
		if err != nil {
			return "", renderUnusable
		}
		s = string(b)
	default:
		var ok bool
		if s, ok = scalarString(x); !ok {
			return "", renderUnusable
		}
	}
	if hasControl(s) {
		return "", renderUnusable
	}
	return s, renderOK
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return formatNumber(x), true
	case json.Number:
		if f, err := x.Float64(); err == nil && strings.ContainsAny(string(x), "eE") {
			return formatNumber(f), true
		}
		return string(x), true
	case nil:
		return "", true
	}
	return "", false
}

// formatNumber writes a JSON number in plain decimal, never in exponent form
// (1e+21 would surprise an app parsing an integer id).
func formatNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
