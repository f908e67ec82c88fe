//! Go's crypto/x509 as an independent verifier (tests/x509check, standard library only):
//! what istiod, cert-manager and most Kubernetes tooling would accept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The x509check binary, built once per test process into the target folder.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = crate::target_dir().join("x509check").join("x509check");
            let status = Command::new("go")
                .current_dir(crate::workspace_root().join("tests/x509check"))
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .status()
                .expect("run `go build` for tests/x509check (Go is needed: https://go.dev/dl)");
            assert!(status.success(), "go build of tests/x509check failed");
            out
        })
        .clone()
}

/// Go's verdict on `leaf` (a PEM file, chain after it allowed) under `roots`, with
/// `intermediates` untrusted: Ok, or Err with Go's reason.
pub fn verify(roots: &Path, intermediates: &[&Path], leaf: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = dir.path().join("intermediates.pem");
    let mut pem = String::new();
    for p in intermediates {
        pem.push_str(&std::fs::read_to_string(p).expect("read intermediate"));
    }
    std::fs::write(&chain, pem).expect("write intermediates");
    let out = Command::new(binary())
        .arg("-roots")
        .arg(roots)
        .arg("-intermediates")
        .arg(&chain)
        .arg(leaf)
        .output()
        .expect("run x509check");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        _ => panic!(
            "x509check could not check {}: {}",
            leaf.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
