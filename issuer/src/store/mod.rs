//! Storage: issued certificates, revocations, tokens and the audit log, in SQLite
//! (default, one file, WAL) or PostgreSQL (several replicas share it).
//!
//! Queries are unchecked (`sqlx::query`), so a build never needs a database. The SQL
//! is written once with `$n` placeholders, which both drivers accept; each call is
//! expanded per backend by `on_pool!`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use audit_log::CertificateBinding;
pub use certificates::{CertificateRecord, Revocation, Write};
pub use inventory::{CertificateFilter, Cursor, Order, QueryPlan, Revoked};
pub use retention::StoreSize;
pub use tokens::TokenRecord;
pub(crate) use writer::Writer;

/// Errors from storage. Messages never carry SQL text or connection strings.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint was violated (for example a duplicate serial).
    #[error("duplicate record: {0}")]
    Duplicate(String),
    /// The record does not exist.
    #[error("not found")]
    NotFound,
    /// A certificate asked for with a token that is no longer live: not recorded.
    #[error("unknown, expired or revoked token")]
    RevokedToken,
    /// A certificate for a SPIFFE ID on the deny list: not recorded.
    #[error(
        "SPIFFE ID {0} is on the deny list: it is not issued until an operator allows it again"
    )]
    DeniedIdentity(String),
    /// The storage URL is not one canopy understands.
    #[error("storage url must start with sqlite: or postgres:// (got scheme {0:?})")]
    BadUrl(String),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// Whether this error is one write's own fault (a duplicate serial, a token revoked or
    /// an identity denied meanwhile), not the storage's: a group commit that fails with it
    /// is tried again one write at a time, so that the others are not failed with it.
    pub fn is_the_writes_own(&self) -> bool {
        matches!(
            self,
            StoreError::Duplicate(_) | StoreError::RevokedToken | StoreError::DeniedIdentity(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate(db.constraint().unwrap_or("unique").to_string())
            }
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            _ => {
                tracing::warn!(error = %e, "storage error");
                StoreError::Unavailable(kind_of(&e).to_string())
            }
        }
    }
}

fn kind_of(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::PoolTimedOut => "connection pool timed out",
        sqlx::Error::PoolClosed => "connection pool closed",
        sqlx::Error::Io(_) => "i/o error talking to the database",
        sqlx::Error::Tls(_) => "tls error talking to the database",
        sqlx::Error::Database(_) => "database error",
        _ => "database error",
    }
}

/// Which database holds the data.
#[derive(Clone, Debug)]
enum Backend {
    /// The pool for everything but group commits, and the thread that runs those.
    Sqlite(SqlitePool, Arc<writer::Writer>),
    /// The pool, and the audit head this process's last group commit left.
    Postgres(PgPool, Arc<certificates::LastHead>),
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool, _) => $body,
            $crate::store::Backend::Postgres($pool, _) => $body,
        }
    };
}

