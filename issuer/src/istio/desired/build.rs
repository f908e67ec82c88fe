//! Building the Secret canopy wants from the decided material alone, validated as
//! istiod would before anything is written.

use std::collections::BTreeMap;

use canopy::ca::IssuedCertificate;
use canopy::cacerts::Cacerts;
use canopy::cert::Certificate;
use canopy::key::KeyPair;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::assess::Target;
use super::current::{
    data_hash, Current, SecretData, CANOPY, CLUSTER_LABEL, DATA_ANNOTATION, MANAGED_BY,
    MODE_ANNOTATION, SERIAL_ANNOTATION, SINCE_ANNOTATION,
};
use crate::istio::config::Mode;

/// The CA material for the Secret, once decided (and, for a new one, minted).
#[derive(Debug)]
pub enum Material<'a> {
    /// The CA in the current Secret.
    Keep(&'a Current),
    /// A mesh CA just minted.
    Minted(&'a IssuedCertificate, &'a KeyPair),
    /// The intermediate itself.
    Publish,
}

/// The Secret canopy wants in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Data entries.
    pub data: SecretData,
    /// Labels (ours plus those of others already on the Secret).
    pub labels: BTreeMap<String, String>,
    /// Annotations (ours plus those of others).
    pub annotations: BTreeMap<String, String>,
    /// The CA published.
    pub ca: Certificate,
}

impl Desired {
    /// Whether `current` already is exactly this (then nothing is written).
    pub fn matches(&self, current: &Current) -> bool {
        current.type_.as_deref().unwrap_or("Opaque") == "Opaque"
            && current.data == self.data
            && current.labels == self.labels
            && current.annotations == self.annotations
    }
}

/// Why a desired Secret could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// It would fail istiod's checks: nothing is written.
    #[error("the cacerts canopy would write fails istiod's checks, so nothing was written: {0}")]
    Invalid(#[from] canopy::cacerts::Invalid),
    /// The material is unusable.
    #[error("{0}")]
    Material(String),
}

/// Builds the Secret from the decided material, validates it as istiod would, and returns it.
pub fn build(
    t: &Target<'_>,
    material: Material<'_>,
    current: Option<&Current>,
    now: OffsetDateTime,
) -> Result<Desired, BuildError> {
    let ca = ca_of(t, material)?;
    let mut files = Cacerts::build(&ca.chain, &ca.key, &t.trust, now)?;
    if let Some(text) = ca.key_text {
        files.ca_key = text;
    }
    keep_root_cert(&mut files, current, &t.trust);
    let validated = files.validate(now)?;
    if validated.path.last() != Some(t.sign_root) {
        return Err(BuildError::Material(format!(
            "the mesh CA does not chain to root {}",
            t.sign_root.fingerprint_sha256()
        )));
    }
    let ca = validated.ca_cert;
    let data: BTreeMap<String, Vec<u8>> = files
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    Ok(Desired {
        labels: labels(t, current),
        annotations: annotations(t, current, &ca, &data, now),
        data: data.into(),
        ca,
    })
}

/// The CA as the Secret will carry it.
struct Ca {
    /// The CA first, then the certificates above it (no root).
    chain: Vec<Certificate>,
    /// Its key.
    key: KeyPair,
    /// The key's text as the Secret holds it, when it may stay as it is.
    key_text: Option<Zeroizing<String>>,
}

/// The CA the decided material stands for.
fn ca_of(t: &Target<'_>, material: Material<'_>) -> Result<Ca, BuildError> {
    let bad = |e: String| BuildError::Material(e);
    match material {
        Material::Keep(c) => {
            let ca_text = c.file(canopy::cacerts::CA_CERT).unwrap_or_default();
            let key_text = c.file(canopy::cacerts::CA_KEY).unwrap_or_default();
            let ca = Certificate::from_pem(ca_text).map_err(|e| bad(e.to_string()))?;
            let key = KeyPair::from_pem(key_text).map_err(|e| bad(e.to_string()))?;
            let mut chain = vec![ca.clone()];
            chain.extend(t.signing.chain.iter().filter(|c| **c != ca).cloned());
            // The key text as it is, unless it carries what istiod refuses.
            let keep_text = !key_text.contains("EC PARAMETERS")
                && key_text.ends_with('\n')
                && !key_text.contains("ENCRYPTED");
            Ok(Ca {
                chain,
                key,
                key_text: keep_text.then(|| Zeroizing::new(key_text.to_string())),
            })
        }
        Material::Minted(issued, key) => {
            let key =
                KeyPair::from_pem(&key.to_unencrypted_pem()).map_err(|e| bad(e.to_string()))?;
            Ok(Ca {
                chain: issued.chain.clone(),
                key,
                key_text: None,
            })
        }
        Material::Publish => {
            let key = KeyPair::from_pem(&t.signing.key.to_unencrypted_pem())
                .map_err(|e| bad(e.to_string()))?;
            Ok(Ca {
                chain: t.signing.chain.clone(),
                key,
                key_text: None,
            })
        }
    }
}

/// root-cert.pem stays byte-identical while the roots are the same: a change makes every
/// proxy reload its trust.
fn keep_root_cert(files: &mut Cacerts, current: Option<&Current>, trust: &[Certificate]) {
    let Some(c) = current else { return };
    let Some(old) = c.data.get(canopy::cacerts::ROOT_CERT) else {
        return;
    };
    if old.ends_with(b"\n") && c.roots() == trust {
        if let Ok(text) = String::from_utf8(old.clone()) {
            files.root_cert = text;
        }
    }
}

/// The Secret's labels: those already there, plus canopy's.
fn labels(t: &Target<'_>, current: Option<&Current>) -> BTreeMap<String, String> {
    let mut labels = current.map(|c| c.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY.into(), CANOPY.into());
    labels.insert(CLUSTER_LABEL.into(), t.cluster.into());
    labels
}

/// The Secret's annotations: others' kept, canopy's rewritten (the CA, since when it is
/// published here, the mode, and the hash of the data written).
fn annotations(
    t: &Target<'_>,
    current: Option<&Current>,
    ca: &Certificate,
    data: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = current
        .map(|c| {
            c.annotations
                .iter()
                .filter(|(k, _)| !k.starts_with("canopy.dev/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    annotations.extend(Cacerts::annotations(ca));
    annotations.insert(SINCE_ANNOTATION.into(), published_since(current, ca, now));
    annotations.insert(
        MODE_ANNOTATION.into(),
        match t.settings.mode {
            Mode::Subca => "subca",
            Mode::Intermediate => "intermediate",
        }
        .into(),
    );
    annotations.insert(DATA_ANNOTATION.into(), data_hash(data));
    annotations
}

/// When `ca` was first published here: the Secret's annotation while it holds the same
/// CA, else `now`.
fn published_since(current: Option<&Current>, ca: &Certificate, now: OffsetDateTime) -> String {
    let same_ca = current.and_then(Current::ca_cert).as_ref() == Some(ca);
    let annotated = current.filter(|_| same_ca).and_then(|c| {
        c.annotations
            .get(SINCE_ANNOTATION)
            .filter(|_| c.annotations.get(SERIAL_ANNOTATION) == Some(&ca.serial().to_string()))
    });
    match annotated {
        Some(s) => s.clone(),
        None => now.format(&Rfc3339).unwrap_or_default(),
    }
}
