//! The store at scale (issue 18): every inventory query served by an index, certificates
//! kept as DER, expired certificates deleted by retention (one replica at a time, paused
//! and resumed by operators, every batch audited).

use std::path::Path;

use canopy_issuer::audit::{AuditEvent, Outcome};
use canopy_issuer::store::{
    CertificateFilter, CertificateRecord, Cursor, Order, Store, StoreError, Write,
};
use serde_json::json;

use crate::common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A synthetic certificate row with the real schema: `n` makes the serial, SPIFFE ID and
/// requester unique; the DER is a stand-in (the store never parses what it stores).
fn synthetic(n: u64, not_after: i64) -> CertificateRecord {
    let der = format!("synthetic certificate {n}").into_bytes();
    CertificateRecord {
        serial: format!("{n:016x}"),
        spiffe_id: Some(format!("spiffe://{TD}/ns/n{}/sa/s{n}", n % 7)),
        subject: String::new(),
        dns_names: vec![],
        ip_addresses: vec![],
        not_before: not_after - 3600,
        not_after,
        issued_at: not_after - 3600,
        requester: format!("certificaterequest:ns/r{n}/uid-{n}"),
        auth_method: "kubernetes".into(),
        intermediate: "aws".into(),
        cluster: None,
        namespace: None,
        profile: "workload".into(),
        fingerprint: format!("{:064x}", n),
        der,
        revoked_at: None,
        revocation_reason: None,
        token_id: None,
    }
}

/// `record` with its `sign` audit entry, as the issuer writes it.
fn issued(record: CertificateRecord) -> Write {
    let event = AuditEvent::new(
        record.issued_at * 1000,
        record.requester.clone(),
        "sign",
        record.serial.clone(),
        Outcome::Ok,
        json!({"fingerprint": record.fingerprint, "not_after": record.not_after}),
    );
    Write::Issued(Box::new(record), event)
}

/// Records `records` as the issuer does: each with its `sign` audit entry.
async fn record_all(store: &Store, records: Vec<CertificateRecord>) {
    let writes: Vec<Write> = records.into_iter().map(issued).collect();
    for chunk in writes.chunks(500) {
        store.commit(chunk).await.unwrap();
    }
}

async fn open(url: &str) -> Store {
    let store = Store::connect(url, 2).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("store.db").display())
}

/// Each query the inventory, the cert-manager retry path, the CRL and retention make
/// reads the index built for it, in the order it returns rows: no table scan, no sort.
/// The query these replaced, `id > $1 AND ($2 IS NULL OR spiffe_id = $2) ... ORDER BY
/// id`, is planned by SQLite as `SEARCH certificates USING INTEGER PRIMARY KEY
/// (rowid>?)` whatever the filter: it walks the table (0.66 s at 2 M rows, measured on
/// the old code), and this test refuses it for naming no SPIFFE ID index.
#[test]
fn every_inventory_query_is_served_by_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    runtime().block_on(async {
        for url in [sqlite_url(dir.path()), pg.url.clone()] {
            let store = open(&url).await;
            let plans = store.query_plans().await.unwrap();
            assert!(plans.len() >= 10, "{plans:?}");
            for plan in &plans {
                assert!(
                    plan.uses_its_index(),
                    "{} query {:?} does not read its index ({:?}) in order:\n{}",
                    store.backend_name(),
                    plan.name,
                    plan.index,
                    plan.lines.join("\n")
                );
            }
            store.close().await;
        }
    });
}

