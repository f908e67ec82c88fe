// Package endpoint is a stand-in for vcert's endpoint package: see ../../go.mod.
package endpoint

import (
	"errors"
	"fmt"

	"github.com/Venafi/vcert/v5/pkg/certificate"
)

// ErrUnavailable is what every operation of this stand-in returns.
var ErrUnavailable = errors.New("Venafi is not available: canopy's test build of cert-manager has no vcert library (tests/cluster/vcert-stub)")

// ConnectorType is the kind of Venafi service.
type ConnectorType int

const (
	ConnectorTypeUndefined ConnectorType = iota
	ConnectorTypeFake
	ConnectorTypeCloud
	ConnectorTypeTPP
	ConnectorTypeFirefly
	ConnectorTypeNGTS
)

func (t ConnectorType) String() string {
	switch t {
	case ConnectorTypeCloud:
		return "Venafi Cloud"
	case ConnectorTypeTPP:
		return "TPP"
	case ConnectorTypeNGTS:
		return "NGTS"
	case ConnectorTypeFake:
		return "Fake"
	case ConnectorTypeFirefly:
		return "Firefly"
	}
	return fmt.Sprintf("ConnectorType(%d)", int(t))
}

// Authentication holds the credentials of a connection.
type Authentication struct {
	User         string
	Password     string
	APIKey       string
	AccessToken  string
	RefreshToken string
	ClientId     string
	ClientSecret string
	Scope        string
	TokenURL     string
}

// Connector is a connection to a Venafi service.
type Connector interface {
	GetType() ConnectorType
	Ping() error
	ReadZoneConfiguration() (*ZoneConfiguration, error)
	RequestCertificate(req *certificate.Request) (string, error)
	RetrieveCertificate(req *certificate.Request) (*certificate.PEMCollection, error)
}

// ZoneConfiguration is a zone's defaults and policy.
type ZoneConfiguration struct{}

// UpdateCertificateRequest applies the zone's defaults (none here).
func (z *ZoneConfiguration) UpdateCertificateRequest(req *certificate.Request) {}

// ValidateCertificateRequest checks a request against the zone's policy.
func (z *ZoneConfiguration) ValidateCertificateRequest(req *certificate.Request) error {
	return ErrUnavailable
}

// ErrRetrieveCertificateTimeout: the certificate was not ready in time.
type ErrRetrieveCertificateTimeout struct {
	CertificateID string
}

func (e ErrRetrieveCertificateTimeout) Error() string {
	return "timed out retrieving certificate " + e.CertificateID
}

// ErrCertificatePending: the certificate is not issued yet.
type ErrCertificatePending struct {
	CertificateID string
	Status        string
}

func (e ErrCertificatePending) Error() string {
	return "certificate " + e.CertificateID + " is pending " + e.Status
}
