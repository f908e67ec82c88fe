//! Retention: certificates are deleted a safety buffer after their notAfter (revoked
//! ones too: a CRL lists a revocation only until the certificate expires), in small
//! batches, each batch audited, so that a store of short-lived certificates stays
//! the size of what is live. OpenBao's `tidy` with its `safety_buffer` is the model.
//!
//! The same loop prunes the audit log when `audit.retention` is set: entries older than
//! that, up to a signed checkpoint, are written to an archive segment and then deleted
//! ([`crate::audit::archive::archive_and_prune`]).
//!
//! With several replicas one runs it: the one holding the store lease `retention`
//! (a row in the database, so it needs no Kubernetes). Operators pause and resume it
//! from any replica (`canopy-issuer tidy --pause` / `--resume`); a pass stopped by a
//! pause, a shutdown or a lost lease resumes where it stopped, since each batch is
//! its own transaction and the next pass deletes by the same rule.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicI64;

use canopy::ttl::Ttl;

use crate::store::{Store, StoreError};

/// The store lease retention runs under.
pub const LEASE: &str = "retention";

/// `retention:` in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete expired certificates at all (default true).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// How long after notAfter a certificate is kept (default 72h).
    #[serde(default = "default_safety_buffer")]
    pub safety_buffer: Ttl,
    /// How often a pass runs (default 10m).
    #[serde(default = "default_interval")]
    pub interval: Ttl,
    /// Rows deleted per transaction (default 500).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Least pause between batches, milliseconds (default 20).
    #[serde(default = "default_batch_pause_ms")]
    pub batch_pause_ms: u64,
    /// Most of the wall time a pass spends in batches, percent (default 20): after each
    /// batch the pass pauses long enough to stay under it. Signing writes to the same
    /// database (on SQLite, under the same write lock; on PostgreSQL, with the same CPU
    /// for index and WAL work), so a large pass must leave it most of the time.
    #[serde(default = "default_busy_percent")]
    pub busy_percent: u8,
}

fn default_enabled() -> bool {
    true
}
fn default_safety_buffer() -> Ttl {
    Ttl::hours(72)
}
fn default_interval() -> Ttl {
    Ttl::minutes(10)
}
fn default_batch_size() -> u32 {
    500
}
fn default_batch_pause_ms() -> u64 {
    20
}
fn default_busy_percent() -> u8 {
    20
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: default_enabled(),
            safety_buffer: default_safety_buffer(),
            interval: default_interval(),
            batch_size: default_batch_size(),
            batch_pause_ms: default_batch_pause_ms(),
            busy_percent: default_busy_percent(),
        }
    }
}

impl RetentionConfig {
    /// Checks the values the types allow but retention cannot use.
    /// Returns (field, reason) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(("batch_size".into(), "must be between 1 and 100000".into()));
        }
        if self.batch_pause_ms > 60_000 {
            return Err(("batch_pause_ms".into(), "must be at most 60000".into()));
        }
        if !(1..=100).contains(&self.busy_percent) {
            return Err(("busy_percent".into(), "must be between 1 and 100".into()));
        }
        Ok(())
    }

    /// The pause after a batch that took `batch_took`: at least `batch_pause_ms`, and
    /// long enough that batches fill at most `busy_percent` of the pass.
    pub fn pause_after(&self, batch_took: Duration) -> Duration {
        let idle = u32::from(100 - self.busy_percent);
        let share = batch_took * idle / u32::from(self.busy_percent);
        Duration::from_millis(self.batch_pause_ms).max(share)
    }

    /// Certificates whose notAfter is before this (Unix seconds) are due at `now`.
    pub fn cutoff(&self, now: i64) -> i64 {
        now - self.safety_buffer.as_seconds()
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Rows with notAfter before this (Unix seconds) were due.
    pub cutoff: i64,
    /// Rows deleted (in a dry run: rows that would be).
    pub deleted: u64,
    /// Batches committed.
    pub batches: u64,
    /// Why the pass ended before it was done, if it did.
    pub interrupted: Option<&'static str>,
    /// Wall time of the pass, milliseconds.
    pub duration_ms: u64,
}

