package jwks

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// FuzzVerify: arbitrary input never panics and is never accepted, except the
// valid tokens the seeds start from (RS256, EdDSA and HMAC signatures are
// deterministic and not malleable, and each token has one canonical
// spelling, so no mutation of them may verify).
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	rs, ed := jwkstest.NewKey("RS256", "rs"), jwkstest.NewKey("EdDSA", "ed")
	if err := os.WriteFile(dir+"/jwks.json", jwkstest.JWKS(rs, ed), 0o600); err != nil {
		f.Fatal(err)
	}
	hs := jwkstest.NewKey("HS256", "")
	f.Setenv("GATEHOUSE_FUZZ_HMAC", string(hs.Secret()))
	e := newEnv(f, ""+
		"  - issuer: "+issA+"\n    audiences: [api]\n    jwks_file: "+dir+"/jwks.json\n    algorithms: [RS256, EdDSA]\n"+
		"  - audiences: any\n    hmac_secret_env: GATEHOUSE_FUZZ_HMAC\n    required_claims: []\n",
		func(o *Options) { o.CacheSize = 64 })
	now := e.clk.now().Unix()
	claims := map[string]any{"iss": issA, "sub": "s", "aud": []string{"x", "api"}, "exp": now + 3600, "iat": now, "roles": "a,b"}
	valid := map[string]bool{}
	for _, tok := range []string{
		rs.Sign(claims), ed.Sign(claims),
		hs.Sign(map[string]any{"exp": now + 3600, "nbf": now}),
	} {
		if _, err := e.verify(tok); err != nil {
			f.Fatalf("seed refused: %v", err)
		}
		valid[tok] = true
		f.Add(tok)
		h, p, s := parts(tok)
		f.Add(h + "." + p + "." + s + "=")
		f.Add(h + "." + p)
		f.Add(`{"protected":"` + h + `","payload":"` + p + `","signature":"` + s + `"}`)
		f.Add(b64([]byte(`{"alg":"none"}`)) + "." + p + ".")
	}
	f.Add(strings.Repeat("a.", 5000))
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		res, err := e.v.Verify(context.Background(), tok)
		if err == nil && !valid[tok] {
			t.Fatalf("accepted %q: %+v", tok, res)
		}
		if err != nil {
			if res != nil {
				t.Fatal("result with an error")
			}
			if ve, ok := err.(*Error); !ok || ve.Reason == 0 || strings.Contains(ve.Msg, tok) && tok != "" && len(tok) > 3 {
				t.Fatalf("error %v", err)
			}
		}
	})
}