/// Paging with a small limit returns every match exactly once, in the order the filter
/// gives (notAfter then id for expiry queries, issue order otherwise), across rows
/// that share a notAfter.
#[test]
fn pages_in_either_order_return_every_match_once() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open(&sqlite_url(dir.path())).await;
        let base = now() + 10_000;
        // notAfter goes down as ids go up, and every value is shared by three rows.
        let records: Vec<_> = (0..60u64)
            .map(|n| synthetic(n, base - (n as i64 / 3) * 60))
            .collect();
        record_all(&store, records).await;
        let cases = [
            (
                CertificateFilter {
                    expires_after: Some(base - 10 * 60),
                    ..Default::default()
                },
                Order::Expiry,
                30,
            ),
            (
                CertificateFilter {
                    expires_before: Some(base - 5 * 60),
                    ..Default::default()
                },
                Order::Expiry,
                42,
            ),
            (CertificateFilter::default(), Order::Issued, 60),
            (
                CertificateFilter {
                    spiffe_id: Some(format!("spiffe://{TD}/ns/n3/sa/s3")),
                    ..Default::default()
                },
                Order::Issued,
                1,
            ),
            (
                CertificateFilter {
                    requester: Some("certificaterequest:ns/r7/uid-7".into()),
                    expires_after: Some(base - 10_000),
                    revoked: Some(false),
                    ..Default::default()
                },
                Order::Issued,
                1,
            ),
        ];
        for (filter, order, expected) in cases {
            assert_eq!(filter.order(), order, "{filter:?}");
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let (page, next) = store.certificates(&filter, after, 4).await.unwrap();
                seen.extend(page.iter().map(|r| (r.not_after, r.serial.clone())));
                match next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen.len(), expected, "{filter:?}: {seen:?}");
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), expected, "a row came twice: {seen:?}");
            if order == Order::Expiry {
                assert!(
                    seen.windows(2).all(|w| w[0].0 <= w[1].0),
                    "not in notAfter order: {seen:?}"
                );
            } else {
                assert!(
                    seen.windows(2).all(|w| w[0].1 < w[1].1),
                    "not in issue order: {seen:?}"
                );
            }
        }
    });
}

/// A database written before certificates were stored as DER (schema of migrations
/// 1 and 2, PEM text) is converted when the new issuer migrates it: the certificate
/// reads back byte for byte, and SQLite keeps no PEM behind.
#[test]
fn certificates_stored_as_pem_before_are_converted_to_der() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    let cert = rcgen::generate_simple_self_signed(vec!["old.example".into()]).unwrap();
    let pem = cert.cert.pem();
    let der = cert.cert.der().to_vec();
    runtime().block_on(async {
        for (backend, url) in [("sqlite", sqlite_url(dir.path())), ("postgres", pg.url.clone())] {
            // The first two migrations only, as an older canopy-issuer left the database.
            let old = dir.path().join(format!("old-{backend}"));
            std::fs::create_dir_all(&old).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
            for entry in std::fs::read_dir(&source).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                if name.starts_with("0001") || name.starts_with("0002") {
                    std::fs::copy(&path, old.join(name)).unwrap();
                }
            }
            let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
            let insert = "INSERT INTO certificates (serial, subject, dns_names, ip_addresses, \
                 not_before, not_after, issued_at, requester, auth_method, intermediate, profile, \
                 fingerprint, certificate) VALUES ('0abc', '', '[]', '[]', 1, 2000000000, 1, 'old', \
                 'token', 'aws', 'workload', 'ff', $1)";
            if backend == "sqlite" {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("store.db"))
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                migrator.run(&pool).await.unwrap();
                sqlx::query(insert).bind(&pem).execute(&pool).await.unwrap();
                pool.close().await;
            } else {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                sqlx::query(insert).bind(&pem).execute(&pool).await.unwrap();
                pool.close().await;
            }
            let store = open(&url).await;
            let record = store.certificate("0abc").await.unwrap();
            assert_eq!(record.der, der, "{backend}: DER differs from the PEM's");
            assert_eq!(record.pem(), pem, "{backend}");
            store.close().await;
            if backend == "sqlite" {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let left: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE pem IS NOT NULL")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(left, 0, "PEM left behind after the conversion");
                pool.close().await;
            }
        }
    });
}

