//! Retention: expired certificates deleted in small batches, each batch audited; the
//! lease that lets one replica run it; the pause switch operators flip.

use super::{Backend, Store, StoreError};
use crate::audit::{AuditEvent, Outcome};

/// The ids of one batch of rows whose notAfter is before `$1`, oldest first, at most `$2`.
pub(super) const EXPIRED_BATCH: &str =
    "SELECT id FROM certificates WHERE not_after < $1 ORDER BY not_after LIMIT $2";

/// Rows and bytes the store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreSize {
    /// Certificate rows.
    pub certificates: i64,
    /// Bytes the database takes (SQLite: the file's used pages; PostgreSQL: the
    /// certificates table with its indexes and TOAST).
    pub bytes: i64,
}

impl Store {
    /// Deletes up to `batch` certificates whose notAfter is before `cutoff` (Unix
    /// seconds), oldest first, and appends a `tidy` audit entry saying so, in one
    /// transaction. Returns how many were deleted (0: nothing left, nothing audited).
    pub async fn tidy_batch(&self, cutoff: i64, batch: u32, at_ms: i64) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM certificates WHERE id IN ({EXPIRED_BATCH})");
        in_write_tx!(self, tx => {
            let deleted = sqlx::query(&sql)
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                tx.rollback().await?;
                return Ok(0);
            }
            let event = tidy_event(at_ms, cutoff, deleted);
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(deleted)
        })
    }

    /// How many certificates have a notAfter before `cutoff` (what a tidy would delete).
    pub async fn expired_count(&self, cutoff: i64) -> Result<i64, StoreError> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE not_after < $1")
                .bind(cutoff)
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }

    /// Rows and bytes stored. Counting rows reads an index end to end (about a second
    /// per 10 M rows on SQLite); PostgreSQL's count is the planner's estimate, kept
    /// fresh by autovacuum, exact once the table has been analysed.
    pub async fn size(&self) -> Result<StoreSize, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool, _) => {
                let certificates: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
                    .fetch_one(pool)
                    .await?;
                let bytes: i64 = sqlx::query_scalar(
                    "SELECT (page_count - freelist_count) * page_size \
                     FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
                )
                .fetch_one(pool)
                .await?;
                Ok(StoreSize {
                    certificates,
                    bytes,
                })
            }
            Backend::Postgres(pool, _) => {
                let (estimate, bytes): (f32, i64) = sqlx::query_as(
                    "SELECT reltuples, pg_total_relation_size(oid) FROM pg_class \
                     WHERE oid = 'certificates'::regclass",
                )
                .fetch_one(pool)
                .await?;
                // -1: never analysed; count instead (a young, small table).
                let certificates = if estimate < 0.0 {
                    sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
                        .fetch_one(pool)
                        .await?
                } else {
                    estimate as i64
                };
                Ok(StoreSize {
                    certificates,
                    bytes,
                })
            }
        }
    }

    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`; true if
    /// `holder` holds it now. A lease another holder let expire is taken over.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO store_leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                   expires_at_ms = excluded.expires_at_ms \
                   WHERE store_leases.holder = excluded.holder OR store_leases.expires_at_ms < $4 \
                   RETURNING holder";
        let won: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(sql)
                .bind(name)
                .bind(holder)
                .bind(now_ms + ttl_ms)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
        });
        Ok(won.is_some())
    }

    /// Gives the lease up, if `holder` has it, so another replica need not wait it out.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM store_leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Whether an operator paused retention.
    pub async fn retention_paused(&self) -> Result<bool, StoreError> {
        let paused: bool = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT paused FROM retention_state WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(paused)
    }

    /// Pauses or resumes retention (and audits it); false if it already was so.
    pub async fn set_retention_paused(
        &self,
        paused: bool,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        in_write_tx!(self, tx => {
            let changed = sqlx::query(
                "UPDATE retention_state SET paused = $1 WHERE id = 1 AND paused <> $1",
            )
            .bind(paused)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            append_audit!(tx, [&event]);
            tx.commit().await?;
            Ok(true)
        })
    }
}

/// The audit entry of one deleted batch: every row with notAfter before `cutoff` may
/// be gone after it (what `audit verify` accepts as a reason for a missing row).
fn tidy_event(at_ms: i64, cutoff: i64, deleted: u64) -> AuditEvent {
    AuditEvent::new(
        at_ms,
        "canopy-issuer",
        "tidy",
        "certificates",
        Outcome::Ok,
        serde_json::json!({"cutoff": cutoff, "deleted": deleted}),
    )
}
