// Package tpp is a stand-in for vcert's tpp connector: see ../../../go.mod.
package tpp

import (
	"github.com/Venafi/vcert/v5/pkg/certificate"
	"github.com/Venafi/vcert/v5/pkg/endpoint"
)

// Connector is never made (vcert.NewClient fails); its methods fail.
type Connector struct{}

var _ endpoint.Connector = (*Connector)(nil)

func (c *Connector) GetType() endpoint.ConnectorType { return endpoint.ConnectorTypeTPP }
func (c *Connector) Ping() error                     { return endpoint.ErrUnavailable }
func (c *Connector) Authenticate(auth *endpoint.Authentication) error {
	return endpoint.ErrUnavailable
}
func (c *Connector) ReadZoneConfiguration() (*endpoint.ZoneConfiguration, error) {
	return nil, endpoint.ErrUnavailable
}
func (c *Connector) RequestCertificate(req *certificate.Request) (string, error) {
	return "", endpoint.ErrUnavailable
}
func (c *Connector) RetrieveCertificate(req *certificate.Request) (*certificate.PEMCollection, error) {
	return nil, endpoint.ErrUnavailable
}

// OauthGetRefreshTokenResponse is a token pair.
type OauthGetRefreshTokenResponse struct {
	Access_token  string //nolint:revive // vcert's name
	Refresh_token string //nolint:revive // vcert's name
	Expires       int
}

// OauthVerifyTokenResponse describes a verified token.
type OauthVerifyTokenResponse struct {
	Identity string
}

func (c *Connector) GetRefreshToken(auth *endpoint.Authentication) (OauthGetRefreshTokenResponse, error) {
	return OauthGetRefreshTokenResponse{}, endpoint.ErrUnavailable
}

func (c *Connector) VerifyAccessToken(auth *endpoint.Authentication) (OauthVerifyTokenResponse, error) {
	return OauthVerifyTokenResponse{}, endpoint.ErrUnavailable
}

func (c *Connector) ResetCertificate(req *certificate.Request, restart bool) error {
	return endpoint.ErrUnavailable
}

// ErrCertNotFound: no such certificate.
type ErrCertNotFound struct{ error }

func (e *ErrCertNotFound) Error() string { return "certificate not found" }
