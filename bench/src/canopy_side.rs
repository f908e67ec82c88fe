//! canopy's side of the benchmark: a root and one ECDSA P-256 intermediate made
//! with canopy's core, an issuer config (SQLite or PostgreSQL, durable as shipped),
//! a token bound to a policy for the bench workloads, and the running issuer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use canopy::ca::CertificateAuthority;
use canopy::key::{KeyPair, KeyType};
use canopy::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest};
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use sqlx::Connection;

use crate::load::Endpoint;
use crate::server::Server;

/// Trust domain of every benchmark certificate.
pub const TRUST_DOMAIN: &str = "bench.example";
/// Name of the intermediate and of the policy in the issuer config.
const NAME: &str = "bench";

/// A CA made in-process: root certificate PEM and the intermediate that signs.
pub struct BenchCa {
    /// The root, PEM.
    pub root_pem: String,
    /// The intermediate, ready to sign.
    pub intermediate: CertificateAuthority,
    /// The intermediate's key, unencrypted PEM (for the issuer's key file).
    pub intermediate_key_pem: String,
}

/// Makes a root and an ECDSA P-256 intermediate with canopy's core.
pub fn make_ca() -> anyhow::Result<BenchCa> {
    let now = time::OffsetDateTime::now_utc();
    let td: TrustDomain = TRUST_DOMAIN.parse()?;
    let root = CertificateAuthority::new_root(
        Arc::new(KeyPair::generate(KeyType::EcdsaP256)?),
        &CaRequest {
            trust_domain: Some(td.clone()),
            ttl: Some(Ttl::years(1)),
            ..CaRequest::new(CaProfile::Root, "canopy bench root")
        },
        now,
    )?;
    let (issued, key) = root.issue_with_new_key(
        &CaRequest {
            trust_domain: Some(td),
            ttl: Some(Ttl::days(90)),
            clamp_to_issuer: true,
            ..CaRequest::new(CaProfile::Intermediate, "canopy bench intermediate")
        },
        KeyType::EcdsaP256,
        now,
    )?;
    let intermediate_key_pem = key.to_unencrypted_pem().to_string();
    let intermediate = CertificateAuthority::new(issued.certificate, vec![], Arc::new(key))?;
    Ok(BenchCa {
        root_pem: root.certificate().to_pem(),
        intermediate,
        intermediate_key_pem,
    })
}

/// The issuer's files in a folder.
#[derive(Debug)]
pub struct IssuerFiles {
    /// The config file.
    pub config: PathBuf,
    /// The root, PEM (the client trusts it).
    pub root_pem: String,
}

/// Writes CA material and a config with `storage_url` into `dir`; `extra` is appended
/// to the config (top-level keys, e.g. a `retention:` section).
pub fn write_files(
    dir: &Path,
    ca: &BenchCa,
    storage_url: &str,
    extra: &str,
) -> anyhow::Result<IssuerFiles> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("root.pem"), &ca.root_pem)?;
    std::fs::write(
        dir.join(format!("{NAME}.pem")),
        ca.intermediate.certificate().to_pem(),
    )?;
    std::fs::write(
        dir.join(format!("{NAME}-key.pem")),
        &ca.intermediate_key_pem,
    )?;
    let config = dir.join("issuer.yaml");
    std::fs::write(
        &config,
        format!(
            r#"# canopy-bench: an issuer as shipped (storage durable), no rate limit in the way.
trust_domain: {TRUST_DOMAIN}
listen:
  address: "127.0.0.1:0"
  server_names: [localhost]
  server_ips: [127.0.0.1]
storage:
  url: "{storage_url}"
roots: [root.pem]
intermediates:
  - {{ name: {NAME}, cert: {NAME}.pem, key: {NAME}-key.pem }}
default_intermediate: {NAME}
policies:
  - name: {NAME}
    spiffe_ids: ["spiffe://{TRUST_DOMAIN}/ns/*/sa/*"]
    max_ttl: 1h
    key_types: [ecdsa-p256]
    profiles: [workload]
    list: true
limits: {{ rate_per_second: 1000000, burst: 1000000, peer_rate_per_second: 1000000, peer_burst: 1000000 }}
{extra}"#
        ),
    )?;
    Ok(IssuerFiles {
        config,
        root_pem: ca.root_pem.clone(),
    })
}

/// `canopy-issuer token create --policy bench`: the token it prints.
pub fn create_token(bin: &Path, files: &IssuerFiles) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["token", "create", "--policy", NAME, "--config"])
        .arg(&files.config)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "canopy-issuer token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    if token.is_empty() {
        bail!("canopy-issuer token create printed no token");
    }
    Ok(token)
}

/// Starts `canopy-issuer serve` and returns it with its sign endpoint.
pub fn start(
    bin: &Path,
    files: &IssuerFiles,
    token: &str,
    log: &Path,
) -> anyhow::Result<(Server, Endpoint)> {
    let (server, addr) = serve(bin, files, log)?;
    let endpoint = Endpoint::new(&format!("https://{addr}/v1/sign"), &files.root_pem)?
        .with_header("Authorization", &format!("Bearer {token}"))?;
    Ok((server, endpoint))
}

/// Starts `canopy-issuer serve` on `files` and waits until it listens; its
/// `host:port`.
pub fn serve(bin: &Path, files: &IssuerFiles, log: &Path) -> anyhow::Result<(Server, String)> {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--config"])
        .arg(&files.config)
        .env_remove("RUST_LOG");
    let (server, line) = Server::start(
        "canopy-issuer",
        command,
        log,
        "listening on https://",
        Duration::from_secs(60),
    )?;
    let addr = line
        .rsplit("https://")
        .next()
        .context("no address in the listening line")?
        .trim()
        .to_string();
    Ok((server, addr))
}

/// Workload certificates the issuer recorded in its database.
pub async fn recorded(storage_url: &str) -> anyhow::Result<i64> {
    let query = "SELECT COUNT(*) FROM certificates WHERE profile = 'workload'";
    let count: (i64,) = if storage_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(storage_url).await?;
        sqlx::query_as(query).fetch_one(&mut conn).await?
    } else {
        let mut conn = sqlx::PgConnection::connect(storage_url).await?;
        sqlx::query_as(query).fetch_one(&mut conn).await?
    };
    Ok(count.0)
}

/// A TLS server certificate for 127.0.0.1 (leaf + intermediate) and its key, as files.
#[derive(Debug)]
pub struct TlsFiles {
    /// Leaf then intermediate, PEM.
    pub cert: PathBuf,
    /// The leaf's key, unencrypted PKCS#8 PEM.
    pub key: PathBuf,
}

/// Issues a server certificate for 127.0.0.1 from the bench intermediate, so a peer's
/// listener chains to the same root as canopy's and the client trusts it the same way.
pub fn write_server_tls(dir: &Path, ca: &BenchCa) -> anyhow::Result<TlsFiles> {
    let request = LeafRequest {
        ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        ttl: Some(Ttl::days(7)),
        clamp_to_issuer: true,
        ..LeafRequest::new(LeafProfile::Server)
    };
    let (issued, key) = ca.intermediate.issue_with_new_key(
        &request,
        KeyType::EcdsaP256,
        time::OffsetDateTime::now_utc(),
    )?;
    std::fs::create_dir_all(dir)?;
    let files = TlsFiles {
        cert: dir.join("tls.pem"),
        key: dir.join("tls-key.pem"),
    };
    std::fs::write(&files.cert, issued.chain_pem())?;
    std::fs::write(&files.key, key.to_unencrypted_pem().as_bytes())?;
    Ok(files)
}
