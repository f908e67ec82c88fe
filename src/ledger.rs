//! The root's ledger: one JSON line per certificate the root signed (and per revocation
//! and CRL), each entry carrying the SHA-256 of the one before, so an edit anywhere shows.

use sha2::{Digest, Sha256};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// `root`, `intermediate`, `cross-sign`, `revoke` or `crl`.
    pub kind: String,
    /// RFC 3339.
    pub time: String,
    pub serial: String,
    pub subject: String,
    /// RFC 3339; empty for entries that are not certificates.
    pub not_after: String,
    /// SHA-256 of the certificate or CRL DER.
    pub sha256: String,
    /// A name given by the operator (`aws`), or the revocation reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Where the certified key lives when it is on a PKCS#11 token (never a PIN). Absent
    /// for key files, so ledgers written before it existed hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<crate::pkcs11::KeyLocation>,
}

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub record: Record,
    pub prev: String,
    pub hash: String,
}

/// Where and why a ledger fails verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ledger line {line}: {why}")]
pub struct LedgerError {
    pub line: usize,
    pub why: String,
}

fn digest(seq: u64, record: &Record, prev: &str) -> String {
    let body = serde_json::to_vec(&(seq, record, prev)).expect("records serialize");
    hex::encode(Sha256::digest(body))
}

/// The entry that follows `last` (None for the first).
pub fn next_entry(last: Option<&Entry>, record: Record) -> Entry {
    let (seq, prev) = match last {
        Some(e) => (e.seq + 1, e.hash.clone()),
        None => (1, GENESIS.to_owned()),
    };
    let hash = digest(seq, &record, &prev);
    Entry {
        seq,
        record,
        prev,
        hash,
    }
}

/// The JSON line for an entry, with its newline.
pub fn to_line(e: &Entry) -> String {
    let mut s = serde_json::to_string(e).expect("entries serialize");
    s.push('\n');
    s
}

/// Parses and verifies a whole ledger; returns its entries.
pub fn verify(text: &str) -> Result<Vec<Entry>, LedgerError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            return Err(LedgerError {
                line: n,
                why: "blank line".into(),
            });
        }
        let e: Entry = serde_json::from_str(line).map_err(|err| LedgerError {
            line: n,
            why: format!("not a ledger entry: {err}"),
        })?;
        let (want_seq, want_prev) = match entries.last() {
            Some(p) => (p.seq + 1, p.hash.as_str()),
            None => (1, GENESIS),
        };
        if e.seq != want_seq {
            return Err(LedgerError {
                line: n,
                why: format!(
                    "sequence {} where {want_seq} was expected (an entry was removed or reordered)",
                    e.seq
                ),
            });
        }
        if e.prev != want_prev {
            return Err(LedgerError { line: n, why: "does not chain to the entry before it (an entry was changed, removed or inserted)".into() });
        }
        if digest(e.seq, &e.record, &e.prev) != e.hash {
            return Err(LedgerError {
                line: n,
                why: "its hash does not match its contents (the entry was edited)".into(),
            });
        }
        entries.push(e);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(LedgerError {
            line: entries.len(),
            why: "last line is incomplete (interrupted write)".into(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(serial: &str) -> Record {
        Record {
            key: None,
            kind: "intermediate".into(),
            time: "2026-01-01T00:00:00Z".into(),
            serial: serial.into(),
            subject: "CN=aws".into(),
            not_after: "2031-01-01T00:00:00Z".into(),
            sha256: "ab".repeat(32),
            note: "aws".into(),
        }
    }

    fn ledger(n: usize) -> String {
        let mut last: Option<Entry> = None;
        let mut text = String::new();
        for i in 0..n {
            let e = next_entry(last.as_ref(), rec(&format!("{i:02x}")));
            text.push_str(&to_line(&e));
            last = Some(e);
        }
        text
    }

    #[test]
    fn a_token_key_location_is_hashed_and_absent_for_key_files() {
        let plain = next_entry(None, rec("01"));
        assert!(
            !to_line(&plain).contains("\"key\""),
            "key files add no field"
        );
        let mut r = rec("01");
        r.key = Some(crate::pkcs11::KeyLocation {
            token_label: "ceremony".into(),
            token_serial: "0123456789abcdef".into(),
            key_id: "0a0b".into(),
            key_label: "canopy-root".into(),
        });
        let line = to_line(&next_entry(None, r));
        assert_ne!(line, to_line(&plain));
        assert_eq!(
            verify(&line).unwrap()[0]
                .record
                .key
                .as_ref()
                .unwrap()
                .key_id,
            "0a0b"
        );
        assert!(verify(&line.replace("0a0b", "0a0c")).is_err());
    }

    #[test]
    fn detects_every_kind_of_edit() {
        let text = ledger(4);
        assert_eq!(verify(&text).unwrap().len(), 4);
        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen("CN=aws", "CN=evil", 1);
        assert!(verify(&edited).is_err());
        let removed: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert!(verify(&removed).is_err());
        let truncated_tail: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        assert!(
            verify(&truncated_tail).is_ok(),
            "dropping the tail is only visible against a copy of the last hash"
        );
        let swapped = format!("{}\n{}\n{}\n{}\n", lines[1], lines[0], lines[2], lines[3]);
        assert!(verify(&swapped).is_err());
        assert!(verify(&text[..text.len() - 5]).is_err());
    }
}
