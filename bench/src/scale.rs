//! `canopy-bench scale`: the store after a year of short-lived certificates. For SQLite
//! and PostgreSQL: signing on an empty store, then the same store filled with N
//! certificate rows (and N audit entries), then signing while a tidy deletes the
//! expired ones; with startup time, the p99 of each inventory query and the bytes a
//! stored certificate takes.
//!
//! The N rows are synthetic, written by the database itself (a recursive CTE on
//! SQLite, `generate_series` on PostgreSQL) into the issuer's real schema and
//! indexes: 10,000 workloads in 100 namespaces, 1 h certificates spread over the last
//! 72 h, 0.1 % revoked, a DER the length of the certificates the issuer signed in the
//! empty phase (random bytes), a `sign` audit entry each (random hashes: the size and
//! the indexes of a real log, not a chain `audit verify` accepts). `--due` of them
//! expired more than the 72 h safety buffer ago: what the tidy deletes.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{ConnectOptions, Connection};

use crate::canopy_side::{self, BenchCa, TRUST_DOMAIN};
use crate::load::{self, Load, Outcome};
use crate::postgres::FreshDatabase;
use crate::workload;

/// `canopy-bench scale` options.
#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Certificate rows to fill the store with: 10M, 500k, 2000000.
    #[arg(long, default_value = "10M", value_parser = parse_count)]
    rows: u64,
    /// Of those, rows expired past the safety buffer (default: a tenth, at most 1M).
    #[arg(long, value_parser = parse_count)]
    due: Option<u64>,
    /// How long each sign measurement runs.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests per inventory query shape.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// 20,000 rows, a second per measurement: checks that everything works.
    #[arg(long)]
    smoke: bool,
    /// The canopy-issuer binary (default: next to this one).
    #[arg(long)]
    issuer: Option<std::path::PathBuf>,
    /// PostgreSQL to make a fresh database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
    /// Skip SQLite (to measure PostgreSQL alone).
    #[arg(long, conflicts_with = "no_postgres")]
    no_sqlite: bool,
    /// Folder for the databases (default: a new one under the temp folder).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

/// `10M`, `500k`, `2000000`.
fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('M' | 'm') => (&t[..t.len() - 1], 1_000_000.0),
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000.0),
        _ => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a count like 10M, 500k or 20000"))?;
    let n = (value * scale).round();
    if !(1.0..=1e9).contains(&n) {
        return Err(format!("{text:?}: between 1 and 1000M, please"));
    }
    Ok(n as u64)
}

/// One query shape and the paths it is asked with.
struct QueryShape {
    name: &'static str,
    paths: Vec<String>,
}

