package oauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/gatehouse/gatehouse/internal/oauth"
)

// ExampleClient_Token is how egress uses the client: one Client per
// identity provider and client identity, one Token call per outbound
// request, a 502 token_unavailable on ErrUnavailable.
func ExampleClient_Token() {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, secret, _ := r.BasicAuth(); id != "checkout" || secret != "s3cret" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"exchanged","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":300}`)
	}))
	defer idp.Close()

	c, err := oauth.New(oauth.Config{TokenEndpoint: idp.URL + "/token", ClientID: "checkout", ClientSecret: "s3cret"})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	tok, err := c.Token(context.Background(), oauth.Request{
		Grant:        oauth.TokenExchange,
		SubjectToken: "the-verified-inbound-token",
		Audience:     "orders-api",
		Scopes:       []string{"orders:read"},
	})
	switch {
	case errors.Is(err, oauth.ErrUnavailable):
		fmt.Println("502 token_unavailable")
	case err != nil:
		fmt.Println("misconfigured:", err)
	default:
		fmt.Println("Authorization: Bearer " + tok.AccessToken)
	}
	// Output: Authorization: Bearer exchanged
}
