//! Certificate authorities: a CA certificate plus the [`Signer`] that holds its key.
//!
//! Every certificate canopy makes goes through [`CertificateAuthority::issue`] (or
//! [`CertificateAuthority::new_root`]), which plans it with its profile, signs it, parses it
//! back and checks it against the profile before anyone sees it.

use std::fmt;
use std::sync::Arc;

use rcgen::{Issuer, KeyIdMethod, SignatureAlgorithm};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::cert::{CertError, Certificate};
use crate::crl::{Crl, CrlError, RevokedEntry};
use crate::csr::Csr;
use crate::key::{KeyError, KeyPair, KeyType};
use crate::pkcs11::Pkcs11Key;
use crate::plan::{Plan, Request};
use crate::profile::{Profile, ProfileError};

/// The only way a CA key signs: a key file ([`KeyPair`]) or a PKCS#11 token ([`Pkcs11Key`]).
pub trait Signer: Send + Sync {
    /// The key's type.
    fn key_type(&self) -> KeyType;
    /// The DER SubjectPublicKeyInfo of the key.
    fn public_key_spki(&self) -> Vec<u8>;
    /// Signs `msg` with the key type's signature algorithm.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Whether the key can sign now (a key in memory always can; a token may be gone).
    fn check(&self) -> Result<(), KeyError> {
        Ok(())
    }
    /// When the key's signatures are verified: a signer that does not say is verified on
    /// every certificate.
    fn signature_check(&self) -> SignatureCheck {
        SignatureCheck::EveryCertificate
    }
}

/// When a CA verifies that its signer signs with the key its certificate names.
///
/// Every certificate's content (its TBS: names, key, validity, extensions, issuer name,
/// key identifiers) is checked against its plan before it is returned, whatever the
/// signer. What that content check cannot see is the signature: whether the key that
/// made it is the one the CA certificate names. Verifying it costs an ECDSA verify (about
/// three times the signature itself), so it is done where the key can change under us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// The key is in this process's memory and no code changes it (a [`KeyPair`] is
    /// neither `Clone` nor mutable): a probe signature is verified with the CA
    /// certificate's key once, when the CA is set up, which covers every later signature.
    /// What a per-certificate verify would still add: catching a faulty computation, which
    /// for ECDSA gives a signature no client accepts (availability, not trust) and which
    /// aws-lc's RSA signing already checks itself.
    OnceAtSetup,
    /// The key is elsewhere (a PKCS#11 token; later a KMS): another key may sign at any
    /// time (a token swapped or re-initialised, another object under the label), so every
    /// certificate's signature is verified with the CA certificate's key before it is
    /// returned, as Go's `x509.CreateCertificate` does for an opaque `crypto.Signer`.
    EveryCertificate,
}

impl Signer for Pkcs11Key {
    fn key_type(&self) -> KeyType {
        Pkcs11Key::key_type(self)
    }
    fn public_key_spki(&self) -> Vec<u8> {
        Pkcs11Key::public_key_spki(self).to_vec()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(Pkcs11Key::sign(self, msg)?)
    }
    fn check(&self) -> Result<(), KeyError> {
        Ok(Pkcs11Key::check(self)?)
    }
}

impl Signer for KeyPair {
    fn key_type(&self) -> KeyType {
        KeyPair::key_type(self)
    }
    fn public_key_spki(&self) -> Vec<u8> {
        KeyPair::public_key_spki(self)
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        KeyPair::sign(self, msg)
    }
    fn signature_check(&self) -> SignatureCheck {
        SignatureCheck::OnceAtSetup
    }
}

/// Adapts a [`Signer`] to rcgen's signing traits.
#[derive(Clone)]
struct SignerHandle {
    signer: Arc<dyn Signer>,
    raw_public_key: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl SignerHandle {
    fn new(signer: Arc<dyn Signer>) -> Result<Self, CaError> {
        let spki = signer.public_key_spki();
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|_| CaError::Key(KeyError::Malformed))?;
        Ok(Self {
            raw_public_key: parsed.subject_public_key.data.to_vec(),
            alg: signer.key_type().signature_algorithm(),
            signer,
        })
    }
}

