//! SQLite faults without root or mounts: "disk full" is the issuer's file-size limit
//! (RLIMIT_FSIZE, set by the shell before exec, SIGXFSZ ignored so writes fail with EFBIG),
//! raised again with `prlimit` while it runs; "read-only" is a `mode=ro` database URL.
//!
//! Expected: while full, signing answers 503 `storage_unavailable` with Retry-After and no
//! certificate; every certificate that was returned is on record; the service recovers by
//! itself once space returns, and the audit chain verifies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

struct Limited {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `canopy-issuer serve --config CONFIG` with a soft file-size limit of `kib` KiB.
fn start_limited(config: &str, kib: u64) -> Limited {
    let script = format!("trap '' XFSZ; ulimit -S -f {kib}; exec \"$0\" serve --config \"$1\"");
    let mut child = Command::new("bash")
        .args(["-c", &script, BIN, config])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        // The test's own stderr, not a file: the size limit must not silence the log.
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bash");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("listening on https://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.parse::<SocketAddr>().unwrap());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("limited issuer did not start");
    Limited { child, addr }
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn disk_full_answers_503_records_everything_returned_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issuer = Configured::new(
        dir,
        "sqlite:full.db",
        "  burst: 100000\n  rate_per_second: 100000",
    );
    let (config_s, token) = (issuer.config.clone(), issuer.token.clone());
    let db = dir.join("full.db");
    let wal = dir.join("full.db-wal");
    // Room for the start (listener certificate) and some signing, then full.
    let biggest = file_size(&db).max(file_size(&wal));
    let kib = biggest / 1024 + 192;
    let mut server = start_limited(&config_s, kib);
    let pid = server.child.id();
    let client = Client::new(server.addr, &issuer.root, None);
    let sign = || {
        let c = csr(Some(&format!("spiffe://{TD}/ns/default/sa/web")), &[]);
        client.post_json("/v1/sign", Some(&token), &json!({"csr": c.pem}))
    };

    let mut returned = Vec::new();
    let (mut unavailable, mut in_a_row) = (0, 0);
    let t0 = Instant::now();
    while in_a_row < 5 && t0.elapsed() < Duration::from_secs(120) {
        let r = sign();
        match r.status {
            200 => {
                returned.push(r.json()["serial"].as_str().unwrap().to_string());
                in_a_row = 0;
            }
            503 => {
                unavailable += 1;
                in_a_row += 1;
                assert_eq!(r.code(), "storage_unavailable", "{}", r.text());
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                assert!(!r.text().contains("BEGIN CERTIFICATE"), "{}", r.text());
                // Never the SQL error or a path.
                assert!(!r.text().contains(dir.to_str().unwrap()), "{}", r.text());
            }
            other => panic!("while the disk fills: {other} {}", r.text()),
        }
    }
    assert!(
        in_a_row >= 5,
        "the file-size limit ({kib} KiB) never made signing fail: {} signed in {:?} (db {} B, wal {} B)",
        returned.len(),
        t0.elapsed(),
        file_size(&db),
        file_size(&wal)
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the issuer died when the disk filled"
    );
    assert_eq!(client.get("/healthz", &[]).status, 200);
    eprintln!(
        "disk full after {} certificates ({kib} KiB limit); {unavailable} answers 503",
        returned.len()
    );

    // Space returns: the same process recovers by itself.
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited"])
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At once: no pooled connection may stay broken by the failed writes (sqlx used to
    // keep a connection stuck "in a transaction" after SQLite rolled back a failed COMMIT,
    // refusing every BEGIN on it for seconds).
    let recovered = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = sign();
        if r.status == 200 {
            returned.push(r.json()["serial"].as_str().unwrap().to_string());
            break;
        }
        assert!(
            attempts < 3,
            "still {} after space returned: {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("recovered {:?} after space returned", recovered.elapsed());
    for _ in 0..20 {
        let r = sign();
        assert_eq!(r.status, 200, "after recovery: {}", r.text());
        returned.push(r.json()["serial"].as_str().unwrap().to_string());
    }

    // Every certificate returned is on record.
    for serial in &returned {
        let r = client.get(
            &format!("/v1/certificates/{serial}"),
            &[("Authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(
            r.status,
            200,
            "returned certificate {serial} is not on record: {}",
            r.text()
        );
    }
    drop(server);
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", &config_s]);
    assert!(ok, "audit chain after the disk-full episode: {out}{err}");
}

/// A database opened read-only: the issuer refuses to start, saying why, instead of
/// serving certificates it cannot record.
#[test]
fn read_only_database_is_refused_at_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Migrate once with write access (making its token migrates), then open the same file
    // read-only.
    let rw = Configured::new(dir, "sqlite:ro.db", "");
    let (ok, out, err) = run_bin(&["migrate", "--config", &rw.config]);
    assert!(ok, "{out}{err}");
    let ro = std::fs::read_to_string(&rw.config)
        .unwrap()
        .replace("sqlite:ro.db", "sqlite:ro.db?mode=ro");
    let ro_config = dir.join("read-only.yaml");
    std::fs::write(&ro_config, ro).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", ro_config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !running,
        "the issuer served on a read-only database:\n{text}"
    );
    assert!(!out.status.success());
    assert!(
        text.contains("storage") && text.to_ascii_lowercase().contains("read"),
        "the error does not say the storage is read-only:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

/// Replicas (or `serve` beside `token create`) that start at once on a new SQLite file all
/// migrate it. Found by the two-replica Istio test: one of them failed with "table
/// certificates already exists" and exited, because SQLite has no migration lock.
#[test]
fn processes_migrating_one_new_database_at_once_all_start() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..20 {
        let url = format!("sqlite://{}/race-{round}.db", dir.path().display());
        let results = runtime.block_on(async {
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let store = canopy_issuer::store::Store::connect(&url, 2).await?;
                        store.migrate().await
                    })
                })
                .collect();
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            results
        });
        for r in results {
            if let Err(e) = r {
                panic!("round {round}: a process could not migrate: {e}");
            }
        }
    }
}
