//! The intermediates this issuer signs with, loaded once at start with the roots
//! they chain to: nothing is re-read or re-parsed per request.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::ca::Signer;
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::key::{KeyPair, Passphrase};
use canopy::pkcs11::{Extractable, Pin, Pkcs11Key};
use time::OffsetDateTime;

use crate::config::{Config, IntermediateConfig};

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

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Read {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

impl Authorities {
    /// Loads roots and intermediates named by the config and checks that each
    /// intermediate chains to a root and matches its key.
    pub fn load(config: &Config, now: OffsetDateTime) -> Result<Authorities, LoadError> {
        let mut roots = Vec::new();
        for path in &config.roots {
            let certs = Certificate::parse_pem_all(&read(path)?).map_err(|e| LoadError::Root {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            for cert in certs {
                if !cert.is_ca() {
                    return Err(LoadError::Root {
                        path: path.display().to_string(),
                        reason: "not a CA certificate".into(),
                    });
                }
                roots.push(cert);
            }
        }
        let mut intermediates = BTreeMap::new();
        for ic in &config.intermediates {
            let loaded = load_one(ic, &roots, now)?;
            intermediates.insert(ic.name.clone(), Arc::new(loaded));
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

/// The intermediate's key: a key file, or a key on a PKCS#11 token (logged in once here;
/// the session is kept and reopened when the token comes back after going away).
fn signer(ic: &IntermediateConfig) -> Result<Arc<dyn Signer>, String> {
    match (&ic.key, &ic.pkcs11) {
        (Some(path), _) => {
            let passphrase = match &ic.passphrase_file {
                Some(p) => Some(Passphrase::from_file(p).map_err(|e| e.to_string())?),
                None => None,
            };
            let text = read(path).map_err(|e| e.to_string())?;
            let key = KeyPair::from_pem_with(&text, passphrase.as_ref())
                .map_err(|e| format!("key: {e}"))?;
            Ok(Arc::new(key))
        }
        (None, Some(p11)) => {
            let (spec, key) = p11.selectors()?;
            let pin = Pin::from_file(&p11.pin_file).map_err(|e| e.to_string())?;
            let allow = if p11.allow_extractable_key {
                Extractable::Allow
            } else {
                Extractable::Refuse
            };
            let key =
                Pkcs11Key::open(&spec, &key, pin, allow).map_err(|e| format!("pkcs11 key: {e}"))?;
            Ok(Arc::new(key))
        }
        (None, None) => Err("no key: give key (a file) or pkcs11 (a token)".into()),
    }
}

fn load_one(
    ic: &IntermediateConfig,
    roots: &[Certificate],
    now: OffsetDateTime,
) -> Result<Intermediate, LoadError> {
    let err = |reason: String| LoadError::Intermediate {
        name: ic.name.clone(),
        reason,
    };
    let mut certs = Certificate::parse_pem_all(&read(&ic.cert)?).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the cert file".into()));
    }
    let cert = certs.remove(0);
    // The file may carry the chain above the intermediate; the root is handed out separately.
    let above: Vec<Certificate> = certs.into_iter().filter(|c| !roots.contains(c)).collect();
    let key = signer(ic).map_err(err)?;
    // Checked at a time the intermediate is valid, so an expired one still loads
    // (and /readyz reports it) instead of stopping the whole issuer.
    let at = now.min(cert.not_after()).max(cert.not_before());
    verify_path(&cert, &above, roots, at)
        .map_err(|e| err(format!("does not chain to a configured root: {e}")))?;
    let not_after = cert.not_after();
    let mut chain = vec![cert.clone()];
    chain.extend(above.iter().cloned());
    let chain_pem = Certificate::pem_of(&chain);
    let ca = CertificateAuthority::new(cert, above, key).map_err(|e| err(e.to_string()))?;
    Ok(Intermediate {
        name: ic.name.clone(),
        ca,
        chain_pem,
        not_after,
    })
}
