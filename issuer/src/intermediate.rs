//! The intermediates this issuer signs with, built once at start from the loaded CA
//! material with the roots they chain to: nothing is re-read or re-parsed per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use time::OffsetDateTime;

use crate::ca_material::{CaMaterial, IntermediateMaterial};
use crate::config::Config;

/// Why the CA material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The material is unusable.
    #[error("intermediate {name}: {reason}")]
    Intermediate {
        /// Intermediate name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A root certificate is unusable.
    #[error("root certificate {path}: {reason}")]
    Root {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One intermediate: its CA and what responses hand out.
#[derive(Debug)]
pub struct Intermediate {
    /// Name (`aws`).
    pub name: String,
    /// The CA (certificate, chain above, signer).
    pub ca: CertificateAuthority,
    /// The intermediate and the certificates above it, without the root, as PEM.
    pub chain_pem: String,
    /// notAfter of the intermediate certificate.
    pub not_after: OffsetDateTime,
}

/// All intermediates and the root bundle.
#[derive(Debug)]
pub struct Authorities {
    /// Trust anchors.
    pub roots: Vec<Certificate>,
    /// Trust anchors as one PEM.
    pub roots_pem: Arc<str>,
    intermediates: BTreeMap<String, Arc<Intermediate>>,
    default: String,
}

impl Authorities {
    /// Loads the CA material named by the config and builds the authorities from it;
    /// for callers that need nothing else from the material.
    pub fn load(config: &Config, now: OffsetDateTime) -> Result<Authorities, LoadError> {
        Authorities::new(config, &CaMaterial::load(config)?, now)
    }

    /// From the loaded material: every intermediate must have loaded, chain to a root and
    /// match its key.
    pub fn new(
        config: &Config,
        material: &CaMaterial,
        now: OffsetDateTime,
    ) -> Result<Authorities, LoadError> {
        let roots = material.roots.clone();
        let mut intermediates = BTreeMap::new();
        for m in &material.intermediates {
            let loaded = authority(m, &roots, now)?;
            intermediates.insert(m.name.clone(), Arc::new(loaded));
        }
        let roots_pem: Arc<str> = Certificate::pem_of(&roots).into();
        Ok(Authorities {
            roots,
            roots_pem,
            intermediates,
            default: config.default_intermediate().to_string(),
        })
    }

    /// The intermediate called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Intermediate>> {
        self.intermediates.get(name)
    }

    /// The default intermediate.
    pub fn default_intermediate(&self) -> &Arc<Intermediate> {
        &self.intermediates[&self.default]
    }

    /// Every intermediate, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Intermediate>> {
        self.intermediates.values()
    }

    /// Names of the intermediates.
    pub fn names(&self) -> Vec<&str> {
        self.intermediates.keys().map(String::as_str).collect()
    }
}

fn authority(
    m: &IntermediateMaterial,
    roots: &[Certificate],
    now: OffsetDateTime,
) -> Result<Intermediate, LoadError> {
    let err = |reason: String| LoadError::Intermediate {
        name: m.name.clone(),
        reason,
    };
    let chain = m.chain.clone().map_err(err)?;
    let key = m.key.as_ref().map_err(|e| err(e.clone()))?.signer();
    let Some((cert, above)) = chain.split_first() else {
        return Err(err("no certificate in the cert file".into()));
    };
    // Checked at a time the intermediate is valid, so an expired one still loads
    // (and /readyz reports it) instead of stopping the whole issuer.
    let at = now.min(cert.not_after()).max(cert.not_before());
    verify_path(cert, above, roots, at)
        .map_err(|e| err(format!("does not chain to a configured root: {e}")))?;
    let ca = CertificateAuthority::new(cert.clone(), above.to_vec(), key)
        .map_err(|e| err(e.to_string()))?;
    Ok(Intermediate {
        name: m.name.clone(),
        ca,
        chain_pem: Certificate::pem_of(&chain),
        not_after: cert.not_after(),
    })
}
