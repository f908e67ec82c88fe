//! Archive segments: audit entries written out to a file before their rows are pruned.
//!
//! A segment `audit-<first>-<last>.jsonl` holds entries `first..=last`, one
//! [`AuditEntry`] as JSON per line in order, then one line `{"checkpoint": {...}}`: the
//! signed checkpoint at `last`. Segments chain like the entries do (each one's first
//! entry points at the hash of the last entry of the one before), so `audit verify
//! --archive DIR` walks them in order and then on into the database.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointPublicKey};
use super::{AuditEntry, Verifier, VerifyError, GENESIS_HASH};
use crate::store::{Store, StoreError};

/// Entries read from the database per page, and rows deleted per statement.
const PAGE: u32 = 1000;

/// Why archiving or reading archives failed. Nothing is deleted unless the segment
/// holding the entries is on disk first.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or folder could not be read or written.
    #[error("audit archive {path}: {reason}")]
    Io {
        /// The file or folder.
        path: String,
        /// Why.
        reason: String,
    },
    /// A segment's contents are not what its name and format promise.
    #[error("audit archive segment {path}: {reason}")]
    Segment {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The entries to archive do not verify, so they are kept for `audit verify` to report.
    #[error("not archiving: {0}: run `canopy-issuer audit verify`")]
    Chain(#[from] VerifyError),
    /// The entries to archive do not end at the hash their checkpoint signed.
    #[error("not archiving: the stored entries {first}..={last} do not end at the hash the checkpoint at entry {last} signed: run `canopy-issuer audit verify`")]
    NotAtCheckpoint {
        /// First entry to archive.
        first: i64,
        /// The checkpoint's entry.
        last: i64,
    },
    /// The checkpoint the archive would end at does not verify.
    #[error("not archiving: {0}")]
    Checkpoint(#[from] CheckpointError),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |e| ArchiveError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// One archive segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// The file.
    pub path: PathBuf,
    /// First entry in it.
    pub first: i64,
    /// Last entry in it (its checkpoint's entry).
    pub last: i64,
}

/// The file name of the segment holding entries `first..=last`.
pub fn segment_name(first: i64, last: i64) -> String {
    format!("audit-{first}-{last}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<(i64, i64)> {
    let range = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first >= 1 && last >= first).then_some((first, last))
}

/// The segments in `dir`, by first entry. Other files (and unfinished `.tmp` files) are
/// not segments.
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>, ArchiveError> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        let name = item.file_name();
        if let Some((first, last)) = name.to_str().and_then(parse_segment_name) {
            segments.push(Segment {
                path: item.path(),
                first,
                last,
            });
        }
    }
    segments.sort_by_key(|s| (s.first, s.last));
    Ok(segments)
}

/// One line of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SegmentLine {
    /// The closing line: the signed checkpoint at the last entry.
    Checkpoint {
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
    /// An audit entry.
    Entry(AuditEntry),
}

/// Reads a segment line by line (it may hold millions of entries).
pub fn read_segment(
    segment: &Segment,
) -> Result<impl Iterator<Item = Result<SegmentLine, ArchiveError>> + '_, ArchiveError> {
    let file = std::fs::File::open(&segment.path).map_err(io_error(&segment.path))?;
    let lines = std::io::BufReader::new(file).lines();
    Ok(lines.enumerate().map(move |(n, line)| {
        let line = line.map_err(io_error(&segment.path))?;
        serde_json::from_str(&line).map_err(|e| ArchiveError::Segment {
            path: segment.path.display().to_string(),
            reason: format!("line {}: {e}", n + 1),
        })
    }))
}

/// What an archive run did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveReport {
    /// Nothing was written or deleted.
    pub dry_run: bool,
    /// The segment written (or that would be).
    pub segment: Option<PathBuf>,
    /// Its first entry.
    pub first_seq: Option<i64>,
    /// Its last entry (the checkpoint's).
    pub last_seq: Option<i64>,
    /// Entries written to it.
    pub archived: u64,
    /// Rows deleted from the database (including those of a segment an earlier,
    /// interrupted run wrote but did not finish pruning).
    pub deleted: u64,
    /// The checkpoint the segment ends at.
    pub checkpoint: Option<Checkpoint>,
    /// Why nothing was archived, when nothing was.
    pub nothing_because: Option<String>,
}

