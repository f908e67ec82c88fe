//! The issuer's configuration file (YAML), parsed once and validated with errors
//! that name the field at fault.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use canopy::key::KeyType;
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use serde::Deserialize;

use crate::policy::{DnsPattern, SpiffePattern};

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The YAML does not match the expected structure.
    #[error("config file {path}: field `{field}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Path of the field, like `intermediates[0].cert`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("config file {path}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
    pub intermediates: Vec<IntermediateConfig>,
    /// Intermediate used when a request names none and the requester has no cluster.
    #[serde(default)]
    pub default_intermediate: Option<String>,
    /// Kubernetes clusters served by this issuer.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
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

/// Audit log checkpoints, archives and pruning (`audit:`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Unencrypted PKCS#8 PEM ECDSA P-256 key (mode 0600) that signs checkpoints; kept
    /// out of the database. Without it no checkpoint is taken and nothing is pruned.
    #[serde(default)]
    pub checkpoint_key: Option<PathBuf>,
    /// How often `serve` checkpoints the head when it moved (default 1h).
    #[serde(default)]
    pub checkpoint_interval: Option<Ttl>,
    /// Folder the archive segments are written to before entries are pruned.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
    /// Entries older than this (up to a checkpoint) are archived and pruned; unset: never.
    #[serde(default)]
    pub retention: Option<Ttl>,
}

impl AuditSettings {
    /// How often `serve` checkpoints the head.
    pub fn checkpoint_interval(&self) -> Ttl {
        self.checkpoint_interval.unwrap_or(Ttl::hours(1))
    }
}

/// The HTTPS listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Socket address, default `127.0.0.1:8443`.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Certificate and key files; without them a server certificate is issued
    /// from `intermediate` at start.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// DNS names of the issued server certificate.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// IP addresses of the issued server certificate.
    #[serde(default = "default_server_ips")]
    pub server_ips: Vec<IpAddr>,
    /// Intermediate that issues the server certificate (default: the default one).
    #[serde(default)]
    pub intermediate: Option<String>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            address: default_address(),
            tls: None,
            server_names: default_server_names(),
            server_ips: default_server_ips(),
            intermediate: None,
        }
    }
}

fn default_address() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8443))
}
fn default_server_names() -> Vec<String> {
    vec!["localhost".to_string()]
}
fn default_server_ips() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
}

/// Lifetimes of API tokens (`canopy-issuer token create --ttl`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Lifetime of a token created without `--ttl` (default 30 days).
    #[serde(default = "default_token_ttl")]
    pub default_ttl: Ttl,
    /// Longest lifetime a token may be given (default 365 days).
    #[serde(default = "default_token_max_ttl")]
    pub max_ttl: Ttl,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            default_ttl: default_token_ttl(),
            max_ttl: default_token_max_ttl(),
        }
    }
}

fn default_token_ttl() -> Ttl {
    Ttl::days(30)
}
fn default_token_max_ttl() -> Ttl {
    Ttl::days(365)
}

/// A certificate chain and key on disk.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Passphrase file if the key is encrypted.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
}

/// The database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `sqlite:PATH` or `postgres://USER@HOST/DB`.
    pub url: String,
    /// Connection pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    10
}

/// One intermediate CA held by this issuer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntermediateConfig {
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

/// A Kubernetes cluster the issuer serves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
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
    pub jwt: Option<JwtConfig>,
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

/// How to verify the cluster's service-account tokens, offline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
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

/// A policy: which identities may obtain which certificates.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, referenced by tokens.
    pub name: String,
    /// SPIFFE ID patterns of requesters (mTLS or service-account JWT) this applies to.
    #[serde(default)]
    pub identities: Vec<SpiffePattern>,
    /// SPIFFE IDs that may be requested; `{self}` is the requester's own ID.
    #[serde(default)]
    pub spiffe_ids: Vec<SpiffePattern>,
    /// DNS names that may be requested (`*` stands for one label).
    #[serde(default)]
    pub dns_names: Vec<DnsPattern>,
    /// IP addresses that may be requested.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddr>,
    /// Longest lifetime granted.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Ttl,
    /// Key types accepted in CSRs.
    #[serde(default = "default_key_types")]
    pub key_types: Vec<KeyType>,
    /// Profiles that may be requested (workload, server, client).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Intermediates that may sign (empty: any).
    #[serde(default)]
    pub intermediates: Vec<String>,
    /// Clusters whose requesters this policy serves (empty: any, and requesters without a cluster).
    #[serde(default)]
    pub clusters: Vec<ClusterName>,
    /// Whether wildcard DNS names (`*.example`) may be issued.
    #[serde(default)]
    pub wildcards: bool,
    /// Whether a requester with a namespace gets only its namespace's SPIFFE IDs and
    /// DNS names (patterns that spell out `{namespace}`). Default true.
    #[serde(default = "default_true")]
    pub bind_namespace: bool,
    /// May revoke certificates: any serial for a requester without a namespace (an
    /// operator's token), its own namespace's for one with a namespace.
    #[serde(default)]
    pub revoke: bool,
    /// May list and read issued certificate records.
    #[serde(default)]
    pub list: bool,
}

