//! `audit verify`: the whole chain, from genesis or from a signed checkpoint, through the
//! archive segments and on into the database; every checkpoint in range against the
//! chain; and the certificate rows against the entries that recorded them.
//!
//! Binding rows to entries (`bindings.rs`): each `ok` `sign` entry needs its row (same
//! fingerprint), each `ok` `revoke` entry a row with `revoked_at` set, unless a later
//! `tidy` entry (actor `canopy-issuer`, target `certificates`, detail `cutoff`) allowed
//! the row's deletion (its `not_after` before the cutoff). The other way round, each row
//! needs its `sign` entry; rows older than the verified range are counted as not
//! covered. Everything is read in pages: memory grows with the rows deleted but not yet
//! covered by a tidy entry at that point of the walk, not with the log.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::Path;

use serde::Serialize;

use super::archive::{list_segments, read_segment, Segment, SegmentLine};
use super::checkpoint::{Checkpoint, CheckpointPublicKey};
use super::{AuditEntry, Verifier};
use crate::store::Store;

mod bindings;

const PAGE: u32 = 1000;
/// Problems listed; more are counted.
const MAX_PROBLEMS: usize = 50;
/// Entries are timed when their event is built and ordered when committed, so times near
/// a boundary of the verified range are compared with this slack (milliseconds).
const SLACK_MS: i64 = 60_000;

/// What to verify against.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// Folder of archive segments to walk before the database.
    pub archive_dir: Option<&'a Path>,
    /// Key checkpoints are checked with (none: their signatures are not checked, and a
    /// pruned log cannot be verified).
    pub key: Option<&'a CheckpointPublicKey>,
    /// A hash (12+ hex digits) written down earlier: the chain must contain it.
    pub expect_head: Option<&'a str>,
}

/// Certificate rows against the entries that recorded them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bindings {
    /// `ok` `sign` entries checked.
    pub sign_entries: u64,
    /// `ok` `revoke` entries checked.
    pub revoke_entries: u64,
    /// Entries whose row was deleted as a `tidy` entry allowed.
    pub covered_by_tidy: u64,
    /// Certificate rows read.
    pub rows: u64,
    /// Rows whose `sign` entry is older than the verified range (not covered).
    pub rows_not_covered: u64,
    /// Rows whose `sign` entry was appended after the walk ended (the issuer is running).
    pub rows_newer: u64,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// No problem found.
    pub ok: bool,
    /// The checkpoint the walk started from (`None`: from genesis).
    pub from_checkpoint: Option<i64>,
    /// First entry verified.
    pub first_seq: Option<i64>,
    /// Last entry verified.
    pub last_seq: i64,
    /// Its hash.
    pub head_hash: String,
    /// Entries verified (archives and database).
    pub entries: u64,
    /// Of those, read from archive segments.
    pub archived_entries: u64,
    /// Archive segments walked.
    pub segments: usize,
    /// Signed checkpoints matched against the chain.
    pub checkpoints: u64,
    /// Whether checkpoint signatures were checked (a key was given).
    pub signatures_checked: bool,
    /// Id of that key.
    pub key_id: Option<String>,
    /// Where `--expect-head` was found: (entry, entries after it).
    pub expected_head_at: Option<(i64, i64)>,
    /// Certificate rows against entries.
    pub certificates: Bindings,
    /// What is wrong, first [`MAX_PROBLEMS`].
    pub problems: Vec<String>,
    /// Problems beyond those listed.
    pub more_problems: u64,
}

/// Verifies the audit log; never fails itself: what is wrong is in `problems`.
pub async fn verify(store: &Store, options: &VerifyOptions<'_>) -> VerifyReport {
    let mut walk = Walk {
        options,
        report: VerifyReport {
            signatures_checked: options.key.is_some(),
            key_id: options.key.map(|k| k.key_id().to_string()),
            ..VerifyReport::default()
        },
        verifier: Verifier::new(),
        checkpoints: BTreeMap::new(),
        page: Vec::new(),
        pending: BinaryHeap::new(),
        archive_bound: 0,
        first_at_ms: None,
        first_db_at_ms: None,
        db_start: 0,
        expected_at: None,
    };
    if let Err(stop) = walk.run(store).await {
        walk.problem(stop);
    }
    walk.report.ok = walk.report.problems.is_empty();
    walk.report
}

struct Walk<'a> {
    options: &'a VerifyOptions<'a>,
    report: VerifyReport,
    verifier: Verifier,
    /// Checkpoints not yet reached by the walk.
    checkpoints: BTreeMap<i64, Vec<Checkpoint>>,
    /// Entries read but not yet bound to rows: (entry, read from an archive).
    page: Vec<(AuditEntry, bool)>,
    /// Entries whose row is gone, waiting for a tidy entry: (not_after, seq, serial, action).
    pending: BinaryHeap<Reverse<(i64, i64, String, &'static str)>>,
    /// Archived `sign` entries whose row exists.
    archive_bound: u64,
    first_at_ms: Option<i64>,
    first_db_at_ms: Option<i64>,
    /// First entry read from the database.
    db_start: i64,
    expected_at: Option<i64>,
}

