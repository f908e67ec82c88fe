//! SIGKILL of `pkictl` mid-write, at spread-out points of `init-root`, `new-intermediate`
//! and `crl`: afterwards the root directory is absent or whole, the ledger verifies, the
//! keys open with openssl, and the same command run again succeeds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canopy_testsupport::{openssl, passphrase_file, run};

const PASS: &str = "a root passphrase long enough";

fn pkictl() -> Command {
    canopy_testsupport::cmd("pkictl")
}

/// Starts `c`, SIGKILLs it after `delay` if still running; true if it finished by itself.
fn run_killed_after(c: &mut Command, delay: Duration) -> bool {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pkictl");
    let end = Instant::now() + delay;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    finished
}

fn timed(c: &mut Command) -> Duration {
    let t0 = Instant::now();
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

/// A spread of kill points over [0, 1.5 × `full`]: evenly spaced, with jitter.
fn kill_points(full: Duration, n: u32) -> Vec<Duration> {
    let seed = Instant::now().elapsed().subsec_nanos() as u64 ^ std::process::id() as u64;
    (0..n)
        .map(|i| {
            let jitter = (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add((i as u64).wrapping_mul(1442695040888963407))
                >> 33)
                % 1000;
            full.mul_f64(1.5 * (i as f64 + jitter as f64 / 1000.0) / n as f64)
        })
        .collect()
}

fn ledger_verifies(root: &Path) {
    let out = run(pkictl().args(["ledger", "--verify", "--root"]).arg(root));
    assert!(
        out.status.success(),
        "ledger --verify of {} failed after a kill: {}{}",
        root.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_opens(key: &Path, pass: &Path) {
    let mut passin = std::ffi::OsString::from("file:");
    passin.push(pass);
    let out = run(openssl()
        .args(["pkey", "-noout", "-in"])
        .arg(key)
        .arg("-passin")
        .arg(&passin));
    assert!(
        out.status.success(),
        "{} does not open: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The root is absent or whole: certificate, key that opens, ledger that verifies.
fn absent_or_whole(root: &Path, pass: &Path) -> bool {
    if !root.exists() {
        return false;
    }
    for f in ["root-cert.pem", "root-key.pem", "ledger.jsonl"] {
        assert!(
            root.join(f).exists(),
            "{} exists without {f}: a half-made root",
            root.display()
        );
    }
    key_opens(&root.join("root-key.pem"), pass);
    ledger_verifies(root);
    true
}

fn init_root(root: &Path, pass: &Path) -> Command {
    let mut c = pkictl();
    c.args([
        "init-root",
        "--cn",
        "Kill Test Root",
        "--trust-domain",
        "mesh.example",
        "--dir",
    ])
    .arg(root)
    .arg("--passphrase-file")
    .arg(pass);
    c
}

#[test]
fn sigkill_of_init_root_leaves_nothing_or_a_whole_root() {
    let tmp = canopy_testsupport::tempdir();
    let pass = passphrase_file(tmp.path(), "root.pass", PASS);
    let full = timed(&mut init_root(&tmp.path().join("probe"), &pass));
    let (mut whole, mut absent) = (0, 0);
    for (i, at) in kill_points(full, 16).into_iter().enumerate() {
        let root = tmp.path().join(format!("root-{i}"));
        run_killed_after(&mut init_root(&root, &pass), at);
        if absent_or_whole(&root, &pass) {
            whole += 1;
        } else {
            absent += 1;
            // Whatever a kill left behind (a staging folder) does not block a new attempt.
            timed(&mut init_root(&root, &pass));
            assert!(absent_or_whole(&root, &pass));
        }
    }
    eprintln!("init-root killed 16 times over {full:?}: {absent} absent, {whole} whole");
}

#[test]
fn sigkill_of_new_intermediate_and_crl_keeps_the_ledger_whole() {
    let tmp = canopy_testsupport::tempdir();
    let pass = passphrase_file(tmp.path(), "root.pass", PASS);
    let key_pass = passphrase_file(tmp.path(), "inter.pass", "an intermediate passphrase");
    let root = tmp.path().join("root");
    timed(&mut init_root(&root, &pass));
    let new_intermediate = |name: &str| {
        let mut c = pkictl();
        c.args(["new-intermediate", "--name", name, "--root"])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass)
            .arg("--key-passphrase-file")
            .arg(&key_pass);
        c
    };
    let crl = || {
        let mut c = pkictl();
        c.args(["crl", "--root"])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass);
        c
    };
    let full = timed(&mut new_intermediate("probe"));
    let (mut done, mut killed) = (0, 0);
    for (i, at) in kill_points(full, 12).into_iter().enumerate() {
        let name = format!("cloud{i}");
        if run_killed_after(&mut new_intermediate(&name), at) {
            done += 1;
        } else {
            killed += 1;
        }
        ledger_verifies(&root);
        let dir = root.join("intermediates").join(&name);
        if dir.join("cert.pem").exists() {
            key_opens(&dir.join("key.pem"), &key_pass);
        } else {
            // Killed before it was made: making it again works.
            timed(&mut new_intermediate(&name));
            ledger_verifies(&root);
        }
    }
    eprintln!("new-intermediate over {full:?}: {killed} killed, {done} finished");

    let full = timed(&mut crl());
    for at in kill_points(full, 12) {
        run_killed_after(&mut crl(), at);
        ledger_verifies(&root);
        let out = run(openssl()
            .args(["crl", "-noout", "-CAfile"])
            .arg(root.join("root-cert.pem"))
            .arg("-in")
            .arg(root.join("crl.pem")));
        assert!(
            out.status.success(),
            "crl.pem unreadable after a kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    timed(&mut crl());
    ledger_verifies(&root);
}

/// What a kill between the key and the certificate leaves (the key is written first): a
/// key without `cert.pem`. Making the intermediate again keeps that key, moved aside,
/// instead of refusing for ever or overwriting it.
#[test]
fn a_key_left_without_its_certificate_is_set_aside_not_overwritten() {
    let tmp = canopy_testsupport::tempdir();
    let pass = passphrase_file(tmp.path(), "root.pass", PASS);
    let key_pass = passphrase_file(tmp.path(), "inter.pass", "an intermediate passphrase");
    let root = tmp.path().join("root");
    timed(&mut init_root(&root, &pass));
    let dir = root.join("intermediates").join("aws");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.pem"), "the interrupted run's key").unwrap();
    let out = run(pkictl()
        .args(["new-intermediate", "--name", "aws", "--root"])
        .arg(&root)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--key-passphrase-file")
        .arg(&key_pass));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("an interrupted run"));
    key_opens(&dir.join("key.pem"), &key_pass);
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("interrupted-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(aside[0].path().join("key.pem")).unwrap(),
        "the interrupted run's key"
    );
    ledger_verifies(&root);
}