/// What one phase measured.
struct Phase {
    startup: Duration,
    sign: Outcome,
    queries: Vec<(&'static str, f64, f64)>,
}

struct TidyRun {
    deleted: u64,
    seconds: f64,
    sign: Outcome,
}

struct BackendReport {
    key: &'static str,
    storage: String,
    empty: Phase,
    full: Phase,
    tidy: TidyRun,
    bytes_per_certificate: f64,
    database_bytes: i64,
    fill_seconds: f64,
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let (rows, duration, queries) = if args.smoke {
        (20_000, Duration::from_secs(1), 5)
    } else {
        (args.rows, args.duration, args.queries.max(1))
    };
    let due = args.due.unwrap_or((rows / 10).min(1_000_000)).min(rows - 1);
    let issuer = match &args.issuer {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no folder")?
            .join("canopy-issuer"),
    };
    if !issuer.exists() {
        bail!("{} not found: pass --issuer", issuer.display());
    }
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new().prefix("scale-").tempdir_in(dir)?
        }
        None => tempfile::Builder::new()
            .prefix("canopy-bench-scale-")
            .tempdir()?,
    };
    let csrs = workload::generate(if args.smoke { 16 } else { 256 }, TRUST_DOMAIN)?;
    let bodies = Arc::new(workload::render(r#"{"csr":"{csr}","ttl":"1h"}"#, &csrs));
    let load = Load {
        connections: args.connections.max(1),
        duration,
        bodies,
    };
    let ca = canopy_side::make_ca()?;
    let setup = Setup {
        issuer: &issuer,
        ca: &ca,
        load: &load,
        rows,
        due,
        queries,
    };
    let mut reports = Vec::new();
    let mut notes = Vec::new();

    if args.no_sqlite {
        notes.push("SQLite skipped (--no-sqlite)".to_string());
    } else {
        let dir = work.path().join("sqlite");
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite:{}", dir.join("issuer.db").display());
        eprintln!("canopy-bench scale: SQLite, {rows} rows ({due} due for tidy)");
        let storage = "SQLite file, WAL, synchronous=FULL";
        reports.push(setup.backend("sqlite", storage, &dir, &url).await?);
        // The SQLite file is large at 10M rows: gone before PostgreSQL fills its own.
        let _ = std::fs::remove_dir_all(&dir);
    }

    if args.no_postgres {
        notes.push("PostgreSQL skipped (--no-postgres)".to_string());
    } else {
        match FreshDatabase::create(&args.postgres).await {
            Ok(db) => {
                eprintln!("canopy-bench scale: PostgreSQL, {rows} rows ({due} due for tidy)");
                let dir = work.path().join("postgres");
                std::fs::create_dir_all(&dir)?;
                let storage = format!("PostgreSQL local ({})", db.durability);
                let result = setup.backend("postgres", &storage, &dir, &db.url).await;
                let dropped = db.drop_database().await;
                reports.push(result?);
                dropped?;
            }
            Err(e) => notes.push(format!("PostgreSQL skipped: {e:#}")),
        }
    }
    print!("{}", render(&setup, &reports, &notes, args.smoke));
    let failed = reports.iter().any(|r| {
        [&r.empty.sign, &r.full.sign, &r.tidy.sign]
            .iter()
            .any(|o| o.errors > 0 || o.ok == 0)
    });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Unmeasured signing before each phase's measurement.
const WARM_UP: Duration = Duration::from_secs(5);

struct Setup<'a> {
    issuer: &'a Path,
    ca: &'a BenchCa,
    load: &'a Load,
    rows: u64,
    due: u64,
    queries: usize,
}

impl Setup<'_> {
    async fn backend(
        &self,
        key: &'static str,
        storage: &str,
        dir: &Path,
        url: &str,
    ) -> anyhow::Result<BackendReport> {
        // Retention off while measuring: the tidy phase runs it on purpose.
        let files = canopy_side::write_files(dir, self.ca, url, "retention: { enabled: false }\n")?;
        let token = canopy_side::create_token(self.issuer, &files)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();

        eprintln!("  empty store: signing for {:?}", self.load.duration);
        let empty = self.phase(&files, &token, dir, now).await?;
        let der_len = average_der_length(url).await?;

        eprintln!("  filling {} rows and as many audit entries", self.rows);
        let started = Instant::now();
        fill(url, self.rows, self.due, der_len, now).await?;
        let fill_seconds = started.elapsed().as_secs_f64();
        eprintln!("  filled in {fill_seconds:.0} s");

        eprintln!("  {} rows: signing for {:?}", self.rows, self.load.duration);
        let full = self.phase(&files, &token, dir, now).await?;
        let (bytes_per_certificate, database_bytes) = sizes(url).await?;

        eprintln!(
            "  signing while `canopy-issuer tidy` deletes {} rows",
            self.due
        );
        let tidy = self.tidy(&files, &token, dir).await?;
        Ok(BackendReport {
            key,
            storage: storage.to_string(),
            empty,
            full,
            tidy,
            bytes_per_certificate,
            database_bytes,
            fill_seconds,
        })
    }

    /// Starts the issuer (timing it), signs under load, then times each query shape.
    async fn phase(
        &self,
        files: &canopy_side::IssuerFiles,
        token: &str,
        dir: &Path,
        now: i64,
    ) -> anyhow::Result<Phase> {
        let started = Instant::now();
        let (server, endpoint) =
            canopy_side::start(self.issuer, files, token, &dir.join("issuer.log"))?;
        let startup = started.elapsed();
        // Unmeasured signing first, the same for every phase: a store that grew to N
        // rows over months has its indexes' hot pages cached; one just filled by the
        // benchmark does not yet.
        let warm = Load {
            duration: WARM_UP,
            ..self.load.clone()
        };
        let _ = load::drive(&endpoint, &warm).await;
        let sign = load::drive(&endpoint, self.load).await;
        let mut queries = Vec::new();
        for shape in query_shapes(self.rows, self.queries, now) {
            let mut latencies = endpoint.get_each(&shape.paths).await?;
            latencies.sort_unstable();
            let at = |p: f64| {
                let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
                f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
            };
            queries.push((shape.name, at(50.0), at(99.0)));
        }
        server.stop()?;
        Ok(Phase {
            startup,
            sign,
            queries,
        })
    }

    /// Signs in 2 s windows for as long as a `canopy-issuer tidy` runs beside the issuer.
    async fn tidy(
        &self,
        files: &canopy_side::IssuerFiles,
        token: &str,
        dir: &Path,
    ) -> anyhow::Result<TidyRun> {
        let (server, endpoint) =
            canopy_side::start(self.issuer, files, token, &dir.join("issuer.log"))?;
        let started = Instant::now();
        let mut tidy = Command::new(self.issuer)
            .args(["tidy", "--output", "json", "--config"])
            .arg(&files.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting canopy-issuer tidy")?;
        let window = Load {
            duration: Duration::from_secs(2).min(self.load.duration),
            ..self.load.clone()
        };
        let mut sign = Outcome::default();
        loop {
            sign.append(load::drive(&endpoint, &window).await);
            if tidy.try_wait()?.is_some() {
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let output = tidy.wait_with_output()?;
        server.stop()?;
        if !output.status.success() {
            bail!("canopy-issuer tidy failed ({})", output.status);
        }
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("canopy-issuer tidy printed no JSON")?;
        Ok(TidyRun {
            deleted: report["deleted"].as_u64().unwrap_or(0),
            seconds: report["duration_ms"]
                .as_f64()
                .map_or(seconds, |ms| ms / 1000.0),
            sign,
        })
    }
}

/// Each inventory query as the API is asked it, with values spread over the rows.
fn query_shapes(rows: u64, count: usize, now: i64) -> Vec<QueryShape> {
    let pick = |k: usize| 1 + (k as u64 * 7_919_993) % rows;
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let paths = |f: &dyn Fn(usize) -> String| (0..count).map(f).collect::<Vec<_>>();
    vec![
        QueryShape {
            name: "by serial",
            paths: paths(&|k| format!("/v1/certificates?serial=7f{:030x}", pick(k))),
        },
        QueryShape {
            name: "by SPIFFE ID (first 100)",
            paths: paths(&|k| {
                let i = pick(k);
                format!(
                    "/v1/certificates?limit=100&spiffe_id=spiffe://{TRUST_DOMAIN}/ns/ns{}/sa/sa{}",
                    i % 100,
                    i % 10_000
                )
            }),
        },
        QueryShape {
            name: "by requester",
            paths: paths(&|k| {
                let i = pick(k);
                format!(
                    "/v1/certificates?requester=certificaterequest:ns{}/req{i}/uid-{i}",
                    i % 100
                )
            }),
        },
        QueryShape {
            name: "revoked (first 100)",
            paths: paths(&|_| "/v1/certificates?limit=100&revoked=true".to_string()),
        },
        QueryShape {
            name: "expired before (first 100)",
            paths: paths(&|k| {
                format!(
                    "/v1/certificates?limit=100&expires_before={}",
                    rfc3339(now - 3600 * (1 + (k as i64 % 70)))
                )
            }),
        },
        QueryShape {
            name: "expiring after (first 100)",
            paths: paths(&|k| {
                format!(
                    "/v1/certificates?limit=100&expires_after={}",
                    rfc3339(now - 3600 * (k as i64 % 70))
                )
            }),
        },
        QueryShape {
            name: "all, issue order (first 100)",
            paths: paths(&|_| "/v1/certificates?limit=100".to_string()),
        },
    ]
}

async fn average_der_length(url: &str) -> anyhow::Result<i64> {
    let sql =
        "SELECT CAST(AVG(LENGTH(der)) AS BIGINT) FROM certificates WHERE profile = 'workload'";
    let len: Option<i64> = if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query_scalar(sql).fetch_one(&mut c).await?
    } else {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query_scalar(sql).fetch_one(&mut c).await?
    };
    Ok(len.unwrap_or(560))
}

/// Rows a fill statement writes (one transaction each; progress between them).
const FILL_CHUNK: u64 = 500_000;

/// Writes `rows` certificates (the first `due` expired 100 h ago and more, the rest
/// with notAfter spread over the 72 h before and 1 h after `now`) and their `sign`
/// audit entries, then moves the audit head past them.
async fn fill(url: &str, rows: u64, due: u64, der_len: i64, now: i64) -> anyhow::Result<()> {
    // notAfter of row i, in SQL: due rows 100 h ago and older, the rest spread evenly.
    let not_after = format!(
        "CASE WHEN i <= {due} THEN {old} - ({due} - i) \
         ELSE {start} + ((i - {due}) * {span}) / {rest} END",
        old = now - 100 * 3600,
        start = now - 71 * 3600,
        span = 72 * 3600,
        rest = rows - due,
    );
    let sqlite = url.starts_with("sqlite:");
    let (series, serial, hex_blob, spiffe, requester, namespace) = if sqlite {
        (
            "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)",
            "printf('7f%030x', i)",
            format!("randomblob({der_len})"),
            format!("printf('spiffe://{TRUST_DOMAIN}/ns/ns%d/sa/sa%d', i % 100, i % 10000)"),
            "printf('certificaterequest:ns%d/req%d/uid-%d', i % 100, i, i)".to_string(),
            "printf('ns%d', i % 100)",
        )
    } else {
        (
            "WITH n(i) AS (SELECT generate_series($1::bigint, $2::bigint))",
            "'7f' || lpad(to_hex(i), 30, '0')",
            format!(
                "substring(decode(repeat(md5(i::text), {}), 'hex') from 1 for {der_len})",
                der_len / 16 + 1
            ),
            format!("'spiffe://{TRUST_DOMAIN}/ns/ns' || (i % 100) || '/sa/sa' || (i % 10000)"),
            "'certificaterequest:ns' || (i % 100) || '/req' || i || '/uid-' || i".to_string(),
            "'ns' || (i % 100)",
        )
    };
    let fingerprint = if sqlite {
        "lower(hex(randomblob(32)))"
    } else {
        "md5(i::text) || md5((i + 1)::text)"
    };
    let certificates = format!(
        "{series} INSERT INTO certificates (serial, spiffe_id, subject, dns_names, ip_addresses, \
         not_before, not_after, issued_at, requester, auth_method, intermediate, namespace, \
         profile, fingerprint, der, revoked_at, revocation_reason, sign_seq) \
         SELECT {serial}, {spiffe}, '', '[]', '[]', na - 3600, na, na - 3600, {requester}, \
         'kubernetes', 'bench', {namespace}, 'workload', {fingerprint}, {hex_blob}, \
         CASE WHEN i % 1000 = 0 THEN na - 1800 END, \
         CASE WHEN i % 1000 = 0 THEN 'superseded' END, $3 + i \
         FROM (SELECT i, {not_after} AS na FROM n) AS s"
    );
    let detail = if sqlite {
        "printf('{\"profile\":\"workload\",\"intermediate\":\"bench\",\"not_after\":%d,\"fingerprint\":\"%064x\"}', na, i)"
    } else {
        "'{\"profile\":\"workload\",\"intermediate\":\"bench\",\"not_after\":' || na || ',\"fingerprint\":\"' || md5(i::text) || md5((i + 1)::text) || '\"}'"
    };
    let audit = format!(
        "{series} INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, detail, \
         prev_hash, hash) \
         SELECT $3 + i, (na - 3600) * 1000, 'token:bench', 'sign', {serial}, 'ok', {detail}, \
         {fingerprint}, {fingerprint} FROM (SELECT i, {not_after} AS na FROM n) AS s"
    );
    let head = "UPDATE audit_head SET seq = $1, \
                hash = (SELECT hash FROM audit_log WHERE seq = $1) WHERE id = 1";
    macro_rules! run_fill {
        ($conn:expr) => {{
            let base: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
                .fetch_one(&mut $conn)
                .await?;
            let mut from = 1u64;
            let started = Instant::now();
            while from <= rows {
                let to = (from + FILL_CHUNK - 1).min(rows);
                let mut tx = $conn.begin().await?;
                sqlx::query(&certificates)
                    .bind(from as i64)
                    .bind(to as i64)
                    .bind(base)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("filling certificates {from}..{to}"))?;
                sqlx::query(&audit)
                    .bind(from as i64)
                    .bind(to as i64)
                    .bind(base)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("filling audit entries {from}..{to}"))?;
                tx.commit().await?;
                eprintln!(
                    "    {to} / {rows} rows ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
                from = to + 1;
            }
            sqlx::query(head)
                .bind(base + rows as i64)
                .execute(&mut $conn)
                .await?;
        }};
    }
    if sqlite {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
        // The fill is the benchmark's setup, not the issuer: no fsync per chunk.
        let mut conn = options
            .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
            .connect()
            .await?;
        sqlx::query("PRAGMA cache_size = -262144")
            .execute(&mut conn)
            .await?;
        run_fill!(conn);
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        run_fill!(conn);
        // What autovacuum does on its own a little later.
        sqlx::query("VACUUM ANALYZE certificates")
            .execute(&mut conn)
            .await?;
        sqlx::query("VACUUM ANALYZE audit_log")
            .execute(&mut conn)
            .await?;
        // The fill and the vacuum dirtied every page: write them out now, or the
        // checkpoint that follows lands in the measurement.
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        conn.close().await?;
    }
    // Same for the kernel's dirty pages (the SQLite fill ran without fsync).
    let synced = std::process::Command::new("sync").status()?;
    anyhow::ensure!(synced.success(), "sync failed after the fill");
    Ok(())
}

/// Bytes per stored certificate (the certificates table and its indexes over its
/// rows) and the whole database's bytes.
async fn sizes(url: &str) -> anyhow::Result<(f64, i64)> {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        let table: i64 = sqlx::query_scalar(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'certificates' OR name IN \
             (SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'certificates')",
        )
        .fetch_one(&mut c)
        .await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
            .fetch_one(&mut c)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut c)
        .await?;
        Ok((table as f64 / rows.max(1) as f64, total))
    } else {
        let mut c = sqlx::PgConnection::connect(url).await?;
        let (table, total): (i64, i64) = sqlx::query_as(
            "SELECT pg_total_relation_size('certificates'), pg_database_size(current_database())",
        )
        .fetch_one(&mut c)
        .await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
            .fetch_one(&mut c)
            .await?;
        Ok((table as f64 / rows.max(1) as f64, total))
    }
}

