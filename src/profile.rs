//! Certificate profiles (shared/contracts/profiles.md): one enum, one function that turns a
//! request into certificate parameters, and one check that a signed certificate obeys it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::cert::Certificate;
use crate::constraints::NameConstraints;
use crate::key::KeyType;
use crate::serial::Serial;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::ttl::Ttl;

/// How far notBefore is backdated, for clock skew between issuer and relying parties.
pub const BACKDATE: Duration = Duration::seconds(90);
/// The shortest lifetime canopy issues.
pub const MIN_TTL: Ttl = Ttl::minutes(10);
/// The most DNS names or IPs one certificate may carry.
pub const MAX_SANS: usize = 100;

/// The kinds of certificate canopy makes.
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

    /// The lifetime used when a request names none.
    pub fn default_ttl(self) -> Ttl {
        match self {
            Profile::Root => Ttl::years(10),
            Profile::Intermediate => Ttl::years(5),
            Profile::MeshCa => Ttl::days(90),
            Profile::Workload | Profile::Server | Profile::Client => Ttl::hours(24),
        }
    }

    fn default_path_len(self) -> Option<u8> {
        match self {
            Profile::Root => None,
            Profile::Intermediate => Some(1),
            Profile::MeshCa => Some(0),
            _ => None,
        }
    }

    /// Turns a request into the parameters of a certificate to sign.
    ///
    /// `subject_key` is the type of the key being certified; `issuer` is the signing CA's
    /// certificate (None for a root). The lifetime never passes the issuer's notAfter: it
    /// is clamped (and [`Planned::clamped`] says so) when `req.clamp_to_issuer`, else refused.
    pub fn plan(
        self,
        req: &CertRequest,
        subject_key: KeyType,
        issuer: Option<&Certificate>,
        now: OffsetDateTime,
    ) -> Result<Planned, ProfileError> {
        // Certificates carry whole seconds; plan in whole seconds so the check compares exactly.
        let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
        if !subject_key.is_strong_enough() {
            return Err(ProfileError::KeyNotAllowed(format!(
                "{subject_key} is too weak"
            )));
        }
        if self == Profile::MeshCa && !subject_key.accepted_by_istiod() {
            return Err(ProfileError::KeyNotAllowed(format!(
                "{subject_key}: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048 for its CA"
            )));
        }
        if self != Profile::Root && issuer.is_none() {
            return Err(ProfileError::NeedsIssuer);
        }
        if let Some(iss) = issuer {
            if !iss.is_ca() {
                return Err(ProfileError::IssuerNotCa);
            }
            if now > iss.not_after() {
                return Err(ProfileError::IssuerExpired {
                    not_after: iss.not_after(),
                });
            }
        }
        let ttl = req.ttl.unwrap_or(self.default_ttl());
        if !self.is_ca() && ttl < MIN_TTL {
            return Err(ProfileError::TtlTooShort { min: MIN_TTL });
        }

        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &req.subject.common_name {
            check_dn_value("common name", cn)?;
            p.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        if let Some(o) = &req.subject.organization {
            check_dn_value("organization", o)?;
            p.distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        if let (Some(iss), Some(cn)) = (issuer, &req.subject.common_name) {
            // Same name as the issuer: it would pass for self-issued, which path validation
            // treats differently, and readers take it for the CA itself.
            if iss.subject_cn() == Some(cn.as_str()) {
                return Err(ProfileError::SubjectIsIssuers {
                    common_name: cn.clone(),
                });
            }
        }
        let serial = Serial::random();
        p.serial_number = Some(serial.to_rcgen());
        p.not_before = now - BACKDATE;
        if let Some(iss) = issuer {
            if p.not_before < iss.not_before() {
                p.not_before = iss.not_before();
            }
        }
        let mut not_after = now + ttl.as_duration();
        let mut clamped = false;
        if let Some(iss) = issuer {
            if not_after > iss.not_after() {
                if !req.clamp_to_issuer {
                    return Err(ProfileError::PastIssuerExpiry {
                        requested: not_after,
                        issuer_not_after: iss.not_after(),
                    });
                }
                not_after = iss.not_after();
                clamped = true;
            }
        }
        p.not_after = not_after;
        p.use_authority_key_identifier_extension = self != Profile::Root;

        match self {
            Profile::Root | Profile::Intermediate | Profile::MeshCa => {
                if req.subject.common_name.is_none() {
                    return Err(ProfileError::MissingCommonName);
                }
                let path_len = req.path_len.or(self.default_path_len());
                if self == Profile::MeshCa && path_len != Some(0) {
                    return Err(ProfileError::Invalid("a mesh CA has pathlen 0".into()));
                }
                if let (Some(iss), Some(want)) = (issuer, path_len) {
                    if let Some(limit) = iss.path_len() {
                        if u32::from(want) >= limit {
                            return Err(ProfileError::Invalid(format!(
                                "pathlen {want} is not allowed under an issuer with pathlen {limit}"
                            )));
                        }
                    }
                }
                if let Some(iss) = issuer {
                    if iss.path_len() == Some(0) {
                        return Err(ProfileError::Invalid(
                            "the issuer has pathlen 0 and may not sign a CA".into(),
                        ));
                    }
                }
                p.is_ca = IsCa::Ca(match path_len {
                    Some(n) => BasicConstraints::Constrained(n),
                    None => BasicConstraints::Unconstrained,
                });
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                if self != Profile::Root {
                    let td = req
                        .trust_domain
                        .as_ref()
                        .ok_or(ProfileError::MissingTrustDomain)?;
                    p.subject_alt_names = vec![uri_san(&td.id_string())?];
                } else if let Some(td) = &req.trust_domain {
                    p.subject_alt_names = vec![uri_san(&td.id_string())?];
                }
                let constraints = match (&req.name_constraints, self) {
                    (Some(nc), _) => Some(nc.clone()),
                    (None, Profile::MeshCa) => {
                        let td = req
                            .trust_domain
                            .as_ref()
                            .ok_or(ProfileError::MissingTrustDomain)?;
                        Some(NameConstraints::mesh(
                            td,
                            &NameConstraints::istiod_dns("istio-system"),
                        ))
                    }
                    (None, _) => None,
                };
                if let Some(nc) = constraints {
                    let ext = nc
                        .to_extension()
                        .map_err(|e| ProfileError::Invalid(e.to_string()))?;
                    p.custom_extensions.push(ext);
                }
                if !req.dns_names.is_empty()
                    || !req.ip_addresses.is_empty()
                    || req.spiffe_id.is_some()
                {
                    return Err(ProfileError::Invalid(
                        "CA certificates carry only the trust domain URI SAN".into(),
                    ));
                }
            }
            Profile::Workload | Profile::Server | Profile::Client => {
                if req.name_constraints.is_some() {
                    return Err(ProfileError::Invalid(
                        "name constraints belong on CA certificates only".into(),
                    ));
                }
                p.is_ca = IsCa::ExplicitNoCa;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                if matches!(subject_key, KeyType::Rsa { .. }) {
                    p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
                }
                p.extended_key_usages = match self {
                    Profile::Workload => vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                    Profile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
                    _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
                };
                if req.dns_names.len() + req.ip_addresses.len() > MAX_SANS {
                    return Err(ProfileError::Invalid(format!("more than {MAX_SANS} SANs")));
                }
                let mut sans = Vec::new();
                match (&req.spiffe_id, self) {
                    (None, Profile::Workload) => return Err(ProfileError::MissingSpiffeId),
                    (Some(id), _) => {
                        if let Some(td) = &req.trust_domain {
                            if id.trust_domain() != td {
                                return Err(ProfileError::TrustDomainMismatch {
                                    expected: td.clone(),
                                    got: id.clone(),
                                });
                            }
                        }
                        sans.push(uri_san(&id.to_string())?);
                    }
                    (None, _) => {}
                }
                for d in &req.dns_names {
                    check_dns_name(d, req.allow_wildcard_dns)?;
                    sans.push(SanType::DnsName(
                        d.to_ascii_lowercase()
                            .try_into()
                            .map_err(|_| bad_dns(d, "not an IA5 string"))?,
                    ));
                }
                for ip in &req.ip_addresses {
                    sans.push(SanType::IpAddress(*ip));
                }
                if self == Profile::Server
                    && req.dns_names.is_empty()
                    && req.ip_addresses.is_empty()
                {
                    return Err(ProfileError::Invalid(
                        "a server certificate needs a DNS name or IP address".into(),
                    ));
                }
                if sans.is_empty() && req.subject.common_name.is_none() {
                    return Err(ProfileError::Invalid(
                        "the certificate would name nobody: give a SPIFFE ID, SAN or CN".into(),
                    ));
                }
                p.subject_alt_names = sans;
            }
        }
        Ok(Planned {
            profile: self,
            params: p,
            serial,
            clamped,
        })
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

    /// Checks a just-signed certificate against the plan it was made from and its issuer.
    /// A failure here is an internal error: the certificate must not be returned.
    pub fn check_issued(
        self,
        cert: &Certificate,
        planned: &Planned,
        subject_spki: &[u8],
        issuer: Option<&Certificate>,
    ) -> Result<(), ProfileError> {
        let mut v = self.lint(cert);
        let p = &planned.params;
        if cert.serial() != &planned.serial {
            v.push("serial differs from the one planned".into());
        }
        if cert.public_key_spki() != subject_spki {
            v.push("public key is not the requester's".into());
        }
        if cert.not_before() != p.not_before || cert.not_after() != p.not_after {
            v.push("validity differs from the one planned".into());
        }
        let want_uris: Vec<String> = p
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::URI(u) => Some(u.as_str().to_owned()),
                _ => None,
            })
            .collect();
        if cert.uris() != want_uris.as_slice() {
            v.push("URI SANs differ from the request".into());
        }
        let want_dns: Vec<String> = p
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(d) => Some(d.as_str().to_owned()),
                _ => None,
            })
            .collect();
        if cert.dns_names() != want_dns.as_slice() {
            v.push("DNS SANs differ from the request".into());
        }
        if !p.custom_extensions.is_empty() && !cert.has_name_constraints() {
            v.push("name constraints were planned but are missing".into());
        }
        match issuer {
            Some(iss) => {
                if cert.issuer_raw() != iss.subject_raw() {
                    v.push("issuer name is not the CA's subject".into());
                }
                if cert.subject_raw() == iss.subject_raw() {
                    v.push(
                        "subject is the issuer's own name (it would pass for self-issued)".into(),
                    );
                }
                if cert.not_after() > iss.not_after() {
                    v.push("outlives its issuer".into());
                }
                if cert.authority_key_id().is_some()
                    && cert.authority_key_id() != iss.subject_key_id()
                {
                    v.push(
                        "Authority Key Identifier is not the issuer's Subject Key Identifier"
                            .into(),
                    );
                }
                if cert.verify_signed_by(iss).is_err() {
                    v.push("signature does not verify with the issuer's key".into());
                }
            }
            None => {
                if cert.verify_signed_by_spki(cert.public_key_spki()).is_err() {
                    v.push("self-signature does not verify".into());
                }
            }
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(ProfileError::CheckFailed(v))
        }
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

