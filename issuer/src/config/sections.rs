//! Sections of the configuration file that serde already reads into values that carry
//! their rules (durations, addresses, patterns): the validated settings hold them as read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use canopy::key::KeyType;
use canopy::ttl::Ttl;
use serde::Deserialize;

use crate::names::ClusterName;
use crate::policy::{DnsPattern, SpiffePattern};

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
