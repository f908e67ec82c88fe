//! `canopy-issuer token create|list|revoke`: API tokens, stored hashed.

use std::process::ExitCode;

use anyhow::{bail, Context};
use canopy::ttl::Ttl;
use canopy_issuer::config::Config;
use canopy_issuer::dev;
use canopy_issuer::store::Store;
use clap::Subcommand;

use super::source::{rfc3339, OutputArgs, Source};

#[derive(Subcommand)]
pub enum TokenCommand {
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

/// Runs `token` COMMAND.
pub async fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            policy,
            ttl,
            source,
        } => create(&source, &policy, ttl).await,
        TokenCommand::Revoke { id, source } => revoke(&source, &id).await,
        TokenCommand::List { source, output } => list(&source, &output).await,
    }
}

/// The lifetime asked for (or the default), if the config allows it.
fn lifetime(config: &Config, ttl: Option<Ttl>) -> anyhow::Result<Ttl> {
    let ttl = ttl.unwrap_or(config.tokens.default_ttl);
    if ttl > config.tokens.max_ttl {
        bail!(
            "--ttl {ttl} is longer than tokens.max_ttl {} of the config",
            config.tokens.max_ttl
        );
    }
    Ok(ttl)
}

async fn create(source: &Source, policy: &str, ttl: Option<Ttl>) -> anyhow::Result<ExitCode> {
    let config = source.load().await?;
    if !config.policies.iter().any(|p| p.name == policy) {
        let known: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no policy named {policy:?} in the config (known: {})",
            known.join(", ")
        );
    }
    let store = Store::connect(&config.storage.url, 1).await?;
    store.migrate().await?;
    let ttl = lifetime(&config, ttl)?;
    let token = dev::create_token(&store, policy, "cli", ttl)
        .await
        .context("storing the token")?;
    store.close().await;
    eprintln!("token for policy {policy:?}, valid {ttl} (shown once; only its hash is stored):");
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

async fn revoke(source: &Source, id: &str) -> anyhow::Result<ExitCode> {
    let (_, store) = source.store(1).await?;
    let now = canopy_issuer::clock::now_precise();
    let event = super::event(
        "token.revoke",
        &format!("token:{id}"),
        serde_json::json!({}),
    );
    let revoked = store.revoke_token(id, now.unix_timestamp(), event).await?;
    store.close().await;
    if !revoked {
        bail!("no live token with id {id:?}");
    }
    println!("token {id} revoked");
    Ok(ExitCode::SUCCESS)
}

async fn list(source: &Source, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = source.store(1).await?;
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
        return Ok(ExitCode::SUCCESS);
    }
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
    Ok(ExitCode::SUCCESS)
}