/// Prometheus metrics of retention (`canopy_retention_*`, `canopy_store_*`).
#[derive(Debug)]
pub struct RetentionMetrics {
    /// Rows deleted.
    pub deleted: Counter,
    /// Duration of each pass that deleted or looked.
    pub pass_duration: Histogram,
    /// Certificate rows stored, as of the last pass.
    pub rows: Gauge<i64, AtomicI64>,
    /// Bytes the store takes, as of the last pass.
    pub bytes: Gauge<i64, AtomicI64>,
    /// 1 while an operator has retention paused.
    pub paused: Gauge<i64, AtomicI64>,
}

impl RetentionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> RetentionMetrics {
        let m = RetentionMetrics {
            deleted: Counter::default(),
            pass_duration: Histogram::new([0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0]),
            rows: Gauge::default(),
            bytes: Gauge::default(),
            paused: Gauge::default(),
        };
        registry.register(
            "retention_deleted_certificates",
            "Expired certificates deleted by retention",
            m.deleted.clone(),
        );
        registry.register(
            "retention_pass_duration_seconds",
            "Duration of a retention pass",
            m.pass_duration.clone(),
        );
        registry.register(
            "retention_paused",
            "1 while retention is paused by an operator",
            m.paused.clone(),
        );
        registry.register(
            "store_certificates",
            "Certificate rows stored (as of the last retention pass)",
            m.rows.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Bytes the store takes (as of the last retention pass)",
            m.bytes.clone(),
        );
        m
    }
}

/// What a pass in `serve` checks before each batch: that it is not shutting down, still
/// holds the lease and is not paused.
pub struct Guard<'a> {
    /// This replica's holder identity.
    pub holder: &'a str,
    /// How long the lease is taken for, milliseconds.
    pub ttl_ms: i64,
    /// Turns true at shutdown.
    pub stop: &'a tokio::sync::watch::Receiver<bool>,
}

impl Guard<'_> {
    /// Why the pass must stop now, if it must.
    async fn interrupted(&self, store: &Store) -> Option<&'static str> {
        if *self.stop.borrow() {
            return Some("shutting down");
        }
        match store
            .try_lease(LEASE, self.holder, crate::clock::now_ms(), self.ttl_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Some("lease lost"),
            Err(_) => return Some("storage unavailable"),
        }
        match store.retention_paused().await {
            Ok(false) => None,
            Ok(true) => Some("paused"),
            Err(_) => Some("storage unavailable"),
        }
    }
}

