//! The benchmark's smoke mode runs in the suite so it cannot rot: canopy-issuer only
//! (OpenBao is not installed by the tests), a second or two of tiny load. It asserts
//! that numbers came out and that no request failed, never how fast anything was.

use std::process::Command;

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

#[test]
fn smoke_mode_produces_numbers_and_no_errors() {
    let issuer = canopy_testsupport::bin("canopy-issuer");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canopy-bench"))
        .args(["run", "--smoke", "--issuer"])
        .arg(&issuer)
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("run canopy-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "canopy-bench run --smoke failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("OpenBao skipped"), "{stdout}");

    let line = stdout
        .lines()
        .find(|l| l.starts_with("result system=canopy-sqlite "))
        .unwrap_or_else(|| panic!("no canopy-sqlite result in\n{stdout}"));
    let rate: f64 = field(line, "certs_per_sec").parse().unwrap();
    let p99: f64 = field(line, "p99_ms").parse().unwrap();
    let ok: u64 = field(line, "ok").parse().unwrap();
    assert!(rate > 0.0 && p99 > 0.0 && ok > 0, "{line}");
    assert_eq!(field(line, "errors"), "0", "{line}");
    assert!(stdout.contains("stored/answered"), "{stdout}");

    // PostgreSQL is measured when the suite's server answers; then it must be clean too.
    if let Some(pg) = stdout
        .lines()
        .find(|l| l.starts_with("result system=canopy-postgres "))
    {
        assert_eq!(field(pg, "errors"), "0", "{pg}");
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
