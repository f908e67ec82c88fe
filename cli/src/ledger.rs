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
            }
        }
    }
    Ok(())
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