/// What is asked of a certificate, already parsed into typed values.
#[derive(Clone, Debug, Default)]
pub struct CertRequest {
    pub subject: Subject,
    /// The SPIFFE ID (workloads: required; the only URI SAN).
    pub spiffe_id: Option<SpiffeId>,
    /// The trust domain: CA profiles put `spiffe://TD` in a URI SAN; leaves must match it.
    pub trust_domain: Option<TrustDomain>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Requested lifetime; the profile's default when None.
    pub ttl: Option<Ttl>,
    /// CA profiles: pathLenConstraint (profile default when None).
    pub path_len: Option<u8>,
    /// Clamp notAfter to the issuer's instead of refusing.
    pub clamp_to_issuer: bool,
    /// Whether `*.example.com` DNS names are allowed (policy decides).
    pub allow_wildcard_dns: bool,
    /// CA profiles: permitted subtrees. A mesh CA always carries them: these, or when
    /// None the trust domain and istiod's names in `istio-system`
    /// ([`NameConstraints::mesh`]).
    pub name_constraints: Option<NameConstraints>,
}

/// A certificate ready to sign: parameters plus what was decided on the way.
#[derive(Debug)]
pub struct Planned {
    pub profile: Profile,
    pub params: CertificateParams,
    pub serial: Serial,
    /// notAfter was cut to the issuer's.
    pub clamped: bool,
}

