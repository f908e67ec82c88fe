//! Storage: issued certificates, revocations, tokens and the audit log, in SQLite
//! (default, one file, WAL) or PostgreSQL (several replicas share it).
//!
//! Queries are unchecked (`sqlx::query`), so a build never needs a database. The SQL
//! is written once with `$n` placeholders, which both drivers accept; each call is
//! expanded per backend by `on_pool!`.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use crate::audit::{self, AuditEntry, AuditEvent};

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
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
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
        let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *$tx)
            .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut prev: String = head.try_get("hash")?;
        let mut entries = Vec::new();
        for event in $events {
            seq += 1;
            let entry = AuditEntry::chain(seq, prev, event);
            prev = entry.hash.clone();
            entries.push(entry);
        }
        for chunk in entries.chunks(ROWS_PER_INSERT) {
            let sql = multi_row_insert(
                "INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, detail, prev_hash, hash)",
                9,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for entry in chunk {
                query = query
                    .bind(entry.seq)
                    .bind(entry.at_ms)
                    .bind(&entry.actor)
                    .bind(&entry.action)
                    .bind(&entry.target)
                    .bind(&entry.outcome)
                    .bind(&entry.detail)
                    .bind(&entry.prev_hash)
                    .bind(&entry.hash);
            }
            query.execute(&mut *$tx).await?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&prev)
            .execute(&mut *$tx)
            .await?;
    }};
}

/// Most rows in one INSERT: 64 certificates x 16 columns stays far below the bind
/// limits of SQLite (32766) and PostgreSQL (65535).
const ROWS_PER_INSERT: usize = 64;

/// `PREFIX VALUES ($1, .., $C), ($C+1, ..), ...` for `rows` rows of `columns` values.
fn multi_row_insert(prefix: &str, columns: usize, rows: usize) -> String {
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
            let _ = write!(sql, "${}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// Starts a write transaction. SQLite takes the write lock at BEGIN (so a
/// concurrent writer waits on busy_timeout instead of failing on upgrade).
macro_rules! begin_write {
    (sqlite $pool:expr) => {
        $pool.begin_with("BEGIN IMMEDIATE").await?
    };
    (postgres $pool:expr) => {
        $pool.begin().await?
    };
}

/// A certificate the issuer signed, as stored. Timestamps are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID in the URI SAN, if any.
    pub spiffe_id: Option<String>,
    /// Subject DN as text.
    pub subject: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
    /// When it was signed.
    pub issued_at: i64,
    /// Identity of whoever asked for it.
    pub requester: String,
    /// How the requester authenticated (mtls, token, kubernetes).
    pub auth_method: String,
    /// Name of the intermediate that signed it.
    pub intermediate: String,
    /// Cluster of the requester, when known.
    pub cluster: Option<String>,
    /// Kubernetes namespace of the requester, when known.
    pub namespace: Option<String>,
    /// Profile it was issued under.
    pub profile: String,
    /// SHA-256 fingerprint of the DER, lowercase hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
    /// The token it was asked for with, if any (checked live when it is recorded).
    pub token_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct CertificateRow {
    id: i64,
    serial: String,
    spiffe_id: Option<String>,
    subject: String,
    dns_names: String,
    ip_addresses: String,
    not_before: i64,
    not_after: i64,
    issued_at: i64,
    requester: String,
    auth_method: String,
    intermediate: String,
    cluster: Option<String>,
    namespace: Option<String>,
    profile: String,
    fingerprint: String,
    certificate: String,
    revoked_at: Option<i64>,
    revocation_reason: Option<String>,
    token_id: Option<String>,
}

impl CertificateRow {
    fn into_record(self) -> Result<(i64, CertificateRecord), StoreError> {
        let list = |s: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        Ok((
            self.id,
            CertificateRecord {
                dns_names: list(&self.dns_names)?,
                ip_addresses: list(&self.ip_addresses)?,
                serial: self.serial,
                spiffe_id: self.spiffe_id,
                subject: self.subject,
                not_before: self.not_before,
                not_after: self.not_after,
                issued_at: self.issued_at,
                requester: self.requester,
                auth_method: self.auth_method,
                intermediate: self.intermediate,
                cluster: self.cluster,
                namespace: self.namespace,
                profile: self.profile,
                fingerprint: self.fingerprint,
                certificate: self.certificate,
                revoked_at: self.revoked_at,
                revocation_reason: self.revocation_reason,
                token_id: self.token_id,
            },
        ))
    }
}

const CERT_COLUMNS: &str = "id, serial, spiffe_id, subject, dns_names, ip_addresses, not_before, \
     not_after, issued_at, requester, auth_method, intermediate, cluster, namespace, profile, \
     fingerprint, certificate, revoked_at, revocation_reason, token_id";

/// A bearer token as stored: only its SHA-256 hash.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRecord {
    /// Public identifier (shown in audit entries and as the requester).
    pub id: String,
    /// SHA-256 of the token, lowercase hex.
    pub hash: String,
    /// Name of the policy the token is bound to.
    pub policy: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Revocation time, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Expiry, Unix seconds (`None`: a token made before tokens expired).
    pub expires_at: Option<i64>,
}

/// One write the ledger commits; several are group-committed in one transaction.
#[derive(Clone, Debug)]
pub enum Write {
    /// A signed certificate and its audit entry.
    Issued(Box<CertificateRecord>, AuditEvent),
    /// An audit entry alone (a denial, a failure).
    Event(AuditEvent),
}

/// Filters for listing certificates.
#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    /// Exact SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Exact serial.
    pub serial: Option<String>,
    /// notAfter strictly before (Unix seconds).
    pub expires_before: Option<i64>,
    /// notAfter strictly after (Unix seconds).
    pub expires_after: Option<i64>,
    /// Only revoked (true) or only not revoked (false).
    pub revoked: Option<bool>,
}

