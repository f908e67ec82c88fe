//! OpenBao's side, in two storages: its production one (`bao server` with integrated
//! `raft` storage in a folder, a TLS listener, initialised with one key share and
//! unsealed) and dev mode (`bao server -dev -dev-tls`, everything in memory). Either
//! way the PKI engine gets a root and an ECDSA P-256 intermediate it signs, and a role
//! that allows the bench SPIFFE IDs as URI SANs and stores every certificate.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::canopy_side::{BenchCa, TRUST_DOMAIN};
use crate::load::Endpoint;
use crate::server::{free_port_pair, Server};

/// Root token of the dev server.
const ROOT_TOKEN: &str = "canopy-bench-root";
/// The role the load signs with.
pub const ROLE: &str = "spiffe";

/// Where OpenBao keeps its data.
#[derive(Clone, Copy)]
pub enum Storage<'a> {
    /// Integrated raft storage in a folder (fsync per commit), TLS with a server
    /// certificate from the bench CA.
    Raft(&'a BenchCa),
    /// Dev mode: in memory, its own TLS certificates.
    InMemory,
}

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
    Ok(crate::gomodule::run_version(bin)?
        .split(" (")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn base_command(bin: &Path, home: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .env("HOME", home)
        .env_remove("BAO_ADDR")
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN");
    command
}

impl OpenBao {
    /// Starts OpenBao with `storage` in a new folder under `dir` and sets up the PKI
    /// engine.
    pub async fn start(bin: &Path, dir: &Path, storage: Storage<'_>) -> anyhow::Result<OpenBao> {
        let version = version(bin)?;
        let port = free_port_pair()?;
        let mut bao = match storage {
            Storage::InMemory => Self::start_dev(bin, &dir.join("bao-dev"), port, version)?,
            Storage::Raft(ca) => {
                Self::start_raft(bin, &dir.join("bao-raft"), port, version, ca).await?
            }
        };
        bao.wait_active().await?;
        bao.set_up_pki().await?;
        Ok(bao)
    }

    fn start_dev(bin: &Path, dir: &Path, port: u16, version: String) -> anyhow::Result<OpenBao> {
        let certs = dir.join("tls");
        std::fs::create_dir_all(&certs)?;
        let mut command = base_command(bin, dir);
        command
            .args(["server", "-dev", "-dev-tls"])
            .arg(format!("-dev-tls-cert-dir={}", certs.display()))
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-no-store-token");
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
        Ok(OpenBao {
            server,
            version,
            api,
        })
    }

    /// `bao server -config` on raft, then what `bao operator init -key-shares=1
    /// -key-threshold=1` and `bao operator unseal` do, through the same HTTP API.
    async fn start_raft(
        bin: &Path,
        dir: &Path,
        port: u16,
        version: String,
        ca: &BenchCa,
    ) -> anyhow::Result<OpenBao> {
        let data = dir.join("raft");
        std::fs::create_dir_all(&data)?;
        let tls = crate::canopy_side::write_server_tls(dir, ca)?;
        let config = dir.join("config.hcl");
        std::fs::write(
            &config,
            format!(
                r#"storage "raft" {{
  path    = "{data}"
  node_id = "bench"
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file   = "{cert}"
  tls_key_file    = "{key}"
}}
api_addr      = "https://127.0.0.1:{port}"
cluster_addr  = "https://127.0.0.1:{cluster}"
disable_mlock = true
ui            = false
"#,
                data = data.display(),
                cluster = port + 1,
                cert = tls.cert.display(),
                key = tls.key.display(),
            ),
        )?;
        let mut command = base_command(bin, dir);
        command
            .arg("server")
            .arg(format!("-config={}", config.display()));
        let mut server = Server::spawn("bao", command, &dir.join("bao.log"))?;
        let api = Endpoint::new(&format!("https://127.0.0.1:{port}/"), &ca.root_pem)?;
        crate::server::wait_answering(&mut server, &api.at("/v1/sys/seal-status")).await?;
        let bao = OpenBao {
            server,
            version,
            api,
        };
        let init = bao
            .call(
                Method::PUT,
                "/v1/sys/init",
                json!({"secret_shares": 1, "secret_threshold": 1}),
            )
            .await?;
        let key = init["keys_base64"][0]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao init returned no unseal key: {init}"))?;
        let token = init["root_token"]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao init returned no root token"))?
            .to_string();
        let unsealed = bao
            .call(Method::PUT, "/v1/sys/unseal", json!({ "key": key }))
            .await?;
        if unsealed["sealed"] != Value::Bool(false) {
            bail!("OpenBao is still sealed after unsealing: {unsealed}");
        }
        Ok(OpenBao {
            api: bao.api.with_header("X-Vault-Token", &token)?,
            ..bao
        })
    }

    /// `https://127.0.0.1:PORT`, where the server answers.
    pub fn address(&self) -> String {
        self.api.origin()
    }

    /// A token that may only sign with the role (an ACL policy on
    /// `pki_int/sign/ROLE`), for a client such as cert-manager's Vault issuer.
    pub async fn signing_token(&self) -> anyhow::Result<String> {
        let policy =
            format!("path \"pki_int/sign/{ROLE}\" {{ capabilities = [\"create\", \"update\"] }}");
        self.call(
            Method::PUT,
            "/v1/sys/policies/acl/bench-sign",
            json!({ "policy": policy }),
        )
        .await?;
        let created = self
            .call(
                Method::POST,
                "/v1/auth/token/create",
                json!({"policies": ["bench-sign"], "ttl": "24h", "no_default_policy": true}),
            )
            .await?;
        Ok(created["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao created no token: {created}"))?
            .to_string())
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

    /// Waits until this node is the active one (raft elects itself after unsealing).
    async fn wait_active(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.server.check_running()?;
            match self.api.at("/v1/sys/health").call(Method::GET, "").await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                _ if started.elapsed() < Duration::from_secs(60) => {
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
