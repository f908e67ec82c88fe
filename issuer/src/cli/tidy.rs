//! `canopy-issuer tidy`: one retention pass now (what `serve` does every
//! `retention.interval`), or pause and resume retention for every replica.

use std::process::ExitCode;

use canopy::ttl::Ttl;
use canopy_issuer::retention::{PassReport, RetentionConfig};
use canopy_issuer::store::Store;

use super::source::{rfc3339, Source};

/// `--pause` or `--resume`.
#[derive(Clone, Copy)]
pub enum Switch {
    /// Stop retention in every replica.
    Pause,
    /// Let it run again.
    Resume,
}

/// Runs `tidy`: a pass (`--dry-run` counts only), or the switch.
pub async fn run(
    source: &Source,
    safety_buffer: Option<Ttl>,
    dry_run: bool,
    turn: Option<Switch>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = source.load().await?;
    if let Some(buffer) = safety_buffer {
        config.retention.safety_buffer = buffer;
    }
    let store = Store::connect(&config.storage.url, 1).await?;
    store.migrate().await?;
    let result = match turn {
        Some(turn) => switch(&store, turn, json).await,
        None => pass(&store, &config.retention, dry_run, json).await,
    };
    store.close().await;
    result
}

/// `canopy-issuer tidy [--dry-run]`: one retention pass now, progress on stderr.
async fn pass(
    store: &Store,
    retention: &RetentionConfig,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let now = canopy_issuer::clock::now().unix_timestamp();
    let cutoff = retention.cutoff(now);
    let report = if dry_run {
        let due = store.expired_count(cutoff).await?;
        PassReport {
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
async fn switch(store: &Store, switch: Switch, json: bool) -> anyhow::Result<ExitCode> {
    let (pause, action) = match switch {
        Switch::Pause => (true, "retention.pause"),
        Switch::Resume => (false, "retention.resume"),
    };
    let changed = store
        .set_retention_paused(
            pause,
            super::event(action, "retention", serde_json::json!({})),
        )
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
