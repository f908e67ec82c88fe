//! Certificate profiles (shared/contracts/profiles.md): leaf profiles and CA profiles, one
//! request type for each kind, and one check that a signed certificate obeys its profile.
//! Planning a request into a certificate to sign is in [`crate::plan`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use crate::cert::Certificate;
use crate::constraints::{ConstraintError, NameConstraints};
use crate::dns::DnsName;
use crate::key::{KeyError, KeyType};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::ttl::Ttl;

/// How far notBefore is backdated, for clock skew between issuer and relying parties.
pub const BACKDATE: Duration = Duration::seconds(90);
/// The shortest lifetime canopy issues.
pub const MIN_TTL: Ttl = Ttl::minutes(10);
/// The most DNS names or IPs one certificate may carry.
pub const MAX_SANS: usize = 100;

/// The name of any kind of certificate canopy makes, for records, listings and `inspect`.
/// Planning takes the kind's own type: [`LeafProfile`] or [`CaProfile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Self-signed offline root.
    Root,
    /// Per-cloud intermediate, signed by the root.
    Intermediate,
    /// istiod's sub-CA in a cluster's `cacerts`, signed by an intermediate.
    MeshCa,
    /// A workload identity: one SPIFFE ID, serverAuth + clientAuth.
    Workload,
    /// A TLS server (DNS/IP SANs), serverAuth.
    Server,
    /// A TLS client, clientAuth.
    Client,
}

/// Certificates that name an endpoint and cannot sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafProfile {
    /// One SPIFFE ID, serverAuth + clientAuth.
    Workload,
    /// DNS/IP SANs, serverAuth.
    Server,
    /// clientAuth.
    Client,
}

/// Certificates that sign other certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaProfile {
    /// Self-signed offline root.
    Root,
    /// Per-cloud intermediate, signed by the root (pathlen 1 by default).
    Intermediate,
    /// istiod's sub-CA (pathlen 0), signed by an intermediate.
    MeshCa,
}

impl LeafProfile {
    /// The lifetime used when a request names none.
    pub fn default_ttl(self) -> Ttl {
        Ttl::hours(24)
    }
}

impl CaProfile {
    /// The lifetime used when a request names none.
    pub fn default_ttl(self) -> Ttl {
        match self {
            CaProfile::Root => Ttl::years(10),
            CaProfile::Intermediate => Ttl::years(5),
            CaProfile::MeshCa => Ttl::days(90),
        }
    }

    /// pathLenConstraint when a request names none.
    pub fn default_path_len(self) -> Option<u8> {
        match self {
            CaProfile::Root => None,
            CaProfile::Intermediate => Some(1),
            CaProfile::MeshCa => Some(0),
        }
    }
}

impl From<LeafProfile> for Profile {
    fn from(p: LeafProfile) -> Self {
        match p {
            LeafProfile::Workload => Profile::Workload,
            LeafProfile::Server => Profile::Server,
            LeafProfile::Client => Profile::Client,
        }
    }
}

impl From<CaProfile> for Profile {
    fn from(p: CaProfile) -> Self {
        match p {
            CaProfile::Root => Profile::Root,
            CaProfile::Intermediate => Profile::Intermediate,
            CaProfile::MeshCa => Profile::MeshCa,
        }
    }
}

impl TryFrom<Profile> for LeafProfile {
    type Error = ProfileError;

    fn try_from(p: Profile) -> Result<Self, ProfileError> {
        match p {
            Profile::Workload => Ok(LeafProfile::Workload),
            Profile::Server => Ok(LeafProfile::Server),
            Profile::Client => Ok(LeafProfile::Client),
            ca => Err(ProfileError::NotALeaf(ca)),
        }
    }
}

impl fmt::Display for LeafProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Profile::from(*self).fmt(f)
    }
}

impl fmt::Display for CaProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Profile::from(*self).fmt(f)
    }
}

