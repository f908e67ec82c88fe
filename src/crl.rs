//! Certificate revocation lists: entries, reasons, and the signed CRL.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::key::pem_encode;
use crate::serial::Serial;

/// Why a certificate was revoked (RFC 5280 reason codes canopy offers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl RevocationReason {
    const NAMES: [(RevocationReason, &'static str); 6] = [
        (RevocationReason::Unspecified, "unspecified"),
        (RevocationReason::KeyCompromise, "key-compromise"),
        (RevocationReason::CaCompromise, "ca-compromise"),
        (RevocationReason::AffiliationChanged, "affiliation-changed"),
        (RevocationReason::Superseded, "superseded"),
        (
            RevocationReason::CessationOfOperation,
            "cessation-of-operation",
        ),
    ];

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::NAMES
            .iter()
            .find(|(r, _)| r == self)
            .map(|(_, n)| *n)
            .unwrap_or("unspecified");
        f.write_str(name)
    }
}

impl FromStr for RevocationReason {
    type Err = CrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == norm || n.replace('-', "") == norm)
            .map(|(r, _)| *r)
            .ok_or_else(|| CrlError::UnknownReason(s.chars().take(40).collect()))
    }
}

/// One revoked certificate in a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

impl RevokedEntry {
    pub(crate) fn to_rcgen(&self) -> rcgen::RevokedCertParams {
        rcgen::RevokedCertParams {
            serial_number: self.serial.to_rcgen(),
            revocation_time: self.revoked_at,
            reason_code: Some(self.reason.to_rcgen()),
            invalidity_date: None,
        }
    }
}

/// CRL problems.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrlError {
    #[error("unknown revocation reason {0:?} (choose unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation)")]
    UnknownReason(String),
    #[error("malformed CRL: {0}")]
    Malformed(String),
}

/// A signed CRL.
#[derive(Clone, Debug)]
pub struct Crl {
    der: Vec<u8>,
    revoked: Vec<Serial>,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
}

impl Crl {
    /// Parses a DER CRL.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CrlError> {
        let (_, crl) = CertificateRevocationList::from_der(&der)
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| Serial::from_bytes(r.raw_serial()))
            .collect();
        let this_update = crl.last_update().to_datetime();
        let next_update = crl.next_update().map(|t| t.to_datetime());
        Ok(Self {
            der,
            revoked,
            this_update,
            next_update,
        })
    }

    /// Parses a PEM `X509 CRL`.
    pub fn from_pem(text: &str) -> Result<Self, CrlError> {
        let block = ::pem::parse(text).map_err(|e| CrlError::Malformed(e.to_string()))?;
        if block.tag() != "X509 CRL" {
            return Err(CrlError::Malformed(format!(
                "expected an X509 CRL block, found {}",
                block.tag()
            )));
        }
        Self::from_der(block.into_contents())
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// PEM (`X509 CRL`) with a final newline.
    pub fn to_pem(&self) -> String {
        pem_encode("X509 CRL", &self.der)
    }
    /// Serials listed as revoked.
    pub fn revoked(&self) -> &[Serial] {
        &self.revoked
    }
    /// thisUpdate.
    pub fn this_update(&self) -> OffsetDateTime {
        self.this_update
    }
    /// nextUpdate.
    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.next_update
    }
}
