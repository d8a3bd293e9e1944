package audit

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/jsonx"
)

// Event is one decision, filled by the proxy on the request path. It is
// plain data, copied by value into the queue; Roles is shared and must not be
// modified after Emit.
type Event struct {
	Time      time.Time // decision time; zero = when the worker encodes it
	RequestID string
	Decision  string // "allow" | "deny"
	Reason    string // SPEC.md 4 codes, or "ok", "public"
	Status    int
	Route     string
	Method    string
	Path      string
	Host      string
	ClientIP  string
	// Subject, Issuer, JTI and Roles come only from a token verified on this
	// request (the proxy guarantees it). Empty ones are left out of the JSON.
	Subject  string
	Issuer   string
	JTI      string
	Roles    []string
	Duration time.Duration
	// Detail is the failed check of a denial in words (SPEC.md 15: "unknown
	// key id", "signature", "roles all [admin]"); never a token or a claim
	// value. Left out of the JSON when empty.
	Detail string
	// GRPCStatus is the grpc-status gatehouse answered a gRPC request with
	// (SPEC.md 9); 0 (no answer of gatehouse's own to a gRPC request) is
	// left out of the JSON.
	GRPCStatus int
	// Shadow, when set, is what a `shadow: true` route would have decided
	// (SPEC.md 13); the request itself was handled without that route.
	Shadow *Shadow
	// Egress marks a decision of the egress listener (SPEC.md 11): type
	// gatehouse.egress.<decision>, and data.strategy is Strategy (the
	// route's token strategy; "" for a destination that matched none).
	Egress   bool
	Strategy string
}

// Shadow is a shadow route's would-be decision (SPEC.md 13).
type Shadow struct {
	Route    string
	Decision string // "allow" | "deny"
	Reason   string
}

// maxField bounds each string field of a queued Event, in bytes. Path, Host,
// Method and RequestID come from the client (up to the proxy's header limit,
// 32 KiB by default) and the token fields from the presented token: without
// a bound a full queue of 10,000 events could hold hundreds of MiB.
const maxField = 2048

// truncMarker ends a field cut to maxField.
const truncMarker = "...(truncated)"

// capFields cuts every string field of ev longer than maxField. Route,
// Decision and Reason come from the configuration and gatehouse itself but
// are capped too, so the bound holds whatever the caller fills in. Roles
// is not: it is the caller's slice, shared and not to be modified.
func capFields(ev *Event) {
	for _, f := range [...]*string{&ev.RequestID, &ev.Decision, &ev.Reason, &ev.Route, &ev.Method,
		&ev.Path, &ev.Host, &ev.ClientIP, &ev.Subject, &ev.Issuer, &ev.JTI, &ev.Detail, &ev.Strategy} {
		if len(*f) > maxField {
			*f = capString(*f)
		}
	}
}

// capString cuts s to at most maxField bytes at a UTF-8 boundary and marks
// the cut. The concatenation copies the kept prefix, so the queue does not
// pin the request's memory; short strings are never copied.
func capString(s string) string {
	n := maxField - len(truncMarker)
	for i := 0; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n] + truncMarker
}

// eventType is the CloudEvents type of ev: gatehouse.egress.<decision> for
// the egress listener's decisions, else EventType's.
func eventType(ev *Event) string {
	if !ev.Egress {
		return EventType(ev.Decision)
	}
	switch ev.Decision {
	case "allow":
		return "gatehouse.egress.allow"
	case "deny":
		return "gatehouse.egress.deny"
	}
	return "gatehouse.egress." + ev.Decision
}

// EventType is the CloudEvents type of a decision: gatehouse.auth.<decision>.
func EventType(decision string) string {
	switch decision {
	case "allow":
		return "gatehouse.auth.allow"
	case "deny":
		return "gatehouse.auth.deny"
	}
	return "gatehouse.auth." + decision
}

// message is an encoded event: what is published, spooled and re-sent. Its
// id and body never change once made, so a re-send is a true duplicate.
type message struct {
	id   string
	typ  string
	key  string // routing key
	time time.Time
	body []byte // CloudEvent JSON, no trailing newline; a JSON array of them for a batch
	// batch is the number of events in a batched message (SPEC.md 12), 0
	// for a single event.
	batch int
}

// events is how many events m carries.
func (m *message) events() int { return max(m.batch, 1) }

// timeLayout is RFC 3339 with microseconds, as SPEC.md 8's example.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendCloudEvent appends ev as a CloudEvents 1.0 JSON object (SPEC.md 8).
// Identity fields (subject, issuer, jti, roles) are omitted when empty;
// every other data field is always present.
func appendCloudEvent(b []byte, ev *Event, id, source string, t time.Time) []byte {
	b = append(b, `{"specversion":"1.0","type":`...)
	b = jsonx.AppendString(b, eventType(ev))
	b = append(b, `,"source":`...)
	b = jsonx.AppendString(b, source)
	b = append(b, `,"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, timeLayout)
	b = append(b, `","datacontenttype":"application/json","data":{"request_id":`...)
	b = jsonx.AppendString(b, ev.RequestID)
	b = append(b, `,"decision":`...)
	b = jsonx.AppendString(b, ev.Decision)
	b = append(b, `,"reason":`...)
	b = jsonx.AppendString(b, ev.Reason)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(ev.Status), 10)
	b = append(b, `,"route":`...)
	b = jsonx.AppendString(b, ev.Route)
	b = append(b, `,"method":`...)
	b = jsonx.AppendString(b, ev.Method)
	b = append(b, `,"path":`...)
	b = jsonx.AppendString(b, ev.Path)
	b = append(b, `,"host":`...)
	b = jsonx.AppendString(b, ev.Host)
	b = append(b, `,"client_ip":`...)
	b = jsonx.AppendString(b, ev.ClientIP)
	if ev.Subject != "" {
		b = append(b, `,"subject":`...)
		b = jsonx.AppendString(b, ev.Subject)
	}
	if ev.Issuer != "" {
		b = append(b, `,"issuer":`...)
		b = jsonx.AppendString(b, ev.Issuer)
	}
	if ev.JTI != "" {
		b = append(b, `,"jti":`...)
		b = jsonx.AppendString(b, ev.JTI)
	}
	if len(ev.Roles) > 0 {
		b = append(b, `,"roles":[`...)
		for i, r := range ev.Roles {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonx.AppendString(b, r)
		}
		b = append(b, ']')
	}
	if ev.Detail != "" {
		b = append(b, `,"detail":`...)
		b = jsonx.AppendString(b, ev.Detail)
	}
	if ev.GRPCStatus != 0 {
		b = append(b, `,"grpc_status":`...)
		b = strconv.AppendInt(b, int64(ev.GRPCStatus), 10)
	}
	if sh := ev.Shadow; sh != nil {
		b = append(b, `,"shadow":{"route":`...)
		b = jsonx.AppendString(b, sh.Route)
		b = append(b, `,"decision":`...)
		b = jsonx.AppendString(b, sh.Decision)
		b = append(b, `,"reason":`...)
		b = jsonx.AppendString(b, sh.Reason)
		b = append(b, '}')
	}
	if ev.Egress {
		b = append(b, `,"strategy":`...)
		b = jsonx.AppendString(b, ev.Strategy)
	}
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(ev.Duration)/float64(time.Millisecond), 'f', -1, 64)
	b = append(b, "}}"...)
	return b
}

// routingKey substitutes {decision} and {reason} in tmpl.
func routingKey(tmpl string, ev *Event) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	return strings.NewReplacer("{decision}", ev.Decision, "{reason}", ev.Reason).Replace(tmpl)
}