/// What [`SignatureCheck::OnceAtSetup`] signs and verifies when a CA is set up.
const KEY_PROBE: &[u8] = b"canopy: this key signs for the CA certificate that names it";

impl SignerHandle {
    /// Signs a probe and verifies it with the public key the CA certificate names (the
    /// caller checked it is the signer's): proof that this key is the certificate's.
    fn prove_key(&self) -> Result<(), CaError> {
        let signature = self.signer.sign(KEY_PROBE)?;
        let key_type = self.signer.key_type();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            key_type.verification_algorithm(),
            &self.raw_public_key,
        )
        .verify(KEY_PROBE, &signature)
        .map_err(|_| CaError::KeyMismatch)
    }
}

impl rcgen::PublicKeyData for SignerHandle {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for SignerHandle {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // rcgen's error carries no detail: the kind survives (and `signing_error` turns
        // it back into ours), the message is the token's to log.
        self.signer.sign(msg).map_err(|e| match e {
            KeyError::Unavailable(_) => rcgen::Error::RemoteKeyError,
            _ => rcgen::Error::RingUnspecified,
        })
    }
}

/// Why a CA could not be set up or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the private key does not match the CA certificate's public key")]
    KeyMismatch,
    #[error("the certificate is not a CA (basicConstraints CA:TRUE with keyCertSign)")]
    NotCa,
    #[error("a workload may not ask for a CA certificate")]
    CaRequested,
    #[error("the plan was made under another CA: plan with the CA that signs")]
    PlanForAnotherIssuer,
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Crl(#[from] CrlError),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("refusing to cross-sign: {0}")]
    CrossSignRefused(String),
    /// The key is on a token that cannot be reached now: nothing was signed; retry.
    #[error(
        "the CA key is not available now (its token is missing or was reset): nothing was signed"
    )]
    SignerUnavailable,
}

/// A signature that does not verify: like a failed content check, an internal error, and
/// the certificate is not returned.
fn bad_signature(why: &str) -> CaError {
    CaError::Profile(ProfileError::CheckFailed(vec![why.to_owned()]))
}

/// rcgen's signing error as ours: a token that went away is told apart from a bug.
fn signing_error(e: rcgen::Error) -> CaError {
    match e {
        rcgen::Error::RemoteKeyError => CaError::SignerUnavailable,
        other => CaError::Signing(other.to_string()),
    }
}

/// A certificate just issued, with the chain to hand out (leaf first, no root).
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub certificate: Certificate,
    /// Leaf first, then every CA above it except the root.
    pub chain: Vec<Certificate>,
    pub profile: Profile,
    /// notAfter was cut to the issuer's.
    pub clamped: bool,
}

impl IssuedCertificate {
    /// The chain as PEM (leaf first, no root).
    pub fn chain_pem(&self) -> String {
        Certificate::pem_of(&self.chain)
    }
}

/// A CA: its certificate, the certificates above it up to (not including) the root, and its signer.
pub struct CertificateAuthority {
    cert: Certificate,
    chain_above: Vec<Certificate>,
    signer: SignerHandle,
    issuer: Issuer<'static, SignerHandle>,
    signature_check: SignatureCheck,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.cert.subject())
            .field("serial", self.cert.serial())
            .field("not_after", &self.cert.not_after())
            .finish()
    }
}

impl CertificateAuthority {
    /// A CA from its certificate, the certificates above it (excluding the root) and its key.
    pub fn new(
        cert: Certificate,
        chain_above: Vec<Certificate>,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, CaError> {
        if !cert.is_ca() || cert.key_usage().is_some_and(|ku| !ku.key_cert_sign) {
            return Err(CaError::NotCa);
        }
        if cert.public_key_spki() != signer.public_key_spki().as_slice() {
            return Err(CaError::KeyMismatch);
        }
        let signature_check = signer.signature_check();
        let handle = SignerHandle::new(signer)?;
        if signature_check == SignatureCheck::OnceAtSetup {
            handle.prove_key()?;
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert.der()), handle.clone())
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(Self {
            cert,
            chain_above,
            signer: handle,
            issuer,
            signature_check,
        })
    }

