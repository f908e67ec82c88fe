//! `canopy-issuer audit verify|checkpoint|checkpoint-key|archive`: check the audit log's
//! hash chain and checkpoints, sign its head, archive and prune old entries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use canopy_issuer::audit::archive;
use canopy_issuer::audit::checkpoint::{CheckpointKey, CheckpointPublicKey};
use canopy_issuer::audit::verify::{self, VerifyReport};
use canopy_issuer::config::Config;
use canopy_issuer::store::Store;
use clap::Subcommand;

use super::source::{OutputArgs, Source};

#[derive(Subcommand)]
pub enum AuditCommand {
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

/// Runs `audit` COMMAND.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            source,
            archive,
            checkpoint_key,
            expect_head,
            output,
        } => {
            let options = VerifyArgs {
                archive: archive.as_deref(),
                checkpoint_key: checkpoint_key.as_deref(),
                expect_head: expect_head.as_deref(),
            };
            verify(&source, options, &output).await
        }
        AuditCommand::Checkpoint { source, output } => checkpoint(&source, &output).await,
        AuditCommand::CheckpointKey { source } => {
            let config = source.load().await?;
            print!("{}", checkpoint_key(&config)?.public_key().to_pem());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive {
            source,
            dry_run,
            output,
        } => archive(&source, dry_run, &output).await,
    }
}

fn checkpoint_key(config: &Config) -> anyhow::Result<CheckpointKey> {
    let Some(path) = &config.audit.checkpoint_key else {
        bail!("no audit.checkpoint_key in the config: checkpoints need a signing key kept out of the database");
    };
    Ok(CheckpointKey::load(path)?)
}

/// What `audit verify` was asked to check beyond the database.
struct VerifyArgs<'a> {
    archive: Option<&'a Path>,
    checkpoint_key: Option<&'a Path>,
    expect_head: Option<&'a str>,
}

/// The key checkpoints are checked with: `--checkpoint-key`, else the public half of
/// `audit.checkpoint_key`, else none.
fn verifying_key(
    config: &Config,
    public_key: Option<&Path>,
) -> anyhow::Result<Option<CheckpointPublicKey>> {
    match (public_key, &config.audit.checkpoint_key) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(CheckpointPublicKey::from_pem(
                &text,
                &path.display().to_string(),
            )?))
        }
        (None, Some(_)) => Ok(Some(checkpoint_key(config)?.public_key())),
        (None, None) => Ok(None),
    }
}

async fn verify(
    source: &Source,
    args: VerifyArgs<'_>,
    output: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(expected) = args.expect_head {
        if expected.len() < 12 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--expect-head takes the hex hash printed by `canopy-issuer audit verify` (12 or more digits)");
        }
    }
    let config = source.load().await?;
    let key = verifying_key(&config, args.checkpoint_key)?;
    let store = Store::connect(&config.storage.url, 2).await?;
    store.migrate().await?;
    let options = verify::VerifyOptions {
        archive_dir: args.archive,
        key: key.as_ref(),
        expect_head: args.expect_head,
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

async fn checkpoint(source: &Source, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    let config = source.load().await?;
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

async fn archive(source: &Source, dry_run: bool, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    let config = source.load().await?;
    let Some(retention) = config.audit.retention else {
        bail!("pruning is off: set audit.retention (and audit.archive_dir) in the config");
    };
    let dir: PathBuf = config
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
        println!("{}", archive_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn archive_text(report: &archive::ArchiveReport) -> String {
    match (&report.segment, report.first_seq, report.last_seq) {
        (Some(path), Some(first), Some(last)) if report.dry_run => format!(
            "would archive entries {first}..={last} into {} and delete their rows",
            path.display()
        ),
        (Some(path), Some(first), Some(last)) => format!(
            "archived entries {first}..={last} into {} ({} entries), deleted {} rows",
            path.display(),
            report.archived,
            report.deleted
        ),
        _ => format!(
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

fn verify_text(r: &VerifyReport) -> String {
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
