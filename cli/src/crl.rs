//! `pkictl revoke` (records a revocation in the ledger) and `pkictl crl` (signs a CRL of
//! every revocation recorded, with a CRL number one above the last).

use canopy::crl::{RevocationReason, RevokedEntry};
use canopy::ledger::Record;
use canopy::Serial;
use time::OffsetDateTime;

use crate::args::{CrlArgs, RevokeArgs};
use crate::error::{internal, user, Result};
use crate::files::{self, PUBLIC};
use crate::output::{parse_rfc3339, rfc3339};
use crate::root::{kind, sha256_hex, RootDir, CRL};

/// `pkictl revoke`.
pub fn revoke(args: &RevokeArgs, now: OffsetDateTime) -> Result<()> {
    let root = RootDir::open(&args.root)?;
    let entries = root.ledger()?;
    let serial = args.serial.to_string();
    let signed = entries
        .iter()
        .find(|e| e.record.serial == serial && e.record.kind != kind::CRL && e.record.kind != kind::REVOKE)
        .ok_or_else(|| {
            user(format!(
                "serial {serial} was not signed by this root (it is not in {}): check the serial with pkictl ledger",
                root.path(crate::root::LEDGER).display()
            ))
        })?;
    if signed.record.kind == kind::ROOT {
        return Err(user(
            "that is the root itself: a root cannot revoke itself; remove it from trust bundles instead",
        ));
    }
    if entries
        .iter()
        .any(|e| e.record.kind == kind::REVOKE && e.record.serial == serial)
    {
        return Err(user(format!("serial {serial} is already revoked")));
    }
    let record = Record {
        key: None,
        kind: kind::REVOKE.into(),
        time: rfc3339(now),
        serial: serial.clone(),
        subject: signed.record.subject.clone(),
        not_after: signed.record.not_after.clone(),
        sha256: signed.record.sha256.clone(),
        note: args.reason.to_string(),
    };
    root.append(record)?;
    println!(
        "revoked {} (serial {serial}, reason {}); publish it with: pkictl crl --root {}",
        signed.record.subject,
        args.reason,
        root.dir().display()
    );
    Ok(())
}

/// `pkictl crl`.
pub fn crl(args: &CrlArgs, now: OffsetDateTime) -> Result<()> {
    let root = RootDir::open(&args.root)?;
    let entries = root.ledger()?;
    let mut revoked = Vec::new();
    for e in entries.iter().filter(|e| e.record.kind == kind::REVOKE) {
        let r = &e.record;
        revoked.push(RevokedEntry {
            serial: r
                .serial
                .parse::<Serial>()
                .map_err(|err| internal(format!("ledger entry {}: {err}", e.seq)))?,
            revoked_at: parse_rfc3339(&r.time)
                .map_err(|err| internal(format!("ledger entry {}: {err}", e.seq)))?,
            reason: r
                .note
                .parse::<RevocationReason>()
                .map_err(|err| internal(format!("ledger entry {}: {err}", e.seq)))?,
        });
    }
    let number = entries
        .iter()
        .filter(|e| e.record.kind == kind::CRL)
        .count() as u64
        + 1;
    let ca = root.unlock(args.passphrase_file.as_deref(), args.pin_file.as_deref())?;
    let next_update = now + args.next_update.as_duration();
    let crl = ca.sign_crl(&revoked, number, now, next_update)?;
    root.append(Record {
        key: None,
        kind: kind::CRL.into(),
        time: rfc3339(now),
        serial: number.to_string(),
        subject: ca.certificate().subject().to_owned(),
        not_after: rfc3339(next_update),
        sha256: sha256_hex(crl.der()),
        note: format!("{} revoked", revoked.len()),
    })?;
    let out = args.out.clone().unwrap_or_else(|| root.path(CRL));
    files::write_atomic(&out, &crl.to_pem(), PUBLIC)?;
    println!(
        "wrote CRL number {number} ({} revoked, next update {}) to {}",
        revoked.len(),
        rfc3339(next_update),
        out.display()
    );
    Ok(())
}
