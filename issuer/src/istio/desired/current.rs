//! The `cacerts` Secret as canopy finds it: its files as istiod would read them, who
//! last shaped it (canopy, a hand edit, someone else), and what the rotation needs to
//! know about it.

use std::collections::BTreeMap;

use canopy::cacerts::{Cacerts, Problem};
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::rotation::Observed;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The Secret's name istiod reads.
pub const SECRET_NAME: &str = "cacerts";
/// Label saying who manages the Secret.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value for canopy.
pub const CANOPY: &str = "canopy";
/// Label naming the cluster (as the issuer's config names it).
pub const CLUSTER_LABEL: &str = "canopy.dev/cluster";
/// Annotation: the CA's serial (set by the core's `Cacerts::annotations`).
pub const SERIAL_ANNOTATION: &str = "canopy.dev/ca-serial";
/// Annotation: when this CA was first published here (RFC 3339).
pub const SINCE_ANNOTATION: &str = "canopy.dev/ca-since";
/// Annotation: SHA-256 over the data canopy wrote; a mismatch means a hand edit.
pub const DATA_ANNOTATION: &str = "canopy.dev/data-sha256";
/// Annotation: the publishing mode.
pub const MODE_ANNOTATION: &str = "canopy.dev/mode";

/// A Secret's data entries, decoded. `ca-key.pem` is an unencrypted CA key (istiod
/// needs it so): `Debug` shows only names and sizes, and the bytes are wiped on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl std::ops::Deref for SecretData {
    type Target = BTreeMap<String, Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SecretData {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, Vec<u8>>> for SecretData {
    fn from(map: BTreeMap<String, Vec<u8>>) -> Self {
        SecretData(map)
    }
}

impl FromIterator<(String, Vec<u8>)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        SecretData(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("<{} bytes>", v.len()))),
            )
            .finish()
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for value in self.0.values_mut() {
            value.zeroize();
        }
    }
}

/// The `cacerts` Secret as found in a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// resourceVersion, for the update precondition.
    pub resource_version: Option<String>,
    /// Secret type.
    pub type_: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Data, decoded.
    pub data: SecretData,
}

/// Who last shaped the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Written by canopy and unchanged since.
    Canopy,
    /// Written by canopy, then edited by someone else.
    EditedByHand,
    /// Not written by canopy (hand-made, another tool).
    Foreign,
}

/// SHA-256 over the data entries, in key order, unambiguously framed.
pub fn data_hash(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(h.finalize())
}

impl Current {
    /// Who last shaped it.
    pub fn ownership(&self) -> Ownership {
        if self.labels.get(MANAGED_BY).map(String::as_str) != Some(CANOPY) {
            Ownership::Foreign
        } else if self.annotations.get(DATA_ANNOTATION) == Some(&data_hash(&self.data)) {
            Ownership::Canopy
        } else {
            Ownership::EditedByHand
        }
    }

    /// The files, as istiod would read them.
    pub fn cacerts(&self) -> Result<Cacerts, Vec<Problem>> {
        Cacerts::from_entries(self.data.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(|e| e.problems)
    }

    /// Everything istiod would reject in it, at `now`.
    pub fn problems(&self, now: OffsetDateTime) -> Vec<Problem> {
        let mut p = match self.cacerts() {
            Ok(c) => c
                .validate(now)
                .err()
                .map(|e| e.problems)
                .unwrap_or_default(),
            Err(p) => p,
        };
        if self.type_.as_deref().unwrap_or("Opaque") != "Opaque" {
            p.push(Problem {
                code: "secret-type",
                message: format!(
                    "Secret type is {:?}; istiod's plugged-in CA uses Opaque",
                    self.type_.as_deref().unwrap_or_default()
                ),
            });
        }
        p
    }

    /// One file as text, if present and UTF-8.
    pub fn file(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.data.get(name)?).ok()
    }

    /// The mesh CA certificate in it, if it parses.
    pub fn ca_cert(&self) -> Option<Certificate> {
        Certificate::from_pem(self.file(canopy::cacerts::CA_CERT)?).ok()
    }

    /// The roots in `root-cert.pem`, if it parses.
    pub fn roots(&self) -> Vec<Certificate> {
        self.data
            .get(canopy::cacerts::ROOT_CERT)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| Certificate::parse_pem_all(t).ok())
            .unwrap_or_default()
    }

    /// The root (among `roots`) the mesh CA verifies to through `cert-chain.pem`.
    pub fn signing_root(&self, roots: &[Certificate], now: OffsetDateTime) -> Option<Certificate> {
        let ca = self.ca_cert()?;
        let chain = self
            .data
            .get(canopy::cacerts::CERT_CHAIN)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| Certificate::parse_pem_all(t).ok())
            .unwrap_or_default();
        let path = verify_path(&ca, chain.get(1..).unwrap_or_default(), roots, now).ok()?;
        path.last().cloned()
    }

    /// When the current CA was first published: the annotation if it names this CA, else
    /// its notBefore.
    pub fn since(&self) -> Option<OffsetDateTime> {
        let ca = self.ca_cert()?;
        let ours = self.annotations.get(SERIAL_ANNOTATION) == Some(&ca.serial().to_string());
        let annotated = self
            .annotations
            .get(SINCE_ANNOTATION)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        match (ours, annotated) {
            (true, Some(t)) => Some(t),
            _ => Some(ca.not_before()),
        }
    }

    /// What the rotation rules need to know about this cluster.
    pub fn observed(&self, roots: &[Certificate], now: OffsetDateTime) -> Observed {
        Observed {
            trusts: self
                .roots()
                .iter()
                .map(|c| c.fingerprint_sha256().to_string())
                .collect(),
            signs_under: self
                .signing_root(roots, now)
                .map(|r| r.fingerprint_sha256().to_string()),
            since: self.since(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_debug_shows_no_key_material() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n";
        let data: SecretData = [("ca-key.pem".to_string(), key.to_vec())]
            .into_iter()
            .collect();
        let current = Current {
            data,
            ..Current::default()
        };
        let text = format!("{current:?}");
        assert!(
            text.contains("ca-key.pem") && text.contains("bytes"),
            "{text}"
        );
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("MIGHAgEA"),
            "{text}"
        );
    }
}