/// Why a request cannot become a certificate of a profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "unknown profile {0:?} (choose root, intermediate, mesh-ca, workload, server or client)"
    )]
    UnknownProfile(String),
    #[error(
        "a workload certificate needs exactly one SPIFFE ID (URI SAN spiffe://TRUST_DOMAIN/...)"
    )]
    MissingSpiffeId,
    #[error("more than one SPIFFE ID requested; a workload certificate carries exactly one")]
    TooManySpiffeIds,
    #[error("SPIFFE ID {got} is not in trust domain {expected}")]
    TrustDomainMismatch {
        expected: TrustDomain,
        got: SpiffeId,
    },
    #[error("invalid DNS name {name:?}: {why}")]
    BadDnsName { name: String, why: &'static str },
    #[error("invalid {field}: {why}")]
    BadSubject {
        field: &'static str,
        why: &'static str,
    },
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
    #[error("a CA certificate needs a common name")]
    MissingCommonName,
    #[error("common name {common_name:?} is the issuer's own name: a certificate under it needs another")]
    SubjectIsIssuers { common_name: String },
    #[error("key not allowed: {0}")]
    KeyNotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("signed certificate failed its profile check: {}", .0.join("; "))]
    CheckFailed(Vec<String>),
}

fn uri_san(s: &str) -> Result<SanType, ProfileError> {
    Ok(SanType::URI(s.try_into().map_err(|_| {
        ProfileError::Invalid(format!("URI SAN {s:?} is not an IA5 string"))
    })?))
}

