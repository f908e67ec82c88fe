//! A root and per-cluster intermediates made by the real `pkictl`, and the start of an
//! issuer config naming them (for tests that run `canopy-issuer` against clusters).

use std::path::{Path, PathBuf};

use crate::{cmd, passphrase_file, run_ok};

/// What [`make`] made under `work/root`.
pub struct Pki {
    pub root_cert: PathBuf,
    /// Per intermediate: name, cert.pem, unencrypted key.pem.
    pub intermediates: Vec<(String, PathBuf, PathBuf)>,
}

impl Pki {
    /// `trust_domain`, SQLite storage in `work`, `roots` and `intermediates` as issuer
    /// config YAML (the caller adds `clusters:`, `policies:`, `listen:`).
    pub fn config_head(&self, trust_domain: &str, work: &Path) -> String {
        let mut y = format!(
            "trust_domain: {trust_domain}\nstorage: {{ url: \"sqlite://{}/issuer.db\" }}\nroots: [{}]\nintermediates:\n",
            work.display(),
            self.root_cert.display()
        );
        for (name, cert, key) in &self.intermediates {
            y.push_str(&format!(
                "  - {{ name: {name}, cert: {}, key: {} }}\n",
                cert.display(),
                key.display()
            ));
        }
        y
    }
}

/// `pkictl init-root` (CN `Test Root`, `trust_domain`) and one `new-intermediate` per name,
/// with unencrypted intermediate keys (tests only).
pub fn make(work: &Path, trust_domain: &str, names: &[&str]) -> Pki {
    let pass = passphrase_file(work, "root.pass", "a root passphrase that is long");
    let root = work.join("root");
    run_ok(
        cmd("pkictl")
            .args([
                "init-root",
                "--cn",
                "Test Root",
                "--trust-domain",
                trust_domain,
                "--dir",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    let mut intermediates = Vec::new();
    for name in names {
        run_ok(
            cmd("pkictl")
                .args([
                    "new-intermediate",
                    "--name",
                    name,
                    "--unencrypted-key-insecure",
                    "--root",
                ])
                .arg(&root)
                .arg("--passphrase-file")
                .arg(&pass),
        );
        let dir = root.join("intermediates").join(name);
        intermediates.push((name.to_string(), dir.join("cert.pem"), dir.join("key.pem")));
    }
    Pki {
        root_cert: root.join("root-cert.pem"),
        intermediates,
    }
}