fn render(setup: &Setup<'_>, reports: &[BackendReport], notes: &[String], smoke: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "canopy-bench scale{}: {} stored certificates ({} expired past the safety buffer), \
         {} connections, {:?} per sign measurement; {} cores\n",
        if smoke {
            " --smoke (numbers mean nothing)"
        } else {
            ""
        },
        setup.rows,
        setup.due,
        setup.load.connections,
        setup.load.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for r in reports {
        let normal = r.full.sign.rate();
        let _ = writeln!(
            out,
            "{} ({}), filled in {:.0} s",
            r.key, r.storage, r.fill_seconds
        );
        let sign = |label: &str, o: &Outcome, extra: String| {
            format!(
                "  {label:<36} {:>8.1}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}{extra}\n",
                o.rate(),
                o.percentile_ms(50.0),
                o.percentile_ms(99.0),
                o.errors
            )
        };
        out.push_str(&sign("sign, empty store", &r.empty.sign, String::new()));
        out.push_str(&sign(
            &format!("sign, {} stored", setup.rows),
            &r.full.sign,
            format!(
                "  ({:.0} % of empty, p99 {:.2}x)",
                100.0 * normal / r.empty.sign.rate(),
                r.full.sign.percentile_ms(99.0) / r.empty.sign.percentile_ms(99.0)
            ),
        ));
        out.push_str(&sign(
            &format!("sign during tidy of {}", r.tidy.deleted),
            &r.tidy.sign,
            format!(
                "  ({:.0} % of normal; tidy took {:.1} s)",
                100.0 * r.tidy.sign.rate() / normal,
                r.tidy.seconds
            ),
        ));
        let _ = writeln!(
            out,
            "  startup: empty {:.2} s, {} stored {:.2} s",
            r.empty.startup.as_secs_f64(),
            setup.rows,
            r.full.startup.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  bytes per stored certificate (table + indexes): {:.0}; database {:.2} GB",
            r.bytes_per_certificate,
            r.database_bytes as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "  inventory queries ({} each), p50 / p99 ms:",
            setup.queries
        );
        for ((name, p50, p99), (_, e50, e99)) in r.full.queries.iter().zip(&r.empty.queries) {
            let _ = writeln!(
                out,
                "    {name:<32} {p50:>7.2} / {p99:>7.2}   (empty store {e50:.2} / {e99:.2})"
            );
        }
        for (phase, o) in [
            ("empty", &r.empty.sign),
            ("full", &r.full.sign),
            ("tidy", &r.tidy.sign),
        ] {
            let _ = writeln!(
                out,
                "result system=scale-{} phase={phase} certs_per_sec={:.1} p50_ms={:.2} p99_ms={:.2} ok={} errors={}",
                r.key,
                o.rate(),
                o.percentile_ms(50.0),
                o.percentile_ms(99.0),
                o.ok,
                o.errors
            );
        }
        let worst = r.full.queries.iter().map(|q| q.2).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "result system=scale-{} startup_s={:.2} worst_query_p99_ms={worst:.2} bytes_per_cert={:.0} tidy_deleted={}\n",
            r.key,
            r.full.startup.as_secs_f64(),
            r.bytes_per_certificate,
            r.tidy.deleted
        );
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts() {
        assert_eq!(parse_count("10M"), Ok(10_000_000));
        assert_eq!(parse_count("500k"), Ok(500_000));
        assert_eq!(parse_count("2.5M"), Ok(2_500_000));
        assert_eq!(parse_count("20000"), Ok(20_000));
        assert!(parse_count("lots").is_err());
        assert!(parse_count("0").is_err());
    }
}
