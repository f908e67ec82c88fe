//! Signed checkpoints of the audit chain, and pruning the entries a checkpoint covers.

use time::OffsetDateTime;

use super::{Store, StoreError};
use crate::audit::checkpoint::{Checkpoint, CheckpointError, CheckpointKey};

const CHECKPOINT_COLUMNS: &str = "seq, hash, at_ms, key_id, signature";

impl Store {
    /// Signs the current head with `key` and stores it, unless a checkpoint at that entry
    /// already exists (then it is returned unchanged). `None` while the log is empty.
    pub async fn checkpoint(
        &self,
        key: &CheckpointKey,
        now: OffsetDateTime,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let (seq, hash) = self.audit_head().await?;
        if seq == 0 {
            return Ok(None);
        }
        if let Some(existing) = self.checkpoint_at(seq).await? {
            return Ok(Some(existing));
        }
        let at_ms = crate::clock::unix_ms(now);
        let signed = key.sign(seq, &hash, at_ms)?;
        // Replicas may race to checkpoint the same head: the first one's stays.
        let sql = "INSERT INTO audit_checkpoints (seq, hash, at_ms, key_id, signature) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(signed.seq)
                .bind(&signed.hash)
                .bind(signed.at_ms)
                .bind(&signed.key_id)
                .bind(&signed.signature)
                .execute(pool)
                .await
                .map_err(StoreError::from)?;
        });
        Ok(self.checkpoint_at(seq).await?)
    }

    /// The checkpoint at entry `seq`, if one was taken.
    pub async fn checkpoint_at(&self, seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = $1");
        let found: Option<Checkpoint> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(seq).fetch_optional(pool).await?
        });
        Ok(found)
    }

    /// The newest checkpoint at or before entry `max_seq` signed at or before `max_at_ms`.
    pub async fn newest_checkpoint(
        &self,
        max_seq: i64,
        max_at_ms: i64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
             WHERE seq <= $1 AND at_ms <= $2 ORDER BY seq DESC LIMIT 1"
        );
        let found: Option<Checkpoint> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(max_seq).bind(max_at_ms).fetch_optional(pool).await?
        });
        Ok(found)
    }

    /// Checkpoints at entries after `after`, in order, at most `limit`.
    pub async fn checkpoints(&self, after: i64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let found: Vec<Checkpoint> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(after).bind(i64::from(limit)).fetch_all(pool).await?
        });
        Ok(found)
    }

    /// Deletes the audit entries up to and including `through`, `batch` rows per
    /// statement (short write locks while the issuer keeps appending); returns how many.
    /// Only [`crate::audit::archive::archive_and_prune`] calls it, after the archive
    /// segment holding those entries is on disk.
    pub(crate) async fn delete_audit_through(
        &self,
        through: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let sql = "DELETE FROM audit_log WHERE seq IN \
                   (SELECT seq FROM audit_log WHERE seq <= $1 ORDER BY seq LIMIT $2)";
        let mut deleted = 0;
        loop {
            let n = on_pool!(self, pool => {
                sqlx::query(sql)
                    .bind(through)
                    .bind(i64::from(batch))
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            deleted += n;
            if n < u64::from(batch) {
                return Ok(deleted);
            }
        }
    }
}
