//! SQLite's writer: one thread, with a connection of its own, that runs every group
//! commit calling SQLite directly.
//!
//! Through sqlx every statement is a round trip to the connection's worker thread (a
//! channel send, a wake-up there and a wake-up back), and a group commit is eight
//! statements. Here the whole transaction is one hand-off: the batch comes to this
//! thread, which runs BEGIN IMMEDIATE to COMMIT and answers once. Its page cache also
//! stays warm: nothing else writes between its commits but rare operator writes
//! (revocations, tokens, retention), which go through the sqlx pool and which SQLite's
//! locks keep apart from this connection's transactions.
//!
//! The thread also gathers the batch itself ([`Writer::record`]): it takes every write
//! queued while it was committing and commits them together. A task that gathered them
//! instead (the recorder's, as on PostgreSQL) had to be woken and scheduled between
//! every two commits, on a runtime busy with the requests' signatures: 200 µs a commit
//! in which the disk did nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::certificates::{denied_identity_sql, insert_certificates_sql, live_tokens_sql, Batch};
use super::{
    audit_log, StoreError, Write, MAX_BATCH, SQLITE_BUSY_TIMEOUT, WAL_AUTOCHECKPOINT_PAGES,
};

/// The writer's page cache, KiB. It holds what each commit changes (the tables' last
/// pages, the index pages on the way to each new key), and unlike the pool's caches it is
/// not emptied by other connections' commits, so it fills up to this and stays: 16 MiB
/// holds the interior pages of the indexes of a store of millions of rows.
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Statements kept prepared (a commit uses six).
const STATEMENT_CACHE: usize = 16;

type Done = oneshot::Sender<Result<(), StoreError>>;

enum Job {
    /// One write, committed with every other write queued by then (group commit).
    Record {
        write: Write,
        done: Done,
    },
    /// These writes, in a transaction of their own.
    Commit {
        writes: Arc<[Write]>,
        now: i64,
        done: Done,
    },
    Close(oneshot::Sender<()>),
}

/// Handle to the writer thread; the thread ends when the store is closed or dropped.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Transactions committed (or tried) so far.
    commits: Arc<AtomicU64>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("store closed".into())
}

impl Writer {
    /// Opens the database file at `path` (made by the pool already) on a new thread,
    /// with the options of the storage URL `url` (`?mode=ro`, ...).
    pub(super) async fn open(path: &Path, url: &str) -> Result<Writer, StoreError> {
        let uri = file_uri(path, url);
        let (jobs, mut receiver) = mpsc::channel(4 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let (opened, result) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match open(&uri) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    run(&uri, conn, &mut receiver, &counted);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a thread: {e}")))?;
        result.await.map_err(|_| stopped())??;
        Ok(Writer { jobs, commits })
    }

    async fn run_job(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Commits `writes` in one transaction; `now` (Unix seconds) decides token expiry.
    pub(super) async fn commit(&self, writes: Arc<[Write]>, now: i64) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.run_job(Job::Commit { writes, now, done }, answer)
            .await
    }

    /// Commits `write` with the others queued meanwhile; returns once it is durable.
    pub(crate) async fn record(&self, write: Write) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.run_job(Job::Record { write, done }, answer).await
    }

    /// Transactions committed (or tried) so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Closes the connection; later commits answer "store closed".
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The SQLite URI of the file at `path` with the query of `url`: its parameters (`mode`,
/// `immutable`, `vfs`, `cache`) are SQLite's own, as sqlx reads them for the pool.
fn file_uri(path: &Path, url: &str) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '?' | '#' | '%' => uri.push_str(&format!("%{:02X}", u32::from(c))),
            c => uri.push(c),
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        uri.push('?');
        uri.push_str(query);
    }
    uri
}

/// The writer's connection, set up as the pool's are (`Store::connect`).
fn open(uri: &str) -> Result<Connection, StoreError> {
    // A URI's `mode` may only narrow these flags (`ro`), never widen them.
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
    ))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The thread's connection: opened again after a failure that left it unusable.
struct Conn<'a> {
    uri: &'a str,
    conn: Option<Connection>,
    commits: &'a AtomicU64,
}

