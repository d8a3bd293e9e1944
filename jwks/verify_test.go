package jwks

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func TestVerifyAlgorithms(t *testing.T) {
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"} {
		t.Run(alg, func(t *testing.T) {
			k := jwkstest.NewKey(alg, "k-"+alg)
			var cfg string
			if strings.HasPrefix(alg, "HS") {
				t.Setenv("GATEHOUSE_TEST_HMAC", string(k.Secret()))
				cfg = "  - issuer: " + issA + "\n    audiences: [api]\n    hmac_secret_env: GATEHOUSE_TEST_HMAC\n    algorithms: [" + alg + "]\n"
			} else {
				srv := server(t, k)
				cfg = jwksIssuer(srv.URL, "algorithms: ["+alg+"]")
			}
			e := newEnv(t, cfg)
			res, err := e.verify(k.Sign(e.claims(issA)))
			if err != nil {
				t.Fatalf("Verify(valid %s) = %v", alg, err)
			}
			if res.Subject != "user-1" || res.Issuer != issA || res.Kid != "k-"+alg ||
				strings.Join(res.Roles, ",") != "user,admin" || strings.Join(res.Scopes, ",") != "read,write" {
				t.Errorf("result = %+v", res)
			}
			if want := e.clk.now().Add(300 * time.Second); !res.Expiry.Equal(want) || !res.NotAfter.Equal(want.Add(30*time.Second)) {
				t.Errorf("Expiry, NotAfter = %v, %v", res.Expiry, res.NotAfter)
			}
			if !strings.HasPrefix(alg, "HS") {
				// No kid in the header: the key that verified names it, so a
				// revocation by kid covers this token too (SPEC.md 12).
				res, err := e.verify(k.SignHeader(map[string]any{"alg": alg}, e.claims(issA)))
				if err != nil || res.Kid != "k-"+alg {
					t.Errorf("token without a kid header: Kid = %q, %v; want k-%s", kidOf(res), err, alg)
				}
			}
		})
	}
}