    /// Makes a self-signed root from a [`crate::CaRequest`] of profile Root.
    pub fn new_root(
        signer: Arc<dyn Signer>,
        req: &impl Request,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        let handle = SignerHandle::new(signer.clone())?;
        let plan = req.plan(&handle.signer.public_key_spki(), None, now)?;
        let signed = plan.params().self_signed(&handle).map_err(signing_error)?;
        let cert = Certificate::from_der(signed.der().to_vec())?;
        plan.check(&cert, None)?;
        // A root is made once, offline: its self-signature is always verified.
        if cert.verify_signed_by(&cert).is_err() {
            return Err(bad_signature("self-signature does not verify"));
        }
        Self::new(cert, vec![], signer)
    }

    /// Plans `req` for a public key (DER SubjectPublicKeyInfo) under this CA and signs it.
    pub fn issue(
        &self,
        req: &impl Request,
        subject_spki: &[u8],
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        self.sign(req.plan(subject_spki, Some(&self.cert), now)?)
    }

    /// Signs a plan made under this CA, parses the result back and checks it against the
    /// plan before anyone sees it; the signature too where the signer's key may change
    /// ([`SignatureCheck`]).
    pub fn sign(&self, plan: Plan) -> Result<IssuedCertificate, CaError> {
        if plan.issuer_der() != Some(self.cert.der()) {
            return Err(CaError::PlanForAnotherIssuer);
        }
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(plan.subject_spki())
            .map_err(|e| CaError::Key(KeyError::Unsupported(e.to_string())))?;
        let signed = plan
            .params()
            .signed_by(&public_key, &self.issuer)
            .map_err(signing_error)?;
        // rcgen signs the TBS bytes it writes into the certificate, so the content checked
        // here is exactly the content signed.
        let cert = Certificate::from_der(signed.der().to_vec())?;
        plan.check(&cert, Some(&self.cert))?;
        if self.signature_check == SignatureCheck::EveryCertificate
            && cert.verify_signed_by(&self.cert).is_err()
        {
            return Err(bad_signature(
                "signature does not verify with the issuer's key",
            ));
        }
        let mut chain = Vec::with_capacity(self.chain_above.len() + 2);
        chain.push(cert.clone());
        chain.push(self.cert.clone());
        chain.extend(self.chain_above.iter().cloned());
        Ok(IssuedCertificate {
            certificate: cert,
            chain,
            profile: plan.profile(),
            clamped: plan.clamped(),
        })
    }

    /// Issues for a verified CSR. Only the CSR's key is used: names come from `req`
    /// (the caller decides which requested names policy allows), extensions are ignored.
    /// A CSR asking for a CA is refused for leaf profiles.
    pub fn issue_for_csr(
        &self,
        csr: &Csr,
        req: &impl Request,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        if !req.profile().is_ca() && csr.requests_ca() {
            return Err(CaError::CaRequested);
        }
        self.issue(req, csr.public_key_spki(), now)
    }

    /// Generates a key and issues a certificate for it (intermediates, mesh CAs, dev setups).
    pub fn issue_with_new_key(
        &self,
        req: &impl Request,
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<(IssuedCertificate, KeyPair), CaError> {
        let key = KeyPair::generate(key_type)?;
        let issued = self.issue(req, &key.public_key_spki(), now)?;
        Ok((issued, key))
    }

    /// Signs a CRL listing `revoked`.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedEntry],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Crl, CaError> {
        let ski = self
            .cert
            .subject_key_id()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                CaError::Signing("the CA certificate has no Subject Key Identifier".into())
            })?;
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked.iter().map(RevokedEntry::to_rcgen).collect(),
            key_identifier_method: KeyIdMethod::PreSpecified(ski),
        };
        let crl = params.signed_by(&self.issuer).map_err(signing_error)?;
        Ok(Crl::from_der(crl.der().to_vec())?)
    }

    /// The CA's certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The CA's certificate followed by those above it, excluding the root.
    pub fn chain(&self) -> Vec<Certificate> {
        let mut v = vec![self.cert.clone()];
        v.extend(self.chain_above.iter().cloned());
        v
    }

    /// The CA's key type.
    pub fn key_type(&self) -> KeyType {
        self.signer.signer.key_type()
    }

    /// Whether the CA's key can sign now (see [`Signer::check`]).
    pub fn check_signer(&self) -> Result<(), KeyError> {
        self.signer.signer.check()
    }
}

