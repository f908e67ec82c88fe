//! The subcommands of `canopy-issuer`, one module each; this module holds the command line
//! and sends each subcommand to its module. Part of the binary, not of the library.

mod audit;
mod cacerts;
mod deny;
mod revoke;
mod source;
mod tidy;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use canopy_issuer::audit::{AuditEvent, Outcome};
use canopy_issuer::serve::Service;
use clap::{Parser, Subcommand};

use source::{OutputArgs, Source};

#[derive(Parser)]
#[command(name = "canopy-issuer", version, about = "canopy's online issuer")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        command: token::TokenCommand,
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
        command: deny::DenyCommand,
    },
    /// Apply the embedded database migrations.
    Migrate {
        #[command(flatten)]
        source: Source,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Istio `cacerts` in the configured clusters.
    Cacerts {
        #[command(subcommand)]
        command: cacerts::CacertsCommand,
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

/// Runs one subcommand; its exit code, or the error to print.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { source, listen } => serve(&source, listen).await,
        Command::Token { command } => token::run(command).await,
        Command::Revoke {
            serial,
            reason,
            deny_renewal,
            source,
        } => revoke::run(&source, &serial, reason.as_deref(), deny_renewal).await,
        Command::Deny { command } => deny::run(command).await,
        Command::Tidy {
            dry_run,
            safety_buffer,
            pause,
            resume,
            source,
            output,
        } => {
            let switch = match (pause, resume) {
                (true, _) => Some(tidy::Switch::Pause),
                (false, true) => Some(tidy::Switch::Resume),
                (false, false) => None,
            };
            tidy::run(&source, safety_buffer, dry_run, switch, output.json()).await
        }
        Command::Migrate { source } => migrate(&source).await,
        Command::Cacerts {
            command:
                cacerts::CacertsCommand::Sync {
                    once,
                    output,
                    source,
                },
        } => cacerts::sync(&source, once, &output).await,
        Command::Crds { out } => crds(out),
        Command::Status { source, output } => cacerts::status(&source, &output).await,
        Command::Audit { command } => audit::run(command).await,
    }
}

async fn serve(source: &Source, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let (config, dev_setup) = source.load_listening(listen).await?;
    let service = Service::start(&config).await?;
    if let Some(setup) = &dev_setup {
        println!("{}", canopy_issuer::dev::banner(setup, service.local_addr));
    }
    println!("listening on https://{}", service.local_addr);
    service.run().await;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(source: &Source) -> anyhow::Result<ExitCode> {
    let (_, store) = source.store(1).await?;
    store.migrate().await?;
    store.close().await;
    println!("database is up to date ({})", store.backend_name());
    Ok(ExitCode::SUCCESS)
}

fn crds(out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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

/// The audit event of an operator's change made from the command line, now.
fn event(action: &str, target: &str, detail: serde_json::Value) -> AuditEvent {
    let now = canopy_issuer::clock::now_precise();
    AuditEvent::new(
        canopy_issuer::clock::unix_ms(now),
        "cli",
        action,
        target,
        Outcome::Ok,
        detail,
    )
}
