//! Reading and verifying the audit log's hash chain.

use super::{Store, StoreError};
use crate::audit::{self, AuditEntry};

impl Store {
    /// The newest audit entry's (seq, hash) as recorded in the head row.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let head: (i64, String) = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await?
        });
        Ok(head)
    }

    /// Audit entries with seq > `after`, in order, at most `limit`.
    pub async fn audit_entries(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT seq, at_ms, actor, action, target, outcome, detail, prev_hash, hash \
                   FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
        let entries: Vec<AuditEntry> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(after).bind(i64::from(limit)).fetch_all(pool).await?
        });
        Ok(entries)
    }

    /// Walks the whole audit log and checks its hash chain against the head.
    pub async fn verify_audit(&self) -> Result<u64, audit::VerifyError> {
        let mut verifier = audit::Verifier::new();
        loop {
            let page = self
                .audit_entries(verifier.last_seq(), 1000)
                .await
                .map_err(|e| audit::VerifyError::Storage(e.to_string()))?;
            if page.is_empty() {
                break;
            }
            for entry in &page {
                verifier.check(entry)?;
            }
        }
        let (seq, hash) = self
            .audit_head()
            .await
            .map_err(|e| audit::VerifyError::Storage(e.to_string()))?;
        verifier.finish(seq, &hash)
    }
}
