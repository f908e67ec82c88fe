//! The configuration file's schema: serde types that mirror the YAML, field for field,
//! refusing unknown fields. What they hold is not yet checked across fields; the rest of
//! the issuer holds the validated [`Config`](super::Config) instead.

use std::path::PathBuf;

use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use serde::Deserialize;

use super::limits::Limits;
use super::sections::{AuditSettings, Listen, PolicyConfig, Storage, TokenSettings};
use crate::names::ClusterName;

/// The whole file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Trust domain of every SPIFFE ID issued, e.g. `mesh.example`.
    pub trust_domain: TrustDomain,
    /// Where and how to listen.
    #[serde(default)]
    pub listen: Listen,
    /// Database.
    pub storage: Storage,
    /// Root certificate files: the trust anchors handed out in responses and bundles
    /// (several during a root rotation).
    pub roots: Vec<PathBuf>,
    /// Intermediates this issuer signs with.
    pub intermediates: Vec<IntermediateFile>,
    /// Intermediate used when a request names none and the requester has no cluster.
    #[serde(default)]
    pub default_intermediate: Option<String>,
    /// Kubernetes clusters served by this issuer.
    #[serde(default)]
    pub clusters: Vec<ClusterFile>,
    /// Who may get what; nothing is allowed without a policy.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// API token lifetimes.
    #[serde(default)]
    pub tokens: TokenSettings,
    /// CRL files (PEM or DER) of the root and of other CAs, honoured when a client
    /// certificate is verified (the intermediates' own revocations are read from storage).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Mesh-wide Istio settings (resync period, API timeout, root rotation).
    #[serde(default)]
    pub istio: Option<crate::istio::IstioConfig>,
    /// When expired certificates are deleted.
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// Audit log checkpoints, archives and pruning.
    #[serde(default)]
    pub audit: AuditSettings,
}

/// One intermediate CA held by this issuer (`intermediates[]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntermediateFile {
    /// Short name (`aws`, `azure`), used in URLs and requests.
    pub name: String,
    /// PEM certificate; may be followed by the certificates above it.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, encrypted or not); or `pkcs11` instead.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// File holding the key's passphrase.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// The key on a PKCS#11 token (an HSM) instead of a key file.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11KeyConfig>,
}

/// An intermediate's key on a PKCS#11 token: the module, the token (by exactly one of
/// `token_label`, `token_serial`, `slot`), the key (by `key_label` or `key_id`) and the
/// file holding the token's user PIN.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11KeyConfig {
    /// Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// The token's label.
    #[serde(default)]
    pub token_label: Option<String>,
    /// The token's serial number.
    #[serde(default)]
    pub token_serial: Option<String>,
    /// The slot id.
    #[serde(default)]
    pub slot: Option<u64>,
    /// CKA_LABEL of the private key.
    #[serde(default)]
    pub key_label: Option<String>,
    /// CKA_ID of the private key, hex.
    #[serde(default)]
    pub key_id: Option<String>,
    /// File holding the token's user PIN (mode 0600; never in this config).
    pub pin_file: PathBuf,
    /// Accept a key the token lets out (CKA_EXTRACTABLE, or not CKA_SENSITIVE).
    #[serde(default)]
    pub allow_extractable_key: bool,
}

impl Pkcs11KeyConfig {
    /// The token and key this names (the config was validated: exactly one of each).
    pub fn selectors(
        &self,
    ) -> Result<(canopy::pkcs11::TokenSpec, canopy::pkcs11::KeySelector), String> {
        use canopy::pkcs11::{KeySelector, TokenSelector, TokenSpec};
        let token = match (&self.token_label, &self.token_serial, self.slot) {
            (Some(l), None, None) => TokenSelector::Label(l.clone()),
            (None, Some(s), None) => TokenSelector::Serial(s.clone()),
            (None, None, Some(n)) => TokenSelector::Slot(n),
            _ => {
                return Err(
                    "name the token by exactly one of token_label, token_serial, slot".into(),
                )
            }
        };
        let key = match (&self.key_label, &self.key_id) {
            (Some(l), None) => KeySelector::Label(l.clone()),
            (None, Some(id)) => KeySelector::id_from_hex(id).map_err(|e| e.to_string())?,
            _ => return Err("name the key by exactly one of key_label, key_id".into()),
        };
        Ok((
            TokenSpec {
                module: self.module.clone(),
                token,
            },
            key,
        ))
    }
}

/// A Kubernetes cluster the issuer serves (`clusters[]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster name.
    pub name: ClusterName,
    /// Intermediate that signs for this cluster.
    pub intermediate: String,
    /// Kubeconfig file to reach the cluster's API server.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Use the in-cluster service account instead of a kubeconfig.
    #[serde(default)]
    pub in_cluster: bool,
    /// Service-account JWT authentication for workloads of this cluster.
    #[serde(default)]
    pub jwt: Option<JwtFile>,
    /// cert-manager external issuer for this cluster (controllers run when set).
    #[serde(default)]
    pub cert_manager: Option<crate::certmanager::CertManagerConfig>,
    /// Sign this cluster's PodCertificateRequests for canopy's signer names (absent: not).
    #[serde(default)]
    pub pod_certificates: Option<crate::podcertificate::PodCertificatesConfig>,
    /// Keep this cluster's Istio `cacerts` valid (absent: not managed).
    #[serde(default)]
    pub istio: Option<crate::istio::IstioClusterConfig>,
}

/// How to verify the cluster's service-account tokens, offline (`clusters[].jwt`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// Accepted audiences; a token must carry one of them.
    pub audiences: Vec<String>,
    /// Expected `iss` claim: the cluster's service-account issuer
    /// (`kubectl get --raw /.well-known/openid-configuration`; `https://kubernetes.default.svc.cluster.local` on kind, the OIDC URL on EKS and AKS).
    pub issuer: String,
    /// Longest token lifetime (`exp - iat`) accepted; projected tokens default to 1 h.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime: Ttl,
    /// JWKS file (the cluster's `/openid/v1/jwks`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// JWKS inline.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
}

fn default_max_token_lifetime() -> Ttl {
    Ttl::hours(24)
}
