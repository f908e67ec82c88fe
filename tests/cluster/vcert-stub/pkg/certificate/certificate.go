// Package certificate is a stand-in for vcert's certificate package: see ../../go.mod.
package certificate

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"time"

	"github.com/Venafi/vcert/v5/pkg/util"
)

// CustomFieldType is the kind of a custom field.
type CustomFieldType int

const (
	CustomFieldPlain CustomFieldType = iota
	CustomFieldOrigin
)

// CustomField is a name/value set on a certificate request.
type CustomField struct {
	Type  CustomFieldType
	Name  string
	Value string
}

// ChainOption is where the root goes in a returned chain.
type ChainOption int

const (
	ChainOptionRootLast ChainOption = iota
	ChainOptionRootFirst
	ChainOptionIgnore
)

// CSrOriginOption says who makes the CSR.
type CSrOriginOption int

const (
	LocalGeneratedCSR CSrOriginOption = iota
	ServiceGeneratedCSR
	UserProvidedCSR
)

// Request is a certificate request to a Venafi service.
type Request struct {
	Subject          pkix.Name
	DNSNames         []string
	FriendlyName     string
	CustomFields     []CustomField
	CsrOrigin        CSrOriginOption
	ChainOption      ChainOption
	IssuerHint       util.IssuerHint
	ValidityDuration *time.Duration
	PickupID         string
	Timeout          time.Duration

	csr []byte
}

// NewRequest starts a request from a certificate template.
func NewRequest(cert *x509.Certificate) *Request {
	req := &Request{}
	if cert != nil {
		req.Subject = cert.Subject
		req.DNSNames = cert.DNSNames
	}
	return req
}

// SetCSR sets the PEM CSR of the request.
func (r *Request) SetCSR(csr []byte) error {
	if len(csr) == 0 {
		return errors.New("empty CSR")
	}
	r.csr = append([]byte(nil), csr...)
	return nil
}

// GetCSR returns the PEM CSR of the request.
func (r *Request) GetCSR() []byte { return r.csr }

// PEMCollection is an issued certificate and its chain, PEM.
type PEMCollection struct {
	Certificate string
	PrivateKey  string
	Chain       []string
}