/// Rows stored before certificates named their `sign` entry (schema of migrations 1 to
/// 4) are linked to it when the new issuer migrates: the entry's seq, 0 for a row whose
/// entry is not stored; the `(action, target)` index that put every certificate on a
/// random page is gone, and so is SQLite's marker of rows to link.
#[test]
fn rows_stored_before_are_linked_to_their_sign_entries() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    runtime().block_on(async {
        for (backend, url) in [
            ("sqlite", sqlite_url(dir.path())),
            ("postgres", pg.url.clone()),
        ] {
            let old = dir.path().join(format!("old-{backend}"));
            std::fs::create_dir_all(&old).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            for entry in std::fs::read_dir(&source).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                if name.as_str() < "0005" {
                    std::fs::copy(&path, old.join(name)).unwrap();
                }
            }
            let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
            let statements = [
                "INSERT INTO certificates (serial, subject, dns_names, ip_addresses, not_before, \
                 not_after, issued_at, requester, auth_method, intermediate, profile, \
                 fingerprint, der) VALUES ('0a01', '', '[]', '[]', 1, 2000000000, 1, 'old', \
                 'token', 'aws', 'workload', 'ff', 'x'), ('0a02', '', '[]', '[]', 1, \
                 2000000000, 1, 'old', 'token', 'aws', 'workload', 'ff', 'x')",
                "INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, detail, \
                 prev_hash, hash) VALUES (7, 1, 'token:old', 'sign', '0a02', 'denied', '{}', \
                 'a', 'b'), (8, 1, 'token:old', 'sign', '0a01', 'ok', '{}', 'b', 'c')",
            ];
            macro_rules! old_database {
                ($pool:expr) => {{
                    let pool = $pool;
                    migrator.run(&pool).await.unwrap();
                    for sql in statements {
                        sqlx::query(sql).execute(&pool).await.unwrap();
                    }
                    pool.close().await;
                }};
            }
            if backend == "sqlite" {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("store.db"))
                    .create_if_missing(true);
                old_database!(sqlx::SqlitePool::connect_with(options).await.unwrap());
            } else {
                old_database!(sqlx::PgPool::connect(&url).await.unwrap());
            }
            let store = open(&url).await;
            let rows = store.certificate_bindings(&["0a01", "0a02"]).await.unwrap();
            let seq = |serial: &str| rows.iter().find(|r| r.serial == serial).unwrap().sign_seq;
            assert_eq!(seq("0a01"), Some(8), "{backend}: its ok sign entry");
            assert_eq!(seq("0a02"), Some(0), "{backend}: no ok sign entry stored");
            store.close().await;
            let indexes = if backend == "sqlite" {
                strings(&url, "SELECT name FROM sqlite_master WHERE type = 'index'").await
            } else {
                strings(&url, "SELECT indexname::text FROM pg_indexes").await
            };
            assert!(
                indexes.iter().any(|n| n == "certificates_spiffe_id"),
                "{backend}: {indexes:?}"
            );
            for gone in ["audit_log_action_target", "certificates_sign_seq_pending"] {
                assert!(
                    !indexes.iter().any(|n| n == gone),
                    "{backend}: {gone} left: {indexes:?}"
                );
            }
        }
    });
}