impl Profile {
    /// Every profile, for listings and tests.
    pub const ALL: [Profile; 6] = [
        Profile::Root,
        Profile::Intermediate,
        Profile::MeshCa,
        Profile::Workload,
        Profile::Server,
        Profile::Client,
    ];

    /// Whether certificates of this profile are CAs.
    pub fn is_ca(self) -> bool {
        matches!(
            self,
            Profile::Root | Profile::Intermediate | Profile::MeshCa
        )
    }

    /// Every way `cert` departs from this profile's fixed shape (no request needed).
    pub fn lint(self, cert: &Certificate) -> Vec<String> {
        let mut v = Vec::new();
        let s = cert.serial().as_bytes();
        if s.is_empty() || s.len() > 20 {
            v.push(format!("serial is {} bytes (must be 1-20)", s.len()));
        }
        if cert.has_sha1_signature() {
            v.push("signed with SHA-1".into());
        }
        if cert.subject_key_id().is_none() {
            v.push("no Subject Key Identifier".into());
        }
        if self != Profile::Root && cert.authority_key_id().is_none() {
            v.push("no Authority Key Identifier".into());
        }
        if !cert.has_basic_constraints() || !cert.basic_constraints_critical() {
            v.push("basicConstraints missing or not critical".into());
        }
        let ku = cert.key_usage().unwrap_or_default();
        if cert.key_usage().is_none() || !ku.critical {
            v.push("keyUsage missing or not critical".into());
        }
        if self.is_ca() {
            if !cert.is_ca() {
                v.push("not a CA (basicConstraints CA:FALSE)".into());
            }
            if !ku.key_cert_sign
                || !ku.crl_sign
                || ku.digital_signature
                || ku.key_encipherment
                || ku.other
            {
                v.push("a CA's keyUsage must be exactly keyCertSign + cRLSign".into());
            }
            if cert.ext_key_usage().is_some() {
                v.push("a CA must carry no extendedKeyUsage (Go's verifier, used by istiod, treats it as a limit)".into());
            }
            if self == Profile::MeshCa && cert.path_len() != Some(0) {
                v.push("a mesh CA must have pathlen 0".into());
            }
            if self == Profile::MeshCa && !cert.key_type().is_some_and(KeyType::accepted_by_istiod)
            {
                v.push(
                    "istiod accepts only ECDSA P-256/P-384 or RSA >= 2048 keys for its CA".into(),
                );
            }
            if self != Profile::Root
                && !cert.uris().iter().any(|u| {
                    u.starts_with("spiffe://") && u["spiffe://".len()..].find('/').is_none()
                })
            {
                v.push("no trust domain URI SAN (spiffe://TRUST_DOMAIN)".into());
            }
            if self == Profile::Root && !cert.is_self_issued() {
                v.push("a root is self-issued".into());
            }
        } else {
            if cert.is_ca() {
                v.push("a leaf must be CA:FALSE".into());
            }
            if !ku.digital_signature || ku.key_cert_sign || ku.crl_sign || ku.other {
                v.push("a leaf's keyUsage must be digitalSignature (+ keyEncipherment for RSA), never keyCertSign/cRLSign".into());
            }
            let eku = cert.ext_key_usage().unwrap_or_default();
            let want = match self {
                Profile::Workload => (true, true),
                Profile::Server => (true, false),
                _ => (false, true),
            };
            if cert.ext_key_usage().is_none()
                || (eku.server_auth, eku.client_auth) != want
                || eku.any
                || eku.other
            {
                v.push(format!(
                    "extendedKeyUsage must be {}",
                    match want {
                        (true, true) => "serverAuth + clientAuth",
                        (true, false) => "serverAuth",
                        _ => "clientAuth",
                    }
                ));
            }
            if self == Profile::Workload {
                let spiffe: Vec<_> = cert
                    .uris()
                    .iter()
                    .filter(|u| u.starts_with("spiffe://"))
                    .collect();
                if spiffe.len() != 1 || cert.uris().len() != 1 {
                    v.push(format!(
                        "a workload has exactly one URI SAN, a SPIFFE ID (found {})",
                        cert.uris().len()
                    ));
                } else if cert.spiffe_id().is_none() {
                    v.push("the URI SAN is not a valid SPIFFE ID".into());
                }
            }
            if cert.subject().is_empty() && !cert.san_critical() {
                v.push("the subject is empty but the SAN extension is not critical".into());
            }
        }
        v
    }

