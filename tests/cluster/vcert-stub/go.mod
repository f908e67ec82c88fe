// A stand-in for github.com/Venafi/vcert/v5, which the Go module proxy reachable here does
// not serve (403 for every version). cert-manager's Venafi issuer (pkg/issuer/venafi) and
// its CertificateRequest/CSR controllers import it, and so does cert-manager's controller
// configuration (for the controller names). This module declares only the names they use;
// every operation fails with ErrUnavailable, so a Venafi Issuer is never Ready. Nothing of
// vcert's code is here. Used through a replace in ../certmanager/go.mod.
module github.com/Venafi/vcert/v5

go 1.26.0
