package jwks

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

var update = flag.Bool("update", false, "rewrite testdata/config/*.golden")

// decodeFile runs DecodeIssuers over the `issuers` key of a config file, from
// the file's own directory (so relative key paths resolve as in the file).
func decodeFile(t *testing.T, path string) ([]Issuer, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	t.Chdir(filepath.Dir(path))
	d := yamlpos.NewDecoder(path)
	root := d.Parse(data)
	m := d.Map(root, "issuers")
	iss := DecodeIssuers(d, m.Get("issuers"))
	t.Chdir(wd)
	if err := d.Err(); err != nil {
		return iss, err.Error() + "\n"
	}
	return iss, "ok\n"
}

func TestDecodeIssuersGolden(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_SHORT_SECRET", "0123456789")
	t.Setenv("GATEHOUSE_TEST_GOOD_SECRET", strings.Repeat("s", 32))
	t.Setenv("GATEHOUSE_TEST_UNSET_SECRET", "")
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, got := decodeFile(t, f)
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("DecodeIssuers(%s):\n%s\nwant:\n%s", f, got, want)
			}
			if strings.Contains(got, "0123456789") || strings.Contains(got, "short-secret") {
				t.Errorf("an error message shows the secret:\n%s", got)
			}
		})
	}
}

func TestDecodeIssuersDefaults(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_GOOD_SECRET", strings.Repeat("s", 32))
	iss, got := decodeFile(t, "testdata/config/ok.yaml")
	if got != "ok\n" || len(iss) != 5 {
		t.Fatalf("decode ok.yaml = %d issuers, %q", len(iss), got)
	}
	a := iss[0]
	if a.Name != "https://auth.example.com" || a.RefreshInterval != 15*time.Minute || a.MinRefreshInterval != 30*time.Second ||
		a.MaxStale != 24*time.Hour || a.Leeway != 30*time.Second || a.MaxLifetime != 0 ||
		a.RolesClaim != "roles" || a.ScopesClaim != "scope" || a.SubjectClaim != "sub" || !slices.Equal(a.RequiredClaims, []string{"sub"}) ||
		!slices.Equal(a.Algorithms, []string{"RS256", "ES256", "PS256", "EdDSA"}) || a.AnyAudience {
		t.Errorf("defaults of entry 1 = %+v", a)
	}
	if a.Pos.Line != 2 || a.Pos.Col != 5 {
		t.Errorf("Pos = %v, want line 2 col 5", a.Pos)
	}
	b := iss[1]
	if !b.AnyAudience || b.Leeway != 0 || b.MaxLifetime != time.Hour || b.RolesClaim != "realm_access.roles" || b.SubjectClaim != "user.id" ||
		!slices.Equal(b.Types, []string{"at+jwt"}) || !slices.Equal(b.Algorithms, []string{"ES256"}) {
		t.Errorf("entry 2 = %+v", b)
	}
	if n := len(iss[2].static); n != 2 {
		t.Errorf("jwks_file keys = %d, want 2", n)
	}
	if k := iss[3].static; len(k) != 1 || k[0].kind != kindP256 {
		t.Errorf("public_key_file keys = %+v", k)
	}
	h := iss[4]
	if h.Name != "" || !slices.Equal(h.Algorithms, []string{"HS256"}) || len(h.static) != 1 || h.static[0].kind != kindHMAC {
		t.Errorf("hmac entry = %+v", h)
	}
	// Same config, same fingerprint; a change of any field changes it.
	again, _ := decodeFile(t, "testdata/config/ok.yaml")
	if again[0].fp != a.fp {
		t.Error("fingerprint differs between two decodes of the same entry")
	}
	c := a
	c.Leeway = time.Second
	if c.fingerprint() == a.fp {
		t.Error("fingerprint ignores leeway")
	}
	c = a
	c.SubjectClaim = "user"
	if c.fingerprint() == a.fp {
		t.Error("fingerprint ignores subject_claim")
	}
}