/// Runs one pass: batches of expired rows deleted until none is left, or `guard`
/// says stop (checked before each batch; the CLI runs without one). `progress` sees
/// the running total and the rows of the batch just committed.
pub async fn pass(
    store: &Store,
    config: &RetentionConfig,
    now: i64,
    guard: Option<&Guard<'_>>,
    mut progress: impl FnMut(&PassReport, u64),
) -> Result<PassReport, StoreError> {
    let started = Instant::now();
    let mut report = PassReport {
        cutoff: config.cutoff(now),
        ..PassReport::default()
    };
    loop {
        if let Some(guard) = guard {
            if let Some(why) = guard.interrupted(store).await {
                report.interrupted = Some(why);
                break;
            }
        }
        let batch_started = Instant::now();
        let deleted = store
            .tidy_batch(report.cutoff, config.batch_size, crate::clock::now_ms())
            .await?;
        let batch_took = batch_started.elapsed();
        if deleted == 0 {
            break;
        }
        report.deleted += deleted;
        report.batches += 1;
        progress(&report, deleted);
        if deleted < u64::from(config.batch_size) {
            break;
        }
        tokio::time::sleep(config.pause_after(batch_took)).await;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Audit log pruning, as the retention loop runs it (`audit.retention` and friends).
#[derive(Clone, Debug)]
pub struct AuditPruning {
    /// Where archive segments are written.
    pub archive_dir: std::path::PathBuf,
    /// Entries older than this are archived and pruned (up to a checkpoint).
    pub retention: Ttl,
    /// The checkpoint key's public half: segments end at a checkpoint it verifies.
    pub key: crate::audit::checkpoint::CheckpointPublicKey,
}

/// The background loop of `serve`: a pass every `interval` while this replica holds
/// the lease and retention is not paused (certificates when `config.enabled`, the
/// audit log when `audit` is given); stops when `stop` turns true.
pub async fn run(
    store: Store,
    config: RetentionConfig,
    audit: Option<AuditPruning>,
    metrics: std::sync::Arc<RetentionMetrics>,
    holder: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(config.interval.as_seconds() as u64);
    // Held for three intervals, renewed before every batch: a replica that dies
    // hands retention over within three intervals.
    let ttl_ms = 3 * interval.as_millis() as i64;
    loop {
        match run_once(
            &store,
            &config,
            audit.as_ref(),
            &metrics,
            &holder,
            ttl_ms,
            &stop,
        )
        .await
        {
            Ok(Some(report)) if report.deleted > 0 => tracing::info!(
                deleted = report.deleted,
                batches = report.batches,
                cutoff = report.cutoff,
                duration_ms = report.duration_ms,
                interrupted = report.interrupted,
                "retention pass"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again next interval")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            let _ = store.release_lease(LEASE, &holder).await;
            return;
        }
    }
}

async fn run_once(
    store: &Store,
    config: &RetentionConfig,
    audit: Option<&AuditPruning>,
    metrics: &RetentionMetrics,
    holder: &str,
    ttl_ms: i64,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Option<PassReport>, StoreError> {
    if !store
        .try_lease(LEASE, holder, crate::clock::now_ms(), ttl_ms)
        .await?
    {
        return Ok(None);
    }
    let paused = store.retention_paused().await?;
    metrics.paused.set(i64::from(paused));
    if paused {
        return Ok(None);
    }
    if let Some(audit) = audit {
        let before_ms = crate::clock::now_ms() - audit.retention.as_seconds() * 1000;
        match crate::audit::archive::archive_and_prune(
            store,
            &audit.archive_dir,
            before_ms,
            &audit.key,
        )
        .await
        {
            Ok(report) if report.deleted > 0 => tracing::info!(
                archived = report.archived,
                deleted = report.deleted,
                segment = ?report.segment,
                "audit entries archived and pruned"
            ),
            Ok(_) => {}
            // Nothing was deleted (the archive is written first): try again next pass.
            Err(e) => tracing::warn!(error = %e, "audit archive failed; nothing pruned"),
        }
    }
    if !config.enabled {
        return Ok(None);
    }
    let now = crate::clock::now().unix_timestamp();
    let report = pass(
        store,
        config,
        now,
        Some(&Guard {
            holder,
            ttl_ms,
            stop,
        }),
        |_, batch| {
            metrics.deleted.inc_by(batch);
        },
    )
    .await?;
    metrics
        .pass_duration
        .observe(report.duration_ms as f64 / 1000.0);
    let size = store.size().await?;
    metrics.rows.set(size.certificates);
    metrics.bytes.set(size.bytes);
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_pauses_so_batches_fill_at_most_their_share() {
        let config = RetentionConfig::default();
        // 20 %: a 100 ms batch is followed by 400 ms of pause.
        assert_eq!(
            config.pause_after(Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        // A batch quicker than the least pause still waits for it.
        assert_eq!(
            config.pause_after(Duration::from_millis(1)),
            Duration::from_millis(20)
        );
        let all = RetentionConfig {
            busy_percent: 100,
            batch_pause_ms: 0,
            ..config.clone()
        };
        assert_eq!(all.pause_after(Duration::from_millis(100)), Duration::ZERO);
        let zero = RetentionConfig {
            busy_percent: 0,
            ..config
        };
        assert_eq!(zero.validate().unwrap_err().0, "busy_percent");
    }
}
