//! `serve --dev`: a working issuer with no setup. On first start it makes a dev
//! root and the intermediates `aws` and `azure` (labelled DEV in their names), a
//! config file, a SQLite database and a token, all under the data folder; later
//! starts reuse them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::key::{KeyPair, KeyType, Passphrase};
use canopy::profile::{CaProfile, CaRequest};
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use rand::RngCore;

use crate::audit::{AuditEvent, Outcome};
use crate::config::{Config, ConfigError};
use crate::store::{Store, StoreError, TokenRecord};

/// Trust domain of the dev setup.
pub const DEV_TRUST_DOMAIN: &str = "dev.canopy.internal";
/// Intermediates of the dev setup.
pub const DEV_INTERMEDIATES: [&str; 2] = ["aws", "azure"];
/// Policy the dev token is bound to.
pub const DEV_POLICY: &str = "dev";
/// File with the dev token as an HTTP header, for `curl -H @FILE`.
pub const DEV_TOKEN_HEADER: &str = "dev-token.header";
/// The dev audit checkpoint key (mode 0600), outside the database like a real one.
pub const DEV_CHECKPOINT_KEY: &str = "audit-checkpoint-key.pem";
/// Lifetime of the dev token (made again when it has expired).
const DEV_TOKEN_TTL: canopy::ttl::Ttl = canopy::ttl::Ttl::days(30);