    /// The profile a certificate most likely was made with, for `inspect`.
    pub fn guess(cert: &Certificate) -> Option<Profile> {
        if cert.is_ca() {
            return Some(if cert.is_self_issued() {
                Profile::Root
            } else if cert.path_len() == Some(0) {
                Profile::MeshCa
            } else {
                Profile::Intermediate
            });
        }
        let eku = cert.ext_key_usage()?;
        match (eku.server_auth, eku.client_auth) {
            (true, true) => Some(Profile::Workload),
            (true, false) => Some(Profile::Server),
            (false, true) => Some(Profile::Client),
            _ => None,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Root => "root",
            Profile::Intermediate => "intermediate",
            Profile::MeshCa => "mesh-ca",
            Profile::Workload => "workload",
            Profile::Server => "server",
            Profile::Client => "client",
        })
    }
}

impl FromStr for Profile {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| ProfileError::UnknownProfile(s.chars().take(40).collect()))
    }
}

/// Subject name fields canopy sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub common_name: Option<String>,
    pub organization: Option<String>,
}

/// What is asked of a leaf certificate, already parsed into typed values.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    pub profile: LeafProfile,
    pub subject: Subject,
    /// The SPIFFE ID (workloads: required; the only URI SAN).
    pub spiffe_id: Option<SpiffeId>,
    /// When set, the SPIFFE ID must be in this trust domain.
    pub trust_domain: Option<TrustDomain>,
    /// DNS SANs; wildcards only where whoever parsed them allowed them.
    pub dns_names: Vec<DnsName>,
    pub ip_addresses: Vec<IpAddr>,
    /// Requested lifetime; the profile's default when None.
    pub ttl: Option<Ttl>,
    /// Clamp notAfter to the issuer's instead of refusing.
    pub clamp_to_issuer: bool,
}

impl LeafRequest {
    /// A request of `profile` naming nothing yet.
    pub fn new(profile: LeafProfile) -> Self {
        LeafRequest {
            profile,
            subject: Subject::default(),
            spiffe_id: None,
            trust_domain: None,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            ttl: None,
            clamp_to_issuer: false,
        }
    }
}

/// What is asked of a CA certificate, already parsed into typed values.
#[derive(Clone, Debug)]
pub struct CaRequest {
    pub profile: CaProfile,
    /// A CA always has a common name.
    pub common_name: String,
    pub organization: Option<String>,
    /// Put in a `spiffe://TRUST_DOMAIN` URI SAN; required below the root.
    pub trust_domain: Option<TrustDomain>,
    /// Requested lifetime; the profile's default when None.
    pub ttl: Option<Ttl>,
    /// pathLenConstraint (profile default when None).
    pub path_len: Option<u8>,
    /// Clamp notAfter to the issuer's instead of refusing.
    pub clamp_to_issuer: bool,
    /// Permitted subtrees. A mesh CA always carries them: these, or when None the trust
    /// domain and istiod's names in `istio-system` ([`NameConstraints::mesh`]).
    pub name_constraints: Option<NameConstraints>,
}

impl CaRequest {
    /// A request of `profile` for a CA named `common_name`, every other field unset.
    pub fn new(profile: CaProfile, common_name: impl Into<String>) -> Self {
        CaRequest {
            profile,
            common_name: common_name.into(),
            organization: None,
            trust_domain: None,
            ttl: None,
            path_len: None,
            clamp_to_issuer: false,
            name_constraints: None,
        }
    }
}