/// The one text column of `sql`'s rows, read from the database at `url` (SQLite or
/// PostgreSQL), outside any store.
async fn strings(url: &str, sql: &str) -> Vec<String> {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

/// Runs `sql` on the database at `url` (SQLite or PostgreSQL), outside any store.
async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Puts `record`'s SPIFFE ID on the deny list of the database at `url`, outside any store
/// (so no audit entry moves the head).
async fn deny(url: &str, record: &CertificateRecord) {
    let spiffe_id = record.spiffe_id.as_deref().unwrap();
    execute(
        url,
        &format!(
            "INSERT INTO denied_identities (spiffe_id, reason, created_at) \
             VALUES ('{spiffe_id}', 'compromised', 0)"
        ),
    )
    .await;
}

/// A group commit holds to the audit chain and to every rule whatever path it takes
/// (PostgreSQL commits in one statement while the head is the one it left last, else in
/// four round trips): after another replica appended, after a token was revoked and a
/// SPIFFE ID denied without an audit entry moving the head, nothing refused is stored,
/// every row names its own sign entry, and the chain links.
#[test]
fn group_commits_keep_the_chain_and_the_rules_whoever_moved_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    let t = now();
    runtime().block_on(async {
        for url in [sqlite_url(dir.path()), pg.url.clone()] {
            let a = open(&url).await;
            let b = open(&url).await;
            execute(
                &url,
                "INSERT INTO tokens (id, hash, policy, created_at) VALUES ('t1', 'h1', '{}', 0)",
            )
            .await;
            let with_token = |n| {
                let mut record = synthetic(n, t + 3600);
                record.auth_method = "token".into();
                record.requester = "token:t1".into();
                record.token_id = Some("t1".into());
                record
            };
            let backend = a.backend_name();
            a.commit(vec![issued(with_token(1))]).await.unwrap();
            b.commit(vec![issued(synthetic(2, t + 3600))])
                .await
                .unwrap();
            a.commit(vec![issued(with_token(3)), issued(synthetic(4, t + 3600))])
                .await
                .unwrap();
            execute(&url, "UPDATE tokens SET revoked_at = 1 WHERE id = 't1'").await;
            let refused = a.commit(vec![issued(with_token(5))]).await;
            assert!(
                matches!(refused, Err(StoreError::RevokedToken)),
                "{backend}: {refused:?}"
            );
            let denied = synthetic(6, t + 3600);
            deny(&url, &denied).await;
            let refused = a.commit(vec![issued(denied)]).await;
            assert!(
                matches!(refused, Err(StoreError::DeniedIdentity(_))),
                "{backend}: {refused:?}"
            );
            a.commit(vec![issued(synthetic(7, t + 3600))])
                .await
                .unwrap();

            let serials: Vec<String> = [1, 2, 3, 4, 5, 6, 7].map(|n| format!("{n:016x}")).into();
            let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
            let rows = a.certificate_bindings(&refs).await.unwrap();
            let mut stored: Vec<&str> = rows.iter().map(|r| r.serial.as_str()).collect();
            stored.sort_unstable();
            assert_eq!(stored, [&refs[..4], &refs[6..]].concat(), "{backend}");
            let entries = a.audit_entries(0, 100).await.unwrap();
            assert_eq!(entries.len(), 5, "{backend}: {entries:?}");
            for pair in entries.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq + 1, "{backend}");
                assert_eq!(
                    pair[1].prev_hash, pair[0].hash,
                    "{backend}: the chain breaks"
                );
            }
            assert_eq!(
                a.audit_head().await.unwrap(),
                (entries[4].seq, entries[4].hash.clone()),
                "{backend}"
            );
            for row in &rows {
                let entry = entries.iter().find(|e| Some(e.seq) == row.sign_seq);
                assert_eq!(
                    entry.map(|e| e.target.as_str()),
                    Some(row.serial.as_str()),
                    "{backend}: row {} names entry {:?}",
                    row.serial,
                    row.sign_seq
                );
            }
            a.close().await;
            b.close().await;
        }
    });
}

fn tidy_json(config: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["tidy", "--config", config, "--output", "json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_bin(&args);
    assert!(ok, "tidy {extra:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tidy printed no JSON ({e}): {out}"))
}

