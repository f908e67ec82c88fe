//! Reading the audit log's hash chain and what `audit verify` binds to it (the
//! verification itself is [`crate::audit::verify`]).

use super::{multi_row_insert, placeholders, Store, StoreError, Value};
use crate::audit::{AuditEntry, AuditEvent};

/// Takes the write lock of the one `audit_head` row and reads the head (seq, hash) in
/// the same round trip: appenders (threads or replicas) are serialised until commit.
pub(super) const LOCK_AUDIT_HEAD: &str =
    "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";

/// Moves the head to the last entry appended (`$1` seq, `$2` hash).
pub(super) const SET_AUDIT_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

/// The entries of `events`, chained after the head (`seq`, `prev`).
pub(super) fn chain<'a>(
    mut seq: i64,
    mut prev: String,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for event in events {
        seq += 1;
        let entry = AuditEntry::chain(seq, prev, event);
        prev = entry.hash.clone();
        entries.push(entry);
    }
    entries
}

/// Values of an audit entry.
pub(super) const VALUES: usize = 9;

/// The INSERT of `rows` audit entries, their [`values`] in order from `$first`.
pub(super) fn insert_sql(rows: usize, first: usize) -> String {
    multi_row_insert(
        "INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, detail, prev_hash, hash)",
        VALUES,
        rows,
        first,
    )
}

/// The values of one audit entry, in [`insert_sql`]'s column order.
pub(super) fn values(e: &AuditEntry) -> [Value<'_>; VALUES] {
    [
        Value::Int(e.seq),
        Value::Int(e.at_ms),
        Value::Text(&e.actor),
        Value::Text(&e.action),
        Value::Text(&e.target),
        Value::Text(&e.outcome),
        Value::Text(&e.detail),
        Value::Text(&e.prev_hash),
        Value::Text(&e.hash),
    ]
}

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
}

crate::store::schema::from_row! {
    /// What `audit verify` needs of a certificate row to bind it to its audit entries.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct CertificateBinding {
        /// Row id (issue order).
        pub id: i64,
        /// Serial, lowercase hex.
        pub serial: String,
        /// SHA-256 of the DER, lowercase hex.
        pub fingerprint: String,
        /// When it was signed, Unix seconds.
        pub issued_at: i64,
        /// When it was revoked.
        pub revoked_at: Option<i64>,
        /// Seq of its `sign` entry (0: none was stored when rows written before
        /// certificates named their entry were linked).
        pub sign_seq: Option<i64>,
    }
}

const BINDING_COLUMNS: &str = "id, serial, fingerprint, issued_at, revoked_at, sign_seq";

impl Store {
    /// Sequence number of the oldest stored audit entry (older ones were pruned), if any.
    pub async fn audit_first_seq(&self) -> Result<Option<i64>, StoreError> {
        let first: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log").fetch_one(pool).await?
        });
        Ok(first)
    }

    /// The certificate rows with these serials (missing ones are absent from the answer).
    pub async fn certificate_bindings(
        &self,
        serials: &[&str],
    ) -> Result<Vec<CertificateBinding>, StoreError> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM certificates WHERE serial IN ({})",
            placeholders(1, serials.len())
        );
        let rows: Vec<CertificateBinding> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql);
            for s in serials {
                query = query.bind(*s);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// A page of certificate rows in id order, after row `after`.
    pub async fn certificate_bindings_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<CertificateBinding>, StoreError> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM certificates WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let rows: Vec<CertificateBinding> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(after).bind(i64::from(limit)).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Of the entries at these seqs, the `ok` `sign` entries still stored (seq, target).
    pub async fn sign_entries(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT seq, target FROM audit_log WHERE seq IN ({}) \
             AND action = 'sign' AND outcome = 'ok'",
            placeholders(1, seqs.len())
        );
        let rows: Vec<(i64, String)> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql);
            for seq in seqs {
                query = query.bind(*seq);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }
}
