//! `pkictl cross-sign`: during a root rotation, each root certifies the other's key so
//! chains built under either root verify against both.

use canopy::Certificate;
use time::OffsetDateTime;

use crate::args::CrossSignArgs;
use crate::error::{user, Result};
use crate::files::{self, PUBLIC};
use crate::output::rfc3339;
use crate::root::{self, kind, RootDir};

/// `pkictl cross-sign`.
pub fn cross_sign(args: &CrossSignArgs, now: OffsetDateTime) -> Result<()> {
    let root = RootDir::open(&args.root)?;
    root.ledger()?;
    let other = Certificate::from_pem(&files::read_text(&args.other_root, "other root")?)
        .map_err(|e| user(format!("{}: {e}", args.other_root.display())))?;
    if !other.is_ca() || !other.is_self_issued() {
        return Err(user(format!(
            "{} is not a root (a self-issued CA certificate): pass the other root's root-cert.pem",
            args.other_root.display()
        )));
    }
    let this = root.certificate()?;
    if other == this {
        return Err(user(
            "--other-root is this root itself: pass the other root's certificate",
        ));
    }
    let given = normalize_fingerprint(&args.fingerprint);
    if given != other.fingerprint_sha256() {
        return Err(user(format!(
            "{} has SHA-256 fingerprint {}, not the --fingerprint given ({}): compare with the fingerprint its owner read out and fetch the certificate again",
            args.other_root.display(),
            other.fingerprint_sha256(),
            args.fingerprint.trim()
        )));
    }
    canopy::ca::check_cross_sign(&this, &other, now)?;
    if args.out.exists() {
        return Err(user(format!(
            "{} already exists: choose another --out",
            args.out.display()
        )));
    }
    let ca = root.unlock(args.passphrase_file.as_deref(), args.pin_file.as_deref())?;
    let issued = ca.cross_sign(&other, args.ttl, now)?;
    let cert = &issued.certificate;
    root.append(root::cert_record(
        kind::CROSS_SIGN,
        cert,
        &format!("cross-signs {}", other.subject()),
        now,
    ))?;
    files::write_atomic(&args.out, &cert.to_pem(), PUBLIC)?;
    println!(
        "{} cross-signed by {} (serial {}, until {}) written to {}",
        cert.subject(),
        cert.issuer(),
        cert.serial(),
        rfc3339(cert.not_after()),
        args.out.display()
    );
    Ok(())
}

/// A fingerprint as people write it (`AB:CD:...`, `abcd...`, spaces) in lowercase hex.
fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_compare_without_colons_or_case() {
        assert_eq!(super::normalize_fingerprint("AB:cd:01"), "abcd01");
        assert_eq!(super::normalize_fingerprint(" ab cd "), "abcd");
    }
}
