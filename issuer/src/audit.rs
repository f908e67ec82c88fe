//! The audit log: every sign, denial, revocation and token change, as an
//! append-only hash chain. Each entry's hash covers its fields and the previous
//! entry's hash, so editing or removing an entry breaks every hash after it; the
//! head row (updated in the same transaction) catches a removed tail.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod archive;
pub mod checkpoint;
pub mod verify;

/// Hash that precedes the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it gets a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who: the requester's identity (SPIFFE ID, `token:ID`) or `cli`.
    pub actor: String,
    /// What: `sign`, `revoke`, `token.create`, ...
    pub action: String,
    /// On what: a serial, a SPIFFE ID, a token id.
    pub target: String,
    /// `ok`, `denied`, `rejected` or `failed`.
    pub outcome: String,
    /// Details as a JSON object (reason of a denial, profile, intermediate...).
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// A new event at `at_ms`.
    pub fn new(
        at_ms: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: Outcome,
        detail: serde_json::Value,
    ) -> Self {
        AuditEvent {
            at_ms,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.as_str().to_string(),
            detail,
        }
    }
}

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by policy.
    Denied,
    /// Refused as malformed input.
    Rejected,
    /// An internal failure.
    Failed,
}

impl Outcome {
    /// Stable text stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

crate::store::schema::from_row! {
    /// An entry as stored.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AuditEntry {
        /// Position in the chain, from 1, without gaps.
        pub seq: i64,
        /// When, Unix milliseconds.
        pub at_ms: i64,
        /// Who.
        pub actor: String,
        /// What.
        pub action: String,
        /// On what.
        pub target: String,
        /// How it ended.
        pub outcome: String,
        /// Details, JSON text.
        pub detail: String,
        /// Hash of the entry before (GENESIS_HASH for the first).
        pub prev_hash: String,
        /// Hash of this entry.
        pub hash: String,
    }
}

impl AuditEntry {
    /// Places `event` after the entry whose hash is `prev_hash`.
    pub fn chain(seq: i64, prev_hash: String, event: &AuditEvent) -> AuditEntry {
        let detail = event.detail.to_string();
        let hash = entry_hash(
            seq,
            event.at_ms,
            &event.actor,
            &event.action,
            &event.target,
            &event.outcome,
            &detail,
            &prev_hash,
        );
        AuditEntry {
            seq,
            at_ms: event.at_ms,
            actor: event.actor.clone(),
            action: event.action.clone(),
            target: event.target.clone(),
            outcome: event.outcome.clone(),
            detail,
            prev_hash,
            hash,
        }
    }

    /// The hash this entry's fields should have.
    pub fn expected_hash(&self) -> String {
        entry_hash(
            self.seq,
            self.at_ms,
            &self.actor,
            &self.action,
            &self.target,
            &self.outcome,
            &self.detail,
            &self.prev_hash,
        )
    }
}

// A JSON array of the fields is an unambiguous encoding (no field can run into the next).
#[allow(clippy::too_many_arguments)]
fn entry_hash(
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let encoded = serde_json::json!([
        "canopy-audit-v1",
        seq,
        at_ms,
        actor,
        action,
        target,
        outcome,
        detail,
        prev_hash
    ])
    .to_string();
    hex::encode(Sha256::digest(encoded.as_bytes()))
}

/// Why the audit log does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// An entry is missing (a gap in sequence numbers).
    #[error("audit entry {expected} is missing (next entry found is {found})")]
    Missing {
        /// The sequence number expected.
        expected: i64,
        /// The one found instead.
        found: i64,
    },
    /// An entry's fields were changed after it was written.
    #[error("audit entry {0} was modified: its hash does not match its contents")]
    Modified(i64),
    /// An entry does not point at the entry before it.
    #[error("audit entry {0} does not chain to the entry before it")]
    Broken(i64),
    /// Entries at the end were removed (the head says there were more).
    #[error(
        "audit log ends at entry {found} but the head records entry {head}: entries were removed"
    )]
    Truncated {
        /// Last entry found.
        found: i64,
        /// Last entry the head records.
        head: i64,
    },
    /// The head does not match the last entry.
    #[error("audit head does not match the last entry ({0})")]
    HeadMismatch(i64),
}

/// Checks entries one at a time, in order.
#[derive(Debug)]
pub struct Verifier {
    last_seq: i64,
    last_hash: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// Starts before the first entry.
    pub fn new() -> Self {
        Verifier {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
        }
    }

    /// Starts after entry `seq` whose hash is `hash` (a signed checkpoint), for a log
    /// whose older entries were archived and pruned.
    pub fn resume(seq: i64, hash: String) -> Self {
        Verifier {
            last_seq: seq,
            last_hash: hash,
        }
    }

    /// Sequence number of the last entry checked.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Hash of the last entry checked (GENESIS_HASH before the first).
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Checks the next entry.
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), VerifyError> {
        if entry.seq != self.last_seq + 1 {
            return Err(VerifyError::Missing {
                expected: self.last_seq + 1,
                found: entry.seq,
            });
        }
        if entry.expected_hash() != entry.hash {
            return Err(VerifyError::Modified(entry.seq));
        }
        if entry.prev_hash != self.last_hash {
            return Err(VerifyError::Broken(entry.seq));
        }
        self.last_seq = entry.seq;
        self.last_hash = entry.hash.clone();
        Ok(())
    }

    /// Checks the end of the log against the recorded head; returns the entry count.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<u64, VerifyError> {
        if head_seq > self.last_seq {
            return Err(VerifyError::Truncated {
                found: self.last_seq,
                head: head_seq,
            });
        }
        if head_seq != self.last_seq || head_hash != self.last_hash {
            return Err(VerifyError::HeadMismatch(self.last_seq));
        }
        Ok(self.last_seq as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent::new(
                    seq * 1000,
                    "token:abc",
                    "sign",
                    format!("serial-{seq}"),
                    Outcome::Ok,
                    serde_json::json!({"profile": "workload"}),
                );
                let entry = AuditEntry::chain(seq, prev.clone(), &event);
                prev = entry.hash.clone();
                entry
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry], head: (i64, &str)) -> Result<u64, VerifyError> {
        let mut v = Verifier::new();
        for e in entries {
            v.check(e)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn intact_log_verifies() {
        let entries = log(5);
        let head = entries.last().unwrap().hash.clone();
        assert_eq!(verify(&entries, (5, &head)), Ok(5));
        assert_eq!(verify(&[], (0, GENESIS_HASH)), Ok(0));
    }

    #[test]
    fn edited_entry_is_detected() {
        let mut entries = log(5);
        let head = entries.last().unwrap().hash.clone();
        entries[2].outcome = "denied".into();
        assert_eq!(verify(&entries, (5, &head)), Err(VerifyError::Modified(3)));
    }

    #[test]
    fn edited_entry_with_recomputed_hash_breaks_the_chain() {
        let mut entries = log(5);
        let head = entries.last().unwrap().hash.clone();
        entries[2].target = "other".into();
        entries[2].hash = entries[2].expected_hash();
        assert_eq!(verify(&entries, (5, &head)), Err(VerifyError::Broken(4)));
    }

    #[test]
    fn removed_entries_are_detected() {
        let mut entries = log(5);
        let head = entries.last().unwrap().hash.clone();
        entries.remove(1);
        assert!(matches!(
            verify(&entries, (5, &head)),
            Err(VerifyError::Missing {
                expected: 2,
                found: 3
            })
        ));
        let entries = log(5);
        assert!(matches!(
            verify(&entries[..4], (5, &head)),
            Err(VerifyError::Truncated { found: 4, head: 5 })
        ));
    }
}
