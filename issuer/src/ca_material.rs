//! The CA material on disk, read and decrypted once at start: the roots, and each
//! intermediate's certificate chain and key. The signing authorities
//! ([`Authorities`](crate::intermediate::Authorities)) and the Istio `cacerts` sync
//! ([`IstioSetup`](crate::istio::IstioSetup)) are both built from this one load, sharing
//! the keys (each held once, zeroized on drop), so a passphrase is asked for and a key
//! decrypted once per process.
//!
//! A problem with one intermediate is kept beside it rather than failing the load: the
//! authorities refuse to start without every intermediate, while the Istio sync reports
//! it for the clusters that use it and serves the others.

use std::path::Path;
use std::sync::Arc;

use canopy::ca::Signer;
use canopy::cert::Certificate;
use canopy::key::{KeyPair, Passphrase};
use canopy::pkcs11::{Extractable, Pin, Pkcs11Key};
use zeroize::Zeroizing;

use crate::config::{Config, IntermediateConfig, IntermediateKey};
use crate::intermediate::LoadError;

/// The roots and every configured intermediate, as loaded.
#[derive(Debug)]
pub struct CaMaterial {
    /// Trust anchors, in config order (each a CA certificate).
    pub roots: Vec<Certificate>,
    /// The intermediates, in config order.
    pub intermediates: Vec<IntermediateMaterial>,
}

/// One intermediate's certificates and key, or why each could not be loaded.
#[derive(Debug)]
pub struct IntermediateMaterial {
    /// Its name in the config.
    pub name: String,
    /// The intermediate certificate, then the certificates above it (roots dropped).
    pub chain: Result<Vec<Certificate>, String>,
    /// Its key.
    pub key: Result<CaKey, String>,
}

/// An intermediate's private key: decrypted from a file, or opened on a PKCS#11 token
/// (logged in once; the session is reopened when the token comes back).
#[derive(Clone, Debug)]
pub enum CaKey {
    /// From a key file; the only kind that can be handed to istiod (`intermediate` mode).
    File(Arc<KeyPair>),
    /// On a token; it never leaves it.
    Token(Arc<Pkcs11Key>),
}

impl CaKey {
    /// The key as a signer.
    pub fn signer(&self) -> Arc<dyn Signer> {
        match self {
            CaKey::File(key) => key.clone(),
            CaKey::Token(key) => key.clone(),
        }
    }
}

impl CaMaterial {
    /// Reads the roots (any problem stops the load) and every intermediate (problems kept
    /// per intermediate).
    pub fn load(config: &Config) -> Result<CaMaterial, LoadError> {
        let mut roots = Vec::new();
        for path in &config.roots {
            roots.extend(load_roots(path)?);
        }
        let intermediates = config
            .intermediates
            .iter()
            .map(|ic| IntermediateMaterial {
                name: ic.name.clone(),
                chain: load_chain(ic, &roots),
                key: load_key(&ic.key),
            })
            .collect();
        Ok(CaMaterial {
            roots,
            intermediates,
        })
    }

    /// The intermediate called `name`.
    pub fn intermediate(&self, name: &str) -> Option<&IntermediateMaterial> {
        self.intermediates.iter().find(|i| i.name == name)
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Read {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

fn load_roots(path: &Path) -> Result<Vec<Certificate>, LoadError> {
    let root_err = |reason: String| LoadError::Root {
        path: path.display().to_string(),
        reason,
    };
    let certs = Certificate::parse_pem_all(&read(path)?).map_err(|e| root_err(e.to_string()))?;
    if certs.iter().any(|c| !c.is_ca()) {
        return Err(root_err("not a CA certificate".into()));
    }
    Ok(certs)
}

/// The certificate file: the intermediate first, then what it carries above it, without
/// the roots (handed out separately).
fn load_chain(ic: &IntermediateConfig, roots: &[Certificate]) -> Result<Vec<Certificate>, String> {
    let text = read(&ic.cert).map_err(|e| e.to_string())?;
    let mut certs =
        Certificate::parse_pem_all(&text).map_err(|e| format!("{}: {e}", ic.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the cert file",
            ic.cert.display()
        ));
    }
    let first = certs.remove(0);
    let mut chain = vec![first];
    chain.extend(certs.into_iter().filter(|c| !roots.contains(c)));
    Ok(chain)
}

fn load_key(key: &IntermediateKey) -> Result<CaKey, String> {
    match key {
        IntermediateKey::File {
            path,
            passphrase_file,
        } => {
            let passphrase = match passphrase_file {
                Some(p) => Some(Passphrase::from_file(p).map_err(|e| e.to_string())?),
                None => None,
            };
            // The PEM may be an unencrypted key: wiped once parsed.
            let text = Zeroizing::new(read(path).map_err(|e| e.to_string())?);
            let key = KeyPair::from_pem_with(&text, passphrase.as_ref())
                .map_err(|e| format!("key {}: {e}", path.display()))?;
            Ok(CaKey::File(Arc::new(key)))
        }
        IntermediateKey::Pkcs11 {
            token,
            key,
            pin_file,
            allow_extractable,
        } => {
            let pin = Pin::from_file(pin_file).map_err(|e| e.to_string())?;
            let allow = if *allow_extractable {
                Extractable::Allow
            } else {
                Extractable::Refuse
            };
            let key =
                Pkcs11Key::open(token, key, pin, allow).map_err(|e| format!("pkcs11 key: {e}"))?;
            Ok(CaKey::Token(Arc::new(key)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::intermediate::Authorities;
    use crate::istio::{IstioClusterConfig, IstioSetup};
    use crate::kube_client::KubeAccess;

    #[tokio::test]
    async fn keys_are_read_once_and_shared_by_the_authorities_and_the_istio_sync() {
        let dir = tempfile::tempdir().unwrap();
        let setup = crate::dev::prepare(dir.path(), None).await.unwrap();
        let mut config = setup.config.clone();
        config.clusters.push(ClusterConfig {
            name: "aws".parse().unwrap(),
            intermediate: "aws".into(),
            access: KubeAccess::Inferred,
            jwt: None,
            cert_manager: None,
            pod_certificates: None,
            istio: Some(IstioClusterConfig::default()),
        });
        let material = CaMaterial::load(&config).unwrap();
        // Nothing is read again after the load: the keys and their passphrase may go.
        for file in ["aws-key.pem", "azure-key.pem", "passphrase"] {
            std::fs::remove_file(setup.data_dir.join(file)).unwrap();
        }
        let authorities = Authorities::new(&config, &material, crate::clock::now()).unwrap();
        assert_eq!(authorities.names(), ["aws", "azure"]);
        let istio = IstioSetup::of_config(&config, &material)
            .unwrap()
            .expect("a cluster has istio settings");
        let signing = istio.clusters[0].intermediate.as_ref().unwrap();
        let Ok(CaKey::File(key)) = &material.intermediate("aws").unwrap().key else {
            panic!("the aws key is a file");
        };
        assert!(
            Arc::ptr_eq(key, &signing.key),
            "the Istio sync holds the key the material decrypted"
        );
        // A second load would have failed: the files are gone.
        let again = CaMaterial::load(&config).unwrap();
        assert!(again.intermediate("aws").unwrap().key.is_err());
    }
}
