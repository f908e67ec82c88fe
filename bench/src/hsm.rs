//! The sign rate with the intermediate's key on a SoftHSM2 token, beside the file-held
//! key: the ceiling's CSR-verify-and-sign step, one thread, the same CSRs, so the two
//! numbers differ only in where the key signs. Skipped with a note when softhsm2 is not
//! installed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use canopy::pkcs11::{Pin, Pkcs11Key, TokenSelector, TokenSpec};
use canopy::profile::{CaProfile, CaRequest};
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use canopy::{CertificateAuthority, KeyPair, KeyType};

use crate::workload::WorkloadCsr;

/// Where Debian and others put the SoftHSM2 module.
const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
/// The bench token's PIN (a throwaway token in the work folder).
const PIN: &str = "246810";

/// The SoftHSM row, or why there is none.
pub enum HsmRow {
    /// CSR verify + sign per second with the key on the token.
    Measured { verify_sign_per_sec: f64 },
    /// softhsm2 is not installed.
    Skipped(String),
}

/// Makes a token under `work`, an intermediate whose key is on it, and measures.
pub fn measure(work: &Path, csrs: &[WorkloadCsr], duration: Duration) -> anyhow::Result<HsmRow> {
    let Some(module) = MODULES.iter().map(Path::new).find(|p| p.is_file()) else {
        return Ok(HsmRow::Skipped(
            "SoftHSM row skipped: softhsm2 is not installed (apt-get install softhsm2)".into(),
        ));
    };
    let dir = work.join("softhsm");
    std::fs::create_dir_all(dir.join("tokens"))?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )?;
    // SoftHSM reads its configuration from this variable when the module is first
    // initialized, which is below; nothing else in the bench reads it.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench", "--pin", PIN])
        .args(["--so-pin", "13579111"])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "softhsm2-util --init-token failed");
    let spec = TokenSpec {
        module: module.to_path_buf(),
        token: TokenSelector::Label("bench".into()),
    };
    let key = Pkcs11Key::generate(
        &spec,
        "bench-intermediate",
        KeyType::EcdsaP256,
        Pin::new(PIN)?,
    )?;
    let now = time::OffsetDateTime::now_utc();
    let td: TrustDomain = crate::canopy_side::TRUST_DOMAIN.parse()?;
    let root = CertificateAuthority::new_root(
        Arc::new(KeyPair::generate(KeyType::EcdsaP256)?),
        &CaRequest {
            trust_domain: Some(td.clone()),
            ttl: Some(Ttl::years(1)),
            ..CaRequest::new(CaProfile::Root, "canopy bench root")
        },
        now,
    )?;
    let issued = root.issue(
        &CaRequest {
            trust_domain: Some(td),
            ttl: Some(Ttl::days(90)),
            clamp_to_issuer: true,
            ..CaRequest::new(
                CaProfile::Intermediate,
                "canopy bench intermediate on SoftHSM",
            )
        },
        key.public_key_spki(),
        now,
    )?;
    let ca = CertificateAuthority::new(issued.certificate, vec![], Arc::new(key))?;
    let verify_sign_per_sec = crate::ceiling::verify_and_sign_rate(&ca, csrs, duration)?;
    Ok(HsmRow::Measured {
        verify_sign_per_sec,
    })
}
