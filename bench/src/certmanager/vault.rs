//! cert-manager's own Vault issuer, pointed at OpenBao on this machine: OpenBao on
//! integrated raft storage with the PKI engine and role of the API benchmark
//! ([`crate::openbao`]), and a ClusterIssuer of kind Vault with a token that may only
//! sign with that role (in a Secret) and the bench root as caBundle.

use std::path::Path;

use canopy_testsupport::certmanager::{base64, NAMESPACE};

use crate::canopy_side;
use crate::openbao::{self, OpenBao, Storage};

/// The ClusterIssuer's name in each cluster.
pub const ISSUER: &str = "openbao";

/// OpenBao on raft, configured, with what a Vault issuer needs to reach it.
pub struct RaftOpenBao {
    /// The server (its process and PKI engine).
    pub bao: OpenBao,
    /// The CA its serving certificate chains to, PEM.
    ca_pem: String,
    /// A token allowed to sign with the role, and nothing else.
    token: String,
}

impl RaftOpenBao {
    /// Starts OpenBao on raft storage in `dir` (initialised, unsealed, TLS from a bench
    /// CA), sets up the PKI engine and makes a signing token.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<RaftOpenBao> {
        let ca = canopy_side::make_ca()?;
        let bao = OpenBao::start(bin, dir, Storage::Raft(&ca)).await?;
        let token = bao.signing_token().await?;
        Ok(RaftOpenBao {
            bao,
            ca_pem: ca.root_pem,
            token,
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
            token = self.token,
            server = self.bao.address(),
            role = openbao::ROLE,
            ca = base64(self.ca_pem.as_bytes()),
        )
    }
}
