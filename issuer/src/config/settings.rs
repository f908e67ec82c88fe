//! The validated configuration the rest of the issuer holds. It is built only from a
//! [`ConfigFile`] that passed every check, and where the file spells a choice as several
//! optional fields (a key file or a PKCS#11 token; a kubeconfig, the service account or
//! neither) it holds one value of an enum, so no code has to handle a combination the file
//! may not have.

use std::path::PathBuf;

use canopy::pkcs11::{KeySelector, TokenSpec};
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;

use super::file::{ClusterFile, ConfigFile, IntermediateFile, JwtFile};
use super::limits::Limits;
use super::sections::{AuditSettings, Listen, PolicyConfig, Storage, TokenSettings};
use super::validate;
use crate::certmanager::CertManagerConfig;
use crate::invalid::{Invalid, Problem};
use crate::istio::{IstioClusterConfig, IstioConfig};
use crate::kube_client::KubeAccess;
use crate::names::ClusterName;
use crate::podcertificate::PodCertificatesConfig;
use crate::retention::RetentionConfig;

/// The whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Trust domain of every SPIFFE ID issued, e.g. `mesh.example`.
    pub trust_domain: TrustDomain,
    /// Where and how to listen.
    pub listen: Listen,
    /// Database.
    pub storage: Storage,
    /// Root certificate files: the trust anchors handed out in responses and bundles.
    pub roots: Vec<PathBuf>,
    /// Intermediates this issuer signs with (at least one).
    pub intermediates: Vec<IntermediateConfig>,
    /// Intermediate used when a request names none and the requester has no cluster.
    default_intermediate: String,
    /// Kubernetes clusters served by this issuer.
    pub clusters: Vec<ClusterConfig>,
    /// Who may get what; nothing is allowed without a policy.
    pub policies: Vec<PolicyConfig>,
    /// Request limits.
    pub limits: Limits,
    /// API token lifetimes.
    pub tokens: TokenSettings,
    /// CRL files honoured when a client certificate is verified.
    pub crls: Vec<PathBuf>,
    /// Mesh-wide Istio settings.
    pub istio: Option<IstioConfig>,
    /// When expired certificates are deleted.
    pub retention: RetentionConfig,
    /// Audit log checkpoints, archives and pruning.
    pub audit: AuditSettings,
}

/// One intermediate CA held by this issuer.
#[derive(Clone, Debug)]
pub struct IntermediateConfig {
    /// Short name (`aws`, `azure`), used in URLs and requests.
    pub name: String,
    /// PEM certificate; may be followed by the certificates above it.
    pub cert: PathBuf,
    /// Where its private key is.
    pub key: IntermediateKey,
}

/// Where an intermediate's private key is.
#[derive(Clone, Debug)]
pub enum IntermediateKey {
    /// A PKCS#8 PEM file, encrypted with the passphrase in `passphrase_file` or not.
    File {
        /// The key file.
        path: PathBuf,
        /// File holding the key's passphrase.
        passphrase_file: Option<PathBuf>,
    },
    /// A key on a PKCS#11 token (an HSM).
    Pkcs11 {
        /// The module and the token.
        token: TokenSpec,
        /// The key on it.
        key: KeySelector,
        /// File holding the token's user PIN.
        pin_file: PathBuf,
        /// Accept a key the token lets out.
        allow_extractable: bool,
    },
}

/// A Kubernetes cluster the issuer serves.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: ClusterName,
    /// Intermediate that signs for this cluster (a configured one).
    pub intermediate: String,
    /// How to reach its API server.
    pub access: KubeAccess,
    /// Service-account JWT authentication for workloads of this cluster.
    pub jwt: Option<JwtConfig>,
    /// cert-manager external issuer for this cluster (controllers run when set).
    pub cert_manager: Option<CertManagerConfig>,
    /// Sign this cluster's PodCertificateRequests for canopy's signer names.
    pub pod_certificates: Option<PodCertificatesConfig>,
    /// Keep this cluster's Istio `cacerts` valid.
    pub istio: Option<IstioClusterConfig>,
}

/// How to verify a cluster's service-account tokens, offline.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// Accepted audiences (at least one, none empty); a token must carry one of them.
    pub audiences: Vec<String>,
    /// Expected `iss` claim: the cluster's service-account issuer.
    pub issuer: String,
    /// Longest token lifetime (`exp - iat`) accepted.
    pub max_token_lifetime: Ttl,
    /// The cluster's public keys.
    pub jwks: Jwks,
}

