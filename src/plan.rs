//! From a request to a [`Plan`]: every decision about a certificate, made before anything is
//! signed. A plan's fields are private, so nothing changes it between planning and signing;
//! [`crate::CertificateAuthority::sign`] takes only a plan.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::cert::Certificate;
use crate::constraints::NameConstraints;
use crate::key::KeyType;
use crate::profile::{
    CaProfile, CaRequest, LeafProfile, LeafRequest, Profile, ProfileError, Subject, BACKDATE,
    MAX_SANS, MIN_TTL,
};
use crate::serial::Serial;
use crate::ttl::Ttl;

/// A request for one kind of certificate: [`LeafRequest`] or [`CaRequest`].
pub trait Request {
    /// The profile asked for.
    fn profile(&self) -> Profile;

    /// Plans the certificate for the key `subject_spki` (DER SubjectPublicKeyInfo) under
    /// `issuer` (None only for a root). notAfter never passes the issuer's: it is clamped
    /// (and [`Plan::clamped`] says so) when the request allows it, else refused.
    fn plan(
        &self,
        subject_spki: &[u8],
        issuer: Option<&Certificate>,
        now: OffsetDateTime,
    ) -> Result<Plan, ProfileError>;
}

/// A certificate ready to sign, read-only: parameters plus what was decided on the way.
#[derive(Debug)]
pub struct Plan {
    profile: Profile,
    params: CertificateParams,
    serial: Serial,
    key_type: KeyType,
    subject_spki: Vec<u8>,
    issuer_der: Option<Vec<u8>>,
    clamped: bool,
}

impl Plan {
    /// The profile planned.
    pub fn profile(&self) -> Profile {
        self.profile
    }
    /// The serial the certificate will carry.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }
    /// notBefore (backdated, never before the issuer's).
    pub fn not_before(&self) -> OffsetDateTime {
        self.params.not_before
    }
    /// notAfter (never past the issuer's).
    pub fn not_after(&self) -> OffsetDateTime {
        self.params.not_after
    }
    /// Whether notAfter was cut to the issuer's.
    pub fn clamped(&self) -> bool {
        self.clamped
    }
    /// The type of the key being certified.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }
    /// The key being certified, DER SubjectPublicKeyInfo.
    pub fn subject_spki(&self) -> &[u8] {
        &self.subject_spki
    }
    /// The DER of the CA certificate this was planned under (None for a root).
    pub fn issuer_der(&self) -> Option<&[u8]> {
        self.issuer_der.as_deref()
    }
    pub(crate) fn params(&self) -> &CertificateParams {
        &self.params
    }
}

impl Request for LeafRequest {
    fn profile(&self) -> Profile {
        self.profile.into()
    }

