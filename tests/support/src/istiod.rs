//! istiod's own CA code against a cluster's `cacerts` (tests/istiod): loads the Secret as
//! istiod mounts it, builds istiod's plugged-in CA from it and signs a workload CSR the
//! way istio-agent asks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::cluster::TestCluster;

/// Path to `canopy-istiod-ca`, built with tests/istiod/build.sh once per test process.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::built_by(&crate::workspace_root().join("tests/istiod/build.sh"), &[])
        })
        .clone()
}

/// What istiod signed for a workload.
#[derive(Debug)]
pub struct Signed {
    /// The chain istiod's CA server returns: leaf, `cert-chain.pem`, root last.
    pub chain: PathBuf,
    pub key: PathBuf,
    /// istiod's `root-cert.pem`.
    pub root: PathBuf,
    /// The summary printed (format, signing CA, leaf URIs, ...).
    pub summary: serde_json::Value,
}

/// Has istiod's CA, loaded from `namespace/cacerts` of `cluster`, sign `spiffe_id`; Err
/// with istiod's message when istiod would not take the Secret or refuses to sign.
pub fn sign(
    cluster: &TestCluster,
    namespace: &str,
    spiffe_id: &str,
    out: &Path,
) -> Result<Signed, String> {
    std::fs::create_dir_all(out).expect("create output folder");
    let o = Command::new(binary())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", namespace, "--spiffe-id", spiffe_id, "--out"])
        .arg(out)
        .output()
        .expect("run canopy-istiod-ca");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
    }
    Ok(Signed {
        chain: out.join("workload-chain.pem"),
        key: out.join("workload-key.pem"),
        root: out.join("root-cert.pem"),
        summary: serde_json::from_slice(&o.stdout).expect("summary JSON"),
    })
}
