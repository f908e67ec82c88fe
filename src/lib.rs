//! canopy core: the PKI vocabulary shared by `pkictl` (offline root) and `canopy-issuer`.
//!
//! Keys, certificate profiles, CSR checks, SPIFFE IDs, chains and bundles, the Istio
//! `cacerts` layout, CRLs and the hash-chained ledger. This crate does no network I/O
//! (a PKCS#11 module it loads may: that is the module's business) and never reads the
//! clock: every function that needs "now" takes it.

pub mod bundle;
pub mod ca;
pub mod cacerts;
pub mod cert;
pub mod chain;
pub mod constraints;
pub mod crl;
pub mod csr;
mod der;
pub mod dns;
pub mod key;
pub mod ledger;
pub mod pem;
pub mod pkcs11;
pub mod plan;
pub mod profile;
pub mod renewal;
pub mod rotation;
pub mod serial;
pub mod spiffe;
pub mod ttl;

pub use ca::{CertificateAuthority, IssuedCertificate, Signer};
pub use cert::Certificate;
pub use csr::Csr;
pub use dns::DnsName;
pub use key::{KeyPair, KeyType, Passphrase};
pub use plan::{Plan, Request};
pub use profile::{CaProfile, CaRequest, LeafProfile, LeafRequest, Profile};
pub use serial::Serial;
pub use spiffe::{SpiffeId, TrustDomain};
pub use ttl::Ttl;