/// Why a request cannot become a certificate of a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "unknown profile {0:?} (choose root, intermediate, mesh-ca, workload, server or client)"
    )]
    UnknownProfile(String),
    #[error("{0} is a CA profile: ask for workload, server or client")]
    NotALeaf(Profile),
    #[error(
        "a workload certificate needs exactly one SPIFFE ID (URI SAN spiffe://TRUST_DOMAIN/...)"
    )]
    MissingSpiffeId,
    #[error("SPIFFE ID {got} is not in trust domain {expected}")]
    TrustDomainMismatch {
        expected: TrustDomain,
        got: SpiffeId,
    },
    #[error("invalid {field}: {why}")]
    BadSubject {
        field: &'static str,
        why: &'static str,
    },
    #[error("{count} DNS names and IP addresses requested; at most {max} are allowed")]
    TooManySans { count: usize, max: usize },
    #[error("a server certificate needs a DNS name or IP address")]
    ServerNeedsName,
    #[error("the certificate would name nobody: give a SPIFFE ID, SAN or CN")]
    NamesNobody,
    #[error("SAN {0:?} is not an IA5 string")]
    SanNotIa5(String),
    #[error("requested lifetime is shorter than the minimum {min}")]
    TtlTooShort { min: Ttl },
    #[error("requested notAfter {requested} is past the issuer's notAfter {issuer_not_after}: ask for a shorter TTL or allow clamping")]
    PastIssuerExpiry {
        requested: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    },
    #[error("the issuing CA expired at {not_after}: renew it before signing")]
    IssuerExpired { not_after: OffsetDateTime },
    #[error("the issuing certificate is not a CA")]
    IssuerNotCa,
    #[error("this profile needs an issuing CA")]
    NeedsIssuer,
    #[error("a CA certificate needs a trust domain (for its spiffe://TRUST_DOMAIN URI SAN)")]
    MissingTrustDomain,
    #[error("a mesh CA has pathlen 0 (asked for {requested:?})")]
    MeshCaPathLen { requested: Option<u8> },
    #[error("pathlen {requested} is not allowed under an issuer with pathlen {issuer_path_len}")]
    PathLenTooLong { requested: u8, issuer_path_len: u32 },
    #[error("the issuer has pathlen 0 and may not sign a CA")]
    IssuerMayNotSignCa,
    #[error("invalid name constraints: {0}")]
    NameConstraints(ConstraintError),
    #[error("common name {common_name:?} is the issuer's own name: a certificate under it needs another")]
    SubjectIsIssuers { common_name: String },
    #[error("key not allowed: {0} is too weak")]
    KeyTooWeak(KeyType),
    #[error(
        "key not allowed: {0}: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048 for its CA"
    )]
    KeyRefusedByIstiod(KeyType),
    #[error("the key to certify is not usable: {0}")]
    Key(KeyError),
    #[error("signed certificate failed its profile check: {}", .0.join("; "))]
    CheckFailed(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::dns::{DnsName, Wildcards};
    use crate::key::KeyPair;
    use crate::plan::Request;
    use std::sync::Arc;

    fn td() -> TrustDomain {
        "mesh.example".parse().unwrap()
    }

    fn ca_req(profile: CaProfile, cn: &str) -> CaRequest {
        CaRequest {
            organization: Some("Acme".into()),
            trust_domain: Some(td()),
            ..CaRequest::new(profile, cn)
        }
    }

    struct Pki {
        now: OffsetDateTime,
        root: CertificateAuthority,
        int: CertificateAuthority,
    }

    fn pki() -> Pki {
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let root = CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap()),
            &ca_req(CaProfile::Root, "Acme Root CA"),
            now,
        )
        .unwrap();
        let (int, key) = root
            .issue_with_new_key(
                &ca_req(CaProfile::Intermediate, "aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let int = CertificateAuthority::new(int.certificate, vec![], Arc::new(key)).unwrap();
        Pki { now, root, int }
    }

    fn workload_req(ns: &str) -> LeafRequest {
        leaf_req(LeafProfile::Workload, ns)
    }

    fn leaf_req(profile: LeafProfile, ns: &str) -> LeafRequest {
        LeafRequest {
            spiffe_id: Some(SpiffeId::kubernetes(&td(), ns, "web").unwrap()),
            trust_domain: Some(td()),
            ..LeafRequest::new(profile)
        }
    }

    #[test]
    fn root_extensions() {
        let p = pki();
        let c = p.root.certificate();
        assert!(
            Profile::Root.lint(c).is_empty(),
            "{:?}",
            Profile::Root.lint(c)
        );
        assert!(c.is_ca() && c.basic_constraints_critical() && c.path_len().is_none());
        let ku = c.key_usage().unwrap();
        assert!(ku.critical && ku.key_cert_sign && ku.crl_sign && !ku.digital_signature);
        assert!(c.ext_key_usage().is_none());
        assert!(c.subject_key_id().is_some() && c.authority_key_id().is_none());
        assert_eq!(c.subject(), "CN=Acme Root CA, O=Acme");
        assert_eq!(c.serial().as_bytes().len(), 16);
        assert!(c.not_before() < p.now && p.now - c.not_before() <= time::Duration::minutes(2));
        assert_eq!(Profile::guess(c), Some(Profile::Root));
    }

    #[test]
    fn intermediate_extensions() {
        let p = pki();
        let c = p.int.certificate();
        assert!(
            Profile::Intermediate.lint(c).is_empty(),
            "{:?}",
            Profile::Intermediate.lint(c)
        );
        assert_eq!(c.path_len(), Some(1));
        assert_eq!(c.uris(), ["spiffe://mesh.example"]);
        assert!(c.ext_key_usage().is_none());
        assert_eq!(c.authority_key_id(), p.root.certificate().subject_key_id());
        assert!(c.not_after() <= p.root.certificate().not_after());
        assert_eq!(Profile::guess(c), Some(Profile::Intermediate));
    }

    #[test]
    fn mesh_ca_extensions_and_key_rules() {
        let p = pki();
        let (mesh, _) = p
            .int
            .issue_with_new_key(
                &ca_req(CaProfile::MeshCa, "istiod aws"),
                KeyType::EcdsaP256,
                p.now,
            )
            .unwrap();
        let c = &mesh.certificate;
        assert!(
            Profile::MeshCa.lint(c).is_empty(),
            "{:?}",
            Profile::MeshCa.lint(c)
        );
        assert_eq!(c.path_len(), Some(0));
        assert_eq!(mesh.chain.len(), 2);
        let err = p
            .int
            .issue_with_new_key(&ca_req(CaProfile::MeshCa, "x"), KeyType::Ed25519, p.now)
            .unwrap_err();
        assert!(err.to_string().contains("istiod"), "{err}");
        // A mesh CA (pathlen 0) may not sign another CA.
        let mesh_key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let (mesh2, k2) = p
            .int
            .issue_with_new_key(&ca_req(CaProfile::MeshCa, "m2"), KeyType::EcdsaP256, p.now)
            .unwrap();
        let mesh_ca = CertificateAuthority::new(
            mesh2.certificate,
            vec![p.int.certificate().clone()],
            Arc::new(k2),
        )
        .unwrap();
        assert!(mesh_ca
            .issue(
                &ca_req(CaProfile::MeshCa, "m3"),
                &mesh_key.public_key_spki(),
                p.now
            )
            .is_err());
    }

    #[test]
    fn workload_extensions() {
        let p = pki();
        for kt in [KeyType::EcdsaP256, KeyType::RSA2048] {
            let key = KeyPair::generate(kt).unwrap();
            let w = p
                .int
                .issue(&workload_req("payments"), &key.public_key_spki(), p.now)
                .unwrap();
            let c = &w.certificate;
            assert!(
                Profile::Workload.lint(c).is_empty(),
                "{:?}",
                Profile::Workload.lint(c)
            );
            assert!(!c.is_ca() && c.has_basic_constraints());
            let ku = c.key_usage().unwrap();
            assert!(ku.critical && ku.digital_signature && !ku.key_cert_sign && !ku.crl_sign);
            assert_eq!(ku.key_encipherment, matches!(kt, KeyType::Rsa { .. }));
            let eku = c.ext_key_usage().unwrap();
            assert!(eku.server_auth && eku.client_auth && !eku.any);
            assert_eq!(c.uris(), ["spiffe://mesh.example/ns/payments/sa/web"]);
            assert!(
                c.subject().is_empty() && c.san_critical(),
                "empty subject needs a critical SAN"
            );
            assert_eq!(
                c.not_after() - c.not_before(),
                time::Duration::hours(24) + BACKDATE
            );
            assert_eq!(w.chain.len(), 2, "leaf + intermediate, no root");
            assert_eq!(Profile::guess(c), Some(Profile::Workload));
        }
    }

    #[test]
    fn server_and_client_extensions() {
        let p = pki();
        let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let req = LeafRequest {
            dns_names: vec!["issuer.canopy.svc".parse().unwrap()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            subject: Subject {
                common_name: Some("canopy-issuer".into()),
                organization: None,
            },
            ..LeafRequest::new(LeafProfile::Server)
        };
        let s = p
            .int
            .issue(&req, &key.public_key_spki(), p.now)
            .unwrap()
            .certificate;
        assert!(
            Profile::Server.lint(&s).is_empty(),
            "{:?}",
            Profile::Server.lint(&s)
        );
        assert_eq!(s.dns_names(), ["issuer.canopy.svc"]);
        assert!(!s.san_critical());
        let eku = s.ext_key_usage().unwrap();
        assert!(eku.server_auth && !eku.client_auth);
        let c = p
            .int
            .issue(
                &leaf_req(LeafProfile::Client, "ops"),
                &key.public_key_spki(),
                p.now,
            )
            .unwrap()
            .certificate;
        assert!(
            Profile::Client.lint(&c).is_empty(),
            "{:?}",
            Profile::Client.lint(&c)
        );
        let eku = c.ext_key_usage().unwrap();
        assert!(!eku.server_auth && eku.client_auth);
    }

    /// A 1024-bit RSA SubjectPublicKeyInfo (too weak to certify; no library makes one).
    fn rsa1024_spki() -> Vec<u8> {
        let mut rsa_public_key = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81, 0x00, 0xc0];
        rsa_public_key.extend([0x01; 127]);
        rsa_public_key.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let mut spki = vec![0x30, 0x81, 0x9f];
        spki.extend([
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ]);
        spki.extend([0x03, 0x81, 0x8d, 0x00]);
        spki.extend(rsa_public_key);
        spki
    }

    #[test]
    fn requests_that_must_fail() {
        let p = pki();
        let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let spki = key.public_key_spki();
        let issue = |r: &LeafRequest| p.int.issue(r, &spki, p.now).unwrap_err().to_string();
        assert!(issue(&LeafRequest::new(LeafProfile::Workload)).contains("SPIFFE ID"));
        let mut r = workload_req("a");
        r.spiffe_id = Some("spiffe://other.example/ns/a/sa/b".parse().unwrap());
        assert!(issue(&r).contains("not in trust domain"));
        let mut r = workload_req("a");
        r.ttl = Some(Ttl::minutes(5));
        assert!(issue(&r).contains("minimum"));
        let mut r = workload_req("a");
        r.ttl = Some(Ttl::years(20));
        assert!(issue(&r).contains("past the issuer"));
        r.clamp_to_issuer = true;
        let clamped = p.int.issue(&r, &spki, p.now).unwrap();
        assert!(
            clamped.clamped && clamped.certificate.not_after() == p.int.certificate().not_after()
        );
        let mut r = workload_req("a");
        r.dns_names = vec![DnsName::parse("*.example.com", Wildcards::Allowed).unwrap()];
        assert!(p.int.issue(&r, &spki, p.now).is_ok());
        let mut r = LeafRequest::new(LeafProfile::Server);
        r.subject.common_name = Some("no-sans".into());
        assert!(matches!(
            r.plan(&spki, Some(p.int.certificate()), p.now),
            Err(ProfileError::ServerNeedsName)
        ));
        assert!(matches!(
            workload_req("a").plan(&rsa1024_spki(), Some(p.int.certificate()), p.now),
            Err(ProfileError::KeyTooWeak(KeyType::Rsa { bits: 1024 }))
        ));
        assert!(matches!(
            workload_req("a").plan(&spki, None, p.now),
            Err(ProfileError::NeedsIssuer)
        ));
        let expired = p.now + time::Duration::days(365 * 6);
        assert!(matches!(
            workload_req("a").plan(&spki, Some(p.int.certificate()), expired),
            Err(ProfileError::IssuerExpired { .. })
        ));
    }

    #[test]
    fn ca_requests_that_must_fail() {
        let p = pki();
        let spki = KeyPair::generate(KeyType::EcdsaP256)
            .unwrap()
            .public_key_spki();
        let issuer = Some(p.int.certificate());
        let mut r = ca_req(CaProfile::MeshCa, "mesh");
        r.path_len = Some(1);
        assert!(matches!(
            r.plan(&spki, issuer, p.now),
            Err(ProfileError::MeshCaPathLen { requested: Some(1) })
        ));
        let mut r = ca_req(CaProfile::Intermediate, "deep");
        r.path_len = Some(1);
        assert!(matches!(
            r.plan(&spki, issuer, p.now),
            Err(ProfileError::PathLenTooLong {
                requested: 1,
                issuer_path_len: 1
            })
        ));
        let mut r = ca_req(CaProfile::Intermediate, "no td");
        r.path_len = Some(0);
        r.trust_domain = None;
        assert!(matches!(
            r.plan(&spki, issuer, p.now),
            Err(ProfileError::MissingTrustDomain)
        ));
        assert!(matches!(
            ca_req(CaProfile::Intermediate, "Acme Root CA").plan(
                &spki,
                Some(p.root.certificate()),
                p.now
            ),
            Err(ProfileError::SubjectIsIssuers { .. })
        ));
        // A plan made under one CA is not signed by another.
        let plan = ca_req(CaProfile::MeshCa, "mesh")
            .plan(&spki, Some(p.root.certificate()), p.now)
            .unwrap();
        assert!(matches!(
            p.int.sign(plan),
            Err(crate::ca::CaError::PlanForAnotherIssuer)
        ));
    }

    #[test]
    fn cross_signed_root_chains_old_leaves_to_new_root() {
        let old = pki();
        let new_root = CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP384).unwrap()),
            &ca_req(CaProfile::Root, "Acme Root CA 2"),
            old.now,
        )
        .unwrap();
        let cross = new_root
            .cross_sign(old.root.certificate(), None, old.now)
            .unwrap();
        assert_eq!(
            cross.certificate.subject_raw(),
            old.root.certificate().subject_raw()
        );
        let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let leaf = old
            .int
            .issue(&workload_req("a"), &key.public_key_spki(), old.now)
            .unwrap();
        let path = crate::chain::verify_path(
            &leaf.certificate,
            &[old.int.certificate().clone(), cross.certificate.clone()],
            &[new_root.certificate().clone()],
            old.now,
        )
        .unwrap();
        assert_eq!(path.len(), 4);
    }

    #[test]
    fn profile_names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert!("admin".parse::<Profile>().is_err());
    }
}