/// `tidy` deletes what expired longer ago than the safety buffer (revoked or not) and
/// nothing else; `--dry-run` counts the same rows and deletes none; each batch is an
/// audit entry, and the chain still verifies.
#[test]
fn tidy_deletes_only_past_the_safety_buffer_and_audits_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let configured = Configured::new(dir.path(), &url, "");
    let t = now();
    runtime().block_on(async {
        let store = open(&url).await;
        let mut records = Vec::new();
        // 25 expired 4 days ago (due), one of them revoked; 10 expired an hour ago
        // (inside the 72 h buffer); 10 live.
        records.extend((0..25).map(|n| synthetic(n, t - 4 * 86_400)));
        records.extend((100..110).map(|n| synthetic(n, t - 3600)));
        records.extend((200..210).map(|n| synthetic(n, t + 3600)));
        record_all(&store, records).await;
        let revoke = AuditEvent::new(
            t * 1000,
            "cli",
            "revoke",
            "0000000000000003",
            Outcome::Ok,
            json!({"not_after": t - 4 * 86_400}),
        );
        store
            .revoke("0000000000000003", Some("superseded"), t, revoke)
            .await
            .unwrap();
        store.close().await;
    });
    let dry = tidy_json(&configured.config, &["--dry-run"]);
    assert_eq!(dry["would_delete"], 25, "{dry}");
    assert_eq!(dry["deleted"], 0, "{dry}");
    assert_eq!(dry["certificates_stored"], 45, "{dry}");
    // Batches of 10: three batches, three audit entries.
    let config = std::fs::read_to_string(&configured.config).unwrap();
    std::fs::write(
        &configured.config,
        format!("{config}retention:\n  batch_size: 10\n  batch_pause_ms: 0\n"),
    )
    .unwrap();
    let done = tidy_json(&configured.config, &[]);
    assert_eq!(done["deleted"], 25, "{done}");
    assert_eq!(done["batches"], 3, "{done}");
    assert_eq!(done["certificates_stored"], 20, "{done}");
    let again = tidy_json(&configured.config, &[]);
    assert_eq!(again["deleted"], 0, "{again}");
    runtime().block_on(async {
        let store = open(&url).await;
        for n in (100..110).chain(200..210) {
            store.certificate(&format!("{n:016x}")).await.unwrap();
        }
        for n in 0..25u64 {
            assert!(
                store.certificate(&format!("{n:016x}")).await.is_err(),
                "{n} kept"
            );
        }
        let entries = store.audit_entries(0, 10_000).await.unwrap();
        let tidies: Vec<_> = entries.iter().filter(|e| e.action == "tidy").collect();
        assert_eq!(tidies.len(), 3, "{tidies:?}");
        let deleted: u64 = tidies
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["deleted"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(deleted, 25);
        store.close().await;
    });
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", &configured.config]);
    assert!(ok, "audit verify after tidy: {out}{err}");
}

fn metric(client: &Client, name: &str) -> Option<f64> {
    let text = client.get("/metrics", &[]).text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn stored(url: &str) -> i64 {
    let store = Store::connect(url, 1).await.unwrap();
    let (page, _) = store
        .certificates(&CertificateFilter::default(), None, 1000)
        .await
        .unwrap();
    store.close().await;
    page.iter().filter(|r| r.profile == "workload").count() as i64
}

/// When the retention lease held by a `serve` expires, in ms: every pass renews it.
async fn lease_expires_at_ms(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let at = sqlx::query_scalar("SELECT expires_at_ms FROM store_leases WHERE name = $1")
        .bind(canopy_issuer::retention::LEASE)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    at
}

/// `serve` deletes expired certificates on its own every interval; `tidy --pause` stops
/// that in every replica (expired rows stay) and `--resume` lets it run again. With a
/// steady stream of expiring rows the count stays flat instead of growing.
#[test]
fn background_retention_pauses_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let configured = Configured::new(dir.path(), &url, "");
    let config = std::fs::read_to_string(&configured.config).unwrap();
    std::fs::write(
        &configured.config,
        format!("{config}retention:\n  interval: 1s\n  safety_buffer: 1h\n"),
    )
    .unwrap();
    let rt = runtime();
    let t = now();
    let (server, client) = configured.serve(dir.path());
    let add = |from: u64| {
        rt.block_on(async {
            let store = Store::connect(&url, 1).await.unwrap();
            record_all(
                &store,
                (from..from + 20).map(|n| synthetic(n, t - 7200)).collect(),
            )
            .await;
            store.close().await;
        })
    };
    add(0);
    wait_for(
        30,
        || rt.block_on(stored(&url)) == 0,
        "the background pass to delete 20 expired rows",
    );
    assert_eq!(
        metric(&client, "canopy_retention_deleted_certificates_total"),
        Some(20.0)
    );

    let paused = tidy_json(&configured.config, &["--pause"]);
    assert_eq!(paused["retention"], "paused", "{paused}");
    wait_for(
        30,
        || metric(&client, "canopy_retention_paused") == Some(1.0),
        "a pass to see the pause",
    );
    add(100);
    let passes = || metric(&client, "canopy_retention_pass_duration_seconds_count");
    let before = passes();
    // Two passes that have seen the pause after the rows were added: every pass, paused or
    // not, first renews the retention lease, so its expiry moves on twice.
    let lease_expiry = || rt.block_on(lease_expires_at_ms(&url));
    let mut last = lease_expiry();
    let mut renewals = 0;
    wait_for(
        30,
        || {
            let now = lease_expiry();
            if now > last {
                renewals += 1;
                last = now;
            }
            renewals >= 2
        },
        "two retention passes after the rows were added",
    );
    assert_eq!(passes(), before, "a pass ran while paused");
    assert_eq!(
        rt.block_on(stored(&url)),
        20,
        "paused retention deleted rows"
    );

    let resumed = tidy_json(&configured.config, &["--resume"]);
    assert_eq!(resumed["retention"], "running", "{resumed}");
    wait_for(
        30,
        || rt.block_on(stored(&url)) == 0,
        "the resumed pass to delete the rows",
    );
    assert_eq!(metric(&client, "canopy_retention_paused"), Some(0.0));

    // A steady stream: rows keep expiring, the count does not grow.
    for round in 0..3u64 {
        add(1000 + round * 100);
        wait_for(
            30,
            || rt.block_on(stored(&url)) == 0,
            "each round to be tidied",
        );
    }
    assert_eq!(
        metric(&client, "canopy_retention_deleted_certificates_total"),
        Some(100.0)
    );
    drop(server);
}