type Stop = String;

fn storage(e: crate::store::StoreError) -> Stop {
    format!("could not read the database: {e}")
}

/// The archive segments follow each other without a gap.
fn segments_meet(segments: &[Segment]) -> Result<(), Stop> {
    for pair in segments.windows(2) {
        if pair[1].first != pair[0].last + 1 {
            return Err(format!(
                "the archive segments do not meet: {} ends at entry {} and {} starts at entry {}: \
                 entries {}..={} are missing (a segment was removed or does not belong here)",
                pair[0].path.display(),
                pair[0].last,
                pair[1].path.display(),
                pair[1].first,
                pair[0].last + 1,
                pair[1].first - 1
            ));
        }
    }
    Ok(())
}

impl Walk<'_> {
    fn problem(&mut self, problem: String) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(problem);
        } else {
            self.report.more_problems += 1;
        }
    }

    fn check_signature(&mut self, checkpoint: &Checkpoint) -> Result<(), String> {
        match self.options.key {
            Some(key) => key.verify(checkpoint).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    async fn run(&mut self, store: &Store) -> Result<(), Stop> {
        let segments = match self.options.archive_dir {
            Some(dir) => list_segments(dir).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        segments_meet(&segments)?;
        let (head_seq, _) = store.audit_head().await.map_err(storage)?;
        let first = self.start(store, &segments, head_seq).await?;
        self.load_checkpoints(store, first).await?;
        for segment in &segments {
            self.segment(store, segment).await?;
        }
        self.flush(store).await?;
        let head = self.database(store, head_seq, !segments.is_empty()).await?;
        self.flush(store).await?;
        self.finish(store, head).await
    }

    /// Where the walk starts: genesis, or the signed checkpoint just before the oldest
    /// entry kept (in the archive or the database). Returns that entry's number.
    async fn start(
        &mut self,
        store: &Store,
        segments: &[Segment],
        head_seq: i64,
    ) -> Result<i64, Stop> {
        let db_first = store.audit_first_seq().await.map_err(storage)?;
        let first = segments
            .first()
            .map(|s| s.first)
            .or(db_first)
            .unwrap_or(head_seq + 1);
        if first <= 1 {
            return Ok(first);
        }
        let Some(key) = self.options.key else {
            return Err(format!(
                "the log starts at entry {first} (older entries were pruned), so it can only be \
                 verified from the signed checkpoint at entry {}: configure audit.checkpoint_key \
                 or pass --checkpoint-key PUB.pem",
                first - 1
            ));
        };
        let anchor = store.checkpoint_at(first - 1).await.map_err(storage)?;
        let Some(anchor) = anchor else {
            return Err(format!(
                "entries 1..={} are not in the database{} and there is no signed checkpoint at \
                 entry {} to verify from: pass --archive DIR with the archive segments",
                first - 1,
                if segments.is_empty() {
                    ""
                } else {
                    " nor in the archive segments given"
                },
                first - 1
            ));
        };
        key.verify(&anchor).map_err(|e| e.to_string())?;
        self.report.checkpoints += 1;
        self.report.from_checkpoint = Some(anchor.seq);
        self.verifier = Verifier::resume(anchor.seq, anchor.hash);
        Ok(first)
    }

    /// Every stored checkpoint after entry `first - 1`, to be matched as the walk
    /// reaches its entry.
    async fn load_checkpoints(&mut self, store: &Store, first: i64) -> Result<(), Stop> {
        let mut after = first - 1;
        loop {
            let page = store.checkpoints(after, PAGE).await.map_err(storage)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for cp in page {
                self.checkpoints.entry(cp.seq).or_default().push(cp);
            }
        }
        Ok(())
    }

    /// One archive segment: its entries, then its closing checkpoint at its last entry.
    async fn segment(&mut self, store: &Store, segment: &Segment) -> Result<(), Stop> {
        let mut closing = None;
        for line in read_segment(segment).map_err(|e| e.to_string())? {
            match line.map_err(|e| e.to_string())? {
                SegmentLine::Entry(entry) => {
                    if closing.is_some() {
                        return Err(format!(
                            "archive segment {}: entries after its closing checkpoint",
                            segment.path.display()
                        ));
                    }
                    self.entry(store, entry, true)
                        .await
                        .map_err(|e| format!("archive segment {}: {e}", segment.path.display()))?;
                    self.report.archived_entries += 1;
                }
                SegmentLine::Checkpoint { checkpoint } => closing = Some(checkpoint),
            }
        }
        let Some(closing) = closing else {
            return Err(format!(
                "archive segment {} has no closing checkpoint: it is cut short",
                segment.path.display()
            ));
        };
        if self.verifier.last_seq() != segment.last || closing.seq != segment.last {
            return Err(format!(
                "archive segment {} should hold entries {}..={} but ends at entry {}",
                segment.path.display(),
                segment.first,
                segment.last,
                self.verifier.last_seq()
            ));
        }
        self.check_signature(&closing)
            .map_err(|e| format!("archive segment {}: {e}", segment.path.display()))?;
        if closing.hash != self.verifier.last_hash() {
            return Err(format!(
                "archive segment {}: its checkpoint does not match its last entry",
                segment.path.display()
            ));
        }
        self.report.checkpoints += 1;
        self.report.segments += 1;
        Ok(())
    }

    /// The entries in the database, after those of the archive; read on up to the head
    /// as it was read last (the issuer may append meanwhile). Returns that head.
    async fn database(
        &mut self,
        store: &Store,
        head_seq: i64,
        archived: bool,
    ) -> Result<(i64, String), Stop> {
        self.db_start = self.verifier.last_seq() + 1;
        let mut after = self.verifier.last_seq();
        let mut head = (head_seq, String::new());
        for _ in 0..5 {
            loop {
                let page = store.audit_entries(after, PAGE).await.map_err(storage)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for entry in page {
                    if self.first_db_at_ms.is_none() {
                        self.first_db_at_ms = Some(entry.at_ms);
                        let expected = self.verifier.last_seq() + 1;
                        if archived && entry.seq > expected {
                            return Err(format!(
                                "entries {expected}..={} are neither in the archive segments nor in \
                                 the database: a segment is missing from the archive folder",
                                entry.seq - 1
                            ));
                        }
                    }
                    self.entry(store, entry, false).await?;
                }
            }
            head = store.audit_head().await.map_err(storage)?;
            // The issuer may have appended meanwhile: read up to the head read last.
            if head.0 <= self.verifier.last_seq() {
                break;
            }
        }
        Ok(head)
    }

    /// The end of the walk: the head, checkpoints beyond the log's end, rows deleted
    /// outside the issuer, rows without their entry, the expected head.
    async fn finish(&mut self, store: &Store, head: (i64, String)) -> Result<(), Stop> {
        let last_seq = self.verifier.last_seq();
        self.report.last_seq = last_seq;
        self.report.head_hash = self.verifier.last_hash().to_string();
        let verifier = std::mem::take(&mut self.verifier);
        if let Err(e) = verifier.finish(head.0, &head.1) {
            self.problem(e.to_string());
        }
        let beyond: Vec<i64> = self.checkpoints.keys().copied().collect();
        for seq in beyond {
            self.problem(format!(
                "a signed checkpoint vouches for entry {seq} but the log ends at entry {last_seq}: \
                 entries were removed from its end"
            ));
        }
        let unresolved = std::mem::take(&mut self.pending).into_sorted_vec();
        for Reverse((_, seq, serial, action)) in unresolved.into_iter().rev() {
            self.problem(format!(
                "certificate {serial} ({action} in audit entry {seq}) has no row in the certificates \
                 table and no later tidy entry allowed its deletion: the row was deleted outside the issuer"
            ));
        }
        self.rows(store, last_seq).await?;
        if let Some(expected) = self.options.expect_head {
            match self.expected_at {
                Some(at) => self.report.expected_head_at = Some((at, last_seq - at)),
                None => self.problem(format!(
                    "the audit log does not contain the expected head {expected}: entries were \
                     removed from its end or rewritten (it now ends at entry {last_seq} hash {}); \
                     restore the database from a backup",
                    self.report.head_hash
                )),
            }
        }
        Ok(())
    }

    /// Checks the next entry of the chain and queues it for binding.
    async fn entry(
        &mut self,
        store: &Store,
        entry: AuditEntry,
        archived: bool,
    ) -> Result<(), Stop> {
        self.verifier.check(&entry).map_err(|e| e.to_string())?;
        self.report.entries += 1;
        self.report.first_seq.get_or_insert(entry.seq);
        self.first_at_ms.get_or_insert(entry.at_ms);
        if let Some(found) = self.checkpoints.remove(&entry.seq) {
            for cp in found {
                if let Err(e) = self.check_signature(&cp) {
                    self.problem(e);
                } else if cp.hash != entry.hash {
                    self.problem(format!(
                        "the signed checkpoint at entry {} does not match the chain (signed hash {}, \
                         entry hash {}): entries up to {} were rewritten",
                        cp.seq, cp.hash, entry.hash, cp.seq
                    ));
                } else {
                    self.report.checkpoints += 1;
                }
            }
        }
        if let Some(expected) = self.options.expect_head {
            if entry.hash.starts_with(&expected.to_ascii_lowercase()) {
                self.expected_at = Some(entry.seq);
            }
        }
        self.page.push((entry, archived));
        if self.page.len() >= PAGE as usize {
            self.flush(store).await?;
        }
        Ok(())
    }
}
