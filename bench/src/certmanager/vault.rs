//! cert-manager's own Vault issuer, pointed at OpenBao on this machine: `bao server`
//! with integrated raft storage (initialised with one key share and unsealed), TLS with a
//! CA made here, the PKI engine and role of the API benchmark ([`crate::openbao`]), and a
//! ClusterIssuer of kind Vault with the root token in a Secret and the CA as caBundle.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use canopy_testsupport::certmanager::{base64, NAMESPACE};
use hyper::Method;
use serde_json::{json, Value};

use crate::load::Endpoint;
use crate::openbao::{self, OpenBao};
use crate::server::{free_port_pair, Server};

/// The ClusterIssuer's name in each cluster.
pub const ISSUER: &str = "openbao";

/// OpenBao on raft, configured, with what a Vault issuer needs to reach it.
pub struct RaftOpenBao {
    /// The server (its process and PKI engine).
    pub bao: OpenBao,
    /// `https://127.0.0.1:PORT`.
    pub address: String,
    /// The CA of its serving certificate, PEM.
    pub ca_pem: String,
    /// The root token from the initialisation.
    root_token: String,
}

impl RaftOpenBao {
    /// Starts `bao server` on raft storage in `dir`, initialises and unseals it, and
    /// sets up the PKI engine.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<RaftOpenBao> {
        let version = openbao::version(bin)?;
        std::fs::create_dir_all(dir.join("raft"))?;
        let ca_pem = serving_certificate(dir)?;
        let port = free_port_pair()?;
        let address = format!("https://127.0.0.1:{port}");
        let config = dir.join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                r#"ui = false
api_addr = "{address}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
storage "raft" {{
  path = "{raft}"
  node_id = "canopy-bench"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
}}
"#,
                cluster_port = port + 1,
                raft = dir.join("raft").display(),
                cert = dir.join("bao-cert.pem").display(),
                key = dir.join("bao-key.pem").display(),
            ),
        )?;
        let mut command = Command::new(bin);
        command
            .arg("server")
            .arg(format!("-config={}", config.display()))
            .env("HOME", dir)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR");
        let (server, _) = Server::start(
            "bao",
            command,
            &dir.join("bao.log"),
            "server started",
            Duration::from_secs(60),
        )?;
        let plain = Endpoint::new(&format!("{address}/"), &ca_pem)?;
        let init = call(
            &plain.at("/v1/sys/init"),
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await?;
        let key = init["keys"][0]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao init returned no key: {init}"))?;
        let root_token = init["root_token"]
            .as_str()
            .ok_or_else(|| anyhow!("OpenBao init returned no root token"))?
            .to_string();
        let unsealed = call(&plain.at("/v1/sys/unseal"), json!({ "key": key })).await?;
        if unsealed["sealed"] != false {
            bail!("OpenBao is still sealed after the unseal: {unsealed}");
        }
        let api = plain.with_header("X-Vault-Token", &root_token)?;
        let bao = OpenBao::configure(server, version, api).await?;
        Ok(RaftOpenBao {
            bao,
            address,
            ca_pem,
            root_token,
        })
    }

    /// The token Secret (in cert-manager's cluster resource namespace) and the Vault
    /// ClusterIssuer that signs with the API benchmark's role.
    pub fn cluster_issuer_yaml(&self) -> String {
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: openbao-token, namespace: {NAMESPACE}}}
type: Opaque
stringData: {{token: "{token}"}}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {{name: {ISSUER}}}
spec:
  vault:
    server: {server}
    path: pki_int/sign/{role}
    caBundle: {ca}
    auth:
      tokenSecretRef: {{name: openbao-token, key: token}}
"#,
            token = self.root_token,
            server = self.address,
            role = openbao::ROLE,
            ca = base64(self.ca_pem.as_bytes()),
        )
    }
}

/// PUT `body` to `endpoint`; the answer as JSON.
async fn call(endpoint: &Endpoint, body: Value) -> anyhow::Result<Value> {
    let (status, bytes) = endpoint.call(Method::PUT, &body.to_string()).await?;
    if !status.is_success() {
        bail!(
            "OpenBao: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    serde_json::from_slice(&bytes).context("OpenBao answered with something not JSON")
}

/// A CA and a serving certificate for 127.0.0.1 (ECDSA P-256), written as
/// `bao-cert.pem` and `bao-key.pem` in `dir`; returns the CA, PEM.
fn serving_certificate(dir: &Path) -> anyhow::Result<String> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "canopy-bench OpenBao CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "openbao");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("bao-cert.pem"), cert.pem())?;
    std::fs::write(dir.join("bao-key.pem"), key.serialize_pem())?;
    Ok(ca_cert.pem())
}