/// Archives the entries up to the newest checkpoint signed at or before `before_at_ms`
/// (now minus the retention) into a segment in `dir`, then deletes their rows.
///
/// The segment is written to a temporary file, fsynced, renamed into place and the
/// folder fsynced before any row is deleted; rows go in batches. The entries and the
/// checkpoint are checked first (chain and `key`'s signature): a damaged log is left in
/// place for `audit verify` to report, not archived. A run interrupted between writing
/// and pruning is finished by the next one. Leader-only callers need no lock: two runs
/// write the same segment and delete the same rows.
pub async fn archive_and_prune(
    store: &Store,
    dir: &Path,
    before_at_ms: i64,
    key: &CheckpointPublicKey,
) -> Result<ArchiveReport, ArchiveError> {
    run(store, dir, before_at_ms, Some(key)).await
}

/// What [`archive_and_prune`] would do, writing and deleting nothing.
pub async fn plan_archive(
    store: &Store,
    dir: &Path,
    before_at_ms: i64,
) -> Result<ArchiveReport, ArchiveError> {
    run(store, dir, before_at_ms, None).await
}

async fn run(
    store: &Store,
    dir: &Path,
    before_at_ms: i64,
    key: Option<&CheckpointPublicKey>,
) -> Result<ArchiveReport, ArchiveError> {
    let dry_run = key.is_none();
    let mut report = ArchiveReport {
        dry_run,
        ..ArchiveReport::default()
    };
    if !dry_run {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let existing = if dir.is_dir() {
        list_segments(dir)?
    } else if dry_run {
        Vec::new()
    } else {
        return Err(ArchiveError::Io {
            path: dir.display().to_string(),
            reason: "not a folder".into(),
        });
    };
    let Some(mut first) = store.audit_first_seq().await? else {
        report.nothing_because = Some("the audit log is empty".into());
        return Ok(report);
    };
    // An earlier run wrote this segment, then stopped before pruning all of it.
    if let Some(done) = existing
        .iter()
        .find(|s| s.first <= first && first <= s.last)
    {
        if let Some(key) = key {
            check_segment(done, key)?;
            report.deleted += store.delete_audit_through(done.last, PAGE).await?;
        }
        first = done.last + 1;
    }
    let (head, _) = store.audit_head().await?;
    let checkpoint = match store.newest_checkpoint(head, before_at_ms).await? {
        Some(cp) if cp.seq >= first => cp,
        _ => {
            report.nothing_because = Some(format!(
                "no checkpoint at entry {first} or later is older than the retention"
            ));
            return Ok(report);
        }
    };
    let path = dir.join(segment_name(first, checkpoint.seq));
    report.segment = Some(path.clone());
    report.first_seq = Some(first);
    report.last_seq = Some(checkpoint.seq);
    report.checkpoint = Some(checkpoint.clone());
    let Some(key) = key else {
        report.archived = (checkpoint.seq - first + 1) as u64;
        return Ok(report);
    };
    key.verify(&checkpoint)?;
    report.archived = write_segment(store, dir, &path, first, &checkpoint).await?;
    report.deleted += store.delete_audit_through(checkpoint.seq, PAGE).await?;
    tracing::info!(
        segment = %path.display(),
        archived = report.archived,
        deleted = report.deleted,
        "archived and pruned audit entries"
    );
    Ok(report)
}

/// Writes entries `first..=checkpoint.seq` and the checkpoint to `path`, durably: to a
/// temporary file first, fsynced, then renamed into place and the folder fsynced.
async fn write_segment(
    store: &Store,
    dir: &Path,
    path: &Path,
    first: i64,
    checkpoint: &Checkpoint,
) -> Result<u64, ArchiveError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut out = SegmentWriter::create(&tmp)?;
    let written = async {
        let count = out.entries(store, first, checkpoint).await?;
        out.line(&SegmentLine::Checkpoint {
            checkpoint: checkpoint.clone(),
        })?;
        out.sync()?;
        Ok(count)
    }
    .await;
    let count = match written {
        Ok(count) => count,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(count)
}

/// A segment being written to its temporary file.
struct SegmentWriter<'a> {
    tmp: &'a Path,
    out: std::io::BufWriter<std::fs::File>,
}

