//! Everything the Istio sync needs, built once from the config and the loaded CA material:
//! the roots, and per cluster its Kubernetes access, settings and signing intermediate(s).
//! A cluster whose intermediate cannot be used keeps the error, so one bad cluster never
//! stops the others.

use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::cert::Certificate;
use canopy::key::KeyPair;
use canopy::rotation::Rotation;
use canopy::spiffe::TrustDomain;
use time::Duration;

use crate::ca_material::{CaKey, CaMaterial};
use crate::config::{ClusterConfig, Config, IntermediateConfig, IntermediateKey};
use crate::intermediate::LoadError;
use crate::invalid::Invalid;
use crate::istio::config::{normalize_fingerprint, IstioClusterConfig, IstioConfig};
use crate::kube_client::KubeAccess;
use crate::names::ClusterName;

/// Why the Istio setup as a whole cannot be loaded (per-cluster problems are kept per cluster).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The roots could not be loaded.
    #[error(transparent)]
    Material(#[from] LoadError),
    /// A setting is wrong.
    #[error("config: {0}")]
    Invalid(Invalid),
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

    /// From an intermediate's loaded material. Roots found in its certificate file were
    /// dropped: `root-cert.pem` carries them.
    pub fn from_material(
        ic: &IntermediateConfig,
        material: &CaMaterial,
    ) -> Result<Signing, String> {
        let m = material
            .intermediate(&ic.name)
            .ok_or_else(|| format!("intermediate {} is not loaded", ic.name))?;
        let chain = m.chain.clone()?;
        let first = chain.first().ok_or("no certificate")?;
        // Before the key: a key too weak for canopy to load gets a message about istiod.
        if let Some(why) = crate::istio::desired::key_refused(&ic.name, first) {
            return Err(why);
        }
        // Publishing an intermediate to istiod hands istiod its key (ca-key.pem): a key
        // that lives on a token cannot be handed over.
        let on_token = format!(
            "intermediate {}: its key is on a PKCS#11 token, and the Istio cacerts sync needs a key file (istiod holds the key it signs with)",
            ic.name
        );
        if matches!(ic.key, IntermediateKey::Pkcs11 { .. }) {
            return Err(on_token);
        }
        match m.key.as_ref()? {
            CaKey::File(key) => Self::with_key(&ic.name, chain, key.clone()),
            CaKey::Token(_) => Err(on_token),
        }
    }

    /// From a chain (intermediate first, no root) and its key.
    pub fn new(name: &str, chain: Vec<Certificate>, key: KeyPair) -> Result<Signing, String> {
        Self::with_key(name, chain, Arc::new(key))
    }

    /// From a chain (intermediate first, no root) and a key shared with the authorities.
    pub fn with_key(
        name: &str,
        chain: Vec<Certificate>,
        key: Arc<KeyPair>,
    ) -> Result<Signing, String> {
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
    pub target: KubeAccess,
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
    /// The setup for the clusters that have `istio` settings, none if no cluster has.
    pub fn of_config(
        config: &Config,
        material: &CaMaterial,
    ) -> Result<Option<Arc<IstioSetup>>, SetupError> {
        let clusters: Vec<_> = config
            .clusters
            .iter()
            .filter_map(|c| c.istio.clone().map(|i| (c.clone(), i)))
            .collect();
        if clusters.is_empty() {
            return Ok(None);
        }
        let istio = config.istio.clone().unwrap_or_default();
        let setup = IstioSetup::from_material(config, &istio, clusters, material)?;
        Ok(Some(Arc::new(setup)))
    }

    /// Loads the CA material, then the setup from it (for callers that need nothing else
    /// from the material).
    pub fn load(
        config: &Config,
        istio: &IstioConfig,
        clusters: Vec<(ClusterConfig, IstioClusterConfig)>,
    ) -> Result<IstioSetup, SetupError> {
        IstioSetup::from_material(config, istio, clusters, &CaMaterial::load(config)?)
    }

    /// From the issuer config, its `istio` block, the clusters that have `istio` settings
    /// and the loaded CA material. Per-cluster intermediate problems are kept in the cluster.
    pub fn from_material(
        config: &Config,
        istio: &IstioConfig,
        clusters: Vec<(ClusterConfig, IstioClusterConfig)>,
        material: &CaMaterial,
    ) -> Result<IstioSetup, SetupError> {
        let roots = material.roots.clone();
        let is_cluster = |name: &str| config.clusters.iter().any(|c| c.name.as_str() == name);
        let is_intermediate = |name: &str| config.intermediate(name).is_some();
        istio
            .validate(&roots, is_cluster, is_intermediate)
            .map_err(|e| SetupError::Invalid(e.below("istio")))?;
        let mut out = Vec::new();
        for (i, (cc, settings)) in clusters.into_iter().enumerate() {
            settings
                .validate()
                .map_err(|e| SetupError::Invalid(e.below(&format!("clusters[{i}].istio"))))?;
            out.push(cluster_setup(config, istio, cc, settings, material));
        }
        let rotation = istio
            .rotation
            .as_ref()
            .map(|r| rotation_setup(r, &roots, &out));
        Ok(IstioSetup {
            trust_domain: config.trust_domain.clone(),
            roots,
            clusters: out,
            rotation,
            settings: istio.clone(),
        })
    }
}

/// One cluster's part: its intermediate now and, during a rotation, the one under the new root.
fn cluster_setup(
    config: &Config,
    istio: &IstioConfig,
    cc: ClusterConfig,
    settings: IstioClusterConfig,
    material: &CaMaterial,
) -> ClusterSetup {
    let signing = |name: &str| -> Result<Arc<Signing>, String> {
        let ic = config
            .intermediate(name)
            .ok_or_else(|| format!("no intermediate named {name:?}"))?;
        Signing::from_material(ic, material)
            .map(Arc::new)
            .map_err(|e| format!("intermediate {name}: {e}"))
    };
    let next = istio
        .rotation
        .as_ref()
        .map(|r| match r.intermediates.get(cc.name.as_str()) {
            Some(n) => signing(n),
            None => Err(format!(
                "istio.rotation.intermediates names no intermediate for cluster {}",
                cc.name
            )),
        });
    ClusterSetup {
        intermediate: signing(&cc.intermediate),
        next_intermediate: next,
        target: cc.access,
        name: cc.name,
        settings,
    }
}

/// The rotation's roots found among the configured ones (validated: both are).
fn rotation_setup(
    r: &crate::istio::RotationConfig,
    roots: &[Certificate],
    clusters: &[ClusterSetup],
) -> RotationSetup {
    let find = |fp: &str| {
        roots
            .iter()
            .find(|c| c.fingerprint_sha256() == normalize_fingerprint(fp))
            .cloned()
            .expect("validated: the rotation's roots are configured")
    };
    let workload_ttl = clusters
        .iter()
        .map(|c| c.settings.workload_ttl.as_duration())
        .max()
        .unwrap_or(Duration::hours(24));
    RotationSetup {
        rules: Rotation {
            old_root: normalize_fingerprint(&r.old_root),
            new_root: normalize_fingerprint(&r.new_root),
            workload_ttl,
        },
        old_root: find(&r.old_root),
        new_root: find(&r.new_root),
    }
}