    fn plan(
        &self,
        subject_spki: &[u8],
        issuer: Option<&Certificate>,
        now: OffsetDateTime,
    ) -> Result<Plan, ProfileError> {
        let mut draft = Draft::new(self.profile.into(), subject_spki, issuer, now)?;
        let ttl = self.ttl.unwrap_or(self.profile.default_ttl());
        if ttl < MIN_TTL {
            return Err(ProfileError::TtlTooShort { min: MIN_TTL });
        }
        let mut p = draft.params(&self.subject, ttl, self.clamp_to_issuer)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(draft.key_type, KeyType::Rsa { .. }) {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.extended_key_usages = match self.profile {
            LeafProfile::Workload => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            LeafProfile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            LeafProfile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        p.subject_alt_names = leaf_sans(self)?;
        Ok(draft.finish(p))
    }
}

/// A leaf's SANs: the SPIFFE ID (one URI SAN), then DNS names, then IP addresses.
fn leaf_sans(req: &LeafRequest) -> Result<Vec<SanType>, ProfileError> {
    let count = req.dns_names.len() + req.ip_addresses.len();
    if count > MAX_SANS {
        return Err(ProfileError::TooManySans {
            count,
            max: MAX_SANS,
        });
    }
    let mut sans = Vec::with_capacity(count + 1);
    match (&req.spiffe_id, req.profile) {
        (None, LeafProfile::Workload) => return Err(ProfileError::MissingSpiffeId),
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
        let ia5 = d
            .as_str()
            .try_into()
            .map_err(|_| ProfileError::SanNotIa5(d.to_string()))?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
    if req.profile == LeafProfile::Server && count == 0 {
        return Err(ProfileError::ServerNeedsName);
    }
    if sans.is_empty() && req.subject.common_name.is_none() {
        return Err(ProfileError::NamesNobody);
    }
    Ok(sans)
}

impl Request for CaRequest {
    fn profile(&self) -> Profile {
        self.profile.into()
    }

    fn plan(
        &self,
        subject_spki: &[u8],
        issuer: Option<&Certificate>,
        now: OffsetDateTime,
    ) -> Result<Plan, ProfileError> {
        let mut draft = Draft::new(self.profile.into(), subject_spki, issuer, now)?;
        let ttl = self.ttl.unwrap_or(self.profile.default_ttl());
        let subject = Subject {
            common_name: Some(self.common_name.clone()),
            organization: self.organization.clone(),
        };
        let mut p = draft.params(&subject, ttl, self.clamp_to_issuer)?;
        p.is_ca = ca_basic_constraints(self, issuer)?;
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        match (&self.trust_domain, self.profile) {
            (Some(td), _) => p.subject_alt_names = vec![uri_san(&td.id_string())?],
            (None, CaProfile::Root) => {}
            (None, _) => return Err(ProfileError::MissingTrustDomain),
        }
        if let Some(ext) = ca_name_constraints(self)? {
            p.custom_extensions.push(ext);
        }
        Ok(draft.finish(p))
    }
}

/// basicConstraints CA:TRUE with the pathlen the profile and the issuer allow.
fn ca_basic_constraints(
    req: &CaRequest,
    issuer: Option<&Certificate>,
) -> Result<IsCa, ProfileError> {
    let path_len = req.path_len.or(req.profile.default_path_len());
    if req.profile == CaProfile::MeshCa && path_len != Some(0) {
        return Err(ProfileError::MeshCaPathLen {
            requested: path_len,
        });
    }
    if let (Some(iss), Some(requested)) = (issuer, path_len) {
        if let Some(issuer_path_len) = iss.path_len() {
            if u32::from(requested) >= issuer_path_len {
                return Err(ProfileError::PathLenTooLong {
                    requested,
                    issuer_path_len,
                });
            }
        }
    }
    if issuer.is_some_and(|iss| iss.path_len() == Some(0)) {
        return Err(ProfileError::IssuerMayNotSignCa);
    }
    Ok(IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    }))
}

/// The name constraints extension: the request's, or for a mesh CA the trust domain and
/// istiod's names in `istio-system`.
fn ca_name_constraints(req: &CaRequest) -> Result<Option<CustomExtension>, ProfileError> {
    let constraints = match (&req.name_constraints, req.profile) {
        (Some(nc), _) => Some(nc.clone()),
        (None, CaProfile::MeshCa) => {
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
    constraints
        .map(|nc| nc.to_extension().map_err(ProfileError::NameConstraints))
        .transpose()
}

/// What every profile decides the same way: the key, the issuer, the name and the validity.
struct Draft<'a> {
    profile: Profile,
    key_type: KeyType,
    subject_spki: &'a [u8],
    issuer: Option<&'a Certificate>,
    now: OffsetDateTime,
    serial: Serial,
    clamped: bool,
}

impl<'a> Draft<'a> {
    /// Checks the key and the issuer.
    fn new(
        profile: Profile,
        subject_spki: &'a [u8],
        issuer: Option<&'a Certificate>,
        now: OffsetDateTime,
    ) -> Result<Self, ProfileError> {
        // Certificates carry whole seconds; plan in whole seconds so the check compares exactly.
        let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
        let key_type = KeyType::from_spki(subject_spki).map_err(ProfileError::Key)?;
        if !key_type.is_strong_enough() {
            return Err(ProfileError::KeyTooWeak(key_type));
        }
        if profile == Profile::MeshCa && !key_type.accepted_by_istiod() {
            return Err(ProfileError::KeyRefusedByIstiod(key_type));
        }
        if profile != Profile::Root && issuer.is_none() {
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
        Ok(Draft {
            profile,
            key_type,
            subject_spki,
            issuer,
            now,
            serial: Serial::random(),
            clamped: false,
        })
    }

    /// The parameters every profile shares: subject, serial, validity, AKI.
    fn params(
        &mut self,
        subject: &Subject,
        ttl: Ttl,
        clamp_to_issuer: bool,
    ) -> Result<CertificateParams, ProfileError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = distinguished_name(subject, self.issuer)?;
        p.serial_number = Some(self.serial.to_rcgen());
        p.not_before = self.now - BACKDATE;
        if let Some(iss) = self.issuer {
            p.not_before = p.not_before.max(iss.not_before());
        }
        p.not_after = self.now + ttl.as_duration();
        if let Some(iss) = self.issuer {
            if p.not_after > iss.not_after() {
                if !clamp_to_issuer {
                    return Err(ProfileError::PastIssuerExpiry {
                        requested: p.not_after,
                        issuer_not_after: iss.not_after(),
                    });
                }
                p.not_after = iss.not_after();
                self.clamped = true;
            }
        }
        p.use_authority_key_identifier_extension = self.profile != Profile::Root;
        Ok(p)
    }

    fn finish(self, params: CertificateParams) -> Plan {
        Plan {
            profile: self.profile,
            params,
            serial: self.serial,
            key_type: self.key_type,
            subject_spki: self.subject_spki.to_vec(),
            issuer_der: self.issuer.map(|c| c.der().to_vec()),
            clamped: self.clamped,
        }
    }
}

/// CN then O, each checked; a CN equal to the issuer's is refused.
fn distinguished_name(
    subject: &Subject,
    issuer: Option<&Certificate>,
) -> Result<DistinguishedName, ProfileError> {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = &subject.common_name {
        check_dn_value("common name", cn)?;
        dn.push(DnType::CommonName, cn.as_str());
    }
    if let Some(o) = &subject.organization {
        check_dn_value("organization", o)?;
        dn.push(DnType::OrganizationName, o.as_str());
    }
    if let (Some(iss), Some(cn)) = (issuer, &subject.common_name) {
        // Same name as the issuer: it would pass for self-issued, which path validation
        // treats differently, and readers take it for the CA itself.
        if iss.subject_cn() == Some(cn.as_str()) {
            return Err(ProfileError::SubjectIsIssuers {
                common_name: cn.clone(),
            });
        }
    }
    Ok(dn)
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

fn uri_san(s: &str) -> Result<SanType, ProfileError> {
    Ok(SanType::URI(
        s.try_into()
            .map_err(|_| ProfileError::SanNotIa5(s.to_owned()))?,
    ))
}

impl Plan {
    /// Checks a just-signed certificate's content (its TBS) against this plan and its
    /// issuer. A failure here is an internal error: the certificate must not be returned.
    /// The signature is not verified here: [`crate::CertificateAuthority`] does it as its
    /// signer requires ([`crate::ca::SignatureCheck`]).
    pub fn check(
        &self,
        cert: &Certificate,
        issuer: Option<&Certificate>,
    ) -> Result<(), ProfileError> {
        let mut v = self.profile.lint(cert);
        let p = &self.params;
        if cert.serial() != &self.serial {
            v.push("serial differs from the one planned".into());
        }
        if cert.public_key_spki() != self.subject_spki.as_slice() {
            v.push("public key is not the requester's".into());
        }
        if cert.not_before() != p.not_before || cert.not_after() != p.not_after {
            v.push("validity differs from the one planned".into());
        }
        let sans = |f: fn(&SanType) -> Option<String>| -> Vec<String> {
            p.subject_alt_names.iter().filter_map(f).collect()
        };
        let want_uris = sans(|s| match s {
            SanType::URI(u) => Some(u.as_str().to_owned()),
            _ => None,
        });
        if cert.uris() != want_uris.as_slice() {
            v.push("URI SANs differ from the request".into());
        }
        let want_dns = sans(|s| match s {
            SanType::DnsName(d) => Some(d.as_str().to_owned()),
            _ => None,
        });
        if cert.dns_names() != want_dns.as_slice() {
            v.push("DNS SANs differ from the request".into());
        }
        if !p.custom_extensions.is_empty() && !cert.has_name_constraints() {
            v.push("name constraints were planned but are missing".into());
        }
        if let Some(iss) = issuer {
            check_against_issuer(cert, iss, &mut v);
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(ProfileError::CheckFailed(v))
        }
    }
}

fn check_against_issuer(cert: &Certificate, iss: &Certificate, v: &mut Vec<String>) {
    if iss
        .key_type()
        .is_none_or(|k| cert.signature_algorithm() != k.signature_algorithm_name())
    {
        v.push("signature algorithm is not the issuer key's".into());
    }
    if cert.issuer_raw() != iss.subject_raw() {
        v.push("issuer name is not the CA's subject".into());
    }
    if cert.subject_raw() == iss.subject_raw() {
        v.push("subject is the issuer's own name (it would pass for self-issued)".into());
    }
    if cert.not_after() > iss.not_after() {
        v.push("outlives its issuer".into());
    }
    if cert.authority_key_id().is_some() && cert.authority_key_id() != iss.subject_key_id() {
        v.push("Authority Key Identifier is not the issuer's Subject Key Identifier".into());
    }
}
