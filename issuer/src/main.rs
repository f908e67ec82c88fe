//! `canopy-issuer`: serve the API, make tokens, migrate and verify the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use canopy_issuer::config::Config;
use canopy_issuer::dev;
use canopy_issuer::serve::Service;
use canopy_issuer::store::Store;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "canopy-issuer", version, about = "canopy's online issuer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTPS API.
    Serve {
        #[command(flatten)]
        source: Source,
        /// Listen address (overrides the config; `--dev` default 127.0.0.1:8443).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Revoke any certificate canopy recorded, by serial (workload, server, mesh CA,
    /// listener): the operator's way, straight on the database.
    Revoke {
        /// Serial, hex.
        serial: String,
        /// Reason (unspecified, key-compromise, ca-compromise, affiliation-changed,
        /// superseded, cessation-of-operation).
        #[arg(long)]
        reason: Option<String>,
        /// Also put its SPIFFE ID on the deny list, so certificates renewed from it
        /// cannot renew again.
        #[arg(long)]
        deny_renewal: bool,
        #[command(flatten)]
        source: Source,
    },
    /// The deny list: SPIFFE IDs nothing is issued for (renewal included).
    Deny {
        #[command(subcommand)]
        command: DenyCommand,
    },
    /// Apply the embedded database migrations.
    Migrate {
        #[command(flatten)]
        source: Source,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Istio `cacerts` in the configured clusters.
    Cacerts {
        #[command(subcommand)]
        command: CacertsCommand,
    },
    /// Print the CRDs of our Issuer and ClusterIssuer (or write them into a folder).
    Crds {
        /// Folder to write one file per CRD into (e.g. charts/canopy-issuer/crds).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show, per cluster: roots trusted, mesh CA serial and expiry, rotation phase, problems.
    Status {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete certificates expired longer than the safety buffer now (what `serve`
    /// does every `retention.interval`), or pause and resume that for every replica.
    Tidy {
        /// Count what would be deleted; change nothing.
        #[arg(long, conflicts_with_all = ["pause", "resume"])]
        dry_run: bool,
        /// Keep certificates this long after notAfter (overrides
        /// `retention.safety_buffer`, e.g. 72h).
        #[arg(long)]
        safety_buffer: Option<canopy::ttl::Ttl>,
        /// Stop retention in every replica until `--resume`.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Let retention run again.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
enum CacertsCommand {
    /// Write a valid `cacerts` into every configured cluster (the Helm bootstrap Job).
    /// Exits 0 when every cluster's Secret is valid, 1 with a message per failed cluster.
    /// Safe to re-run and to run while istiod is up: a correct Secret is not rewritten.
    Sync {
        /// Run one pass and exit (`serve` keeps cacerts in sync continuously).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        source: Source,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token bound to a policy; it is printed once and stored hashed.
    Create {
        /// Policy the token grants.
        #[arg(long)]
        policy: String,
        /// Lifetime (default `tokens.default_ttl`, 30d; at most `tokens.max_ttl`, 365d).
        #[arg(long)]
        ttl: Option<canopy::ttl::Ttl>,
        #[command(flatten)]
        source: Source,
    },
    /// List tokens: id, policy, created, expires, revoked (never the secret).
    List {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token by its id (the part after `cnpy_` and before the dot).
    Revoke {
        /// Token id.
        id: String,
        #[command(flatten)]
        source: Source,
    },
}

#[derive(Subcommand)]
enum DenyCommand {
    /// Put a SPIFFE ID on the deny list.
    Add {
        /// SPIFFE ID.
        spiffe_id: String,
        /// Why (recorded and shown to the refused requester).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        source: Source,
    },
    /// Take a SPIFFE ID off the deny list.
    Remove {
        /// SPIFFE ID.
        spiffe_id: String,
        #[command(flatten)]
        source: Source,
    },
    /// List the deny list.
    List {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain (from genesis, or from the signed checkpoint before
    /// its oldest stored entry), every checkpoint, and the certificate rows against it.
    /// Exits 1 if an entry, checkpoint or row was changed, added or removed.
    Verify {
        #[command(flatten)]
        source: Source,
        /// Folder of archive segments (`audit archive`): walked in order before the database.
        #[arg(long, value_name = "DIR")]
        archive: Option<PathBuf>,
        /// Public key (PEM, from `audit checkpoint-key`) that signed the checkpoints
        /// (default: the public half of audit.checkpoint_key).
        #[arg(long, value_name = "PUB.pem")]
        checkpoint_key: Option<PathBuf>,
        /// A head hash written down earlier (12 or more hex digits, as `audit verify`
        /// prints it): the chain must still contain it; catches entries cut off its end.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Sign the current head with audit.checkpoint_key (`serve` does it every
    /// audit.checkpoint_interval); a checkpoint at an unchanged head is kept as is.
    Checkpoint {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print the public key of audit.checkpoint_key (PEM), to verify checkpoints elsewhere.
    CheckpointKey {
        #[command(flatten)]
        source: Source,
    },
    /// Write the entries older than audit.retention (up to a signed checkpoint) into a
    /// segment in audit.archive_dir, then delete their rows.
    Archive {
        #[command(flatten)]
        source: Source,
        /// Show what would be archived and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// `--output text|json` (and `--json`, the same as `--output json`).
#[derive(Args)]
struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Same as `--output json`.
    #[arg(long)]
    json: bool,
}

impl OutputArgs {
    fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }
}

/// Where the configuration comes from.
#[derive(Args)]
struct Source {
    /// Configuration file (YAML).
    #[arg(long, short, conflicts_with = "dev", required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Use the dev setup in the data folder (made on first use).
    #[arg(long)]
    dev: bool,
    /// Data folder of the dev setup.
    #[arg(long, default_value = ".canopy-dev", requires = "dev")]
    data_dir: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn load(
    source: &Source,
    listen: Option<SocketAddr>,
) -> anyhow::Result<(Config, Option<dev::DevSetup>)> {
    if source.dev {
        let setup = dev::prepare(&source.data_dir, listen).await?;
        Ok((setup.config.clone(), Some(setup)))
    } else {
        let path = source
            .config
            .as_deref()
            .unwrap_or(Path::new("canopy-issuer.yaml"));
        let mut config = Config::load(path)?;
        if let Some(addr) = listen {
            config.listen.address = addr;
        }
        Ok((config, None))
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { source, listen } => {
            let (config, dev_setup) = load(&source, listen).await?;
            let service = Service::start(&config).await?;
            if let Some(setup) = &dev_setup {
                println!("{}", dev::banner(setup, service.local_addr));
            }
            println!("listening on https://{}", service.local_addr);
            service.run().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    policy,
                    ttl,
                    source,
                },
        } => {
            let (config, _) = load(&source, None).await?;
            if !config.policies.iter().any(|p| p.name == policy) {
                let known: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "no policy named {policy:?} in the config (known: {})",
                    known.join(", ")
                );
            }
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let ttl = ttl.unwrap_or(config.tokens.default_ttl);
            if ttl > config.tokens.max_ttl {
                bail!(
                    "--ttl {ttl} is longer than tokens.max_ttl {} of the config",
                    config.tokens.max_ttl
                );
            }
            let token = dev::create_token(&store, &policy, "cli", ttl)
                .await
                .context("storing the token")?;
            store.close().await;
            eprintln!(
                "token for policy {policy:?}, valid {ttl} (shown once; only its hash is stored):"
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::Revoke { id, source },
        } => {
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            let now = canopy_issuer::clock::now_precise();
            let event = canopy_issuer::audit::AuditEvent::new(
                canopy_issuer::clock::unix_ms(now),
                "cli",
                "token.revoke",
                format!("token:{id}"),
                canopy_issuer::audit::Outcome::Ok,
                serde_json::json!({}),
            );
            let revoked = store.revoke_token(&id, now.unix_timestamp(), event).await?;
            store.close().await;
            if !revoked {
                bail!("no live token with id {id:?}");
            }
            println!("token {id} revoked");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::List { source, output },
        } => {
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            let tokens = store.tokens().await?;
            store.close().await;
            let now = canopy_issuer::clock::now_precise().unix_timestamp();
            let rows: Vec<serde_json::Value> = tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "live"
                    };
                    serde_json::json!({
                        "id": t.id, "policy": t.policy, "created_at": rfc3339(t.created_at),
                        "expires_at": t.expires_at.map(rfc3339), "revoked_at": t.revoked_at.map(rfc3339),
                        "state": state,
                    })
                })
                .collect();
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<14} {:<16} {:<8} {:<21} EXPIRES",
                    "ID", "POLICY", "STATE", "CREATED"
                );
                for r in &rows {
                    println!(
                        "{:<14} {:<16} {:<8} {:<21} {}",
                        r["id"].as_str().unwrap_or_default(),
                        r["policy"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["created_at"].as_str().unwrap_or_default(),
                        r["expires_at"].as_str().unwrap_or("never"),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke {
            serial,
            reason,
            deny_renewal,
            source,
        } => {
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let result = operator_revoke(&store, &serial, reason.as_deref(), deny_renewal).await;
            store.close().await;
            println!("{}", result?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Deny { command } => deny(command).await,
        Command::Tidy {
            dry_run,
            safety_buffer,
            pause,
            resume,
            source,
            output,
        } => {
            let (mut config, _) = load(&source, None).await?;
            if let Some(buffer) = safety_buffer {
                config.retention.safety_buffer = buffer;
            }
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let result = if pause || resume {
                tidy_switch(&store, pause, output.json()).await
            } else {
                tidy(&store, &config.retention, dry_run, output.json()).await
            };
            store.close().await;
            result
        }
        Command::Migrate { source } => {
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            store.close().await;
            println!("database is up to date ({})", store.backend_name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cacerts {
            command:
                CacertsCommand::Sync {
                    once,
                    output,
                    source,
                },
        } => {
            if !once {
                bail!("use `cacerts sync --once` (serve keeps cacerts in sync continuously)");
            }
            let (config, _) = load(&source, None).await?;
            let Some(setup) = canopy_issuer::istio::IstioSetup::of_config(
                &config,
                &canopy_issuer::ca_material::CaMaterial::load(&config)?,
            )?
            else {
                bail!("no cluster in the config has `istio` settings");
            };
            let store = Store::connect(&config.storage.url, 2).await?;
            store.migrate().await?;
            let report =
                canopy_issuer::istio::sync_once(setup, store.clone(), canopy_issuer::clock::now())
                    .await;
            store.close().await;
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{report}");
            }
            for c in report.clusters.iter().filter(|c| !c.outcome.is_ok()) {
                eprintln!("error: cluster {}: {}", c.cluster, c.outcome);
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Crds { out } => {
            match out {
                Some(dir) => {
                    canopy_issuer::certmanager::write_crds(&dir)
                        .with_context(|| format!("writing CRDs into {}", dir.display()))?;
                    println!("wrote the CRDs into {}", dir.display());
                }
                None => print!("{}", canopy_issuer::certmanager::crds_yaml()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { source, output } => {
            let (config, _) = load(&source, None).await?;
            let Some(setup) = canopy_issuer::istio::IstioSetup::of_config(
                &config,
                &canopy_issuer::ca_material::CaMaterial::load(&config)?,
            )?
            else {
                bail!("no cluster in the config has `istio` settings");
            };
            let report = canopy_issuer::istio::status(setup, canopy_issuer::clock::now()).await;
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{report}");
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Audit { command } => audit(command).await,
    }
}

fn checkpoint_key(
    config: &Config,
) -> anyhow::Result<canopy_issuer::audit::checkpoint::CheckpointKey> {
    let Some(path) = &config.audit.checkpoint_key else {
        bail!("no audit.checkpoint_key in the config: checkpoints need a signing key kept out of the database");
    };
    Ok(canopy_issuer::audit::checkpoint::CheckpointKey::load(path)?)
}

async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    use canopy_issuer::audit::{archive, checkpoint::CheckpointPublicKey, verify};
    match command {
        AuditCommand::Verify {
            source,
            archive,
            checkpoint_key: public_key,
            expect_head,
            output,
        } => {
            if let Some(expected) = &expect_head {
                if expected.len() < 12 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("--expect-head takes the hex hash printed by `canopy-issuer audit verify` (12 or more digits)");
                }
            }
            let (config, _) = load(&source, None).await?;
            let key = match (&public_key, &config.audit.checkpoint_key) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Some(CheckpointPublicKey::from_pem(
                        &text,
                        &path.display().to_string(),
                    )?)
                }
                (None, Some(_)) => Some(checkpoint_key(&config)?.public_key()),
                (None, None) => None,
            };
            let store = Store::connect(&config.storage.url, 2).await?;
            store.migrate().await?;
            let options = verify::VerifyOptions {
                archive_dir: archive.as_deref(),
                key: key.as_ref(),
                expect_head: expect_head.as_deref(),
            };
            let report = verify::verify(&store, &options).await;
            store.close().await;
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.ok {
                print!("{}", verify_text(&report));
            }
            if !report.ok {
                eprintln!("audit log FAILED verification:");
                for p in &report.problems {
                    eprintln!("  - {p}");
                }
                if report.more_problems > 0 {
                    eprintln!("  ... and {} more", report.more_problems);
                }
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { source, output } => {
            let (config, _) = load(&source, None).await?;
            let key = checkpoint_key(&config)?;
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let cp = store
                .checkpoint(&key, canopy_issuer::clock::now_precise())
                .await;
            store.close().await;
            let cp = cp?;
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&cp)?);
            } else {
                match cp {
                    Some(cp) => println!(
                        "checkpoint at entry {} hash {} signed with key {}",
                        cp.seq, cp.hash, cp.key_id
                    ),
                    None => println!("the audit log is empty: nothing to checkpoint"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CheckpointKey { source } => {
            let (config, _) = load(&source, None).await?;
            print!("{}", checkpoint_key(&config)?.public_key().to_pem());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive {
            source,
            dry_run,
            output,
        } => {
            let (config, _) = load(&source, None).await?;
            let Some(retention) = config.audit.retention else {
                bail!("pruning is off: set audit.retention (and audit.archive_dir) in the config");
            };
            let dir = config
                .audit
                .archive_dir
                .clone()
                .context("no audit.archive_dir in the config")?;
            let before = canopy_issuer::clock::now_ms() - retention.as_seconds() * 1000;
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let report = if dry_run {
                archive::plan_archive(&store, &dir, before).await
            } else {
                let key = checkpoint_key(&config)?.public_key();
                archive::archive_and_prune(&store, &dir, before, &key).await
            };
            store.close().await;
            let report = report?;
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                match (&report.segment, report.first_seq, report.last_seq) {
                    (Some(path), Some(first), Some(last)) if report.dry_run => println!(
                        "would archive entries {first}..={last} into {} and delete their rows",
                        path.display()
                    ),
                    (Some(path), Some(first), Some(last)) => println!(
                        "archived entries {first}..={last} into {} ({} entries), deleted {} rows",
                        path.display(),
                        report.archived,
                        report.deleted
                    ),
                    _ => println!(
                        "nothing to archive: {}{}",
                        report
                            .nothing_because
                            .as_deref()
                            .unwrap_or("nothing is old enough"),
                        if report.deleted > 0 {
                            format!(
                                " (deleted {} rows an earlier run had archived)",
                                report.deleted
                            )
                        } else {
                            String::new()
                        }
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_text(r: &canopy_issuer::audit::verify::VerifyReport) -> String {
    let from = match r.from_checkpoint {
        Some(seq) => format!("from the signed checkpoint at entry {seq}"),
        None => "from genesis".to_string(),
    };
    let archived = if r.segments > 0 {
        format!(
            ", {} of them from {} archive segments",
            r.archived_entries, r.segments
        )
    } else {
        String::new()
    };
    let keys = match &r.key_id {
        Some(id) => format!("signatures checked with key {id}"),
        None => "signatures NOT checked: no checkpoint key (set audit.checkpoint_key or pass --checkpoint-key)".into(),
    };
    let c = &r.certificates;
    let mut text = format!(
        "audit log OK: {} entries verified {from}{archived}, hash chain intact\n\
         checkpoints: {} match the chain ({keys})\n\
         certificates: {} sign and {} revoke entries bound to their rows ({} rows deleted as tidy entries allowed); \
         {} rows checked, {} older than the verified range (not covered), {} newer\n\
         head: entry {} hash {} (keep it; --expect-head checks it)\n",
        r.entries,
        r.checkpoints,
        c.sign_entries,
        c.revoke_entries,
        c.covered_by_tidy,
        c.rows,
        c.rows_not_covered,
        c.rows_newer,
        r.last_seq,
        r.head_hash,
    );
    if let Some((at, after)) = r.expected_head_at {
        text.push_str(&format!(
            "expected head found at entry {at} ({after} entries appended since)\n"
        ));
    }
    text
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn cli_event(
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> canopy_issuer::audit::AuditEvent {
    let now = canopy_issuer::clock::now_precise();
    canopy_issuer::audit::AuditEvent::new(
        canopy_issuer::clock::unix_ms(now),
        "cli",
        action,
        target,
        canopy_issuer::audit::Outcome::Ok,
        detail,
    )
}

/// `canopy-issuer tidy [--dry-run]`: one retention pass now, progress on stderr.
async fn tidy(
    store: &Store,
    retention: &canopy_issuer::retention::RetentionConfig,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let now = canopy_issuer::clock::now().unix_timestamp();
    let cutoff = retention.cutoff(now);
    let report = if dry_run {
        let due = store.expired_count(cutoff).await?;
        canopy_issuer::retention::PassReport {
            cutoff,
            deleted: due as u64,
            ..Default::default()
        }
    } else {
        eprintln!(
            "deleting certificates that expired before {} ({} after notAfter), {} per batch",
            rfc3339(cutoff),
            retention.safety_buffer,
            retention.batch_size
        );
        let mut last_shown = std::time::Instant::now();
        canopy_issuer::retention::pass(store, retention, now, None, |r, _| {
            if last_shown.elapsed() >= std::time::Duration::from_secs(1) {
                eprintln!("  {} deleted in {} batches", r.deleted, r.batches);
                last_shown = std::time::Instant::now();
            }
        })
        .await?
    };
    let size = store.size().await?;
    let paused = store.retention_paused().await?;
    if json {
        let out = serde_json::json!({
            "dry_run": dry_run,
            "cutoff": rfc3339(report.cutoff),
            "deleted": if dry_run { 0 } else { report.deleted },
            "would_delete": if dry_run { Some(report.deleted) } else { None },
            "batches": report.batches,
            "duration_ms": report.duration_ms,
            "certificates_stored": size.certificates,
            "store_bytes": size.bytes,
            "background_paused": paused,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if dry_run {
        println!(
            "would delete {} certificates that expired before {} ({} stored)",
            report.deleted,
            rfc3339(report.cutoff),
            size.certificates
        );
    } else {
        println!(
            "deleted {} certificates that expired before {} in {} batches, {} ms; {} stored, {} bytes{}",
            report.deleted,
            rfc3339(report.cutoff),
            report.batches,
            report.duration_ms,
            size.certificates,
            size.bytes,
            if paused { " (background retention is paused)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `canopy-issuer tidy --pause|--resume`.
async fn tidy_switch(store: &Store, pause: bool, json: bool) -> anyhow::Result<ExitCode> {
    let action = if pause {
        "retention.pause"
    } else {
        "retention.resume"
    };
    let changed = store
        .set_retention_paused(pause, cli_event(action, "retention", serde_json::json!({})))
        .await?;
    let state = if pause { "paused" } else { "running" };
    if json {
        let out = serde_json::json!({"retention": state, "changed": changed});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if changed {
        println!("retention is {state} in every replica");
    } else {
        println!("retention was already {state}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `canopy-issuer revoke SERIAL`: any recorded certificate, by an operator.
async fn operator_revoke(
    store: &Store,
    serial: &str,
    reason: Option<&str>,
    deny_renewal: bool,
) -> anyhow::Result<String> {
    use canopy::crl::RevocationReason;
    use canopy_issuer::store::{Revocation, StoreError};
    let serial: canopy::serial::Serial = serial.parse()?;
    let serial = serial.to_string();
    let reason: RevocationReason = match reason {
        Some(r) => r.parse()?,
        None => RevocationReason::Unspecified,
    };
    let now = canopy_issuer::clock::now_precise().unix_timestamp();
    let record = match store.certificate(&serial).await {
        Err(StoreError::NotFound) => bail!("no certificate with serial {serial} is recorded"),
        other => other?,
    };
    let event = cli_event(
        "revoke",
        &serial,
        serde_json::json!({"reason": reason.to_string(), "spiffe_id": record.spiffe_id, "intermediate": record.intermediate, "not_after": record.not_after}),
    );
    let outcome = store
        .revoke(&serial, Some(&reason.to_string()), now, event)
        .await?;
    let mut message = match outcome {
        Revocation::Revoked(r) => format!("revoked {} ({}, {})", r.serial, r.profile, r.subject),
        Revocation::AlreadyRevoked(r) => format!("{} was already revoked", r.serial),
    };
    if deny_renewal {
        match &record.spiffe_id {
            Some(id) => {
                let why = format!("certificate {serial} revoked ({reason})");
                let event = cli_event("deny-identity", id, serde_json::json!({"reason": why}));
                store.deny_identity(id, &why, now, event).await?;
                message.push_str(&format!("; {id} is on the deny list"));
            }
            None => bail!("{message}, but it carries no SPIFFE ID to put on the deny list"),
        }
    }
    Ok(message)
}

async fn deny(command: DenyCommand) -> anyhow::Result<ExitCode> {
    match command {
        DenyCommand::Add {
            spiffe_id,
            reason,
            source,
        } => {
            let id: canopy::spiffe::SpiffeId = spiffe_id.parse()?;
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            store.migrate().await?;
            let now = canopy_issuer::clock::now_precise().unix_timestamp();
            let event = cli_event(
                "deny-identity",
                &id.to_string(),
                serde_json::json!({"reason": reason}),
            );
            let added = store
                .deny_identity(&id.to_string(), &reason, now, event)
                .await;
            store.close().await;
            if added? {
                println!("{id} is on the deny list: nothing is issued for it");
            } else {
                println!("{id} was already on the deny list");
            }
            Ok(ExitCode::SUCCESS)
        }
        DenyCommand::Remove { spiffe_id, source } => {
            let id: canopy::spiffe::SpiffeId = spiffe_id.parse()?;
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            let event = cli_event("allow-identity", &id.to_string(), serde_json::json!({}));
            let removed = store.allow_identity(&id.to_string(), event).await;
            store.close().await;
            if !removed? {
                bail!("{id} is not on the deny list");
            }
            println!("{id} is off the deny list");
            Ok(ExitCode::SUCCESS)
        }
        DenyCommand::List { source, output } => {
            let (config, _) = load(&source, None).await?;
            let store = Store::connect(&config.storage.url, 1).await?;
            let rows = store.denied_identities().await;
            store.close().await;
            let rows = rows?;
            if output.json() {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(id, reason, at)| serde_json::json!({"spiffe_id": id, "reason": reason, "since": rfc3339(*at)}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (id, reason, at) in &rows {
                    println!("{id}\t{}\t{reason}", rfc3339(*at));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
