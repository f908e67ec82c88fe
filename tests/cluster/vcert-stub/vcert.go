// Package vcert is a stand-in for the Venafi client library: see go.mod.
package vcert

import (
	"net/http"

	"github.com/Venafi/vcert/v5/pkg/endpoint"
)

// Config is the connection configuration cert-manager builds for a Venafi issuer.
type Config struct {
	ConnectorType   endpoint.ConnectorType
	BaseUrl         string
	Zone            string
	LogVerbose      bool
	ConnectionTrust string
	Credentials     *endpoint.Authentication
	Client          *http.Client
}

// NewClient always fails: there is no Venafi client in this build.
func NewClient(cfg *Config, authenticate bool) (endpoint.Connector, error) {
	return nil, endpoint.ErrUnavailable
}