/// Why the dev setup failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// File system trouble.
    #[error("dev data folder {path}: {reason}")]
    Io {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Making keys or certificates failed.
    #[error("dev CA setup: {0}")]
    Ca(String),
    /// The generated config did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The prepared dev environment.
#[derive(Debug)]
pub struct DevSetup {
    /// Configuration to serve with.
    pub config: Config,
    /// The data folder (absolute).
    pub data_dir: PathBuf,
    /// The root certificate file.
    pub root_path: PathBuf,
    /// A token bound to the `dev` policy.
    pub token: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DevError + '_ {
    move |e| DevError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), DevError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DevError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn write_public(path: &Path, contents: &str) -> Result<(), DevError> {
    std::fs::write(path, contents).map_err(io(path))
}

fn random_text(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn ca_error(e: impl std::fmt::Display) -> DevError {
    DevError::Ca(e.to_string())
}

/// Makes the dev root and intermediates unless they exist.
fn make_cas(dir: &Path, td: &TrustDomain) -> Result<(), DevError> {
    let root_path = dir.join("root.pem");
    if root_path.exists() {
        return Ok(());
    }
    let now = crate::clock::now();
    let passphrase_text = random_text(24);
    let passphrase = Passphrase::new(passphrase_text.clone()).map_err(ca_error)?;
    let root_key = Arc::new(KeyPair::generate(KeyType::EcdsaP256).map_err(ca_error)?);
    let root = CertificateAuthority::new_root(
        root_key.clone(),
        &CaRequest {
            organization: Some("canopy dev".into()),
            trust_domain: Some(td.clone()),
            ttl: Some(Ttl::years(10)),
            ..CaRequest::new(CaProfile::Root, "canopy DEV root - not for production")
        },
        now,
    )
    .map_err(ca_error)?;
    write_private(&dir.join("passphrase"), &passphrase_text)?;
    write_private(
        &dir.join("root-key.pem"),
        &root_key.to_encrypted_pem(&passphrase).map_err(ca_error)?,
    )?;
    for name in DEV_INTERMEDIATES {
        let (issued, key) = root
            .issue_with_new_key(
                &CaRequest {
                    organization: Some("canopy dev".into()),
                    trust_domain: Some(td.clone()),
                    ttl: Some(Ttl::years(5)),
                    clamp_to_issuer: true,
                    ..CaRequest::new(
                        CaProfile::Intermediate,
                        format!("canopy DEV intermediate {name}"),
                    )
                },
                KeyType::EcdsaP256,
                now,
            )
            .map_err(ca_error)?;
        write_private(
            &dir.join(format!("{name}-key.pem")),
            &key.to_encrypted_pem(&passphrase).map_err(ca_error)?,
        )?;
        write_public(
            &dir.join(format!("{name}.pem")),
            &issued.certificate.to_pem(),
        )?;
    }
    // Written last: its presence means the set is complete.
    write_public(&root_path, &root.certificate().to_pem())
}

/// Makes the dev audit checkpoint key unless it exists.
fn make_checkpoint_key(dir: &Path) -> Result<(), DevError> {
    let path = dir.join(DEV_CHECKPOINT_KEY);
    if path.exists() {
        return Ok(());
    }
    let key = crate::audit::checkpoint::CheckpointKey::generate().map_err(ca_error)?;
    write_private(&path, &key.to_pem())
}

fn config_text(td: &str, listen: SocketAddr) -> String {
    let intermediates: String = DEV_INTERMEDIATES
        .iter()
        .map(|n| {
            format!("  - {{ name: {n}, cert: {n}.pem, key: {n}-key.pem, passphrase_file: passphrase }}\n")
        })
        .collect();
    format!(
        r#"# canopy-issuer dev configuration, written by `canopy-issuer serve --dev`.
# DEV ONLY: the keys here are protected by a passphrase file next to them.
trust_domain: {td}
listen:
  address: "{listen}"
  server_names: [localhost]
  server_ips: [127.0.0.1, "::1"]
storage:
  url: "sqlite:issuer.db"
roots: [root.pem]
intermediates:
{intermediates}default_intermediate: aws
audit:
  # Signs audit checkpoints; kept out of the database (`audit checkpoint-key` prints its public key).
  checkpoint_key: {DEV_CHECKPOINT_KEY}
policies:
  # The dev token: any SPIFFE ID in the trust domain, cluster-local DNS names.
  - name: {DEV_POLICY}
    spiffe_ids: ["spiffe://{td}/**"]
    dns_names: ["localhost", "*.localhost", "*.svc", "*.*.svc", "*.*.svc.cluster.local"]
    ip_addresses: [127.0.0.1]
    profiles: [workload, server, client]
    max_ttl: 24h
    revoke: true
    list: true
  # Any workload holding a certificate may renew its own identity over mTLS.
  - name: self
    identities: ["spiffe://{td}/**"]
    spiffe_ids: ["{{self}}"]
    max_ttl: 24h
"#
    )
}

/// Prepares (or reuses) the dev environment in `data_dir`.
pub async fn prepare(data_dir: &Path, listen: Option<SocketAddr>) -> Result<DevSetup, DevError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let data_dir = data_dir.canonicalize().map_err(io(data_dir))?;
    // Keys, passphrase, token and database live here: the owner's alone.
    set_mode(&data_dir, 0o700)?;
    let td: TrustDomain = DEV_TRUST_DOMAIN.parse().map_err(ca_error)?;
    make_cas(&data_dir, &td)?;
    let config_path = data_dir.join("config.yaml");
    if !config_path.exists() {
        // A one-time `--listen` applies to this run only; it is not saved.
        let addr = SocketAddr::from(([127, 0, 0, 1], 8443));
        write_public(&config_path, &config_text(DEV_TRUST_DOMAIN, addr))?;
    }
    let mut config = Config::load(&config_path)?;
    if let Some(addr) = listen {
        config.listen.address = addr;
    }
    // Dev folders made before checkpoints existed get their key too, without a config edit.
    if config.audit.checkpoint_key.is_none() {
        config.audit.checkpoint_key = Some(data_dir.join(DEV_CHECKPOINT_KEY));
    }
    make_checkpoint_key(&data_dir)?;
    let store = Store::connect(&config.storage.url, 2).await?;
    store.migrate().await?;
    let token = dev_token(&store, &data_dir).await?;
    store.close().await;
    for file in ["issuer.db", "issuer.db-wal", "issuer.db-shm"] {
        let path = data_dir.join(file);
        if path.exists() {
            set_mode(&path, 0o600)?;
        }
    }
    Ok(DevSetup {
        config,
        root_path: data_dir.join("root.pem"),
        data_dir,
        token,
    })
}

/// The dev token kept in `dev-token`, made again if the database does not know it.
async fn dev_token(store: &Store, dir: &Path) -> Result<String, DevError> {
    let path = dir.join("dev-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if store
            .token_by_hash(&crate::auth::token_hash(&token))
            .await?
            .is_some_and(|t| {
                t.revoked_at.is_none()
                    && t.expires_at
                        .is_none_or(|e| e > crate::clock::now_precise().unix_timestamp())
            })
        {
            write_header(dir, &token)?;
            return Ok(token);
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    let token = create_token(store, DEV_POLICY, "dev", DEV_TOKEN_TTL).await?;
    write_private(&path, &format!("{token}\n"))?;
    write_header(dir, &token)?;
    Ok(token)
}

/// The token as a header file: curl reads headers from a file (`-H @FILE`), so the
/// token stays off command lines (and out of `ps`).
fn write_header(dir: &Path, token: &str) -> Result<(), DevError> {
    let header = dir.join(DEV_TOKEN_HEADER);
    let text = format!("Authorization: Bearer {token}\n");
    if std::fs::read_to_string(&header).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if header.exists() {
        std::fs::remove_file(&header).map_err(io(&header))?;
    }
    write_private(&header, &text)
}

/// Creates a token bound to `policy`, stores its hash, audits it, returns the token.
pub async fn create_token(
    store: &Store,
    policy: &str,
    actor: &str,
    ttl: canopy::ttl::Ttl,
) -> Result<String, StoreError> {
    let (token, id, hash) = crate::auth::new_token();
    let now = crate::clock::now_precise();
    let record = TokenRecord {
        id: id.clone(),
        hash,
        policy: policy.to_string(),
        created_at: now.unix_timestamp(),
        revoked_at: None,
        expires_at: Some(now.unix_timestamp() + ttl.as_seconds()),
    };
    let event = AuditEvent::new(
        crate::clock::unix_ms(now),
        actor,
        "token.create",
        format!("token:{id}"),
        Outcome::Ok,
        serde_json::json!({"policy": policy}),
    );
    store.create_token(&record, event).await?;
    Ok(token)
}

/// What `serve --dev` prints once listening.
pub fn banner(setup: &DevSetup, addr: SocketAddr) -> String {
    let root = setup.root_path.display();
    let td = &setup.config.trust_domain;
    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    format!(
        r#"canopy-issuer DEV mode (not for production)
  trust domain: spiffe://{td}
  root:         {root}
  data folder:  {data}
  intermediates: {inters}
  dev token:    {data}/dev-token (mode 0600; as a header for curl -H @: {data}/{header})

Get a workload certificate (paste into a shell):

cd "$(mktemp -d)" && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout workload.key -subj "/CN=demo" -addext "subjectAltName=URI:spiffe://{td}/ns/default/sa/demo" -out workload.csr 2>/dev/null && printf '{{"csr":"%s","ttl":"1h","intermediate":"aws"}}' "$(awk '{{printf "%s\\n", $0}}' workload.csr)" | curl -sS --fail-with-body --cacert "{root}" -H @"{data}/{header}" -H "Content-Type: application/json" -H "Accept: application/x-pem-file" --data @- "https://{host}/v1/sign" > workload.pem && openssl verify -x509_strict -CAfile "{root}" -untrusted workload.pem workload.pem && pwd
"#,
        data = setup.data_dir.display(),
        inters = DEV_INTERMEDIATES.join(", "),
        header = DEV_TOKEN_HEADER,
    )
}
