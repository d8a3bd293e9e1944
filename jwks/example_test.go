package jwks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func ExampleVerifier() {
	key := jwkstest.NewKey("ES256", "key-1")
	idp := jwkstest.NewServer(key)
	defer idp.Close()

	d := yamlpos.NewDecoder("gatehouse.yaml")
	root := d.Parse([]byte(`
issuers:
  - issuer: https://auth.example.com
    audiences: [orders-api]
    jwks_url: ` + idp.URL + `
`))
	issuers := jwks.DecodeIssuers(d, d.Map(root, "issuers").Get("issuers"))
	if err := d.Err(); err != nil {
		fmt.Println(err)
		return
	}
	v, err := jwks.New(context.Background(), jwks.Options{Issuers: issuers})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()

	tok := key.Sign(map[string]any{
		"iss": "https://auth.example.com", "aud": "orders-api", "sub": "user-1",
		"exp": time.Now().Add(time.Hour).Unix(), "realm_access": map[string]any{"roles": []string{"user"}},
	})
	res, err := v.Verify(context.Background(), tok)
	if err != nil {
		fmt.Println(err)
		return
	}
	roles, _ := res.Claim("realm_access.roles")
	fmt.Println(res.Subject, roles)

	expired := key.Sign(map[string]any{
		"iss": "https://auth.example.com", "aud": "orders-api", "sub": "user-1",
		"exp": time.Now().Add(-time.Hour).Unix(),
	})
	_, err = v.Verify(context.Background(), expired)
	var e *jwks.Error
	if errors.As(err, &e) {
		fmt.Println(e.Reason.Code(), "-", e.Msg)
	}
	// Output:
	// user-1 [user]
	// token_expired - token expired
}
