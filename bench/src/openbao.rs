//! OpenBao's side: `bao server -dev -dev-tls` (storage in memory: dev mode has no
//! other), the PKI engine with a root and an ECDSA P-256 intermediate it signs, and a
//! role that allows the bench SPIFFE IDs as URI SANs and stores every certificate.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::canopy_side::TRUST_DOMAIN;
use crate::load::Endpoint;
use crate::server::{free_port_pair, Server};

/// Root token of the dev server.
const ROOT_TOKEN: &str = "canopy-bench-root";
/// The role the load signs with.
pub const ROLE: &str = "spiffe";

/// A running, configured OpenBao.
pub struct OpenBao {
    /// The process.
    pub server: Server,
    /// Version line of the binary.
    pub version: String,
    api: Endpoint,
}

/// The `bao version` line, which also shows the binary runs.
pub fn version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("version")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} version failed", bin.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(" (")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

impl OpenBao {
    /// Starts the dev server with TLS in `dir` and sets up the PKI engine.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<OpenBao> {
        let version = version(bin)?;
        let port = free_port_pair()?;
        let certs = dir.join("bao-tls");
        std::fs::create_dir_all(&certs)?;
        let mut command = Command::new(bin);
        command
            .args(["server", "-dev", "-dev-tls"])
            .arg(format!("-dev-tls-cert-dir={}", certs.display()))
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-no-store-token")
            .env("HOME", dir)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR");
        let (server, _) = Server::start(
            "bao",
            command,
            &dir.join("bao.log"),
            "Root Token",
            Duration::from_secs(60),
        )?;
        let ca_pem = std::fs::read_to_string(certs.join("vault-ca.pem"))
            .context("reading the dev server's CA certificate")?;
        let api = Endpoint::new(&format!("https://127.0.0.1:{port}/"), &ca_pem)?
            .with_header("X-Vault-Token", ROOT_TOKEN)?;
        let bao = OpenBao {
            server,
            version,
            api,
        };
        bao.wait_unsealed().await?;
        bao.set_up_pki().await?;
        Ok(bao)
    }

    /// A server started elsewhere (on raft storage, initialised and unsealed), reached
    /// at `api` with its root token: waits until it is active, then sets up the same PKI
    /// engine and role as [`OpenBao::start`].
    pub async fn configure(
        server: Server,
        version: String,
        api: Endpoint,
    ) -> anyhow::Result<OpenBao> {
        let bao = OpenBao {
            server,
            version,
            api,
        };
        bao.wait_unsealed().await?;
        bao.set_up_pki().await?;
        Ok(bao)
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, bytes) = self.api.at(path).call(method.clone(), &text).await?;
        if !status.is_success() {
            bail!(
                "OpenBao {method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("OpenBao {path}: not JSON"))
    }

    async fn wait_unsealed(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.api.at("/v1/sys/health").call(Method::GET, "").await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                _ if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok((status, _)) => bail!("OpenBao health: HTTP {status}"),
                Err(e) => return Err(e.context("OpenBao health")),
            }
        }
    }

    /// pki (root) → pki_int (intermediate signed by it) → role `spiffe`.
    async fn set_up_pki(&self) -> anyhow::Result<()> {
        let post = Method::POST;
        self.call(
            post.clone(),
            "/v1/sys/mounts/pki",
            json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        )
        .await?;
        self.call(
            post.clone(),
            "/v1/pki/root/generate/internal",
            json!({"common_name": "openbao bench root", "key_type": "ec", "key_bits": 256, "ttl": "8760h"}),
        )
        .await?;
        self.call(
            post.clone(),
            "/v1/sys/mounts/pki_int",
            json!({"type": "pki", "config": {"max_lease_ttl": "8760h"}}),
        )
        .await?;
        let csr = self
            .call(
                post.clone(),
                "/v1/pki_int/intermediate/generate/internal",
                json!({"common_name": "openbao bench intermediate", "key_type": "ec", "key_bits": 256}),
            )
            .await?;
        let csr = csr["data"]["csr"]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao returned no intermediate CSR"))?;
        let signed = self
            .call(
                post.clone(),
                "/v1/pki/root/sign-intermediate",
                json!({"csr": csr, "format": "pem_bundle", "ttl": "2160h"}),
            )
            .await?;
        let certificate = signed["data"]["certificate"]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao returned no intermediate certificate"))?;
        self.call(
            post.clone(),
            "/v1/pki_int/intermediate/set-signed",
            json!({"certificate": certificate}),
        )
        .await?;
        self.call(
            post,
            &format!("/v1/pki_int/roles/{ROLE}"),
            json!({
                "allowed_uri_sans": [format!("spiffe://{TRUST_DOMAIN}/*")],
                "allowed_domains": [],
                "allow_any_name": false,
                "allow_bare_domains": false,
                "allow_subdomains": false,
                "allow_localhost": false,
                "allow_ip_sans": false,
                "enforce_hostnames": false,
                "require_cn": false,
                "use_csr_common_name": false,
                "use_csr_sans": false,
                "key_type": "ec",
                "key_bits": 256,
                "ttl": "1h",
                "max_ttl": "1h",
                "no_store": false,
                "server_flag": true,
                "client_flag": true,
            }),
        )
        .await?;
        Ok(())
    }

    /// Where the load signs: `/v1/pki_int/sign/spiffe`.
    pub fn sign_endpoint(&self) -> Endpoint {
        self.api.at(&format!("/v1/pki_int/sign/{ROLE}"))
    }

    /// Certificates the engine holds in its storage (issued ones plus its own CA's).
    pub async fn stored(&self) -> anyhow::Result<usize> {
        let listed = self
            .call(
                Method::from_bytes(b"LIST")?,
                "/v1/pki_int/certs",
                Value::Null,
            )
            .await?;
        Ok(listed["data"]["keys"].as_array().map_or(0, Vec::len))
    }
}

/// The request body template for OpenBao's sign endpoint.
pub const BODY_TEMPLATE: &str = r#"{"csr":"{csr}","uri_sans":"{uri}","ttl":"1h"}"#;
