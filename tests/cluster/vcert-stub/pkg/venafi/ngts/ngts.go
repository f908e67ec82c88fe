// Package ngts is a stand-in for vcert's ngts connector: see ../../../go.mod.
package ngts

import (
	"github.com/Venafi/vcert/v5/pkg/certificate"
	"github.com/Venafi/vcert/v5/pkg/endpoint"
)

// Connector is never made (vcert.NewClient fails); its methods fail.
type Connector struct{}

var _ endpoint.Connector = (*Connector)(nil)

func (c *Connector) GetType() endpoint.ConnectorType { return endpoint.ConnectorTypeNGTS }
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
