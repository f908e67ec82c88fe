//! Certificate signing requests: parsed, size-limited, signature-verified.
//!
//! What a CSR asks for is only a request: profiles decide what a certificate holds, and
//! requested extensions beyond SANs and a CA flag are ignored.

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::cert::collect_names;
use crate::key::{KeyError, KeyType};
use crate::spiffe::SpiffeId;

/// The most bytes of PEM a CSR may have (a 4096-bit RSA CSR with many SANs fits easily).
pub const MAX_CSR_PEM_BYTES: usize = 32 * 1024;

/// Why a CSR was refused. Messages say what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("CSR is larger than {MAX_CSR_PEM_BYTES} bytes")]
    TooLarge,
    #[error("no PEM CERTIFICATE REQUEST block found")]
    NotPem,
    #[error("malformed CSR: {0}")]
    Malformed(String),
    #[error("CSR signature does not verify: the CSR was altered or not signed by its own key")]
    BadSignature,
    #[error("CSR key: {0}")]
    Key(String),
}

impl From<KeyError> for CsrError {
    fn from(e: KeyError) -> Self {
        CsrError::Key(e.to_string())
    }
}

/// A verified CSR: the requester proved possession of the key.
#[derive(Clone, Debug)]
pub struct Csr {
    der: Vec<u8>,
    subject: String,
    subject_cn: Option<String>,
    dns_names: Vec<String>,
    uris: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    emails: Vec<String>,
    requests_ca: bool,
    key_type: KeyType,
    spki: Vec<u8>,
}

impl Csr {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) and verifies it.
    pub fn from_pem(pem_text: &str) -> Result<Self, CsrError> {
        if pem_text.len() > MAX_CSR_PEM_BYTES {
            return Err(CsrError::TooLarge);
        }
        let blocks = ::pem::parse_many(pem_text).map_err(|_| CsrError::NotPem)?;
        let mut reqs = blocks
            .into_iter()
            .filter(|b| matches!(b.tag(), "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"));
        let block = reqs.next().ok_or(CsrError::NotPem)?;
        if reqs.next().is_some() {
            return Err(CsrError::Malformed("more than one CSR in the input".into()));
        }
        Self::from_der(block.contents())
    }

    /// Parses a DER CSR and verifies its self-signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.len() > MAX_CSR_PEM_BYTES {
            return Err(CsrError::TooLarge);
        }
        let (rest, req) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed("trailing bytes after the CSR".into()));
        }
        let info = &req.certification_request_info;
        let key_type = KeyType::from_parsed_spki(&info.subject_pki)?;
        if !key_type.is_strong_enough() {
            return Err(CsrError::Key(format!(
                "{key_type} is too weak: use RSA >= 2048 or ECDSA"
            )));
        }
        req.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let mut csr = Csr {
            der: der.to_vec(),
            subject: info.subject.to_string(),
            subject_cn: info
                .subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            dns_names: vec![],
            uris: vec![],
            ip_addresses: vec![],
            emails: vec![],
            requests_ca: false,
            key_type,
            spki: info.subject_pki.raw.to_vec(),
        };
        if let Some(exts) = req.requested_extensions() {
            for ext in exts {
                match ext {
                    ParsedExtension::SubjectAlternativeName(san) => collect_names(
                        &san.general_names,
                        &mut csr.dns_names,
                        &mut csr.uris,
                        &mut csr.ip_addresses,
                        &mut csr.emails,
                    ),
                    ParsedExtension::BasicConstraints(bc) => csr.requests_ca |= bc.ca,
                    ParsedExtension::KeyUsage(ku) => csr.requests_ca |= ku.key_cert_sign(),
                    _ => {}
                }
            }
        }
        Ok(csr)
    }

    /// DER bytes as received.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// Subject in RFC 4514 form (may be empty).
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// Subject common name, if any.
    pub fn subject_cn(&self) -> Option<&str> {
        self.subject_cn.as_deref()
    }
    /// Requested DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    /// Requested URI SANs.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }
    /// Requested IP SANs.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ip_addresses
    }
    /// Requested email SANs.
    pub fn emails(&self) -> &[String] {
        &self.emails
    }
    /// Whether the CSR asks for a CA certificate (basicConstraints CA:TRUE or keyCertSign).
    pub fn requests_ca(&self) -> bool {
        self.requests_ca
    }
    /// The requester's key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }
    /// The requester's DER SubjectPublicKeyInfo.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
    /// The requested SPIFFE IDs (URI SANs with the spiffe scheme), each parsed.
    pub fn spiffe_ids(&self) -> Vec<Result<SpiffeId, crate::spiffe::SpiffeError>> {
        self.uris
            .iter()
            .filter(|u| u.to_ascii_lowercase().starts_with("spiffe:"))
            .map(|u| u.parse())
            .collect()
    }
}