/// With two replicas on one PostgreSQL, one holds the retention lease and deletes; the
/// other deletes nothing. When the holder dies, the other takes over within the lease.
#[test]
fn one_replica_tidies_and_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    let configured = Configured::new(dir.path(), &pg.url, "");
    let config = std::fs::read_to_string(&configured.config).unwrap();
    std::fs::write(
        &configured.config,
        format!("{config}retention:\n  interval: 1s\n  safety_buffer: 1h\n"),
    )
    .unwrap();
    let rt = runtime();
    let t = now();
    let add = |from: u64| {
        rt.block_on(async {
            let store = Store::connect(&pg.url, 1).await.unwrap();
            record_all(
                &store,
                (from..from + 30).map(|n| synthetic(n, t - 7200)).collect(),
            )
            .await;
            store.close().await;
        })
    };
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let (mut a, a_client) = configured.serve(&a_dir);
    let (mut b, b_client) = configured.serve(&b_dir);
    let deleted =
        |c: &Client| metric(c, "canopy_retention_deleted_certificates_total").unwrap_or(0.0);
    for round in 0..3 {
        add(round * 100);
        wait_for(
            30,
            || rt.block_on(stored(&pg.url)) == 0,
            "the rows to be tidied",
        );
    }
    let (da, db) = (deleted(&a_client), deleted(&b_client));
    assert_eq!(da + db, 90.0, "a {da}, b {db}");
    assert!(
        da == 0.0 || db == 0.0,
        "both replicas deleted: a {da}, b {db}"
    );
    let (holder, mut standby, standby_client) = if da > 0.0 {
        (&mut a, b, b_client)
    } else {
        (&mut b, a, a_client)
    };
    holder.kill();
    add(1000);
    wait_for(
        30,
        || rt.block_on(stored(&pg.url)) == 0,
        "the standby to take over and tidy",
    );
    assert_eq!(deleted(&standby_client), 30.0);
    standby.kill();
}

/// With `audit.retention` set, the same background loop archives old audit entries
/// (up to a signed checkpoint) and prunes them; `audit verify` then passes from the
/// checkpoint and, given the archive, from genesis.
#[test]
fn background_retention_archives_and_prunes_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let configured = Configured::new(dir.path(), &url, "");
    let key = dir.path().join("checkpoint-key.pem");
    let (ok, out) = openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let config = std::fs::read_to_string(&configured.config).unwrap();
    std::fs::write(
        &configured.config,
        format!(
            "{config}retention:\n  interval: 1s\naudit:\n  checkpoint_key: {}\n  checkpoint_interval: 1s\n  archive_dir: {}\n  retention: 1s\n",
            key.display(),
            archive.display()
        ),
    )
    .unwrap();
    let rt = runtime();
    let (server, _client) = configured.serve(dir.path());
    let seq_one_stored = || {
        rt.block_on(async {
            let store = Store::connect(&url, 1).await.unwrap();
            let entries = store.audit_entries(0, 1).await.unwrap();
            store.close().await;
            entries.first().is_some_and(|e| e.seq == 1)
        })
    };
    let segments = || -> Vec<String> {
        std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    wait_for(
        60,
        || !seq_one_stored() && segments().iter().any(|s| s.starts_with("audit-1-")),
        "the first audit entries to be archived, then pruned",
    );
    assert!(
        segments().iter().all(|s| s.ends_with(".jsonl")),
        "{:?}",
        segments()
    );
    let archive_arg = archive.to_str().unwrap();
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", &configured.config]);
    assert!(ok, "verify from the checkpoint: {out}{err}");
    let (ok, out, err) = run_bin(&[
        "audit",
        "verify",
        "--archive",
        archive_arg,
        "--config",
        &configured.config,
    ]);
    assert!(ok, "verify across the archive: {out}{err}");
    drop(server);
}