/// Appends audit events inside an open transaction `$tx`, chaining their hashes.
///
/// The first statement updates the single `audit_head` row, which takes its write
/// lock (appenders, threads or replicas, are serialised until commit) and reads the
/// head in the same round trip. The entries go in as multi-row INSERTs: each
/// statement is a round trip to the database (for SQLite, to its worker thread), so a
/// group commit costs a few statements, not a few per certificate.
macro_rules! append_audit {
    ($tx:expr, $events:expr) => {{
        let head = sqlx::query($crate::store::audit_log::LOCK_AUDIT_HEAD)
            .fetch_one(&mut *$tx)
            .await?;
        let seq: i64 = sqlx::Row::try_get(&head, "seq")?;
        let prev: String = sqlx::Row::try_get(&head, "hash")?;
        let entries = $crate::store::audit_log::chain(seq, prev, $events);
        for chunk in entries.chunks($crate::store::ROWS_PER_INSERT) {
            let sql = $crate::store::audit_log::insert_sql(chunk.len(), 1);
            let query = bind_values!(
                sqlx::query(&sql),
                chunk.iter().flat_map($crate::store::audit_log::values)
            );
            query.execute(&mut *$tx).await?;
        }
        if let Some(last) = entries.last() {
            sqlx::query($crate::store::audit_log::SET_AUDIT_HEAD)
                .bind(last.seq)
                .bind(&last.hash)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// One value of a row the ledger writes: the list of a row's values is written once
/// (`CertificateRecord::values`, `AuditEntry` in `audit_log`) and bound by sqlx
/// ([`bind_values!`]) or by the SQLite writer thread (`rusqlite::ToSql`).
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    NullableText(Option<&'a str>),
    Blob(&'a [u8]),
    String(String),
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(s) | Value::NullableText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Value::NullableText(None) => ValueRef::Null,
            Value::Blob(b) => ValueRef::Blob(b),
            Value::String(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// Binds each [`Value`] of `$values` to the sqlx query `$query`, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                $crate::store::Value::Int(v) => query.bind(v),
                $crate::store::Value::Text(v) => query.bind(v),
                $crate::store::Value::NullableText(v) => query.bind(v),
                $crate::store::Value::Blob(v) => query.bind(v),
                $crate::store::Value::String(v) => query.bind(v),
            };
        }
        query
    }};
}

/// Most rows in one INSERT: a PostgreSQL group commit's statement of 64 certificates
/// (18 values each) and 64 audit entries (9 each) stays far below the bind limits of
/// SQLite (32766) and PostgreSQL (65535).
const ROWS_PER_INSERT: usize = 64;

/// `PREFIX VALUES ($F, .., $F+C-1), ($F+C, ..), ...` for `rows` rows of `columns` values,
/// numbered from `first`.
fn multi_row_insert(prefix: &str, columns: usize, rows: usize, first: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(prefix.len() + 8 + rows * columns * 6);
    sql.push_str(prefix);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", first + row * columns + column);
        }
        sql.push(')');
    }
    sql
}

/// `$FIRST, $FIRST+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `$body` in a write transaction `$tx` on either backend. SQLite takes the
/// write lock at BEGIN (so a concurrent writer waits on busy_timeout instead of
/// failing on upgrade). `$body` commits (or rolls back) and gives the result; a `?` or
/// `return` in it returns from the calling function.
macro_rules! in_write_tx {
    ($store:expr, $tx:ident => $body:block) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(pool, _) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            $crate::store::Backend::Postgres(pool, _) => {
                let mut $tx = pool.begin().await?;
                $body
            }
        }
    };
}

// Declared after the macros above, which they use.
mod audit_log;
mod certificates;
mod checkpoints;
mod inventory;
mod retention;
pub(crate) mod schema;
mod tokens;
mod writer;

/// Most writes committed in one transaction (group commit).
pub(crate) const MAX_BATCH: usize = 256;

/// Pages of write-ahead log (4 KB each: 200 MB) after which a SQLite commit checkpoints
/// it itself (see [`Store::checkpoint_wal`]). Under steady load the recorder's
/// checkpoints never quite catch up with the writer, so the log only starts over from
/// its beginning after such a commit, which copies what they left: 5 to 40 ms in which
/// every queued request waits. At 40 MB that came about four times a second at 16
/// connections (p99 6.4 to 8.2 ms); at 200 MB under twice a second (p99 4.4 to 5.5 ms).
/// The log file keeps the size it reached until the issuer closes the database.
const WAL_AUTOCHECKPOINT_PAGES: &str = "50000";

/// How long a SQLite connection (the pool's and the writer thread's) waits for another
/// connection's write lock before it answers "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often opening or migrating a SQLite file is tried when another process is doing
/// the same at that moment (see [`Store::connect`] and [`Store::migrate`]).
const SQLITE_START_ATTEMPTS: u32 = 10;

/// Whether SQLite answered SQLITE_BUSY (any extended code): another connection holds a
/// lock SQLite would not wait for.
fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}

