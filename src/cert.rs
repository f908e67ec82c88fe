//! Certificates as canopy reads them: DER plus the fields every check and report needs.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::key::{pem_encode, KeyType};
use crate::serial::Serial;
use crate::spiffe::SpiffeId;

/// The most bytes of PEM or DER canopy will parse as one certificate bundle.
pub const MAX_CERT_INPUT: usize = 1 << 20;

/// Why bytes are not a usable certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("no PEM CERTIFICATE block found")]
    NoCertificate,
    #[error("expected exactly one certificate, found {0}")]
    NotOne(usize),
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("certificate input larger than {MAX_CERT_INPUT} bytes")]
    TooLarge,
    #[error("certificate is not an X.509 v3 certificate")]
    NotV3,
    #[error("signature does not verify with the issuer's public key")]
    BadSignature,
}

/// Key usage bits canopy cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsages {
    pub critical: bool,
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
    pub other: bool,
}

/// Extended key usages canopy cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtKeyUsages {
    pub server_auth: bool,
    pub client_auth: bool,
    pub any: bool,
    pub other: bool,
}

/// A parsed X.509 certificate (owns its DER; fields extracted once).
#[derive(Clone, Debug)]
pub struct Certificate {
    der: Vec<u8>,
    subject: String,
    subject_cn: Option<String>,
    issuer: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    has_basic_constraints: bool,
    basic_constraints_critical: bool,
    is_ca: bool,
    path_len: Option<u32>,
    key_usage: Option<KeyUsages>,
    ext_key_usage: Option<ExtKeyUsages>,
    dns_names: Vec<String>,
    uris: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    emails: Vec<String>,
    san_critical: bool,
    ski: Option<Vec<u8>>,
    aki: Option<Vec<u8>>,
    spki: Vec<u8>,
    key_type: Option<KeyType>,
    signature_algorithm: String,
    sha1_signature: bool,
    has_name_constraints: bool,
    fingerprint: String,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for Certificate {}

impl Certificate {
    /// Parses one DER certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, CertError> {
        let der = der.into();
        if der.len() > MAX_CERT_INPUT {
            return Err(CertError::TooLarge);
        }
        let (rest, x) =
            X509Certificate::from_der(&der).map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(
                "trailing bytes after the certificate".into(),
            ));
        }
        if x.version().0 != 2 {
            return Err(CertError::NotV3);
        }
        let mut c = Certificate {
            subject: x.subject().to_string(),
            subject_cn: x
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            issuer: x.issuer().to_string(),
            subject_raw: x.subject().as_raw().to_vec(),
            issuer_raw: x.issuer().as_raw().to_vec(),
            serial: Serial::from_bytes(x.raw_serial()),
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            has_basic_constraints: false,
            basic_constraints_critical: false,
            is_ca: false,
            path_len: None,
            key_usage: None,
            ext_key_usage: None,
            dns_names: vec![],
            uris: vec![],
            ip_addresses: vec![],
            emails: vec![],
            san_critical: false,
            ski: None,
            aki: None,
            spki: x.public_key().raw.to_vec(),
            key_type: KeyType::from_parsed_spki(x.public_key()).ok(),
            signature_algorithm: signature_name(&x.signature_algorithm.algorithm.to_id_string()),
            sha1_signature: is_sha1(&x.signature_algorithm.algorithm.to_id_string()),
            has_name_constraints: false,
            fingerprint: hex::encode(Sha256::digest(&der)),
            der: Vec::new(),
        };
        for ext in x.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    c.has_basic_constraints = true;
                    c.basic_constraints_critical = ext.critical;
                    c.is_ca = bc.ca;
                    c.path_len = bc.path_len_constraint;
                }
                ParsedExtension::KeyUsage(ku) => {
                    c.key_usage = Some(KeyUsages {
                        critical: ext.critical,
                        digital_signature: ku.digital_signature(),
                        key_encipherment: ku.key_encipherment(),
                        key_cert_sign: ku.key_cert_sign(),
                        crl_sign: ku.crl_sign(),
                        other: ku.non_repudiation()
                            || ku.data_encipherment()
                            || ku.key_agreement()
                            || ku.encipher_only()
                            || ku.decipher_only(),
                    })
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    c.ext_key_usage = Some(ExtKeyUsages {
                        server_auth: eku.server_auth,
                        client_auth: eku.client_auth,
                        any: eku.any,
                        other: eku.code_signing
                            || eku.email_protection
                            || eku.time_stamping
                            || eku.ocsp_signing
                            || !eku.other.is_empty(),
                    })
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    c.san_critical = ext.critical;
                    collect_names(
                        &san.general_names,
                        &mut c.dns_names,
                        &mut c.uris,
                        &mut c.ip_addresses,
                        &mut c.emails,
                    );
                }
                ParsedExtension::SubjectKeyIdentifier(ki) => c.ski = Some(ki.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    c.aki = aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                ParsedExtension::NameConstraints(_) => c.has_name_constraints = true,
                _ => {}
            }
        }
        c.der = der;
        Ok(c)
    }

    /// Parses exactly one certificate from PEM.
    pub fn from_pem(pem_text: &str) -> Result<Self, CertError> {
        let mut all = Self::parse_pem_all(pem_text)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(CertError::NotOne(n)),
        }
    }

    /// Parses every `CERTIFICATE` block in a PEM text (a chain or a bundle), in order.
    pub fn parse_pem_all(pem_text: &str) -> Result<Vec<Self>, CertError> {
        if pem_text.len() > MAX_CERT_INPUT {
            return Err(CertError::TooLarge);
        }
        let blocks = ::pem::parse_many(pem_text).map_err(|e| CertError::Pem(e.to_string()))?;
        let certs: Vec<Self> = blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Self::from_der(b.into_contents()))
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate);
        }
        Ok(certs)
    }

    /// PEM with a final newline.
    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// Concatenated PEM of several certificates.
    pub fn pem_of(certs: &[Certificate]) -> String {
        certs.iter().map(Certificate::to_pem).collect()
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// Subject in RFC 4514 form.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// Subject common name, if any.
    pub fn subject_cn(&self) -> Option<&str> {
        self.subject_cn.as_deref()
    }
    /// Issuer in RFC 4514 form.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// DER of the subject name (for exact name chaining).
    pub fn subject_raw(&self) -> &[u8] {
        &self.subject_raw
    }
    /// DER of the issuer name.
    pub fn issuer_raw(&self) -> &[u8] {
        &self.issuer_raw
    }
    /// Serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }
    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// Whether `at` is within the validity period.
    pub fn is_valid_at(&self, at: OffsetDateTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
    /// basicConstraints present.
    pub fn has_basic_constraints(&self) -> bool {
        self.has_basic_constraints
    }
    /// basicConstraints marked critical.
    pub fn basic_constraints_critical(&self) -> bool {
        self.basic_constraints_critical
    }
    /// basicConstraints CA:TRUE.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }
    /// basicConstraints pathLenConstraint.
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }
    /// keyUsage, when present.
    pub fn key_usage(&self) -> Option<KeyUsages> {
        self.key_usage
    }
    /// extendedKeyUsage, when present.
    pub fn ext_key_usage(&self) -> Option<ExtKeyUsages> {
        self.ext_key_usage
    }
    /// DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    /// URI SANs.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }
    /// IP SANs.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ip_addresses
    }
    /// Email SANs.
    pub fn emails(&self) -> &[String] {
        &self.emails
    }
    /// SAN extension marked critical.
    pub fn san_critical(&self) -> bool {
        self.san_critical
    }
    /// The first URI SAN that is a valid SPIFFE ID.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.uris.iter().find_map(|u| u.parse().ok())
    }
    /// Subject Key Identifier.
    pub fn subject_key_id(&self) -> Option<&[u8]> {
        self.ski.as_deref()
    }
    /// Authority Key Identifier (keyIdentifier field).
    pub fn authority_key_id(&self) -> Option<&[u8]> {
        self.aki.as_deref()
    }
    /// DER SubjectPublicKeyInfo.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
    /// Key type, if canopy knows it.
    pub fn key_type(&self) -> Option<KeyType> {
        self.key_type
    }
    /// Signature algorithm, friendly name.
    pub fn signature_algorithm(&self) -> &str {
        &self.signature_algorithm
    }
    /// Signed with SHA-1.
    pub fn has_sha1_signature(&self) -> bool {
        self.sha1_signature
    }
    /// nameConstraints present.
    pub fn has_name_constraints(&self) -> bool {
        self.has_name_constraints
    }
    /// SHA-256 of the DER, lowercase hex.
    pub fn fingerprint_sha256(&self) -> &str {
        &self.fingerprint
    }
    /// Subject and issuer names are equal (self-issued).
    pub fn is_self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// Checks that `issuer`'s public key verifies this certificate's signature.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), CertError> {
        self.verify_signed_by_spki(issuer.public_key_spki())
    }

    /// Checks the signature against a DER SubjectPublicKeyInfo.
    pub fn verify_signed_by_spki(&self, spki_der: &[u8]) -> Result<(), CertError> {
        let (_, x) = X509Certificate::from_der(&self.der)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        x.verify_signature(Some(&spki))
            .map_err(|_| CertError::BadSignature)
    }

    /// Whether the certificate's public key is the given key's.
    pub fn matches_key(&self, key: &crate::key::KeyPair) -> bool {
        self.spki == key.public_key_spki()
    }
}

pub(crate) fn collect_names(
    names: &[GeneralName<'_>],
    dns: &mut Vec<String>,
    uris: &mut Vec<String>,
    ips: &mut Vec<IpAddr>,
    emails: &mut Vec<String>,
) {
    for name in names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::RFC822Name(e) => emails.push((*e).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("len 4"))),
                16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("len 16"))),
                _ => {}
            },
            _ => {}
        }
    }
}

fn is_sha1(oid: &str) -> bool {
    matches!(
        oid,
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3"
    )
}

fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        other => return other.to_owned(),
    }
    .to_owned()
}