/// The recorder checkpoints SQLite's write-ahead log behind the writer, so no commit
/// does it: certificates it recorded reach the database file itself within moments,
/// while the log stays far below the 200 MB at which a commit would checkpoint. Read
/// here from a copy of the database file alone (without its `-wal`), which holds only
/// what was checkpointed. (Before the checkpointer, these 40 certificates stayed in the
/// log until a commit crossed 4 MB, and the copy held none.)
#[test]
fn the_recorder_checkpoints_the_write_ahead_log_behind_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open(&sqlite_url(dir.path())).await;
        let recorder = canopy_issuer::recorder::Recorder::start(store.clone());
        let expires = now() + 3600;
        for record in (0..40u64).map(|n| synthetic(n, expires)) {
            recorder.record(issued(record)).await.unwrap();
        }
        let copy = dir.path().join("copy.db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            for stale in ["copy.db-wal", "copy.db-shm"] {
                let _ = std::fs::remove_file(dir.path().join(stale));
            }
            std::fs::copy(dir.path().join("store.db"), &copy).unwrap();
            // A copy taken while a checkpoint writes may be torn: counted as not there yet.
            let in_file = rows_in(&copy).await.unwrap_or(-1);
            if in_file == 40 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "after 10 s the database file alone holds {in_file} of the 40 certificates \
                 (-1: not even the schema; the log was never checkpointed)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        store.close().await;
    });
}

/// Certificates in the SQLite file at `path`, or why it cannot be read.
async fn rows_in(path: &Path) -> Result<i64, sqlx::Error> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await?;
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(&pool)
        .await;
    pool.close().await;
    count
}

/// One bad write in a group commit fails alone: 64 certificates recorded at once (so
/// they queue behind each other and are committed in batches), one of them under a
/// serial stored before and one for a denied SPIFFE ID. Those two hear why; the other 62
/// are stored and answered Ok. On SQLite the writer thread gathers the batches, on
/// PostgreSQL the recorder's task: both are covered.
#[test]
fn one_bad_write_in_a_group_commit_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDb::create();
    let t = now();
    runtime().block_on(async {
        for url in [sqlite_url(dir.path()), pg.url.clone()] {
            let store = open(&url).await;
            let backend = store.backend_name();
            store
                .commit(vec![issued(synthetic(1000, t + 3600))])
                .await
                .unwrap();
            let denied = synthetic(2000, t + 3600);
            deny(&url, &denied).await;
            let recorder = canopy_issuer::recorder::Recorder::start(store.clone());
            let mut records: Vec<CertificateRecord> =
                (0..62).map(|n| synthetic(n, t + 3600)).collect();
            records.insert(20, synthetic(1000, t + 3600));
            records.insert(40, denied);
            let results =
                futures::future::join_all(records.into_iter().map(|r| recorder.record(issued(r))))
                    .await;
            for (i, result) in results.iter().enumerate() {
                match i {
                    20 => assert!(
                        matches!(result, Err(StoreError::Duplicate(_))),
                        "{backend}: {result:?}"
                    ),
                    40 => assert!(
                        matches!(result, Err(StoreError::DeniedIdentity(_))),
                        "{backend}: {result:?}"
                    ),
                    _ => assert!(result.is_ok(), "{backend}: write {i}: {result:?}"),
                }
            }
            let stored = strings(&url, "SELECT serial FROM certificates").await;
            assert_eq!(stored.len(), 63, "{backend}: {stored:?}");
            drop(recorder);
            store.close().await;
        }
    });
}