/// A revoked certificate as the CRL needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Revocation time, Unix seconds.
    pub revoked_at: i64,
    /// Reason given by the revoker.
    pub reason: Option<String>,
}

/// Outcome of a revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked now.
    Revoked(CertificateRecord),
    /// It was already revoked; nothing changed.
    AlreadyRevoked(CertificateRecord),
}

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
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|_| StoreError::BadUrl("sqlite (malformed)".into()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit survives power loss, not only a process crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
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
                Backend::Sqlite(pool)
            }
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|_| StoreError::BadUrl("postgres (malformed)".into()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                Backend::Postgres(pool)
            }
            other => return Err(StoreError::BadUrl(other.to_string())),
        };
        Ok(Store { backend })
    }

    /// Name of the backend ("sqlite" or "postgres").
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
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
        let result = match &self.backend {
            Backend::Sqlite(pool) => {
                let migrator = sqlx::migrate!("./migrations/sqlite");
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
            Backend::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
        };
        result.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Commits every write in one transaction: all or nothing.
    ///
    /// A certificate asked for with a token (`auth_method` `token`, requester
    /// `token:ID`) is recorded only if that token is live in this same transaction,
    /// else nothing is and the answer is [`StoreError::RevokedToken`]: a token revoked
    /// by any replica or the CLI gets no certificate from the moment it is revoked,
    /// even when the requester was authenticated from a cache.
    pub async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut certificates = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        let mut tokens: Vec<&str> = Vec::new();
        let mut identities: Vec<&str> = Vec::new();
        let now = crate::clock::now().unix_timestamp();
        for write in writes {
            match write {
                Write::Issued(cert, event) => {
                    if let Some(id) = cert.token_id.as_deref() {
                        if !tokens.contains(&id) {
                            tokens.push(id);
                        }
                    }
                    if let Some(id) = cert.spiffe_id.as_deref() {
                        if !identities.contains(&id) {
                            identities.push(id);
                        }
                    }
                    certificates.push(&**cert);
                    events.push(event);
                }
                Write::Event(event) => events.push(event),
            }
        }
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                if !tokens.is_empty() {
                    let placeholders: Vec<String> =
                        (2..=tokens.len() + 1).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL \
                         AND (expires_at IS NULL OR expires_at > $1) AND id IN ({})",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(now);
                    for id in &tokens {
                        query = query.bind(*id);
                    }
                    let live = query.fetch_one(&mut *tx).await?;
                    if live != tokens.len() as i64 {
                        return Err(StoreError::RevokedToken);
                    }
                }
                if !identities.is_empty() {
                    let placeholders: Vec<String> =
                        (1..=identities.len()).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT spiffe_id FROM denied_identities WHERE spiffe_id IN ({}) LIMIT 1",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar::<_, String>(&sql);
                    for id in &identities {
                        query = query.bind(*id);
                    }
                    if let Some(id) = query.fetch_optional(&mut *tx).await? {
                        return Err(StoreError::DeniedIdentity(id));
                    }
                }
                for chunk in certificates.chunks(ROWS_PER_INSERT) {
                    let sql = multi_row_insert(
                        "INSERT INTO certificates (serial, spiffe_id, subject, dns_names, ip_addresses, \
                         not_before, not_after, issued_at, requester, auth_method, intermediate, cluster, \
                         namespace, profile, fingerprint, certificate, token_id)",
                        17,
                        chunk.len(),
                    );
                    let mut query = sqlx::query(&sql);
                    for c in chunk {
                        query = query
                            .bind(&c.serial)
                            .bind(&c.spiffe_id)
                            .bind(&c.subject)
                            .bind(json_list(&c.dns_names))
                            .bind(json_list(&c.ip_addresses))
                            .bind(c.not_before)
                            .bind(c.not_after)
                            .bind(c.issued_at)
                            .bind(&c.requester)
                            .bind(&c.auth_method)
                            .bind(&c.intermediate)
                            .bind(&c.cluster)
                            .bind(&c.namespace)
                            .bind(&c.profile)
                            .bind(&c.fingerprint)
                            .bind(&c.certificate)
                            .bind(&c.token_id);
                    }
                    query.execute(&mut *tx).await?;
                }
                append_audit!(tx, events.iter().copied());
                tx.commit().await?;
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
        Ok(())
    }

    /// Appends audit events on their own.
    pub async fn append_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let writes: Vec<Write> = events.iter().cloned().map(Write::Event).collect();
        self.commit(&writes).await
    }

    /// Marks a certificate revoked (and audits it) unless it already is.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Option<&str>,
        at: i64,
        event: AuditEvent,
    ) -> Result<Revocation, StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
                let row: Option<CertificateRow> = sqlx::query_as(&sql)
                    .bind(serial)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound);
                };
                let (_, mut record) = row.into_record()?;
                if record.revoked_at.is_some() {
                    return Ok(Revocation::AlreadyRevoked(record));
                }
                sqlx::query(
                    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
                     WHERE serial = $3 AND revoked_at IS NULL",
                )
                .bind(at)
                .bind(reason)
                .bind(serial)
                .execute(&mut *tx)
                .await?;
                append_audit!(tx, [&event]);
                tx.commit().await?;
                record.revoked_at = Some(at);
                record.revocation_reason = reason.map(str::to_string);
                Ok(Revocation::Revoked(record))
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
    }

    /// Stores a new token (hash only) and audits its creation.
    pub async fn create_token(
        &self,
        token: &TokenRecord,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                sqlx::query(
                    "INSERT INTO tokens (id, hash, policy, created_at, revoked_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token.id)
                .bind(&token.hash)
                .bind(&token.policy)
                .bind(token.created_at)
                .bind(token.revoked_at)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await?;
                append_audit!(tx, [&event]);
                tx.commit().await?;
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
        Ok(())
    }

    /// Revokes a token by id (and audits it); false if there was no such live token.
    pub async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                let done = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if done == 0 {
                    return Ok(false);
                }
                append_audit!(tx, [&event]);
                tx.commit().await?;
                Ok(true)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
    }

    /// Looks a token up by the SHA-256 of its secret.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = "SELECT id, hash, policy, created_at, revoked_at, expires_at FROM tokens WHERE hash = $1";
        let token = on_pool!(self, pool => {
            sqlx::query_as::<_, TokenRecord>(sql).bind(hash).fetch_optional(pool).await?
        });
        Ok(token)
    }

    /// Every token, newest first (hashes included; callers show ids only).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = "SELECT id, hash, policy, created_at, revoked_at, expires_at FROM tokens \
                   ORDER BY created_at DESC, id";
        let tokens = on_pool!(self, pool => {
            sqlx::query_as::<_, TokenRecord>(sql).fetch_all(pool).await?
        });
        Ok(tokens)
    }

    /// Puts a SPIFFE ID on the deny list (and audits it); false if it already was.
    pub async fn deny_identity(
        &self,
        spiffe_id: &str,
        reason: &str,
        at: i64,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                let done = sqlx::query(
                    "INSERT INTO denied_identities (spiffe_id, reason, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (spiffe_id) DO NOTHING",
                )
                .bind(spiffe_id)
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if done == 0 {
                    return Ok(false);
                }
                append_audit!(tx, [&event]);
                tx.commit().await?;
                Ok(true)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
    }

    /// Takes a SPIFFE ID off the deny list (and audits it); false if it was not on it.
    pub async fn allow_identity(
        &self,
        spiffe_id: &str,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        macro_rules! body {
            ($kind:tt, $pool:expr) => {{
                let mut tx = begin_write!($kind $pool);
                let done = sqlx::query("DELETE FROM denied_identities WHERE spiffe_id = $1")
                    .bind(spiffe_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if done == 0 {
                    return Ok(false);
                }
                append_audit!(tx, [&event]);
                tx.commit().await?;
                Ok(true)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => body!(sqlite, pool),
            Backend::Postgres(pool) => body!(postgres, pool),
        }
    }

    /// Why a SPIFFE ID is on the deny list, if it is.
    pub async fn denied(&self, spiffe_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT reason FROM denied_identities WHERE spiffe_id = $1";
        let reason = on_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(sql).bind(spiffe_id).fetch_optional(pool).await?
        });
        Ok(reason)
    }

    /// The deny list: (SPIFFE ID, reason, since).
    pub async fn denied_identities(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = "SELECT spiffe_id, reason, created_at FROM denied_identities ORDER BY spiffe_id";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, (String, String, i64)>(sql).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// One certificate by serial.
    pub async fn certificate(&self, serial: &str) -> Result<CertificateRecord, StoreError> {
        let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
        let row: Option<CertificateRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(serial).fetch_optional(pool).await?
        });
        Ok(row.ok_or(StoreError::NotFound)?.into_record()?.1)
    }

    /// Whether the certificate with this serial is recorded as revoked.
    pub async fn is_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        let sql = "SELECT revoked_at FROM certificates WHERE serial = $1";
        let revoked: Option<Option<i64>> = on_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(serial).fetch_optional(pool).await?
        });
        Ok(matches!(revoked, Some(Some(_))))
    }

    /// A page of certificates in issue order, after the row `after` (exclusive).
    /// Returns the records and the row id to continue from, if there may be more.
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<CertificateRecord>, Option<i64>), StoreError> {
        let sql = format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE id > $1 \
             AND ($2 IS NULL OR spiffe_id = $2) \
             AND ($3 IS NULL OR serial = $3) \
             AND ($4 IS NULL OR not_after < $4) \
             AND ($5 IS NULL OR not_after > $5) \
             AND ($6 IS NULL OR (revoked_at IS NOT NULL) = $6) \
             ORDER BY id LIMIT $7"
        );
        let rows: Vec<CertificateRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(after)
                .bind(&filter.spiffe_id)
                .bind(&filter.serial)
                .bind(filter.expires_before)
                .bind(filter.expires_after)
                .bind(filter.revoked)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        let more = rows.len() > limit as usize;
        let mut records = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for row in rows.into_iter().take(limit as usize) {
            let (id, record) = row.into_record()?;
            last = Some(id);
            records.push(record);
        }
        Ok((records, if more { last } else { None }))
    }

    /// Revoked, not yet expired certificates of one intermediate (for its CRL).
    pub async fn revoked(&self, intermediate: &str, now: i64) -> Result<Vec<Revoked>, StoreError> {
        let sql = "SELECT serial, revoked_at, revocation_reason FROM certificates \
                   WHERE intermediate = $1 AND revoked_at IS NOT NULL AND not_after > $2 \
                   ORDER BY id";
        let rows: Vec<(String, i64, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(intermediate).bind(now).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(serial, revoked_at, reason)| Revoked {
                serial,
                revoked_at,
                reason,
            })
            .collect())
    }

    /// Number of certificates stored.
    pub async fn certificate_count(&self) -> Result<i64, StoreError> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM certificates").fetch_one(pool).await?
        });
        Ok(n)
    }

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

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_numbers_every_value() {
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b)", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)"
        );
        assert_eq!(
            multi_row_insert("INSERT INTO t (a)", 1, 1),
            "INSERT INTO t (a) VALUES ($1)"
        );
    }
}
