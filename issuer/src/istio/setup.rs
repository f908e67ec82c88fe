//! Everything the Istio sync needs, loaded once from the config: the roots, and per cluster
//! its Kubernetes target, settings and signing intermediate(s). A cluster whose intermediate
//! cannot be used keeps the error, so one bad cluster never stops the others.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::cert::Certificate;
use canopy::key::{KeyPair, Passphrase};
use canopy::rotation::Rotation;
use canopy::spiffe::TrustDomain;
use time::Duration;

use crate::config::{ClusterConfig, ClusterName, Config, IntermediateConfig};
use crate::istio::config::{normalize_fingerprint, IstioClusterConfig, IstioConfig};

/// Why the Istio setup as a whole cannot be loaded (per-cluster problems are kept per cluster).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A root file is unreadable.
    #[error("root certificate {path}: {reason}")]
    Root {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A setting is wrong.
    #[error("config: field `{field}`: {reason}")]
    Invalid {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
}

/// How to reach a cluster's API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeTarget {
    /// Kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// Context in it.
    pub context: Option<String>,
    /// Use the pod's service account.
    pub in_cluster: bool,
}

/// An intermediate that signs (or, in `intermediate` mode, is published as) a mesh CA.
pub struct Signing {
    /// Its name in the config.
    pub name: String,
    /// The CA (certificate, chain above, signer).
    pub ca: CertificateAuthority,
    /// The key itself, for `intermediate` mode, which publishes it.
    pub key: Arc<KeyPair>,
    /// The intermediate, then the certificates above it (no root).
    pub chain: Vec<Certificate>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("name", &self.name)
            .field("ca", &self.ca)
            .finish()
    }
}

impl Signing {
    /// The intermediate certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.chain[0]
    }

    /// Loads an intermediate's certificate file (it may carry the chain above it) and key.
    /// Roots found in the file are dropped: `root-cert.pem` carries them.
    pub fn load(ic: &IntermediateConfig, roots: &[Certificate]) -> Result<Signing, String> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let mut certs = Certificate::parse_pem_all(&read(&ic.cert)?)
            .map_err(|e| format!("{}: {e}", ic.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", ic.cert.display()));
        }
        let first = certs.remove(0);
        // Before the key: a key too weak for canopy to load gets a message about istiod.
        if let Some(why) = crate::istio::desired::key_refused(&ic.name, &first) {
            return Err(why);
        }
        let mut chain = vec![first];
        chain.extend(certs.into_iter().filter(|c| !roots.contains(c)));
        let passphrase = match &ic.passphrase_file {
            Some(p) => Some(Passphrase::from_file(p).map_err(|e| e.to_string())?),
            None => None,
        };
        // Publishing an intermediate to istiod hands istiod its key (ca-key.pem): a key
        // that lives on a token cannot be handed over.
        let Some(key_path) = &ic.key else {
            return Err(format!(
                "intermediate {}: its key is on a PKCS#11 token, and the Istio cacerts sync needs a key file (istiod holds the key it signs with)",
                ic.name
            ));
        };
        let key = KeyPair::from_pem_with(&read(key_path)?, passphrase.as_ref())
            .map_err(|e| format!("key {}: {e}", key_path.display()))?;
        Self::new(&ic.name, chain, key)
    }

    /// From a chain (intermediate first, no root) and its key.
    pub fn new(name: &str, chain: Vec<Certificate>, key: KeyPair) -> Result<Signing, String> {
        let key = Arc::new(key);
        let cert = chain.first().ok_or("no certificate")?.clone();
        let ca = CertificateAuthority::new(cert, chain[1..].to_vec(), key.clone())
            .map_err(|e| e.to_string())?;
        Ok(Signing {
            name: name.to_string(),
            ca,
            key,
            chain,
        })
    }
}

/// The rotation, resolved to certificates and per-cluster target intermediates.
#[derive(Debug)]
pub struct RotationSetup {
    /// The pure rotation rules.
    pub rules: Rotation,
    /// The root being retired.
    pub old_root: Certificate,
    /// The new root.
    pub new_root: Certificate,
}

