//! `pkictl ledger`: list what the root signed; `--verify` checks the hash chain and that
//! every certificate and CRL file under the root directory is recorded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use canopy::crl::Crl;
use canopy::Certificate;
use serde_json::json;

use crate::args::LedgerArgs;
use crate::error::{user, Result};
use crate::files;
use crate::output::{print_json, Format};
use crate::root::{kind, RootDir};

/// `pkictl ledger`.
pub fn run(args: &LedgerArgs) -> Result<()> {
    let root = RootDir::open(&args.root)?;
    let entries = root.ledger()?;
    let mut checked = 0;
    if args.verify {
        let known: HashSet<&str> = entries.iter().map(|e| e.record.sha256.as_str()).collect();
        let mut missing = Vec::new();
        for path in pem_files(root.dir()) {
            let text = files::read_text(&path, "file")?;
            if text.contains("PRIVATE KEY-----") {
                continue;
            }
            if text.contains("-----BEGIN CERTIFICATE-----") {
                let certs = Certificate::parse_pem_all(&text)
                    .map_err(|e| user(format!("{}: {e}", path.display())))?;
                for c in certs {
                    checked += 1;
                    if !known.contains(c.fingerprint_sha256()) {
                        missing.push(format!(
                            "{}: certificate {} (serial {}) is not in the ledger",
                            path.display(),
                            c.subject(),
                            c.serial()
                        ));
                    }
                }
            } else if text.contains("-----BEGIN X509 CRL-----") {
                let crl =
                    Crl::from_pem(&text).map_err(|e| user(format!("{}: {e}", path.display())))?;
                checked += 1;
                if !known.contains(crate::root::sha256_hex(crl.der()).as_str()) {
                    missing.push(format!("{}: CRL is not in the ledger", path.display()));
                }
            }
        }
        if let Some(expected) = &args.expect_head {
            check_head(&entries, expected)?;
        }
        if !missing.is_empty() {
            return Err(user(format!(
                "ledger does not account for every file: {}",
                missing.join("; ")
            )));
        }
    }
    match args.output.output {
        Format::Json => print_json(&json!({
            "entries": entries,
            "verified": args.verify,
            "files_checked": checked,
            "head": entries.last().map(|e| json!({"seq": e.seq, "hash": e.hash})),
        })),
        Format::Text => {
            for e in &entries {
                let r = &e.record;
                let what = if r.kind == kind::CRL {
                    format!("number {}", r.serial)
                } else {
                    format!("serial {}", r.serial)
                };
                println!(
                    "{:>4}  {}  {:<12} {}  {}{}{}",
                    e.seq,
                    r.time,
                    r.kind,
                    what,
                    r.subject,
                    if r.not_after.is_empty() {
                        String::new()
                    } else {
                        format!("  until {}", r.not_after)
                    },
                    if r.note.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", r.note)
                    },
                );
            }
            if args.verify {
                println!(
                    "ledger OK: {} entries, hash chain intact, {checked} certificates/CRLs under {} all recorded",
                    entries.len(),
                    root.dir().display()
                );
                if let Some(head) = entries.last() {
                    println!(
                        "head: entry {} hash {} (keep it with the ceremony record; --expect-head checks it)",
                        head.seq, head.hash
                    );
                }
            }
        }
    }
    Ok(())
}

/// The ledger must end at the entry whose hash starts with `expected`: an entry cut off
/// the end leaves a valid chain, and only a copy of the last hash shows it.
fn check_head(entries: &[canopy::ledger::Entry], expected: &str) -> Result<()> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() < 12 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(user(
            "--expect-head takes the hex hash printed by `pkictl ledger --verify` (12 or more digits)",
        ));
    }
    let Some(head) = entries.last() else {
        return Err(user(format!(
            "the ledger is empty; expected it to end at hash {expected}"
        )));
    };
    if head.hash.starts_with(&expected) {
        return Ok(());
    }
    match entries.iter().find(|e| e.hash.starts_with(&expected)) {
        Some(e) => Err(user(format!(
            "the ledger has {} entries after the expected head (entry {}): review them with `pkictl ledger`",
            head.seq - e.seq,
            e.seq
        ))),
        None => Err(user(format!(
            "the ledger does not contain the expected head {expected}: entries were removed from its end \
             (it now ends at entry {} hash {}); restore it from the ceremony backup",
            head.seq, head.hash
        ))),
    }
}

fn pem_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && name.ends_with(".pem") => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}
