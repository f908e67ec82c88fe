//! The recorder: the one writer of issued certificates and audit events.
//!
//! Concurrent requests hand their writes to one committer that commits whatever has
//! queued up in a single transaction (group commit): one fsync for many
//! certificates. A caller learns its write is durable only after the commit, and
//! only then may it return the certificate. On SQLite the committer is the store's
//! writer thread, which gathers each batch itself; on PostgreSQL it is a task here.
//!
//! On SQLite a task checkpoints the write-ahead log behind the writer, on its own
//! connection, so that no commit waits for the copy into the database file (SQLite
//! otherwise does it in the commit that crosses 4 MB of log: a pause of milliseconds for
//! every request queued behind it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Store, StoreError, Write, Writer, MAX_BATCH};

/// How often the write-ahead log is checkpointed while commits happen (SQLite).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

struct Pending {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the group commit.
#[derive(Clone, Debug)]
pub struct Recorder {
    committer: Committer,
}

#[derive(Clone, Debug)]
enum Committer {
    /// SQLite: the store's writer thread gathers the batches itself; the task checkpoints
    /// behind it and ends with the last handle.
    Writer {
        writer: Arc<Writer>,
        _checkpoints: Arc<Checkpointer>,
    },
    /// PostgreSQL: a task here gathers them.
    Task(mpsc::Sender<Pending>),
}

#[derive(Debug)]
struct Checkpointer(JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Recorder {
    /// Starts the group commit (and on SQLite the checkpoints) on the current Tokio runtime.
    pub fn start(store: Store) -> Recorder {
        let committer = match store.sqlite_writer() {
            Some(writer) => {
                let checkpointer = tokio::spawn(checkpoint_behind(store, writer.clone()));
                Committer::Writer {
                    writer,
                    _checkpoints: Arc::new(Checkpointer(checkpointer)),
                }
            }
            None => {
                let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(run(store, receiver));
                Committer::Task(sender)
            }
        };
        Recorder { committer }
    }

    /// Commits `write`; returns once it is durable (or failed).
    pub async fn record(&self, write: Write) -> Result<(), StoreError> {
        let sender = match &self.committer {
            Committer::Writer { writer, .. } => return writer.record(write).await,
            Committer::Task(sender) => sender,
        };
        let (done, committed) = oneshot::channel();
        sender
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
        match store.commit(writes.clone()).await {
            // One bad write must not fail the others: retry them one by one. Storage that
            // is down fails them all at once, so every caller hears 503 now instead of
            // waiting for one connection timeout per write.
            Err(e) if e.is_the_writes_own() && writes.len() > 1 => {
                for (write, waiter) in writes.iter().zip(waiters) {
                    let result = store.commit([write.clone()]).await;
                    let _ = waiter.send(result);
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

/// Checkpoints the store every [`CHECKPOINT_EVERY`] in which something was committed.
async fn checkpoint_behind(store: Store, writer: Arc<Writer>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpointed = 0;
    loop {
        tick.tick().await;
        let committed = writer.commits();
        if committed == checkpointed {
            continue;
        }
        checkpointed = committed;
        // A full disk or a closed pool: the next commit that crosses the limit
        // checkpoints by itself, and says why if it cannot.
        if let Err(e) = store.checkpoint_wal().await {
            tracing::debug!(error = %e, "checkpoint of the write-ahead log failed");
        }
    }
}