/// One cluster's part of the sync.
#[derive(Debug)]
pub struct ClusterSetup {
    /// Its name.
    pub name: ClusterName,
    /// How to reach it.
    pub target: KubeTarget,
    /// Its Istio settings.
    pub settings: IstioClusterConfig,
    /// The intermediate it signs under now (chaining to the old root during a rotation).
    pub intermediate: Result<Arc<Signing>, String>,
    /// During a rotation: the intermediate under the new root.
    pub next_intermediate: Option<Result<Arc<Signing>, String>>,
}

/// Everything the Istio sync needs.
#[derive(Debug)]
pub struct IstioSetup {
    /// Trust domain (the mesh CA's URI SAN).
    pub trust_domain: TrustDomain,
    /// All configured roots, in config order: what `root-cert.pem` holds outside a rotation.
    pub roots: Vec<Certificate>,
    /// Clusters with Istio settings, in config order.
    pub clusters: Vec<ClusterSetup>,
    /// A root rotation in progress.
    pub rotation: Option<RotationSetup>,
    /// Mesh-wide settings.
    pub settings: IstioConfig,
}

impl IstioSetup {
    /// Loads the setup from the issuer config, its `istio` block and the clusters that have
    /// `istio` settings. Per-cluster intermediate problems are kept in the cluster.
    pub fn load(
        config: &Config,
        istio: &IstioConfig,
        clusters: Vec<(ClusterConfig, IstioClusterConfig)>,
    ) -> Result<IstioSetup, SetupError> {
        let mut roots = Vec::new();
        for path in &config.roots {
            let text = std::fs::read_to_string(path).map_err(|e| SetupError::Root {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            roots.extend(
                Certificate::parse_pem_all(&text).map_err(|e| SetupError::Root {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            );
        }
        istio
            .validate(config, &roots)
            .map_err(|(field, reason)| SetupError::Invalid {
                field: format!("istio.{field}"),
                reason,
            })?;
        let load = |name: &str| -> Result<Arc<Signing>, String> {
            let ic = config
                .intermediates
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| format!("no intermediate named {name:?}"))?;
            Signing::load(ic, &roots)
                .map(Arc::new)
                .map_err(|e| format!("intermediate {name}: {e}"))
        };
        let mut out = Vec::new();
        for (i, (cc, settings)) in clusters.into_iter().enumerate() {
            settings
                .validate()
                .map_err(|(field, reason)| SetupError::Invalid {
                    field: format!("clusters[{i}].istio.{field}"),
                    reason,
                })?;
            let next =
                istio
                    .rotation
                    .as_ref()
                    .map(|r| match r.intermediates.get(cc.name.as_str()) {
                        Some(n) => load(n),
                        None => Err(format!(
                            "istio.rotation.intermediates names no intermediate for cluster {}",
                            cc.name
                        )),
                    });
            out.push(ClusterSetup {
                intermediate: load(&cc.intermediate),
                next_intermediate: next,
                target: KubeTarget {
                    kubeconfig: cc.kubeconfig.clone(),
                    context: cc.context.clone(),
                    in_cluster: cc.in_cluster,
                },
                name: cc.name,
                settings,
            });
        }
        let rotation = match &istio.rotation {
            None => None,
            Some(r) => {
                let find = |fp: &str| {
                    roots
                        .iter()
                        .find(|c| c.fingerprint_sha256() == normalize_fingerprint(fp))
                        .cloned()
                        .expect("validated: the rotation's roots are configured")
                };
                let workload_ttl = out
                    .iter()
                    .map(|c| c.settings.workload_ttl.as_duration())
                    .max()
                    .unwrap_or(Duration::hours(24));
                Some(RotationSetup {
                    rules: Rotation {
                        old_root: normalize_fingerprint(&r.old_root),
                        new_root: normalize_fingerprint(&r.new_root),
                        workload_ttl,
                    },
                    old_root: find(&r.old_root),
                    new_root: find(&r.new_root),
                })
            }
        };
        Ok(IstioSetup {
            trust_domain: config.trust_domain.clone(),
            roots,
            clusters: out,
            rotation,
            settings: istio.clone(),
        })
    }
}