impl CertificateAuthority {
    /// Cross-signs another root for a rotation: a CA certificate with `other`'s exact subject,
    /// public key and Subject Key Identifier, issued by this CA. Certificates issued under
    /// `other` then also chain to this CA. notAfter is the earliest of `other`'s, this CA's
    /// and `now + ttl`.
    pub fn cross_sign(
        &self,
        other: &Certificate,
        ttl: Option<crate::ttl::Ttl>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        check_cross_sign(&self.cert, other, now)?;
        let ski = other
            .subject_key_id()
            .ok_or_else(|| CaError::Signing("the other root has no Subject Key Identifier".into()))?
            .to_vec();
        let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = distinguished_name_of(other)?;
        p.serial_number = Some(crate::serial::Serial::random().to_rcgen());
        p.not_before = (now - crate::profile::BACKDATE).max(self.cert.not_before());
        let mut not_after = other.not_after().min(self.cert.not_after());
        if let Some(ttl) = ttl {
            not_after = not_after.min(now + ttl.as_duration());
        }
        p.not_after = not_after;
        p.is_ca = rcgen::IsCa::Ca(match other.path_len() {
            Some(n) => rcgen::BasicConstraints::Constrained(u8::try_from(n).unwrap_or(u8::MAX)),
            None => rcgen::BasicConstraints::Unconstrained,
        });
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.subject_alt_names = other
            .uris()
            .iter()
            .filter_map(|u| u.as_str().try_into().ok().map(rcgen::SanType::URI))
            .collect();
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(other.public_key_spki())
            .map_err(|e| CaError::Key(KeyError::Unsupported(e.to_string())))?;
        let signed = p
            .signed_by(&public_key, &self.issuer)
            .map_err(signing_error)?;
        let cert = Certificate::from_der(signed.der().to_vec())?;
        let ok = cert.subject_raw() == other.subject_raw()
            && cert.public_key_spki() == other.public_key_spki()
            && cert.subject_key_id() == Some(ski.as_slice())
            && cert.authority_key_id() == self.cert.subject_key_id()
            && cert.verify_signed_by(&self.cert).is_ok()
            && !cert.has_sha1_signature();
        if !ok {
            return Err(CaError::Profile(ProfileError::CheckFailed(vec![
                "cross-signed certificate does not reproduce the other root's subject, key and key identifier".into(),
            ])));
        }
        Ok(IssuedCertificate {
            chain: vec![cert.clone(), self.cert.clone()],
            certificate: cert,
            profile: Profile::Intermediate,
            clamped: false,
        })
    }
}

/// The subject of `cert` as rcgen parameters, keeping each attribute's string type so the
/// encoded name is byte-identical (names chain by exact bytes).
/// What `other` must be before the root `this` certifies its key: a root self-signed by
/// the key it presents (so whoever made it holds that key), valid now, under another name
/// and key, and in the same SPIFFE trust domain (a rotation keeps the trust domain;
/// certifying a stranger's root would merge two trust domains).
pub fn check_cross_sign(
    this: &Certificate,
    other: &Certificate,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let refuse = |why: String| Err(CaError::CrossSignRefused(why));
    if !other.is_self_issued() || other.verify_signed_by(other).is_err() {
        return refuse(format!(
            "{} is not self-signed by its own key: only a root proves it holds the key it names",
            other.subject()
        ));
    }
    if !other.is_valid_at(now) {
        return refuse(format!(
            "{} is not valid now (notBefore {}, notAfter {})",
            other.subject(),
            other.not_before(),
            other.not_after()
        ));
    }
    if !other.is_ca() {
        return Err(CaError::NotCa);
    }
    if other.subject_raw() == this.subject_raw() {
        return refuse(format!(
            "the other root has this root's own name {}: give the new root another name",
            other.subject()
        ));
    }
    if other.public_key_spki() == this.public_key_spki() {
        return refuse("the other root has this root's own key".into());
    }
    let mine = trust_domain_uris(this);
    let theirs = trust_domain_uris(other);
    if mine != theirs {
        return refuse(format!(
            "trust domains differ: this root names {}, the other names {}",
            describe_uris(&mine),
            describe_uris(&theirs)
        ));
    }
    Ok(())
}