/// Where a cluster's JWKS (its `/openid/v1/jwks`) is.
#[derive(Clone, Debug)]
pub enum Jwks {
    /// In a file (`jwks_file`).
    File(PathBuf),
    /// In the config (`jwks`).
    Inline(serde_json::Value),
}

impl Config {
    /// Checks `file` and turns it into the settings; the first problem found otherwise.
    pub fn from_file(file: ConfigFile) -> Result<Config, Invalid> {
        validate::check(&file)?;
        let intermediates = file
            .intermediates
            .into_iter()
            .enumerate()
            .map(|(i, inter)| IntermediateConfig::from_file(inter, &format!("intermediates[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let default_intermediate = file
            .default_intermediate
            .unwrap_or_else(|| intermediates[0].name.clone());
        Ok(Config {
            trust_domain: file.trust_domain,
            listen: file.listen,
            storage: file.storage,
            roots: file.roots,
            intermediates,
            default_intermediate,
            clusters: file
                .clusters
                .into_iter()
                .map(ClusterConfig::from_checked)
                .collect(),
            policies: file.policies,
            limits: file.limits,
            tokens: file.tokens,
            crls: file.crls,
            istio: file.istio,
            retention: file.retention,
            audit: file.audit,
        })
    }

    /// Name of the intermediate used when nothing else selects one.
    pub fn default_intermediate(&self) -> &str {
        &self.default_intermediate
    }

    /// The intermediate called `name`.
    pub fn intermediate(&self, name: &str) -> Option<&IntermediateConfig> {
        self.intermediates.iter().find(|i| i.name == name)
    }
}

impl IntermediateConfig {
    /// From `intermediates[i]` (at `at`): exactly one of a key file and a token.
    fn from_file(inter: IntermediateFile, at: &str) -> Result<IntermediateConfig, Invalid> {
        let key = match (inter.key, inter.pkcs11) {
            (Some(path), None) => IntermediateKey::File {
                path,
                passphrase_file: inter.passphrase_file,
            },
            (None, Some(p11)) => {
                if inter.passphrase_file.is_some() {
                    return Err(Problem::Rule(
                        "a key on a token has a PIN (pkcs11.pin_file), not a passphrase",
                    )
                    .at(format!("{at}.passphrase_file")));
                }
                let (token, key) = p11
                    .selectors()
                    .map_err(|why| Problem::Refused(why).at(format!("{at}.pkcs11")))?;
                IntermediateKey::Pkcs11 {
                    token,
                    key,
                    pin_file: p11.pin_file,
                    allow_extractable: p11.allow_extractable_key,
                }
            }
            _ => {
                return Err(Problem::Rule(
                    "give the key as exactly one of key (a file) or pkcs11 (a token)",
                )
                .at(at))
            }
        };
        Ok(IntermediateConfig {
            name: inter.name,
            cert: inter.cert,
            key,
        })
    }
}

impl ClusterConfig {
    /// From a checked `clusters[]` entry: `in_cluster` and `kubeconfig` are not both set,
    /// and a `context` comes with a kubeconfig.
    fn from_checked(c: ClusterFile) -> ClusterConfig {
        let access = match (c.in_cluster, c.kubeconfig) {
            (true, _) => KubeAccess::InCluster,
            (false, Some(path)) => KubeAccess::Kubeconfig {
                path,
                context: c.context,
            },
            (false, None) => KubeAccess::Inferred,
        };
        ClusterConfig {
            name: c.name,
            intermediate: c.intermediate,
            access,
            jwt: c.jwt.and_then(JwtConfig::from_checked),
            cert_manager: c.cert_manager,
            pod_certificates: c.pod_certificates,
            istio: c.istio,
        }
    }
}

impl JwtConfig {
    /// From a checked `clusters[].jwt`: exactly one of `jwks_file` and `jwks` is set (none
    /// if neither, which the checks refuse).
    fn from_checked(jwt: JwtFile) -> Option<JwtConfig> {
        let jwks = match (jwt.jwks, jwt.jwks_file) {
            (Some(value), _) => Jwks::Inline(value),
            (None, Some(path)) => Jwks::File(path),
            (None, None) => return None,
        };
        Some(JwtConfig {
            audiences: jwt.audiences,
            issuer: jwt.issuer,
            max_token_lifetime: jwt.max_token_lifetime,
            jwks,
        })
    }
}