impl<'a> SegmentWriter<'a> {
    /// Creates `tmp` afresh (a leftover of an interrupted run is removed), owner-only.
    fn create(tmp: &'a Path) -> Result<Self, ArchiveError> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::remove_file(tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(tmp)(e)),
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_error(tmp))?;
        Ok(SegmentWriter {
            tmp,
            out: std::io::BufWriter::new(file),
        })
    }

    /// Copies entries `first..=checkpoint.seq` from the database, checking that they
    /// chain and end at the hash the checkpoint signed. The first entry's predecessor
    /// is vouched for by the segment before (or genesis).
    async fn entries(
        &mut self,
        store: &Store,
        first: i64,
        checkpoint: &Checkpoint,
    ) -> Result<u64, ArchiveError> {
        let mut verifier: Option<Verifier> = None;
        let mut after = first - 1;
        let mut count = 0u64;
        while after < checkpoint.seq {
            let page = store.audit_entries(after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for entry in page.iter().take_while(|e| e.seq <= checkpoint.seq) {
                let v = verifier.get_or_insert_with(|| {
                    let prev = if first == 1 {
                        GENESIS_HASH.to_string()
                    } else {
                        entry.prev_hash.clone()
                    };
                    Verifier::resume(first - 1, prev)
                });
                v.check(entry)?;
                self.line(entry)?;
                count += 1;
                after = entry.seq;
            }
            if page.last().is_some_and(|e| e.seq >= checkpoint.seq) {
                break;
            }
        }
        let matches = verifier
            .as_ref()
            .is_some_and(|v| v.last_seq() == checkpoint.seq && v.last_hash() == checkpoint.hash);
        if !matches {
            return Err(ArchiveError::NotAtCheckpoint {
                first,
                last: checkpoint.seq,
            });
        }
        Ok(count)
    }

    /// One JSON line.
    fn line(&mut self, value: &impl Serialize) -> Result<(), ArchiveError> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| ArchiveError::Io {
            path: self.tmp.display().to_string(),
            reason: e.to_string(),
        })?;
        self.out.write_all(b"\n").map_err(io_error(self.tmp))
    }

    /// Flushes and fsyncs the file.
    fn sync(self) -> Result<(), ArchiveError> {
        let tmp = self.tmp;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_error(tmp)(e.into_error()))?;
        file.sync_all().map_err(io_error(tmp))
    }
}

/// Checks a segment on disk: its entries chain, it ends with a checkpoint signed by
/// `key` at its last entry that matches that entry's hash.
fn check_segment(segment: &Segment, key: &CheckpointPublicKey) -> Result<(), ArchiveError> {
    let bad = |reason: String| ArchiveError::Segment {
        path: segment.path.display().to_string(),
        reason,
    };
    let mut verifier: Option<Verifier> = None;
    let mut closing = None;
    for line in read_segment(segment)? {
        match line? {
            SegmentLine::Entry(entry) => {
                if closing.is_some() {
                    return Err(bad("entries after its checkpoint".into()));
                }
                let v = verifier.get_or_insert_with(|| {
                    Verifier::resume(segment.first - 1, entry.prev_hash.clone())
                });
                v.check(&entry).map_err(|e| bad(e.to_string()))?;
            }
            SegmentLine::Checkpoint { checkpoint } => closing = Some(checkpoint),
        }
    }
    let (Some(v), Some(cp)) = (verifier, closing) else {
        return Err(bad("no entries or no closing checkpoint".into()));
    };
    key.verify(&cp)?;
    if v.last_seq() != segment.last || cp.seq != segment.last || cp.hash != v.last_hash() {
        return Err(bad(format!(
            "it does not end at entry {} with its checkpoint's hash",
            segment.last
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1, 250), "audit-1-250.jsonl");
        assert_eq!(parse_segment_name("audit-1-250.jsonl"), Some((1, 250)));
        assert_eq!(parse_segment_name(".audit-1-250.jsonl.tmp"), None);
        assert_eq!(parse_segment_name("audit-9-3.jsonl"), None);
        assert_eq!(parse_segment_name("audit-0-3.jsonl"), None);
        assert_eq!(parse_segment_name("audit-1-x.jsonl"), None);
    }

    #[test]
    fn lines_parse_as_entries_or_the_checkpoint() {
        let entry = AuditEntry::chain(
            1,
            GENESIS_HASH.into(),
            &crate::audit::AuditEvent::new(
                5,
                "cli",
                "sign",
                "ab",
                crate::audit::Outcome::Ok,
                serde_json::json!({}),
            ),
        );
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            serde_json::from_str::<SegmentLine>(&text).unwrap(),
            SegmentLine::Entry(entry.clone())
        );
        let cp = Checkpoint {
            seq: 1,
            hash: entry.hash,
            at_ms: 6,
            key_id: "k".into(),
            signature: "00".into(),
        };
        let text = serde_json::to_string(&SegmentLine::Checkpoint {
            checkpoint: cp.clone(),
        })
        .unwrap();
        assert!(text.starts_with("{\"checkpoint\":"));
        assert_eq!(
            serde_json::from_str::<SegmentLine>(&text).unwrap(),
            SegmentLine::Checkpoint { checkpoint: cp }
        );
    }
}