impl Conn<'_> {
    fn commit(&mut self, writes: &[Write], now: i64) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let result = match self.conn.as_mut() {
            Some(c) => commit(c, writes, now),
            None => open(self.uri).and_then(|c| commit(self.conn.insert(c), writes, now)),
        };
        if result.is_err() && !self.conn.as_ref().is_some_and(rolled_back) {
            // Opened again for the next commit.
            self.conn = None;
        }
        result
    }

    /// Commits a gathered batch and answers each write. One bad write (a duplicate
    /// serial, a token revoked meanwhile) must not fail the others: they are then
    /// committed one by one. Storage that is down fails them all at once.
    fn record(&mut self, batch: Vec<(Write, Done)>) {
        let (writes, waiters): (Vec<Write>, Vec<Done>) = batch.into_iter().unzip();
        let now = crate::clock::now().unix_timestamp();
        match self.commit(&writes, now) {
            Err(e) if e.is_the_writes_own() && writes.len() > 1 => {
                for (write, waiter) in writes.iter().zip(waiters) {
                    let _ = waiter.send(self.commit(std::slice::from_ref(write), now));
                }
            }
            result => {
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
    }
}

fn run(uri: &str, conn: Connection, jobs: &mut mpsc::Receiver<Job>, commits: &AtomicU64) {
    let mut conn = Conn {
        uri,
        conn: Some(conn),
        commits,
    };
    let mut next = None;
    while let Some(job) = next.take().or_else(|| jobs.blocking_recv()) {
        match job {
            Job::Record { write, done } => {
                let mut batch = vec![(write, done)];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(Job::Record { write, done }) => batch.push((write, done)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                conn.record(batch);
            }
            Job::Commit { writes, now, done } => {
                let _ = done.send(conn.commit(&writes, now));
            }
            Job::Close(done) => {
                drop(conn.conn.take());
                let _ = done.send(());
                return;
            }
        }
    }
}

/// After a failed commit: whether the connection is out of its transaction (SQLite
/// rolls back by itself after an I/O error in COMMIT; else it is rolled back here).
fn rolled_back(conn: &Connection) -> bool {
    conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok()
}

/// [`Store::commit`](super::Store::commit) on SQLite: the same checks and rows as on
/// PostgreSQL, in one transaction that takes the write lock at BEGIN.
fn commit(conn: &mut Connection, writes: &[Write], now: i64) -> Result<(), StoreError> {
    let batch = Batch::of(writes);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // One value per check and one row per INSERT: on this thread a statement costs no
    // round trip, so the statements stay few and prepared once (an IN list of each
    // length would be a statement of its own, with a temporary table behind it).
    let mut live_token = tx.prepare_cached(&live_tokens_sql(1, 2, 1))?;
    for id in &batch.tokens {
        let live: i64 = live_token.query_row((now, id), |row| row.get(0))?;
        if live != 1 {
            return Err(StoreError::RevokedToken);
        }
    }
    drop(live_token);
    let mut denied = tx.prepare_cached(&denied_identity_sql(1, 1))?;
    for id in &batch.identities {
        if denied.exists([id])? {
            return Err(StoreError::DeniedIdentity((*id).to_string()));
        }
    }
    drop(denied);
    let (seq, prev): (i64, String) = tx
        .prepare_cached(audit_log::LOCK_AUDIT_HEAD)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    // A one-row INSERT also needs no statement journal: SQLite checks a row's
    // constraints before it writes it (a multi-row one copies every page it changes
    // there, to undo the rows before a duplicate).
    let mut insert = tx.prepare_cached(&insert_certificates_sql(1, 1))?;
    for (c, sign) in &batch.certificates {
        insert.execute(params_from_iter(c.values(seq + sign)))?;
    }
    drop(insert);
    let entries = audit_log::chain(seq, prev, batch.events.iter().copied());
    let mut insert = tx.prepare_cached(&audit_log::insert_sql(1, 1))?;
    for entry in &entries {
        insert.execute(params_from_iter(audit_log::values(entry)))?;
    }
    drop(insert);
    if let Some(last) = entries.last() {
        tx.prepare_cached(audit_log::SET_AUDIT_HEAD)?
            .execute((last.seq, &last.hash))?;
    }
    tx.commit()?;
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Duplicate("unique".into())
            }
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            _ => {
                tracing::warn!(error = %e, "storage error");
                let kind = match e.sqlite_error_code() {
                    Some(ffi::ErrorCode::SystemIoFailure | ffi::ErrorCode::DiskFull) => {
                        "i/o error talking to the database"
                    }
                    _ => "database error",
                };
                StoreError::Unavailable(kind.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_keeps_the_path_and_the_urls_options() {
        let path = Path::new("/var/lib/canopy/a?b#c%d.db");
        assert_eq!(
            file_uri(path, "sqlite:/var/lib/canopy/a?mode=ro"),
            "file:/var/lib/canopy/a%3Fb%23c%25d.db?mode=ro"
        );
        assert_eq!(
            file_uri(Path::new("issuer.db"), "sqlite:issuer.db"),
            "file:issuer.db"
        );
    }
}
