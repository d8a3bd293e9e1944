package proxy

import (
	"context"
	"errors"
	"time"
)

// The OAuth client of egress (token exchange, client credentials) is
// internal/oauth, written on its own branch; until it is merged these
// mirror its agreed API so that the egress listener is built and tested
// against the same shapes. A config that needs it answers 502
// token_unavailable meanwhile.

type oauthGrant string

const (
	grantClientCredentials oauthGrant = "client_credentials"
	grantTokenExchange     oauthGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
)

type oauthRequest struct {
	Grant        oauthGrant
	SubjectToken string
	Audience     string
	Scopes       []string
}

type oauthToken struct {
	AccessToken string
	Expiry      time.Time
}

var errTokenUnavailable = errors.New("token unavailable")

// unwiredSource answers every request unavailable: the placeholder until
// internal/oauth is wired.
type unwiredSource struct{}

func (unwiredSource) Token(context.Context, oauthRequest) (oauthToken, error) {
	return oauthToken{}, errTokenUnavailable
}
