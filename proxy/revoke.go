package proxy

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks/revoke"
)

// revokeTimeout bounds `gatehouse revoke`: every broker of the list is tried
// once, each attempt within the dialer's own setup timeout.
const revokeTimeout = 30 * time.Second

// Revoke is `gatehouse revoke` (SPEC.md 12): it publishes one revocation to
// the stream of the config's `revocation` section and exits 0 once the
// broker confirmed it; 1 when it could not be published, 2 on a usage or
// config error.
func Revoke(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: gatehouse revoke [-config FILE] (-jti ID | -sub SUBJECT [-before TIME] | -kid KID) [-issuer ISS] -reason TEXT [-until TIME]"
	fs := flag.NewFlagSet("gatehouse revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfigPath(), "config file")
	jti := fs.String("jti", "", "revoke the token with this jti")
	sub := fs.String("sub", "", "revoke this subject's tokens issued before -before")
	kid := fs.String("kid", "", "revoke every token signed with this key")
	issuer := fs.String("issuer", "", "the issuer (iss) the revocation applies to; empty: every issuer")
	reason := fs.String("reason", "", "why (recorded in the message)")
	before := fs.String("before", "", "with -sub: RFC 3339 time; tokens issued before it are revoked (default: now)")
	until := fs.String("until", "", "RFC 3339 time after which the revocation is forgotten (default: now + max_age)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gatehouse revoke: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q\n%s", fs.Arg(0), usage)
	}
	var r revoke.Revocation
	n := 0
	for _, c := range []struct {
		v    string
		kind revoke.Kind
	}{{*jti, revoke.KindJTI}, {*sub, revoke.KindSub}, {*kid, revoke.KindKid}} {
		if c.v != "" {
			n++
			r.Kind, r.Value = c.kind, c.v
		}
	}
	if n != 1 {
		return fail("give exactly one of -jti, -sub, -kid\n%s", usage)
	}
	if *reason == "" {
		return fail("-reason is required\n%s", usage)
	}
	r.Issuer, r.Reason = *issuer, *reason
	if *before != "" {
		if r.Kind != revoke.KindSub {
			return fail("-before goes with -sub only")
		}
		t, err := time.Parse(time.RFC3339, *before)
		if err != nil {
			return fail("-before: not an RFC 3339 time (e.g. 2026-12-06T10:00:00Z)")
		}
		r.Before = t
	}
	if *until != "" {
		t, err := time.Parse(time.RFC3339, *until)
		if err != nil {
			return fail("-until: not an RFC 3339 time (e.g. 2026-12-07T10:00:00Z)")
		}
		r.Until = t
	}
	if err := r.Validate(); err != nil {
		return fail("%v", err)
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	if cfg.Revocation == nil {
		return fail("%s has no revocation section: nothing says where to publish", *configPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	id, err := revoke.Publish(ctx, cfg.Revocation, r, time.Now())
	if err != nil {
		// err names brokers by position, never by URL.
		fmt.Fprintf(stderr, "gatehouse revoke: not published: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "revoked %s %q: message %s confirmed on stream %s\n", r.Kind, r.Value, id, cfg.Revocation.Stream)
	return 0
}
