//! Certificate rows against the audit entries that recorded them (see the module docs
//! of [`super`]): each `ok` `sign` entry needs its row, each `ok` `revoke` entry a revoked
//! row, unless a later `tidy` entry allowed the row's deletion; each row needs its `sign`
//! entry.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::{Stop, Walk, PAGE, SLACK_MS};
use crate::audit::AuditEntry;
use crate::store::{CertificateBinding, Store};

impl Walk<'_> {
    /// Binds the queued entries to their certificate rows.
    pub(super) async fn flush(&mut self, store: &Store) -> Result<(), Stop> {
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
            let row = rows.get(&entry.target);
            match entry.action.as_str() {
                "sign" => self.signed(entry, row, &detail, not_after, *archived),
                "revoke" => self.revoked(entry, row, not_after),
                "tidy" if entry.actor == "canopy-issuer" && entry.target == "certificates" => {
                    if let Some(cutoff) = detail["cutoff"].as_i64() {
                        self.tidied(cutoff);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// An `ok` `sign` entry: its row carries the fingerprint signed, or is pending a tidy.
    fn signed(
        &mut self,
        entry: &AuditEntry,
        row: Option<&CertificateBinding>,
        detail: &serde_json::Value,
        not_after: i64,
        archived: bool,
    ) {
        self.report.certificates.sign_entries += 1;
        let Some(row) = row else {
            self.pending.push(Reverse((
                not_after,
                entry.seq,
                entry.target.clone(),
                "signed",
            )));
            return;
        };
        if let Some(fp) = detail["fingerprint"].as_str() {
            if fp != row.fingerprint {
                self.problem(format!(
                    "certificate {}: its row's fingerprint {} is not the one signed \
                     in audit entry {} ({fp}): the row was replaced outside the issuer",
                    entry.target, row.fingerprint, entry.seq
                ));
            }
        }
        if archived {
            self.archive_bound += 1;
        }
    }

    /// An `ok` `revoke` entry: its row is revoked, or is pending a tidy.
    fn revoked(&mut self, entry: &AuditEntry, row: Option<&CertificateBinding>, not_after: i64) {
        self.report.certificates.revoke_entries += 1;
        match row {
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

    /// A `tidy` entry: the rows it allowed to delete (notAfter before `cutoff`) are
    /// accounted for.
    fn tidied(&mut self, cutoff: i64) {
        while self
            .pending
            .peek()
            .is_some_and(|Reverse((not_after, ..))| *not_after < cutoff)
        {
            self.pending.pop();
            self.report.certificates.covered_by_tidy += 1;
        }
    }

    /// Every certificate row needs its `sign` entry.
    pub(super) async fn rows(&mut self, store: &Store, last_seq: i64) -> Result<(), Stop> {
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
            // Each row names its sign entry; one that names another certificate's entry
            // has none.
            let seqs: Vec<i64> = page.iter().filter_map(|r| r.sign_seq).collect();
            let signed: HashMap<i64, String> = store
                .sign_entries(&seqs)
                .await
                .map_err(storage)?
                .into_iter()
                .collect();
            for row in &page {
                self.report.certificates.rows += 1;
                let issued_ms = row.issued_at.saturating_mul(1000);
                let entry = row
                    .sign_seq
                    .filter(|seq| signed.get(seq).is_some_and(|target| *target == row.serial));
                match entry.as_ref() {
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
