//! `audit verify`: the whole chain, from genesis or from a signed checkpoint, through the
//! archive segments and on into the database; every checkpoint in range against the
//! chain; and the certificate rows against the entries that recorded them.
//!
//! Binding rows to entries: each `ok` `sign` entry needs its row (same fingerprint), each
//! `ok` `revoke` entry a row with `revoked_at` set, unless a later `tidy` entry (actor
//! `canopy-issuer`, target `certificates`, detail `cutoff`) allowed the row's deletion
//! (its `not_after` before the cutoff). The other way round, each row needs its `sign`
//! entry; rows older than the verified range are counted as not covered. Everything is
//! read in pages: memory grows with the rows deleted but not yet covered by a tidy entry
//! at that point of the walk, not with the log.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::archive::{list_segments, read_segment, SegmentLine};
use super::checkpoint::{Checkpoint, CheckpointPublicKey};
use super::{AuditEntry, Verifier};
use crate::store::{CertificateBinding, Store};

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
        let storage = |e: crate::store::StoreError| format!("could not read the database: {e}");
        let segments = match self.options.archive_dir {
            Some(dir) => list_segments(dir).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
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
        let (head_seq, _) = store.audit_head().await.map_err(storage)?;
        let db_first = store.audit_first_seq().await.map_err(storage)?;
        let first = segments
            .first()
            .map(|s| s.first)
            .or(db_first)
            .unwrap_or(head_seq + 1);
        if first > 1 {
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
        }
        let mut after = first - 1;
        loop {
            let page = store.checkpoints(after, PAGE).await.map_err(storage)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for cp in page {
                self.checkpoints.entry(cp.seq).or_default().push(cp);
            }
        }

        for segment in &segments {
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
                        self.entry(store, entry, true).await.map_err(|e| {
                            format!("archive segment {}: {e}", segment.path.display())
                        })?;
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
        }
        self.flush(store).await?;

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
                        if !segments.is_empty() && entry.seq > expected {
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
        self.flush(store).await?;
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

    /// Binds the queued entries to their certificate rows.
    async fn flush(&mut self, store: &Store) -> Result<(), Stop> {
        let page = std::mem::take(&mut self.page);
        let serials: Vec<&str> = page
            .iter()
            .filter(|(e, _)| e.outcome == "ok" && (e.action == "sign" || e.action == "revoke"))
            .map(|(e, _)| e.target.as_str())
            .collect();
        let rows: HashMap<String, CertificateBinding> = store
            .certificate_bindings(&serials)
            .await
            .map_err(|e| format!("could not read the certificates: {e}"))?
            .into_iter()
            .map(|r| (r.serial.clone(), r))
            .collect();
        for (entry, archived) in &page {
            if entry.outcome != "ok" {
                continue;
            }
            let detail: serde_json::Value =
                serde_json::from_str(&entry.detail).unwrap_or(serde_json::Value::Null);
            // Without a recorded notAfter no tidy can account for a missing row.
            let not_after = detail["not_after"].as_i64().unwrap_or(i64::MAX);
            match entry.action.as_str() {
                "sign" => {
                    self.report.certificates.sign_entries += 1;
                    match rows.get(&entry.target) {
                        Some(row) => {
                            if let Some(fp) = detail["fingerprint"].as_str() {
                                if fp != row.fingerprint {
                                    self.problem(format!(
                                        "certificate {}: its row's fingerprint {} is not the one signed \
                                         in audit entry {} ({fp}): the row was replaced outside the issuer",
                                        entry.target, row.fingerprint, entry.seq
                                    ));
                                }
                            }
                            if *archived {
                                self.archive_bound += 1;
                            }
                        }
                        None => self.pending.push(Reverse((
                            not_after,
                            entry.seq,
                            entry.target.clone(),
                            "signed",
                        ))),
                    }
                }
                "revoke" => {
                    self.report.certificates.revoke_entries += 1;
                    match rows.get(&entry.target) {
                        Some(row) if row.revoked_at.is_none() => self.problem(format!(
                            "certificate {} was revoked in audit entry {} but its row is not revoked: \
                             revoked_at was cleared outside the issuer (it is left out of the CRL)",
                            entry.target, entry.seq
                        )),
                        Some(_) => {}
                        None => self.pending.push(Reverse((
                            not_after,
                            entry.seq,
                            entry.target.clone(),
                            "revoked",
                        ))),
                    }
                }
                "tidy" if entry.actor == "canopy-issuer" && entry.target == "certificates" => {
                    let Some(cutoff) = detail["cutoff"].as_i64() else {
                        continue;
                    };
                    while self
                        .pending
                        .peek()
                        .is_some_and(|Reverse((not_after, ..))| *not_after < cutoff)
                    {
                        self.pending.pop();
                        self.report.certificates.covered_by_tidy += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every certificate row needs its `sign` entry.
    async fn rows(&mut self, store: &Store, last_seq: i64) -> Result<(), Stop> {
        let storage = |e: crate::store::StoreError| format!("could not read the certificates: {e}");
        let archives = self.report.archived_entries > 0;
        let from_checkpoint = self.report.from_checkpoint.is_some();
        let first_at = self.first_at_ms;
        let first_db_at = self.first_db_at_ms;
        let first_seq = self.report.first_seq.unwrap_or(last_seq + 1);
        // Rows in the archived range: their sign entries were read from the segments,
        // which are not indexed, so they are counted against the archived sign entries
        // whose row was found.
        let mut in_archive_range = 0u64;
        let mut after = 0;
        loop {
            let page = store
                .certificate_bindings_page(after, PAGE)
                .await
                .map_err(storage)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let serials: Vec<&str> = page.iter().map(|r| r.serial.as_str()).collect();
            let signed: HashMap<String, i64> = store
                .sign_entries(&serials)
                .await
                .map_err(storage)?
                .into_iter()
                .collect();
            for row in &page {
                self.report.certificates.rows += 1;
                let issued_ms = row.issued_at.saturating_mul(1000);
                match signed.get(&row.serial) {
                    Some(&seq) if seq > last_seq => self.report.certificates.rows_newer += 1,
                    Some(&seq) if seq >= self.db_start => {}
                    Some(&seq) if seq >= first_seq => in_archive_range += 1,
                    Some(_) => self.report.certificates.rows_not_covered += 1,
                    None => {
                        let before_start =
                            from_checkpoint && first_at.is_none_or(|f| issued_ms <= f + SLACK_MS);
                        let before_db = first_db_at.is_none_or(|f| issued_ms <= f + SLACK_MS);
                        if before_start {
                            self.report.certificates.rows_not_covered += 1;
                        } else if archives && before_db {
                            in_archive_range += 1;
                        } else {
                            self.problem(format!(
                                "certificate row {} (issued at {}) has no sign entry in the audit log: \
                                 it was added outside the issuer",
                                row.serial, row.issued_at
                            ));
                        }
                    }
                }
            }
        }
        if in_archive_range > self.archive_bound {
            self.problem(format!(
                "{} certificate rows dated within the archived range have no sign entry in the \
                 archive segments: they were added outside the issuer",
                in_archive_range - self.archive_bound
            ));
        }
        Ok(())
    }
}