fn bad_dns(name: &str, why: &'static str) -> ProfileError {
    ProfileError::BadDnsName {
        name: name.chars().take(80).collect(),
        why,
    }
}

/// Checks a DNS SAN: LDH labels, at most 253 bytes, a wildcard only as `*.` when allowed.
pub fn check_dns_name(name: &str, allow_wildcard: bool) -> Result<(), ProfileError> {
    if name.is_empty() {
        return Err(bad_dns(name, "empty"));
    }
    if name.len() > 253 {
        return Err(bad_dns(name, "longer than 253 bytes"));
    }
    let rest = match name.strip_prefix("*.") {
        Some(r) if allow_wildcard => r,
        Some(_) => return Err(bad_dns(name, "wildcards are not allowed here")),
        None => name,
    };
    if rest.contains('*') {
        return Err(bad_dns(
            name,
            "a wildcard may only be the whole leftmost label",
        ));
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Err(bad_dns(name, "empty label"));
        }
        if label.len() > 63 {
            return Err(bad_dns(name, "label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad_dns(
                name,
                "only letters, digits, '-' and '.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad_dns(name, "a label may not start or end with '-'"));
        }
    }
    if rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad_dns(name, "looks like an IP address: use an IP SAN"));
    }
    Ok(())
}