fn default_true() -> bool {
    true
}
fn default_max_token_lifetime() -> Ttl {
    Ttl::hours(24)
}
fn default_max_ttl() -> Ttl {
    Ttl::hours(24)
}
fn default_key_types() -> Vec<KeyType> {
    vec![
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::RSA2048,
        KeyType::RSA3072,
        KeyType::RSA4096,
    ]
}
fn default_profiles() -> Vec<String> {
    vec!["workload".to_string()]
}

/// Request and connection limits: what one identity, one peer address and the whole
/// listener may cost before and after authentication.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second per identity (sustained).
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Requests per identity in a burst.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Largest request body in bytes.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// Time limit of a request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Ttl,
    /// Open connections in total; more are closed at accept.
    #[serde(default = "default_max_open_connections")]
    pub max_connections: usize,
    /// Open connections from one peer address (an IPv6 /64 counts as one); more are
    /// closed at accept.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Requests per second per peer address, counted before authentication (sustained).
    #[serde(default = "default_peer_rate")]
    pub peer_rate_per_second: u32,
    /// Requests per peer address in a burst, counted before authentication.
    #[serde(default = "default_peer_burst")]
    pub peer_burst: u32,
    /// Bytes of request bodies held in memory at once, all requests together. Bodies
    /// are read whole before authentication, so this bounds what unauthenticated
    /// clients can make the issuer hold; a body that does not fit is answered 503.
    #[serde(default = "default_buffered_body_bytes")]
    pub buffered_body_bytes: usize,
    /// HTTP/2 streams open at once on one connection.
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Interval of the HTTP/2 keep-alive PING.
    #[serde(default = "default_http2_keep_alive_interval")]
    pub http2_keep_alive_interval: Ttl,
    /// Time a PING may go unanswered before the connection is closed.
    #[serde(default = "default_http2_keep_alive_timeout")]
    pub http2_keep_alive_timeout: Ttl,
    /// A connection with no request in flight for this long is closed (HTTP/1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Ttl,
    /// Time for an HTTP/1 request head to arrive whole (slowloris).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Ttl,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_per_second: default_rate(),
            burst: default_burst(),
            body_bytes: default_body_bytes(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_open_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            peer_rate_per_second: default_peer_rate(),
            peer_burst: default_peer_burst(),
            buffered_body_bytes: default_buffered_body_bytes(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            http2_keep_alive_interval: default_http2_keep_alive_interval(),
            http2_keep_alive_timeout: default_http2_keep_alive_timeout(),
            idle_timeout: default_idle_timeout(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

fn default_rate() -> u32 {
    50
}
fn default_burst() -> u32 {
    200
}
fn default_body_bytes() -> usize {
    64 * 1024
}
fn default_request_timeout() -> Ttl {
    Ttl::from_seconds(30).expect("positive")
}
fn default_max_open_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    64
}
fn default_peer_rate() -> u32 {
    1000
}
fn default_peer_burst() -> u32 {
    2000
}
fn default_buffered_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_http2_max_concurrent_streams() -> u32 {
    32
}
fn default_http2_keep_alive_interval() -> Ttl {
    Ttl::from_seconds(30).expect("positive")
}
fn default_http2_keep_alive_timeout() -> Ttl {
    Ttl::from_seconds(20).expect("positive")
}
fn default_idle_timeout() -> Ttl {
    Ttl::from_seconds(120).expect("positive")
}
fn default_header_read_timeout() -> Ttl {
    Ttl::from_seconds(10).expect("positive")
}

/// A cluster name: lowercase letters, digits and `-`, 1–63 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(ClusterName(s.to_string()))
        } else {
            Err(format!(
                "invalid cluster name {s:?}: use 1-63 lowercase letters, digits and '-'"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Profiles the API may issue.
pub const API_PROFILES: [&str; 3] = ["workload", "server", "client"];

/// Environment variable that, when set, replaces `storage.url` from the config file.
pub const STORAGE_URL_ENV: &str = "CANOPY_STORAGE_URL";

impl Config {
    /// Reads, parses and validates a config file; relative paths in it are taken
    /// from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut config = Config::parse(&text, path)?;
        // Deployments keep the database URL (it may hold a password) in a Secret, exposed
        // as an environment variable rather than written into the config file.
        if let Some(url) = std::env::var(STORAGE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
        {
            config.storage.url = url;
            config
                .validate()
                .map_err(|(field, reason)| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("{field} (from ${STORAGE_URL_ENV})"),
                    reason,
                })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates YAML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Parse {
                path: path.to_path_buf(),
                field: if field == "." {
                    "(top level)".into()
                } else {
                    field
                },
                reason: e.into_inner().to_string(),
            }
        })?;
        config
            .validate()
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                reason,
            })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.roots.iter_mut().for_each(fix);
        self.crls.iter_mut().for_each(fix);
        for i in &mut self.intermediates {
            fix(&mut i.cert);
            if let Some(p) = &mut i.key {
                fix(p);
            }
            if let Some(p11) = &mut i.pkcs11 {
                fix(&mut p11.pin_file);
            }
            if let Some(p) = &mut i.passphrase_file {
                fix(p);
            }
        }
        if let Some(p) = &mut self.audit.checkpoint_key {
            fix(p);
        }
        if let Some(p) = &mut self.audit.archive_dir {
            fix(p);
        }
        if let Some(tls) = &mut self.listen.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(p) = &mut tls.passphrase_file {
                fix(p);
            }
        }
        for c in &mut self.clusters {
            if let Some(p) = &mut c.kubeconfig {
                fix(p);
            }
            if let Some(jwt) = &mut c.jwt {
                if let Some(p) = &mut jwt.jwks_file {
                    fix(p);
                }
            }
        }
        if let Some(rest) = self.storage.url.strip_prefix("sqlite:") {
            let file = rest.trim_start_matches("//");
            let (file, query) = file.split_once('?').unwrap_or((file, ""));
            if !file.is_empty() && !file.starts_with('/') && file != ":memory:" {
                let joined = base.join(file);
                self.storage.url = if query.is_empty() {
                    format!("sqlite://{}", joined.display())
                } else {
                    format!("sqlite://{}?{query}", joined.display())
                };
            }
        }
    }

    /// The Istio sync's setup, if any cluster has `istio` settings.
    pub fn istio_setup(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::istio::IstioSetup>>, crate::istio::SetupError> {
        let clusters: Vec<_> = self
            .clusters
            .iter()
            .filter_map(|c| c.istio.clone().map(|i| (c.clone(), i)))
            .collect();
        if clusters.is_empty() {
            return Ok(None);
        }
        let istio = self.istio.clone().unwrap_or_default();
        Ok(Some(std::sync::Arc::new(crate::istio::IstioSetup::load(
            self, &istio, clusters,
        )?)))
    }

    /// Name of the intermediate used when nothing else selects one.
    pub fn default_intermediate(&self) -> &str {
        self.default_intermediate
            .as_deref()
            .unwrap_or_else(|| self.intermediates[0].name.as_str())
    }

    /// Semantic checks; returns (field, reason) of the first problem.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: String, reason: &str| Err((field, reason.to_string()));
        let scheme = self.storage.url.split(':').next().unwrap_or_default();
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            return err(
                "storage.url".into(),
                "must start with sqlite: or postgres://",
            );
        }
        if self.storage.max_connections == 0 {
            return err("storage.max_connections".into(), "must be at least 1");
        }
        if let Err((field, reason)) = self.retention.validate() {
            return Err((format!("retention.{field}"), reason));
        }
        if self.roots.is_empty() {
            return err("roots".into(), "name at least one root certificate file");
        }
        if self.audit.retention.is_some() && self.audit.checkpoint_key.is_none() {
            return err(
                "audit.retention".into(),
                "pruning needs signed checkpoints: set audit.checkpoint_key too",
            );
        }
        if self.audit.retention.is_some() && self.audit.archive_dir.is_none() {
            return err(
                "audit.retention".into(),
                "entries are archived before they are pruned: set audit.archive_dir too",
            );
        }
        if self.intermediates.is_empty() {
            return err(
                "intermediates".into(),
                "configure at least one intermediate",
            );
        }
        let mut names = HashSet::new();
        for (i, inter) in self.intermediates.iter().enumerate() {
            if !valid_name(&inter.name) {
                return err(
                    format!("intermediates[{i}].name"),
                    "use 1-63 lowercase letters, digits, '-' or '_'",
                );
            }
            if !names.insert(inter.name.as_str()) {
                return err(format!("intermediates[{i}].name"), "duplicate name");
            }
            match (&inter.key, &inter.pkcs11) {
                (Some(_), None) => {}
                (None, Some(p11)) => {
                    if inter.passphrase_file.is_some() {
                        return err(
                            format!("intermediates[{i}].passphrase_file"),
                            "a key on a token has a PIN (pkcs11.pin_file), not a passphrase",
                        );
                    }
                    if let Err(why) = p11.selectors() {
                        return err(format!("intermediates[{i}].pkcs11"), &why);
                    }
                }
                _ => {
                    return err(
                        format!("intermediates[{i}]"),
                        "give the key as exactly one of key (a file) or pkcs11 (a token)",
                    )
                }
            }
        }
        let known = |name: &str| names.contains(name);
        if let Some(d) = &self.default_intermediate {
            if !known(d) {
                return err(
                    "default_intermediate".into(),
                    "no intermediate has this name",
                );
            }
        }
        if let Some(d) = &self.listen.intermediate {
            if !known(d) {
                return err(
                    "listen.intermediate".into(),
                    "no intermediate has this name",
                );
            }
        }
        if self.listen.tls.is_none()
            && self.listen.server_names.is_empty()
            && self.listen.server_ips.is_empty()
        {
            return err(
                "listen.server_names".into(),
                "give at least one name or IP for the issued server certificate",
            );
        }
        let mut clusters = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !clusters.insert(c.name.as_str()) {
                return err(format!("clusters[{i}].name"), "duplicate cluster name");
            }
            if !known(&c.intermediate) {
                return err(
                    format!("clusters[{i}].intermediate"),
                    "no intermediate has this name",
                );
            }
            if let Some(cm) = &c.cert_manager {
                if !self.policies.iter().any(|p| p.name == cm.policy) {
                    return err(
                        format!("clusters[{i}].cert_manager.policy"),
                        "no policy has this name",
                    );
                }
                if let Some(j) = cm
                    .trusted_requesters
                    .iter()
                    .position(|u| u.trim().is_empty())
                {
                    return err(
                        format!("clusters[{i}].cert_manager.trusted_requesters[{j}]"),
                        "name a Kubernetes user, e.g. system:serviceaccount:istio-system:istio-csr",
                    );
                }
            }
            if let Some(pc) = &c.pod_certificates {
                if !self.policies.iter().any(|p| p.name == pc.policy) {
                    return err(
                        format!("clusters[{i}].pod_certificates.policy"),
                        "no policy has this name",
                    );
                }
                if pc.signer_names.is_empty() {
                    return err(
                        format!("clusters[{i}].pod_certificates.signer_names"),
                        "name at least one signer, e.g. canopy.dev/spiffe",
                    );
                }
                let mut seen = HashSet::new();
                for (j, name) in pc.signer_names.iter().enumerate() {
                    let field = format!("clusters[{i}].pod_certificates.signer_names[{j}]");
                    if let Some(problem) = crate::podcertificate::signer_name_problem(name) {
                        return err(field, problem);
                    }
                    if !seen.insert(name.as_str()) {
                        return err(field, "duplicate signer name");
                    }
                }
            }
            if let Some(istio) = &c.istio {
                if let Err((field, reason)) = istio.validate() {
                    return Err((format!("clusters[{i}].istio.{field}"), reason));
                }
            }
            if c.in_cluster && c.kubeconfig.is_some() {
                return err(
                    format!("clusters[{i}].in_cluster"),
                    "set either kubeconfig or in_cluster, not both",
                );
            }
            if c.context.is_some() && c.kubeconfig.is_none() {
                return err(
                    format!("clusters[{i}].context"),
                    "a context needs a kubeconfig",
                );
            }
            if let Some(jwt) = &c.jwt {
                if jwt.audiences.is_empty() || jwt.audiences.iter().any(|a| a.is_empty()) {
                    return err(
                        format!("clusters[{i}].jwt.audiences"),
                        "name at least one non-empty audience",
                    );
                }
                if jwt.issuer.trim().is_empty() {
                    return err(
                        format!("clusters[{i}].jwt.issuer"),
                        "name the cluster's service-account issuer (the iss of its tokens)",
                    );
                }
                if jwt.jwks.is_some() == jwt.jwks_file.is_some() {
                    return err(
                        format!("clusters[{i}].jwt"),
                        "set exactly one of jwks_file or jwks",
                    );
                }
            }
        }
        if let Some(lease) = self.istio.as_ref().and_then(|i| i.lease.as_ref()) {
            match self
                .clusters
                .iter()
                .find(|c| c.name.as_str() == lease.cluster)
            {
                None => return err("istio.lease.cluster".into(), "no cluster has this name"),
                Some(c) if !c.in_cluster && c.kubeconfig.is_none() => {
                    return err(
                        "istio.lease.cluster".into(),
                        "the cluster needs a kubeconfig or in_cluster to hold the Lease",
                    )
                }
                Some(_) => {}
            }
            if lease.namespace.trim().is_empty() {
                return err(
                    "istio.lease.namespace".into(),
                    "name the issuer's own namespace",
                );
            }
        }
        let mut policies = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            if !valid_name(&p.name) {
                return err(
                    format!("policies[{i}].name"),
                    "use 1-63 lowercase letters, digits, '-' or '_'",
                );
            }
            if !policies.insert(p.name.as_str()) {
                return err(format!("policies[{i}].name"), "duplicate policy name");
            }
            for (j, pattern) in p.identities.iter().chain(&p.spiffe_ids).enumerate() {
                if !pattern.is_self() && !pattern.in_trust_domain(&self.trust_domain) {
                    let list = if j < p.identities.len() {
                        format!("identities[{j}]")
                    } else {
                        format!("spiffe_ids[{}]", j - p.identities.len())
                    };
                    return err(
                        format!("policies[{i}].{list}"),
                        "pattern must start with spiffe://TRUST_DOMAIN/ of this issuer",
                    );
                }
            }
            for (j, pattern) in p.identities.iter().enumerate() {
                if pattern.is_self() {
                    return err(
                        format!("policies[{i}].identities[{j}]"),
                        "{self} only makes sense in spiffe_ids",
                    );
                }
            }
            for (j, profile) in p.profiles.iter().enumerate() {
                if !API_PROFILES.contains(&profile.as_str()) {
                    return err(
                        format!("policies[{i}].profiles[{j}]"),
                        "must be one of workload, server, client (CA profiles are never issued by policy)",
                    );
                }
            }
            for (j, name) in p.intermediates.iter().enumerate() {
                if !known(name) {
                    return err(
                        format!("policies[{i}].intermediates[{j}]"),
                        "no intermediate has this name",
                    );
                }
            }
            for (j, cluster) in p.clusters.iter().enumerate() {
                if !clusters.contains(cluster.as_str()) {
                    return err(
                        format!("policies[{i}].clusters[{j}]"),
                        "no cluster has this name",
                    );
                }
            }
            if p.key_types.is_empty() {
                return err(
                    format!("policies[{i}].key_types"),
                    "allow at least one key type",
                );
            }
        }
        if self.tokens.default_ttl > self.tokens.max_ttl {
            return err(
                "tokens.default_ttl".into(),
                "must not be longer than tokens.max_ttl",
            );
        }
        if self.limits.rate_per_second == 0 || self.limits.burst == 0 {
            return err("limits.rate_per_second".into(), "must be at least 1");
        }
        if self.limits.body_bytes < 4096 {
            return err("limits.body_bytes".into(), "must be at least 4096");
        }
        let l = &self.limits;
        if l.peer_rate_per_second == 0 || l.peer_burst == 0 {
            return err("limits.peer_rate_per_second".into(), "must be at least 1");
        }
        if l.max_connections == 0 {
            return err("limits.max_connections".into(), "must be at least 1");
        }
        if l.max_connections_per_peer == 0 || l.max_connections_per_peer > l.max_connections {
            return err(
                "limits.max_connections_per_peer".into(),
                "must be between 1 and limits.max_connections",
            );
        }
        if l.buffered_body_bytes < l.body_bytes {
            return err(
                "limits.buffered_body_bytes".into(),
                "must be at least limits.body_bytes (one whole body must fit)",
            );
        }
        if l.http2_max_concurrent_streams == 0 {
            return err(
                "limits.http2_max_concurrent_streams".into(),
                "must be at least 1",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
trust_domain: mesh.example
storage: { url: "sqlite:issuer.db" }
roots: [root.pem]
intermediates:
  - { name: aws, cert: aws.pem, key: aws-key.pem, passphrase_file: pass }
  - { name: azure, cert: azure.pem, key: azure-key.pem }
clusters:
  - name: eks-prod
    intermediate: aws
    kubeconfig: kube.yaml
    context: eks
    jwt: { audiences: [canopy], issuer: "https://kubernetes.default.svc", jwks_file: jwks.json }
  - { name: aks-prod, intermediate: azure, in_cluster: true }
policies:
  - name: workloads
    identities: ["spiffe://mesh.example/ns/*/sa/*"]
    spiffe_ids: ["{self}"]
    dns_names: ["*.svc.cluster.local"]
    max_ttl: 24h
    key_types: [ecdsa-p256]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("issuer.yaml"))
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.trust_domain.as_str(), "mesh.example");
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.default_intermediate(), "aws");
        assert_eq!(c.policies[0].max_ttl, Ttl::hours(24));
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let mut c = parse(GOOD).unwrap();
        c.resolve_paths(Path::new("/etc/canopy"));
        assert_eq!(c.roots[0], PathBuf::from("/etc/canopy/root.pem"));
        assert_eq!(c.storage.url, "sqlite:///etc/canopy/issuer.db");
    }

    fn field_of(text: &str) -> String {
        match parse(text).unwrap_err() {
            ConfigError::Parse { field, .. } | ConfigError::Invalid { field, .. } => field,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(&GOOD.replace("mesh.example\n", "Mesh.Example\n")),
            "trust_domain"
        );
        assert_eq!(
            field_of(&GOOD.replace("max_ttl: 24h", "max_ttl: 24 hours")),
            "policies[0].max_ttl"
        );
        assert_eq!(
            field_of(&GOOD.replace("intermediate: azure", "intermediate: gcp")),
            "clusters[1].intermediate"
        );
        assert_eq!(
            field_of(&GOOD.replace("name: eks-prod", "name: EKS")),
            "clusters[0].name"
        );
        assert_eq!(
            field_of(&GOOD.replace("key_types: [ecdsa-p256]", "key_types: [dsa]")),
            "policies[0].key_types[0]"
        );
        assert_eq!(
            field_of(&GOOD.replace("{self}", "spiffe://other.example/x")),
            "policies[0].spiffe_ids[0]"
        );
        assert_eq!(
            field_of(&GOOD.replace("jwks_file: jwks.json", "jwks_file: j, jwks: {}")),
            "clusters[0].jwt"
        );
        assert_eq!(
            field_of(&GOOD.replace("sqlite:issuer.db", "mysql://x")),
            "storage.url"
        );
        assert!(field_of(&GOOD.replace("roots:", "rootz:")).contains("rootz"));
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme.find("```yaml\n").unwrap() + 8;
        let end = start + readme[start..].find("```").unwrap();
        let c = parse(&readme[start..end]).unwrap();
        assert_eq!(c.clusters[0].name.as_str(), "eks-prod");
        // The README's `limits:` block spells out the defaults.
        assert_eq!(
            format!("{:?}", c.limits),
            format!("{:?}", Limits::default())
        );
    }

    #[test]
    fn connection_limits_are_validated() {
        let with = |limits: &str| format!("{GOOD}limits: {{ {limits} }}\n");
        assert!(parse(&with("max_connections: 10, max_connections_per_peer: 10")).is_ok());
        assert_eq!(
            field_of(&with("max_connections: 10, max_connections_per_peer: 11")),
            "limits.max_connections_per_peer"
        );
        assert_eq!(
            field_of(&with("max_connections: 0")),
            "limits.max_connections"
        );
        assert_eq!(
            field_of(&with("body_bytes: 65536, buffered_body_bytes: 65535")),
            "limits.buffered_body_bytes"
        );
        assert_eq!(
            field_of(&with("http2_max_concurrent_streams: 0")),
            "limits.http2_max_concurrent_streams"
        );
        assert_eq!(
            field_of(&with("peer_burst: 0")),
            "limits.peer_rate_per_second"
        );
        assert_eq!(field_of(&with("idle_timeout: 0s")), "limits.idle_timeout");
        assert!(field_of(&with("max_conections: 5")).contains("max_conections"));
    }
}
