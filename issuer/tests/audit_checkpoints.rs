//! Audit checkpoints, archives and pruning (issue 18), attack first: each way of
//! tampering with the database or the archive is tried on a real issuer's data and
//! `audit verify` must name it; then the honest path (checkpoint, archive, prune,
//! verify from the checkpoint and across archives) must pass.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::common::*;

/// An issuer that signed a few certificates (one revoked by the CLI), with a checkpoint
/// key, archive folder and a 1 s retention configured; the server is stopped.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: String,
    pg: Option<PgDb>,
    /// Serials signed; the first is revoked.
    serials: Vec<String>,
}

impl Fixture {
    fn new(backend: Backend) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let pg = (backend == Backend::Postgres).then(PgDb::create);
        let url = pg
            .as_ref()
            .map(|d| d.url.clone())
            .unwrap_or_else(|| "sqlite:audit.db".into());
        let issuer = Configured::new(&dir, &url, "");
        write_key(&dir.join("ckpt.pem"));
        let mut text = std::fs::read_to_string(&issuer.config).unwrap();
        text.push_str(
            "audit:\n  checkpoint_key: ckpt.pem\n  archive_dir: archive\n  retention: 1s\n",
        );
        std::fs::write(&issuer.config, text).unwrap();
        let (mut server, client) = issuer.serve(&dir);
        let serials: Vec<String> = (0..4)
            .map(|i| {
                let r = client.post_json(
                    "/v1/sign",
                    Some(&issuer.token),
                    &json!({"csr": csr(Some(&format!("spiffe://{TD}/ns/audit/sa/w{i}")), &[]).pem}),
                );
                assert_eq!(r.status, 200, "sign: {}", r.text());
                r.json()["serial"].as_str().unwrap().to_string()
            })
            .collect();
        server.kill();
        let f = Fixture {
            _tmp: tmp,
            dir,
            config: issuer.config.clone(),
            pg,
            serials,
        };
        f.ok(&[
            "revoke",
            &f.serials[0].clone(),
            "--reason",
            "key-compromise",
        ]);
        f
    }

    /// Runs `canopy-issuer ARGS --config CONFIG`; panics unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "canopy-issuer {args:?} failed: {out}{err}");
        out
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &self.config]);
        run_bin(&all)
    }

    /// Runs SQL on the issuer's database as someone with write access to it would.
    fn sql(&self, sql: &str) -> String {
        match &self.pg {
            Some(pg) => {
                let (ok, out) = psql(&pg.name, sql);
                assert!(ok, "psql {sql}: {out}");
                out.trim().to_string()
            }
            None => {
                let out = std::process::Command::new("sqlite3")
                    .arg(self.dir.join("audit.db"))
                    .arg(sql)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "sqlite3 {sql}: {out:?}");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        }
    }

    fn count(&self, table: &str) -> i64 {
        self.sql(&format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    /// `audit verify ARGS --output json`: (passed, report, stderr).
    fn verify(&self, args: &[&str]) -> (bool, Value, String) {
        let mut all = vec!["audit", "verify", "--output", "json"];
        all.extend(args);
        let (ok, out, err) = self.run(&all);
        let report: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {out}{err}"));
        assert_eq!(
            report["ok"], ok,
            "exit status and report disagree: {out}{err}"
        );
        (ok, report, err)
    }

    fn verify_fails_with(&self, args: &[&str], mentions: &[&str]) -> Value {
        let (ok, report, err) = self.verify(args);
        assert!(!ok, "verify passed a tampered log: {report:#}");
        for m in mentions {
            assert!(err.contains(m), "expected {m:?} in:\n{err}");
        }
        report
    }

    /// Checkpoint the head, wait past the 1 s retention, archive and prune.
    fn checkpoint_and_archive(&self) -> Value {
        self.ok(&["audit", "checkpoint"]);
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let out = self.ok(&["audit", "archive", "--output", "json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// Appends entries the ordinary way (a token, as the CLI makes one).
    fn more_entries(&self) {
        self.ok(&["token", "create", "--policy", "dev"]);
    }
}

fn write_key(path: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn unrevoking_a_certificate_is_detected(backend: Backend) {
    let f = Fixture::new(backend);
    assert!(f.verify(&[]).0, "the untouched log verifies");
    f.sql(&format!(
        "UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL WHERE serial = '{}'",
        f.serials[0]
    ));
    f.verify_fails_with(
        &[],
        &[
            &f.serials[0],
            "its row is not revoked: revoked_at was cleared",
        ],
    );
}

#[test]
fn unrevoking_a_certificate_is_detected_sqlite() {
    unrevoking_a_certificate_is_detected(Backend::Sqlite);
}

#[test]
fn unrevoking_a_certificate_is_detected_postgres() {
    unrevoking_a_certificate_is_detected(Backend::Postgres);
}

fn deleted_replaced_and_added_rows_are_detected(backend: Backend) {
    // A row added under a serial never signed, naming another certificate's sign entry.
    let f = Fixture::new(backend);
    f.sql(&format!(
        "INSERT INTO certificates (serial, spiffe_id, subject, dns_names, ip_addresses, \
         not_before, not_after, issued_at, requester, auth_method, intermediate, cluster, \
         namespace, profile, fingerprint, der, token_id, sign_seq) \
         SELECT 'feedface', spiffe_id, subject, dns_names, ip_addresses, not_before, \
         not_after, issued_at, requester, auth_method, intermediate, cluster, namespace, \
         profile, fingerprint, der, token_id, sign_seq FROM certificates WHERE serial = '{}'",
        f.serials[0]
    ));
    f.verify_fails_with(
        &[],
        &[
            "certificate row feedface",
            "has no sign entry in the audit log",
        ],
    );

    let f = Fixture::new(backend);
    f.sql(&format!(
        "DELETE FROM certificates WHERE serial = '{}'",
        f.serials[1]
    ));
    f.verify_fails_with(
        &[],
        &[&f.serials[1], "has no row in the certificates table"],
    );

    let f = Fixture::new(backend);
    f.sql(&format!(
        "UPDATE certificates SET fingerprint = '{}' WHERE serial = '{}'",
        "ab".repeat(32),
        f.serials[2]
    ));
    f.verify_fails_with(&[], &[&f.serials[2], "the row was replaced"]);

    // A row renamed to a serial never signed: the signed one is gone and the new one
    // has no sign entry.
    let f = Fixture::new(backend);
    f.sql(&format!(
        "UPDATE certificates SET serial = '0badc0ffee' WHERE serial = '{}'",
        f.serials[3]
    ));
    f.verify_fails_with(
        &[],
        &[
            "certificate row 0badc0ffee",
            "has no sign entry in the audit log",
            &f.serials[3],
        ],
    );
}

#[test]
fn deleted_replaced_and_added_rows_are_detected_sqlite() {
    deleted_replaced_and_added_rows_are_detected(Backend::Sqlite);
}

#[test]
fn deleted_replaced_and_added_rows_are_detected_postgres() {
    deleted_replaced_and_added_rows_are_detected(Backend::Postgres);
}

/// A row deleted under a tidy entry whose cutoff is past its notAfter is accounted for;
/// one whose notAfter is not before the cutoff is not.
#[test]
fn a_tidy_entry_accounts_only_for_rows_expired_before_its_cutoff() {
    for (past_not_after, passes) in [(true, true), (false, false)] {
        let f = Fixture::new(Backend::Sqlite);
        let serial = &f.serials[1];
        let not_after: i64 = f
            .sql(&format!(
                "SELECT not_after FROM certificates WHERE serial = '{serial}'"
            ))
            .parse()
            .unwrap();
        let cutoff = if past_not_after {
            not_after + 1
        } else {
            not_after
        };
        f.sql(&format!(
            "DELETE FROM certificates WHERE serial = '{serial}'"
        ));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let url = format!("sqlite:{}", f.dir.join("audit.db").display());
            let store = canopy_issuer::store::Store::connect(&url, 1).await.unwrap();
            let event = canopy_issuer::audit::AuditEvent::new(
                1,
                "canopy-issuer",
                "tidy",
                "certificates",
                canopy_issuer::audit::Outcome::Ok,
                json!({"cutoff": cutoff, "deleted": 1}),
            );
            store.append_events(&[event]).await.unwrap();
            store.close().await;
        });
        let (ok, report, err) = f.verify(&[]);
        assert_eq!(ok, passes, "cutoff {cutoff}, notAfter {not_after}: {err}");
        if passes {
            assert_eq!(report["certificates"]["covered_by_tidy"], 1);
        } else {
            assert!(
                err.contains("no later tidy entry allowed its deletion"),
                "{err}"
            );
        }
    }
}

fn prune_then_verify_from_the_checkpoint_and_across_archives(backend: Backend) {
    let f = Fixture::new(backend);
    let (ok, before, err) = f.verify(&[]);
    assert!(ok, "{err}");
    assert_eq!(before["from_checkpoint"], Value::Null);
    let entries = before["entries"].as_i64().unwrap();

    let dry: Value =
        serde_json::from_str(&f.ok(&["audit", "checkpoint", "--output", "json"])).unwrap();
    assert_eq!(dry["seq"], entries);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let plan: Value =
        serde_json::from_str(&f.ok(&["audit", "archive", "--dry-run", "--output", "json"]))
            .unwrap();
    assert_eq!(plan["last_seq"], entries);
    assert_eq!(f.count("audit_log"), entries, "a dry run deletes nothing");

    let first = f.checkpoint_and_archive();
    assert_eq!(first["first_seq"], 1);
    assert_eq!(first["last_seq"], entries);
    assert_eq!(first["deleted"], entries);
    let segment = PathBuf::from(first["segment"].as_str().unwrap());
    assert_eq!(
        segment.file_name().unwrap().to_str().unwrap(),
        format!("audit-1-{entries}.jsonl")
    );
    let mode = std::fs::metadata(&segment).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&segment).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as i64, entries + 1);
    assert!(lines.last().unwrap().starts_with("{\"checkpoint\":"));
    assert_eq!(f.count("audit_log"), 0);

    // The pruned log verifies from the signed checkpoint; the rows signed before it are
    // reported as not covered, not as failures.
    f.more_entries();
    let (ok, report, err) = f.verify(&[]);
    assert!(ok, "{err}");
    assert_eq!(report["from_checkpoint"], entries);
    assert_eq!(report["certificates"]["rows_not_covered"], 5);

    // A second segment; both archives and the database verify as one chain, from genesis.
    let second = f.checkpoint_and_archive();
    assert_eq!(second["first_seq"], entries + 1);
    f.more_entries();
    let archive = f.dir.join("archive");
    let (ok, report, err) = f.verify(&["--archive", archive.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(report["from_checkpoint"], Value::Null);
    assert_eq!(report["segments"], 2);
    assert_eq!(report["certificates"]["rows_not_covered"], 0);
    assert_eq!(report["certificates"]["sign_entries"], 5);
    let head = report["head_hash"].as_str().unwrap().to_string();
    let (ok, _, err) = f.verify(&[
        "--archive",
        archive.to_str().unwrap(),
        "--expect-head",
        &head[..16],
    ]);
    assert!(ok, "{err}");

    // The text report says where it started and what to keep.
    let out = f.ok(&["audit", "verify"]);
    assert!(out.contains("from the signed checkpoint at entry"), "{out}");
    assert!(out.contains(&format!("hash {head}")), "{out}");

    // The public key alone verifies it (as on a machine without the private key).
    let public = f.dir.join("ckpt.pub.pem");
    std::fs::write(&public, f.ok(&["audit", "checkpoint-key"])).unwrap();
    let (ok, _, err) = f.verify(&["--checkpoint-key", public.to_str().unwrap()]);
    assert!(ok, "{err}");
}

#[test]
fn prune_then_verify_from_the_checkpoint_and_across_archives_sqlite() {
    prune_then_verify_from_the_checkpoint_and_across_archives(Backend::Sqlite);
}

#[test]
fn prune_then_verify_from_the_checkpoint_and_across_archives_postgres() {
    prune_then_verify_from_the_checkpoint_and_across_archives(Backend::Postgres);
}

#[test]
fn an_edited_archived_entry_is_detected() {
    let f = Fixture::new(Backend::Sqlite);
    let report = f.checkpoint_and_archive();
    let segment = PathBuf::from(report["segment"].as_str().unwrap());
    let archive = f.dir.join("archive");
    let archive = archive.to_str().unwrap();
    let original = std::fs::read_to_string(&segment).unwrap();

    // Changed in place: its own hash no longer matches.
    let mut lines: Vec<Value> = original
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[2]["actor"] = json!("someone-else");
    let write = |lines: &[Value]| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&segment, text).unwrap();
    };
    write(&lines);
    f.verify_fails_with(&["--archive", archive], &["audit entry 3 was modified"]);

    // Rewritten with every later hash recomputed: the signed checkpoint catches it.
    let mut prev = lines[1]["hash"].as_str().unwrap().to_string();
    for line in lines.iter_mut().skip(2) {
        if line.get("checkpoint").is_some() {
            break;
        }
        line["prev_hash"] = json!(prev);
        let mut entry: canopy_issuer::audit::AuditEntry =
            serde_json::from_value(line.clone()).unwrap();
        entry.hash = entry.expected_hash();
        line["hash"] = json!(entry.hash);
        prev = entry.hash;
    }
    write(&lines);
    f.verify_fails_with(
        &["--archive", archive],
        &["its checkpoint does not match its last entry"],
    );

    // Restored, it verifies again.
    std::fs::write(&segment, original).unwrap();
    assert!(f.verify(&["--archive", archive]).0);
}

#[test]
fn a_removed_archive_segment_is_detected() {
    let f = Fixture::new(Backend::Sqlite);
    f.checkpoint_and_archive();
    f.more_entries();
    let second = f.checkpoint_and_archive();
    f.more_entries();
    let archive = f.dir.join("archive");
    assert!(f.verify(&["--archive", archive.to_str().unwrap()]).0);
    std::fs::remove_file(second["segment"].as_str().unwrap()).unwrap();
    f.verify_fails_with(
        &["--archive", archive.to_str().unwrap()],
        &["are neither in the archive segments nor in the database"],
    );
}

fn forged_checkpoints_are_detected(backend: Backend) {
    let f = Fixture::new(backend);
    let report = f.checkpoint_and_archive();
    let seq = report["last_seq"].as_i64().unwrap();
    f.more_entries();
    assert!(f.verify(&[]).0);

    // Someone who can write the database but has not the key re-signs the anchor.
    let other = canopy_issuer::audit::checkpoint::CheckpointKey::generate().unwrap();
    let hash = f.sql(&format!(
        "SELECT hash FROM audit_checkpoints WHERE seq = {seq}"
    ));
    let forged = other.sign(seq, &hash, 1).unwrap();
    f.sql(&format!(
        "UPDATE audit_checkpoints SET key_id = '{}', signature = '{}', at_ms = 1 WHERE seq = {seq}",
        forged.key_id, forged.signature
    ));
    f.verify_fails_with(
        &[],
        &[&format!(
            "checkpoint at entry {seq} is signed by key {}",
            forged.key_id
        )],
    );

    // Or keeps the key id and changes what it says.
    let f = Fixture::new(backend);
    let report = f.checkpoint_and_archive();
    let seq = report["last_seq"].as_i64().unwrap();
    f.sql(&format!(
        "UPDATE audit_checkpoints SET hash = '{}' WHERE seq = {seq}",
        "cd".repeat(32)
    ));
    f.verify_fails_with(
        &[],
        &["its signature does not verify with the checkpoint key"],
    );

    // A public key other than the signer's is refused too.
    let public = f.dir.join("other.pub.pem");
    std::fs::write(&public, other.public_key().to_pem()).unwrap();
    f.verify_fails_with(
        &["--checkpoint-key", public.to_str().unwrap()],
        &["not by the checkpoint key"],
    );
}

#[test]
fn forged_checkpoints_are_detected_sqlite() {
    forged_checkpoints_are_detected(Backend::Sqlite);
}

#[test]
fn forged_checkpoints_are_detected_postgres() {
    forged_checkpoints_are_detected(Backend::Postgres);
}

#[test]
fn a_cut_off_tail_is_caught_by_expect_head_and_by_a_checkpoint() {
    let f = Fixture::new(Backend::Sqlite);
    let (ok, report, _) = f.verify(&[]);
    assert!(ok);
    let head = report["head_hash"].as_str().unwrap().to_string();
    let last = report["last_seq"].as_i64().unwrap();
    assert!(f.verify(&["--expect-head", &head[..12]]).0);
    f.verify_fails_with(
        &["--expect-head", "0123456789abcdef"],
        &["does not contain the expected head 0123456789abcdef"],
    );
    let (ok, _, err) = f.run(&["audit", "verify", "--expect-head", "abc"]);
    assert!(!ok && err.contains("12 or more digits"), "{err}");

    f.ok(&["audit", "checkpoint"]);
    // The last entry removed and the head row rewound to the one before: a valid chain.
    let prev = f.sql(&format!(
        "SELECT hash FROM audit_log WHERE seq = {}",
        last - 1
    ));
    f.sql(&format!("DELETE FROM audit_log WHERE seq = {last}"));
    f.sql(&format!(
        "UPDATE audit_head SET seq = {}, hash = '{prev}' WHERE id = 1",
        last - 1
    ));
    f.verify_fails_with(
        &["--expect-head", &head[..12]],
        &[
            "does not contain the expected head",
            &format!("a signed checkpoint vouches for entry {last}"),
        ],
    );
}

#[test]
fn nothing_is_deleted_when_the_archive_cannot_be_written() {
    let f = Fixture::new(Backend::Sqlite);
    let entries = f.count("audit_log");
    // The archive folder's path is taken by a file (tests run as root, which a
    // read-only folder would not stop). `serve`'s retention loop may have made the
    // folder already.
    let _ = std::fs::remove_dir_all(f.dir.join("archive"));
    std::fs::write(f.dir.join("archive"), "not a folder").unwrap();
    f.ok(&["audit", "checkpoint"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (ok, out, err) = f.run(&["audit", "archive"]);
    assert!(!ok, "archive into a file succeeded: {out}");
    assert!(err.contains("audit archive"), "{err}");
    assert_eq!(f.count("audit_log"), entries, "rows were deleted");
    let (ok, report, err) = f.verify(&[]);
    assert!(ok, "{err}");
    assert_eq!(report["from_checkpoint"], Value::Null);
}

#[test]
fn the_checkpoint_key_must_be_private_and_dev_makes_one() {
    let f = Fixture::new(Backend::Sqlite);
    let key = f.dir.join("ckpt.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = f.run(&["audit", "checkpoint"]);
    assert!(!ok && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");

    let dev = tempfile::tempdir().unwrap();
    dev_material(dev.path());
    let dev_key = dev.path().join("audit-checkpoint-key.pem");
    let mode = std::fs::metadata(&dev_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let data_dir = dev.path().to_str().unwrap();
    let (ok, out, err) = run_bin(&["audit", "checkpoint-key", "--dev", "--data-dir", data_dir]);
    assert!(
        ok && out.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{out}{err}"
    );
    let (ok, out, err) = run_bin(&["audit", "checkpoint", "--dev", "--data-dir", data_dir]);
    assert!(ok && out.contains("checkpoint at entry"), "{out}{err}");
    let (ok, out, err) = run_bin(&["audit", "verify", "--dev", "--data-dir", data_dir]);
    assert!(
        ok && out.contains("checkpoints: 1 match the chain"),
        "{out}{err}"
    );
}