fn check_dn_value(field: &'static str, v: &str) -> Result<(), ProfileError> {
    if v.is_empty() || v.len() > 64 {
        return Err(ProfileError::BadSubject {
            field,
            why: "must be 1-64 characters",
        });
    }
    if v.chars().any(char::is_control) {
        return Err(ProfileError::BadSubject {
            field,
            why: "control characters are not allowed",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::key::KeyPair;
    use std::sync::Arc;

    fn td() -> TrustDomain {
        "mesh.example".parse().unwrap()
    }

    fn ca_req(cn: &str) -> CertRequest {
        CertRequest {
            subject: Subject {
                common_name: Some(cn.into()),
                organization: Some("Acme".into()),
            },
            trust_domain: Some(td()),
            ..Default::default()
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
            &ca_req("Acme Root CA"),
            now,
        )
        .unwrap();
        let (int, key) = root
            .issue_with_new_key(
                Profile::Intermediate,
                &ca_req("aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let int = CertificateAuthority::new(int.certificate, vec![], Arc::new(key)).unwrap();
        Pki { now, root, int }
    }

    fn workload_req(ns: &str) -> CertRequest {
        CertRequest {
            spiffe_id: Some(SpiffeId::kubernetes(&td(), ns, "web").unwrap()),
            trust_domain: Some(td()),
            ..Default::default()
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
                Profile::MeshCa,
                &ca_req("istiod aws"),
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
            .issue_with_new_key(Profile::MeshCa, &ca_req("x"), KeyType::Ed25519, p.now)
            .unwrap_err();
        assert!(err.to_string().contains("istiod"), "{err}");
        // A mesh CA (pathlen 0) may not sign another CA.
        let mesh_key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let (mesh2, k2) = p
            .int
            .issue_with_new_key(Profile::MeshCa, &ca_req("m2"), KeyType::EcdsaP256, p.now)
            .unwrap();
        let mesh_ca = CertificateAuthority::new(
            mesh2.certificate,
            vec![p.int.certificate().clone()],
            Arc::new(k2),
        )
        .unwrap();
        assert!(mesh_ca
            .issue(
                Profile::MeshCa,
                &ca_req("m3"),
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
                .issue(
                    Profile::Workload,
                    &workload_req("payments"),
                    &key.public_key_spki(),
                    p.now,
                )
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
        let req = CertRequest {
            dns_names: vec!["issuer.canopy.svc".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            subject: Subject {
                common_name: Some("canopy-issuer".into()),
                organization: None,
            },
            ..Default::default()
        };
        let s = p
            .int
            .issue(Profile::Server, &req, &key.public_key_spki(), p.now)
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
                Profile::Client,
                &workload_req("ops"),
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

    #[test]
    fn requests_that_must_fail() {
        let p = pki();
        let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let spki = key.public_key_spki();
        let issue = |r: &CertRequest| {
            p.int
                .issue(Profile::Workload, r, &spki, p.now)
                .unwrap_err()
                .to_string()
        };
        assert!(issue(&CertRequest::default()).contains("SPIFFE ID"));
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
        let clamped = p.int.issue(Profile::Workload, &r, &spki, p.now).unwrap();
        assert!(
            clamped.clamped && clamped.certificate.not_after() == p.int.certificate().not_after()
        );
        for bad in [
            "a/b.example",
            "a\0b",
            "*.example.com",
            "exa mple.com",
            "-a.com",
            "a..b",
            "1.2.3.4",
            "a.*.com",
        ] {
            let mut r = workload_req("a");
            r.dns_names = vec![bad.into()];
            assert!(issue(&r).contains("invalid DNS name"), "{bad:?}");
        }
        let mut r = workload_req("a");
        r.dns_names = vec!["*.example.com".into()];
        r.allow_wildcard_dns = true;
        assert!(p.int.issue(Profile::Workload, &r, &spki, p.now).is_ok());
        let weak = ProfileError::KeyNotAllowed(String::new());
        assert!(
            matches!(Profile::Workload.plan(&workload_req("a"), KeyType::Rsa { bits: 1024 }, Some(p.int.certificate()), p.now), Err(e) if std::mem::discriminant(&e) == std::mem::discriminant(&weak))
        );
        let expired = p.now + time::Duration::days(365 * 6);
        assert!(matches!(
            Profile::Workload.plan(
                &workload_req("a"),
                KeyType::EcdsaP256,
                Some(p.int.certificate()),
                expired
            ),
            Err(ProfileError::IssuerExpired { .. })
        ));
    }

    #[test]
    fn cross_signed_root_chains_old_leaves_to_new_root() {
        let old = pki();
        let new_root = CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP384).unwrap()),
            &ca_req("Acme Root CA 2"),
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
            .issue(
                Profile::Workload,
                &workload_req("a"),
                &key.public_key_spki(),
                old.now,
            )
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
