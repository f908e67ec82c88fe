//! `canopy-issuer deny add|remove|list`: SPIFFE IDs nothing is issued for.

use std::process::ExitCode;

use anyhow::bail;
use canopy::spiffe::SpiffeId;
use clap::Subcommand;

use super::source::{rfc3339, OutputArgs, Source};

#[derive(Subcommand)]
pub enum DenyCommand {
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

/// Runs `deny` COMMAND.
pub async fn run(command: DenyCommand) -> anyhow::Result<ExitCode> {
    match command {
        DenyCommand::Add {
            spiffe_id,
            reason,
            source,
        } => add(&source, &spiffe_id, &reason).await,
        DenyCommand::Remove { spiffe_id, source } => remove(&source, &spiffe_id).await,
        DenyCommand::List { source, output } => list(&source, &output).await,
    }
}

async fn add(source: &Source, spiffe_id: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let id: SpiffeId = spiffe_id.parse()?;
    let (_, store) = source.store(1).await?;
    store.migrate().await?;
    let now = canopy_issuer::clock::now_precise().unix_timestamp();
    let event = super::event(
        "deny-identity",
        &id.to_string(),
        serde_json::json!({"reason": reason}),
    );
    let added = store
        .deny_identity(&id.to_string(), reason, now, event)
        .await;
    store.close().await;
    if added? {
        println!("{id} is on the deny list: nothing is issued for it");
    } else {
        println!("{id} was already on the deny list");
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(source: &Source, spiffe_id: &str) -> anyhow::Result<ExitCode> {
    let id: SpiffeId = spiffe_id.parse()?;
    let (_, store) = source.store(1).await?;
    let event = super::event("allow-identity", &id.to_string(), serde_json::json!({}));
    let removed = store.allow_identity(&id.to_string(), event).await;
    store.close().await;
    if !removed? {
        bail!("{id} is not on the deny list");
    }
    println!("{id} is off the deny list");
    Ok(ExitCode::SUCCESS)
}

async fn list(source: &Source, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = source.store(1).await?;
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
