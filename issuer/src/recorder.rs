//! The recorder: the one writer of issued certificates and audit events.
//!
//! Concurrent requests hand their writes to one task that commits whatever has
//! queued up in a single transaction (group commit): one fsync for many
//! certificates. A caller learns its write is durable only after the commit, and
//! only then may it return the certificate.
//!
//! On SQLite a second task checkpoints the write-ahead log behind the writer, on its own
//! connection, so that no commit waits for the copy into the database file (SQLite
//! otherwise does it in the commit that crosses 4 MB of log: a pause of milliseconds for
//! every request queued behind it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError, Write};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// How often the write-ahead log is checkpointed while commits happen (SQLite).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

struct Pending {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the group-committing writer task.
#[derive(Clone, Debug)]
pub struct Recorder {
    sender: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(store: Store) -> Recorder {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, receiver));
        Recorder { sender }
    }

    /// Commits `write`; returns once it is durable (or failed).
    pub async fn record(&self, write: Write) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.sender
            .send(Pending { write, done })
            .await
            .map_err(|_| StoreError::Unavailable("recorder stopped".into()))?;
        committed
            .await
            .map_err(|_| StoreError::Unavailable("recorder stopped".into()))?
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

async fn run(store: Store, mut receiver: mpsc::Receiver<Pending>) {
    let commits = Arc::new(AtomicU64::new(0));
    let checkpointer = tokio::spawn(checkpoint_behind(store.clone(), commits.clone()));
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (writes, waiters): (Vec<Write>, Vec<_>) =
            batch.drain(..).map(|p| (p.write, p.done)).unzip();
        let writes: Arc<[Write]> = writes.into();
        let result = store.commit(writes.clone()).await;
        commits.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
            // One bad write (a duplicate serial, a token revoked meanwhile) must not
            // fail the others: retry them one by one. Storage that is down fails them
            // all at once, so every caller hears 503 now instead of waiting for one
            // connection timeout per write.
            Err(
                StoreError::Duplicate(_) | StoreError::RevokedToken | StoreError::DeniedIdentity(_),
            ) if writes.len() > 1 => {
                for (write, waiter) in writes.iter().zip(waiters) {
                    let result = store.commit([write.clone()]).await;
                    let _ = waiter.send(result);
                }
            }
            Err(e) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
    checkpointer.abort();
}

/// Checkpoints the store every [`CHECKPOINT_EVERY`] in which something was committed;
/// returns at once on a store that checkpoints itself (PostgreSQL).
async fn checkpoint_behind(store: Store, commits: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpointed = 0;
    loop {
        tick.tick().await;
        let committed = commits.load(Ordering::Relaxed);
        if committed == checkpointed {
            continue;
        }
        checkpointed = committed;
        match store.checkpoint_wal().await {
            Ok(true) => {}
            Ok(false) => return,
            // A full disk or a closed pool: the next commit that crosses the limit
            // checkpoints by itself, and says why if it cannot.
            Err(e) => tracing::debug!(error = %e, "checkpoint of the write-ahead log failed"),
        }
    }
}