/// Runs `op` (opening or migrating a SQLite file) again, with a growing pause, while it
/// fails in a way `racing` says another process starting on the same file can cause; at
/// most [`SQLITE_START_ATTEMPTS`] times, then its last answer stands.
async fn retry_sqlite_start<T, E, Fut>(
    mut op: impl FnMut() -> Fut,
    racing: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if racing(&e) && attempt < SQLITE_START_ATTEMPTS => {
                tracing::info!(attempt, error = %e, "SQLite start raced another process; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// Rows a conversion batch rewrites in one transaction.
const CONVERT_BATCH: i64 = 500;

/// Rewrites SQLite rows stored before certificates were kept as DER (migration 0003
/// keeps their PEM in `pem`): DER in, PEM out, a batch per transaction, so that an
/// interrupted start resumes where it stopped. PostgreSQL converts them in SQL.
async fn convert_legacy_pem(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut converted = 0u64;
    loop {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, pem FROM certificates WHERE pem IS NOT NULL ORDER BY id LIMIT $1",
        )
        .bind(CONVERT_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for (id, pem) in &rows {
            let der = certificates::legacy_pem_to_der(pem)?;
            sqlx::query("UPDATE certificates SET der = $1, pem = NULL WHERE id = $2")
                .bind(der)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        converted += rows.len() as u64;
    }
    if converted > 0 {
        tracing::info!(converted, "stored certificates converted from PEM to DER");
    }
    Ok(())
}

/// Sets `sign_seq` on SQLite rows stored before certificates named their `sign` entry
/// (migration 0005): the entry's seq, found through the audit log's `(action, target)`
/// index, or 0 where none is stored (archived and pruned). A batch per transaction, so
/// that an interrupted start resumes where it stopped; then both indexes go, the one that
/// put every new certificate on a random page and the one that marked the rows to link.
/// PostgreSQL links them in the migration.
async fn link_sign_entries(pool: &SqlitePool) -> Result<(), StoreError> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'certificates_sign_seq_pending'",
    )
    .fetch_one(pool)
    .await?;
    if pending == 0 {
        return Ok(());
    }
    let mut linked = 0u64;
    loop {
        let done = sqlx::query(
            "UPDATE certificates SET sign_seq = COALESCE((SELECT min(seq) FROM audit_log \
             WHERE action = 'sign' AND outcome = 'ok' AND target = certificates.serial), 0) \
             WHERE id IN (SELECT id FROM certificates WHERE sign_seq IS NULL ORDER BY id LIMIT $1)",
        )
        .bind(CONVERT_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        if done == 0 {
            break;
        }
        if linked / 100_000 != (linked + done) / 100_000 {
            tracing::info!(
                linked = linked + done,
                "linking stored certificates to their audit sign entries"
            );
        }
        linked += done;
    }
    sqlx::query("DROP INDEX IF EXISTS audit_log_action_target")
        .execute(pool)
        .await?;
    sqlx::query("DROP INDEX IF EXISTS certificates_sign_seq_pending")
        .execute(pool)
        .await?;
    if linked > 0 {
        tracing::info!(
            linked,
            "stored certificates linked to their audit sign entries"
        );
    }
    Ok(())
}

/// Connection to the issuer's database.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`); does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        let backend = match scheme {
            "sqlite" => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    // Nothing issued may go unrecorded: a database that ends with the
                    // process records nothing.
                    return Err(StoreError::BadUrl("sqlite in memory (not durable)".into()));
                }
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|_| StoreError::BadUrl("sqlite (malformed)".into()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit survives power loss, not only a process crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    // 64 MiB of page cache per connection instead of SQLite's 2 MiB: a
                    // store of millions of rows keeps its index interiors in memory
                    // rather than reading them from the OS on every insert and query.
                    .pragma("cache_size", "-65536")
                    // The recorder checkpoints the write-ahead log from a connection of its
                    // own (`Store::checkpoint_wal`), so no commit waits for the database file's
                    // writes and fsync; a commit checkpoints only if that falls behind by
                    // 200 MB (SQLite's default is 4 MB, in whichever commit crosses it).
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    // A local file does not go away like a server connection: pinging it on
                    // every acquire only costs a round trip to its worker thread.
                    .test_before_acquire(false)
                    // A COMMIT that fails with an I/O error (disk full) is rolled back by
                    // SQLite itself; sqlx's own ROLLBACK then fails and leaves the connection
                    // marked "in a transaction", refusing every later BEGIN. Close such a
                    // connection instead of reusing it (found by tests/faults_sqlite.rs).
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            use sqlx::sqlite::SqliteTransactionManager as Tm;
                            use sqlx::{Connection, TransactionManager};
                            if Tm::get_transaction_depth(conn) == 0 {
                                return Ok(true);
                            }
                            // A dropped transaction's rollback may still be queued: flush it.
                            conn.ping().await?;
                            Ok(Tm::get_transaction_depth(conn) == 0)
                        })
                    });
                // A new file is switched to WAL by the first connection, under an exclusive
                // lock that SQLite does not wait for: a process starting beside another on
                // the same new file (replicas, `serve` and `token create`) can be told
                // "database is locked" at once. It is free again within milliseconds.
                let pool = retry_sqlite_start(
                    || pool.clone().connect_with(options.clone()),
                    is_sqlite_busy,
                )
                .await?;
                let writer = writer::Writer::open(options.get_filename(), url).await?;
                Backend::Sqlite(pool, Arc::new(writer))
            }
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|_| StoreError::BadUrl("postgres (malformed)".into()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                Backend::Postgres(pool, Arc::default())
            }
            other => return Err(StoreError::BadUrl(other.to_string())),
        };
        Ok(Store { backend })
    }

    /// Name of the backend ("sqlite" or "postgres").
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(..) => "sqlite",
            Backend::Postgres(..) => "postgres",
        }
    }

    /// Applies the embedded migrations of this backend.
    ///
    /// Several processes may start on one new database at once (replicas sharing a SQLite
    /// file, `serve` beside `token create`). On PostgreSQL sqlx holds an advisory lock
    /// while it migrates; SQLite has none, so a process can find a migration pending,
    /// then fail to apply it ("table certificates already exists") because another
    /// process committed it meanwhile. Each migration is one transaction, rolled back on
    /// failure, so running the migrator again skips what the other process applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let result = async {
            match &self.backend {
                Backend::Sqlite(pool, _) => {
                    let migrator = schema::SQLITE.migrator().await?;
                    retry_sqlite_start(
                        || migrator.run(pool),
                        |e| {
                            matches!(
                                e,
                                sqlx::migrate::MigrateError::Execute(_)
                                    | sqlx::migrate::MigrateError::ExecuteMigration(..)
                            )
                        },
                    )
                    .await
                }
                Backend::Postgres(pool, _) => schema::POSTGRES.migrator().await?.run(pool).await,
            }
        }
        .await;
        result.map_err(|e| StoreError::Migration(e.to_string()))?;
        if let Backend::Sqlite(pool, _) = &self.backend {
            convert_legacy_pem(pool).await?;
            link_sign_entries(pool).await?;
        }
        Ok(())
    }

    /// On SQLite, copies what the write-ahead log holds into the database file and syncs
    /// it (a passive checkpoint: it waits for no reader or writer, and none waits for it),
    /// on a pool connection of its own. Nothing on PostgreSQL, which checkpoints itself.
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(pool, _) = &self.backend {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool (and SQLite's writer thread).
    pub async fn close(&self) {
        if let Backend::Sqlite(_, writer) = &self.backend {
            writer.close().await;
        }
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that ends with the process records nothing past it; the writer thread's
    /// connection could not share it either.
    #[tokio::test]
    async fn in_memory_sqlite_is_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://?mode=memory",
            "sqlite:x.db?mode=memory",
        ] {
            match Store::connect(url, 1).await {
                Err(StoreError::BadUrl(why)) => assert!(why.contains("memory"), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn multi_row_insert_numbers_every_value() {
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b)", 2, 3, 1),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)"
        );
        assert_eq!(
            multi_row_insert("INSERT INTO t (a)", 1, 1, 4),
            "INSERT INTO t (a) VALUES ($4)"
        );
    }
}