/// A root's `spiffe://TD` URI SANs.
fn trust_domain_uris(cert: &Certificate) -> Vec<&str> {
    cert.uris()
        .iter()
        .map(String::as_str)
        .filter(|u| u.starts_with("spiffe://"))
        .collect()
}

fn describe_uris(uris: &[&str]) -> String {
    if uris.is_empty() {
        "no trust domain".into()
    } else {
        uris.join(", ")
    }
}

fn distinguished_name_of(cert: &Certificate) -> Result<rcgen::DistinguishedName, CaError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let bad = |why: &str| CaError::Signing(format!("cannot reproduce the subject name: {why}"));
    let (_, name) =
        x509_parser::x509::X509Name::from_der(cert.subject_raw()).map_err(|_| bad("unparsable"))?;
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let attr = attrs.next().ok_or_else(|| bad("empty RDN"))?;
        if attrs.next().is_some() {
            return Err(bad("multi-valued RDN"));
        }
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("OID too large"))?
            .collect();
        let value = attr.attr_value();
        let text = value
            .as_str()
            .map_err(|_| bad("non-string attribute"))?
            .to_owned();
        let v = match value.tag() {
            Tag::PrintableString => rcgen::DnValue::PrintableString(
                text.try_into().map_err(|_| bad("PrintableString"))?,
            ),
            Tag::Ia5String => {
                rcgen::DnValue::Ia5String(text.try_into().map_err(|_| bad("IA5String"))?)
            }
            Tag::Utf8String => rcgen::DnValue::Utf8String(text),
            _ => return Err(bad("unsupported string type")),
        };
        dn.push(rcgen::DnType::from_oid(&oid), v);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest};
    use crate::spiffe::{SpiffeId, TrustDomain};

    fn td() -> TrustDomain {
        "mesh.example".parse().unwrap()
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00 UTC)
    }

    fn root() -> CertificateAuthority {
        CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap()),
            &CaRequest {
                trust_domain: Some(td()),
                ..CaRequest::new(CaProfile::Root, "Acme Root CA")
            },
            now(),
        )
        .unwrap()
    }

    fn workload(ns: &str) -> LeafRequest {
        LeafRequest {
            spiffe_id: Some(SpiffeId::kubernetes(&td(), ns, "web").unwrap()),
            trust_domain: Some(td()),
            ..LeafRequest::new(LeafProfile::Workload)
        }
    }

    /// Names one key (the certificate's) and signs with another once `swapped` is set, as
    /// a token does that was re-initialised or swapped under a running issuer.
    struct SwappingSigner {
        named: KeyPair,
        other: KeyPair,
        swapped: AtomicBool,
        check: SignatureCheck,
    }

    impl Signer for SwappingSigner {
        fn key_type(&self) -> KeyType {
            self.named.key_type()
        }
        fn public_key_spki(&self) -> Vec<u8> {
            self.named.public_key_spki()
        }
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
            if self.swapped.load(Ordering::SeqCst) {
                self.other.sign(msg)
            } else {
                self.named.sign(msg)
            }
        }
        fn signature_check(&self) -> SignatureCheck {
            self.check
        }
    }

    /// An intermediate whose signer names `named`'s key, set up with `swapped` as given.
    fn intermediate_with(
        root: &CertificateAuthority,
        check: SignatureCheck,
        swapped: bool,
    ) -> (Result<CertificateAuthority, CaError>, Arc<SwappingSigner>) {
        let (issued, named) = root
            .issue_with_new_key(
                &CaRequest {
                    trust_domain: Some(td()),
                    ..CaRequest::new(CaProfile::Intermediate, "aws")
                },
                KeyType::EcdsaP256,
                now(),
            )
            .unwrap();
        let signer = Arc::new(SwappingSigner {
            named,
            other: KeyPair::generate(KeyType::EcdsaP256).unwrap(),
            swapped: AtomicBool::new(swapped),
            check,
        });
        let ca = CertificateAuthority::new(issued.certificate, vec![], signer.clone());
        (ca, signer)
    }

    fn refused_for(result: Result<IssuedCertificate, CaError>, why: &str) {
        match result {
            Err(CaError::Profile(ProfileError::CheckFailed(v))) => {
                assert!(
                    v.iter().any(|m| m.contains(why)),
                    "{v:?} should say {why:?}"
                );
            }
            other => panic!("expected a refusal for {why:?}, got {other:?}"),
        }
    }

    #[test]
    fn an_in_process_key_that_is_not_the_certificates_is_refused_at_setup() {
        let root = root();
        let (ca, _) = intermediate_with(&root, SignatureCheck::OnceAtSetup, true);
        assert!(matches!(ca, Err(CaError::KeyMismatch)), "{ca:?}");
        let (ca, _) = intermediate_with(&root, SignatureCheck::OnceAtSetup, false);
        ca.unwrap()
            .issue(
                &workload("a"),
                &KeyPair::generate(KeyType::EcdsaP256)
                    .unwrap()
                    .public_key_spki(),
                now(),
            )
            .unwrap();
    }

    #[test]
    fn an_outside_key_is_verified_on_every_certificate() {
        let root = root();
        let (ca, signer) = intermediate_with(&root, SignatureCheck::EveryCertificate, false);
        let ca = ca.unwrap();
        let spki = KeyPair::generate(KeyType::EcdsaP256)
            .unwrap()
            .public_key_spki();
        ca.issue(&workload("a"), &spki, now()).unwrap();
        signer.swapped.store(true, Ordering::SeqCst);
        refused_for(
            ca.issue(&workload("a"), &spki, now()),
            "signature does not verify with the issuer's key",
        );
    }

    #[test]
    fn a_signer_that_does_not_say_is_verified_on_every_certificate() {
        struct Quiet(KeyPair);
        impl Signer for Quiet {
            fn key_type(&self) -> KeyType {
                self.0.key_type()
            }
            fn public_key_spki(&self) -> Vec<u8> {
                self.0.public_key_spki()
            }
            fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
                self.0.sign(msg)
            }
        }
        let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        assert_eq!(key.signature_check(), SignatureCheck::OnceAtSetup);
        assert_eq!(
            Quiet(key).signature_check(),
            SignatureCheck::EveryCertificate
        );
    }

    /// The content check, which stands in for the verify on in-process keys, refuses a
    /// certificate that is not the one planned: another serial, key, name or issuer.
    #[test]
    fn the_content_check_refuses_a_certificate_that_is_not_the_plan() {
        let root = root();
        let (ca, _) = intermediate_with(&root, SignatureCheck::OnceAtSetup, false);
        let ca = ca.unwrap();
        let spki = || {
            KeyPair::generate(KeyType::EcdsaP256)
                .unwrap()
                .public_key_spki()
        };
        let planned = workload("a")
            .plan(&spki(), Some(ca.certificate()), now())
            .unwrap();
        let other = ca.issue(&workload("b"), &spki(), now()).unwrap();
        let Err(ProfileError::CheckFailed(v)) =
            planned.check(&other.certificate, Some(ca.certificate()))
        else {
            panic!("a certificate for another plan passed the check");
        };
        for why in [
            "serial differs",
            "public key is not the requester's",
            "URI SANs differ",
        ] {
            assert!(
                v.iter().any(|m| m.contains(why)),
                "{v:?} should say {why:?}"
            );
        }
        // Checked against the root instead of the intermediate that signed it.
        let Err(ProfileError::CheckFailed(v)) =
            planned.check(&other.certificate, Some(root.certificate()))
        else {
            panic!("a certificate under another issuer passed the check");
        };
        for why in [
            "issuer name is not the CA's subject",
            "Authority Key Identifier is not the issuer's",
        ] {
            assert!(
                v.iter().any(|m| m.contains(why)),
                "{v:?} should say {why:?}"
            );
        }
    }
}