func TestVerifyKeyFiles(t *testing.T) {
	dir := t.TempDir()
	ec := jwkstest.NewKey("ES256", "")
	rsa := jwkstest.NewKey("RS256", "file-kid")
	ed := jwkstest.NewKey("EdDSA", "")
	os.WriteFile(dir+"/ec.pem", ec.PublicPEM(), 0o600)
	os.WriteFile(dir+"/ed.pem", ed.PublicPEM(), 0o600)
	os.WriteFile(dir+"/jwks.json", jwkstest.JWKS(rsa), 0o600)
	secret := strings.Repeat("x", 32)
	os.WriteFile(dir+"/secret", []byte(secret+"\n"), 0o600)
	e := newEnv(t, ""+
		"  - issuer: https://pem\n    audiences: [api]\n    public_key_file: "+dir+"/ec.pem\n"+
		"  - issuer: https://ed\n    audiences: [api]\n    public_key_file: "+dir+"/ed.pem\n"+
		"  - issuer: https://file\n    audiences: [api]\n    jwks_file: "+dir+"/jwks.json\n"+
		"  - audiences: any\n    hmac_secret_file: "+dir+"/secret\n")
	hs := &jwkstest.Key{Alg: "HS256", Private: []byte(secret)}
	tests := []struct {
		name string
		tok  string
	}{
		{"pem no kid", ec.Sign(e.claims("https://pem"))},
		{"pem with kid", (&jwkstest.Key{Alg: "ES256", Kid: "any", Private: ec.Private}).Sign(e.claims("https://pem"))},
		{"ed25519 pem", ed.Sign(e.claims("https://ed"))},
		{"jwks file", rsa.Sign(e.claims("https://file"))},
		{"hmac file, no iss", hs.Sign(e.claims(""))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.verify(tt.tok); err != nil {
				t.Errorf("Verify = %v", err)
			}
		})
	}
	if m := e.v.Missing(); len(m) != 0 {
		t.Errorf("Missing() = %v, want none", m)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// parts splits a compact token.
func parts(tok string) (h, p, s string) {
	x := strings.Split(tok, ".")
	return x[0], x[1], x[2]
}

func TestVerifyAttacks(t *testing.T) {
	rs := jwkstest.NewKey("RS256", "rsa-1")
	es := jwkstest.NewKey("ES256", "ec-1")
	foreign := jwkstest.NewKey("RS256", "rsa-1") // same kid, other key
	srv := server(t, rs, es)

	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		w.Write(jwkstest.JWKS(foreign))
	}))
	t.Cleanup(attacker.Close)

	e := newEnv(t, jwksIssuer(srv.URL, "algorithms: [RS256, RS384, PS256, ES256, ES384]"), func(o *Options) { o.MaxTokenSize = 4096 })
	c := e.claims(issA)
	valid := rs.Sign(c)
	if _, err := e.verify(valid); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	h, p, s := parts(valid)
	hdr := func(m map[string]any) string { return b64(mustJSON(m)) }
	signAs := func(k *jwkstest.Key, header map[string]any) string { return k.SignHeader(header, c) }

	// HMAC signed with the RSA public key PEM: the classic algorithm confusion.
	confused := &jwkstest.Key{Alg: "HS256", Kid: "rsa-1", Private: rs.PublicPEM()}
	// Trailing bits: the RSA signature is 256 bytes, so its last base64 char carries 4 unused bits.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[len(s)-1])
	trailing := h + "." + p + "." + s[:len(s)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])
	// ECDSA signature of r = s = 0.
	esTok := es.Sign(c)
	eh, ep, _ := parts(esTok)
	zeroSig := eh + "." + ep + "." + b64(make([]byte, 64))

	var respelled string
	for i := 0; respelled == ""; i++ {
		c2 := e.claims(issA)
		c2["jti"] = i
		tok := rs.Sign(c2)
		if strings.ContainsAny(tok, "-_") {
			respelled = strings.NewReplacer("-", "+", "_", "/").Replace(tok)
		}
	}

	tests := []struct {
		name string
		tok  string
		want *Error
	}{
		{"alg none, empty signature", hdr(map[string]any{"alg": "none", "kid": "rsa-1"}) + "." + p + ".", errMalformed},
		{"alg none with signature", hdr(map[string]any{"alg": "none", "kid": "rsa-1"}) + "." + p + "." + s, errAlgNotAllowed},
		{"alg None", hdr(map[string]any{"alg": "None", "kid": "rsa-1"}) + "." + p + "." + s, errAlgNotAllowed},
		{"alg NONE", hdr(map[string]any{"alg": "NONE", "kid": "rsa-1"}) + "." + p + "." + s, errAlgNotAllowed},
		{"alg missing", hdr(map[string]any{"kid": "rsa-1"}) + "." + p + "." + s, errBadHeader},
		{"HS256 with the RSA public key as secret", confused.Sign(c), errAlgNotAllowed},
		{"header alg RS384 but key alg RS256", signAs(&jwkstest.Key{Alg: "RS384", Kid: "rsa-1", Private: rs.Private}, map[string]any{"alg": "RS384", "kid": "rsa-1"}), errAlgKey},
		{"header alg PS256 but key alg RS256", signAs(&jwkstest.Key{Alg: "PS256", Kid: "rsa-1", Private: rs.Private}, map[string]any{"alg": "PS256", "kid": "rsa-1"}), errAlgKey},
		{"ES256 header on the RSA kid", signAs(es, map[string]any{"alg": "ES256", "kid": "rsa-1"}), errAlgKey},
		{"stripped signature", h + "." + p + ".", errMalformed},
		{"signature of a foreign key", foreign.Sign(c), errSignature},
		{"payload swapped", h + "." + b64(mustJSON(map[string]any{"iss": issA, "sub": "admin", "aud": "api", "exp": c["exp"]})) + "." + s, errSignature},
		{"embedded jwk with known kid", signAs(foreign, map[string]any{"alg": "RS256", "kid": "rsa-1", "jwk": foreign.PublicJWK()}), errSignature},
		{"embedded jwk without kid", signAs(foreign, map[string]any{"alg": "RS256", "jwk": foreign.PublicJWK()}), errSignature},
		{"jku to attacker", signAs(foreign, map[string]any{"alg": "RS256", "kid": "rsa-1", "jku": attacker.URL}), errSignature},
		{"x5u to attacker", signAs(foreign, map[string]any{"alg": "RS256", "kid": "rsa-1", "x5u": attacker.URL}), errSignature},
		{"jku with new kid", signAs(foreign, map[string]any{"alg": "RS256", "kid": "attacker", "jku": attacker.URL}), errUnknownKid},
		{"kid path traversal", signAs(foreign, map[string]any{"alg": "RS256", "kid": "../../dev/null"}), errUnknownKid},
		{"kid SQL injection", signAs(foreign, map[string]any{"alg": "RS256", "kid": "' OR 1=1 --"}), errUnknownKid},
		{"kid not a string", signAs(rs, map[string]any{"alg": "RS256", "kid": 1}), errBadHeader},
		{"ECDSA zero signature", zeroSig, errSignature},
		{"ECDSA short signature", eh + "." + ep + "." + b64(make([]byte, 10)), errSignature},
		{"padded signature", valid + "==", errBadBase64},
		{"padded header", h + "=." + p + "." + s, errBadBase64},
		{"+/ re-spelled", respelled, errBadBase64},
		{"trailing bits set", trailing, errBadBase64},
		{"newline inside", h + ".\n" + p + "." + s, errBadBase64},
		{"impossible length", h + "." + p + "." + s + "AAA", errBadBase64},
		{"extra signature bytes", h + "." + p + "." + s + "A", errSignature},
		{"JSON flattened serialisation", string(mustJSON(map[string]any{"protected": h, "payload": p, "signature": s})), errNotCompact},
		{"JSON general serialisation", string(mustJSON(map[string]any{"payload": p, "signatures": []any{map[string]any{"protected": h, "signature": s}}})), errNotCompact},
		{"JSON serialisation with a dotted header", string(mustJSON(map[string]any{"header": map[string]any{"jku": "https://a.b/c"}, "protected": h, "payload": p, "signature": s})), errNotCompact},
		{"two parts", h + "." + p, errMalformed},
		{"four parts", valid + "." + s, errMalformed},
		{"JWE-like five parts", h + ".." + p + ".." + s, errMalformed},
		{"empty", "", errMalformed},
		{"crit exp", signAs(rs, map[string]any{"alg": "RS256", "kid": "rsa-1", "crit": []string{"exp"}, "exp": 1}), errCrit},
		{"crit empty", signAs(rs, map[string]any{"alg": "RS256", "kid": "rsa-1", "crit": []string{}}), errCrit},
		{"b64 false", signAs(rs, map[string]any{"alg": "RS256", "kid": "rsa-1", "b64": false, "crit": []string{"b64"}}), errCrit},
		{"duplicate claim", rs.SignRaw(mustJSON(map[string]any{"alg": "RS256", "kid": "rsa-1"}), []byte(`{"iss":"`+issA+`","sub":"user","aud":"api","exp":`+jsonNum(c["exp"])+`,"sub":"admin"}`)), errDuplicateKey},
		{"duplicate claim, escaped spelling", rs.SignRaw(mustJSON(map[string]any{"alg": "RS256", "kid": "rsa-1"}), []byte(`{"iss":"`+issA+`","sub":"user","aud":"api","exp":`+jsonNum(c["exp"])+`,"s\u0075b":"admin"}`)), errDuplicateKey},
		{"duplicate nested claim", rs.SignRaw(mustJSON(map[string]any{"alg": "RS256", "kid": "rsa-1"}), []byte(`{"iss":"`+issA+`","sub":"user","aud":"api","exp":`+jsonNum(c["exp"])+`,"realm":{"roles":["a"],"roles":["admin"]}}`)), errDuplicateKey},
		{"duplicate header alg", rs.SignRaw([]byte(`{"alg":"RS256","kid":"rsa-1","alg":"none"}`), mustJSON(c)), errDuplicateKey},
		{"header ALG in capitals", rs.SignRaw([]byte(`{"ALG":"RS256","kid":"rsa-1"}`), mustJSON(c)), errBadHeader},
		{"header not an object", b64([]byte(`["RS256"]`)) + "." + p + "." + s, errBadHeader},
		{"payload not JSON", h + "." + b64([]byte("hello")) + "." + s, errBadPayload},
		{"payload invalid UTF-8", rs.SignRaw(mustJSON(map[string]any{"alg": "RS256", "kid": "rsa-1"}), []byte("{\"iss\":\""+issA+"\",\"sub\":\"\xff\",\"aud\":\"api\",\"exp\":"+jsonNum(c["exp"])+"}")), errBadPayload},
		{"unknown issuer", rs.Sign(map[string]any{"iss": "https://evil", "sub": "x", "aud": "api", "exp": c["exp"]}), errUnknownIssuer},
		{"no iss and no entry for it", rs.Sign(map[string]any{"sub": "x", "aud": "api", "exp": c["exp"]}), errUnknownIssuer},
		{"iss not a string", rs.Sign(map[string]any{"iss": 5, "sub": "x", "aud": "api", "exp": c["exp"]}), errBadPayload},
		{"huge token", rs.Sign(map[string]any{"iss": issA, "sub": strings.Repeat("a", 5000), "aud": "api", "exp": c["exp"]}), errTokenTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.verify(tt.tok)
			if err != tt.want {
				t.Errorf("Verify = %v, %v; want %v", res, err, tt.want)
			}
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Errorf("attacker server got %d requests, want 0", n)
	}
	if _, err := e.v.Verify(context.Background(), valid); err != nil {
		t.Errorf("valid token refused after the attacks: %v", err)
	}
	// The unknown-kid attacks made at most one refetch between them (the clock did not move).
	if n := srv.Fetches(); n > 2 {
		t.Errorf("JWKS fetched %d times, want at most 2 (start + one refetch)", n)
	}
}

func jsonNum(v any) string { return string(mustJSON(v)) }

// TestVerifyHighS: ECDSA signatures are malleable ((r, s) and (r, n-s) are
// both valid); JWS does not forbid high S, and issuers produce both.
func TestVerifyHighS(t *testing.T) {
	es := jwkstest.NewKey("ES256", "ec")
	e := newEnv(t, jwksIssuer(server(t, es).URL))
	tok := es.Sign(e.claims(issA))
	h, p, s := parts(tok)
	sig, _ := base64.RawURLEncoding.DecodeString(s)
	n := es.Private.(*ecdsa.PrivateKey).Curve.Params().N
	sv := new(big.Int).SetBytes(sig[32:])
	sv.Sub(n, sv)
	hi := make([]byte, 64)
	copy(hi, sig[:32])
	sv.FillBytes(hi[32:])
	for name, tk := range map[string]string{"original": tok, "negated s": h + "." + p + "." + b64(hi)} {
		if _, err := e.verify(tk); err != nil {
			t.Errorf("Verify(%s) = %v, want accepted", name, err)
		}
	}
}

func kidOf(r *Result) string {
	if r == nil {
		return ""
	}
	return r.Kid
}
