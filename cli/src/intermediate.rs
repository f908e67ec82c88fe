//! `sign-intermediate` (a CSR made where the key lives) and `new-intermediate` (key and
//! certificate in one go): the Intermediate profile, the chain, the ledger.

use std::path::{Path, PathBuf};

use canopy::ca::IssuedCertificate;
use canopy::pkcs11::{Extractable, KeyLocation, Pkcs11Error, Pkcs11Key};
use canopy::{CaProfile, CaRequest, Certificate, Csr, KeyPair, TrustDomain};
use time::OffsetDateTime;

use crate::args::{IntermediateArgs, NewIntermediateArgs, SignIntermediateArgs};
use crate::error::{user, Result};
use crate::files::{self, PRIVATE, PUBLIC};
use crate::output::{print_json, rfc3339, Format};
use crate::passphrase::{self, Purpose};
use crate::root::{self, kind, RootDir};
use crate::token::{self, KeyReference};

/// The intermediate's certificate.
pub const CERT: &str = "cert.pem";
/// The intermediate then the root.
pub const CHAIN: &str = "chain.pem";
/// The intermediate's key (new-intermediate).
pub const KEY: &str = "key.pem";
/// Where the intermediate's key lives when it is on a PKCS#11 token (new-intermediate --pkcs11).
pub const KEY_REF: &str = "key.pkcs11.json";

/// Checks an intermediate name: it becomes a directory name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(user(format!(
            "invalid intermediate name {:?}: use 1-63 letters, digits, '-', '_' or '.', not starting with '.'",
            name.chars().take(70).collect::<String>()
        )))
    }
}

struct Prepared {
    root: RootDir,
    trust_domain: TrustDomain,
    dir: PathBuf,
}

fn prepare(a: &IntermediateArgs) -> Result<Prepared> {
    check_name(&a.name)?;
    let root = RootDir::open(&a.root)?;
    let dir = root.intermediate_dir(&a.name);
    if dir.join(CERT).exists() && !a.replace {
        return Err(user(format!(
            "intermediate {:?} already exists ({}): choose another --name, or pass --replace to renew it",
            a.name,
            dir.join(CERT).display()
        )));
    }
    root.ledger()?;
    let trust_domain = match &a.trust_domain {
        Some(td) => td.clone(),
        None => root.trust_domain()?.ok_or_else(|| {
            user("the root names no trust domain: pass --trust-domain TD (e.g. mesh.example)")
        })?,
    };
    Ok(Prepared {
        root,
        trust_domain,
        dir,
    })
}

fn request(a: &IntermediateArgs, cn: String, td: TrustDomain) -> CaRequest {
    CaRequest {
        trust_domain: Some(td),
        ttl: Some(a.ttl),
        path_len: Some(a.path_len),
        clamp_to_issuer: a.clamp,
        ..CaRequest::new(CaProfile::Intermediate, cn)
    }
}

/// Records the intermediate in the ledger, then writes cert.pem and chain.pem into `dirs`.
/// The file that says where an intermediate's key is: the key itself (0600) or, for a
/// token, its reference.
struct KeyFile<'a> {
    dir: &'a Path,
    path: &'a Path,
    text: &'a str,
    mode: u32,
}

/// Records the certificate in the ledger, then writes the intermediate's files in an
/// order that a crash cannot make misleading: the key file before any certificate, and
/// `cert.pem` last in each folder, so a `cert.pem` always has its key beside it.
fn record_and_write(
    p: &Prepared,
    a: &IntermediateArgs,
    issued: &IssuedCertificate,
    root_cert: &Certificate,
    extra_dirs: &[&Path],
    key: (Option<KeyLocation>, Option<KeyFile<'_>>),
    now: OffsetDateTime,
) -> Result<()> {
    let cert = &issued.certificate;
    let mut record = root::cert_record(kind::INTERMEDIATE, cert, &a.name, now);
    record.key = key.0;
    // The ledger first: a crash after it leaves a recorded certificate, never an unrecorded one.
    p.root.append(record)?;
    retire(&p.dir)?;
    if let Some(file) = key.1 {
        files::create_private_dir(file.dir)?;
        files::write_atomic(file.path, file.text, file.mode)?;
    }
    let chain = Certificate::pem_of(&[cert.clone(), root_cert.clone()]);
    for dir in std::iter::once(p.dir.as_path()).chain(extra_dirs.iter().copied()) {
        files::create_private_dir(dir)?;
        files::write_atomic(&dir.join(CHAIN), &chain, PUBLIC)?;
        files::write_atomic(&dir.join(CERT), &cert.to_pem(), PUBLIC)?;
    }
    if issued.clamped {
        eprintln!(
            "note: notAfter clamped to the root's notAfter {}",
            rfc3339(cert.not_after())
        );
    }
    Ok(())
}

/// Moves an intermediate's current files to `retired-SERIAL/` beside them (renewal).
fn retire(dir: &Path) -> Result<()> {
    let cert_path = dir.join(CERT);
    if !cert_path.exists() {
        return Ok(());
    }
    let old = Certificate::from_pem(&files::read_text(&cert_path, "intermediate certificate")?)
        .map_err(|e| user(format!("{}: {e}", cert_path.display())))?;
    let retired = dir.join(format!("retired-{}", old.serial()));
    files::create_private_dir(&retired)?;
    for name in [CERT, CHAIN, KEY, KEY_REF] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, retired.join(name)).map_err(|e| {
                crate::error::internal(format!("cannot retire {}: {e}", from.display()))
            })?;
        }
    }
    files::sync_dir(&retired)
        .and_then(|_| files::sync_dir(dir))
        .map_err(|e| crate::error::internal(format!("cannot sync {}: {e}", dir.display())))?;
    eprintln!(
        "note: the previous {} (serial {}) moved to {}",
        old.subject(),
        old.serial(),
        retired.display()
    );
    Ok(())
}

fn summary(a: &IntermediateArgs, issued: &IssuedCertificate, files: &[PathBuf], key: Option<&str>) {
    let cert = &issued.certificate;
    match a.output.output {
        Format::Json => print_json(&serde_json::json!({
            "name": a.name,
            "subject": cert.subject(),
            "issuer": cert.issuer(),
            "serial": cert.serial().to_string(),
            "key_type": cert.key_type().map(|k| k.to_string()),
            "not_before": rfc3339(cert.not_before()),
            "not_after": rfc3339(cert.not_after()),
            "clamped": issued.clamped,
            "path_len": cert.path_len(),
            "uris": cert.uris(),
            "sha256_fingerprint": cert.fingerprint_sha256(),
            "key": key,
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        })),
        Format::Text => {
            println!("signed intermediate {:?}: {}", a.name, cert.subject());
            println!("  serial:      {}", cert.serial());
            println!(
                "  valid until: {}{}",
                rfc3339(cert.not_after()),
                if issued.clamped {
                    " (clamped to the root's)"
                } else {
                    ""
                }
            );
            println!("  uri:         {}", cert.uris().join(", "));
            if let Some(k) = key {
                println!("  key:         {k}");
            }
            for f in files {
                println!("  wrote        {}", f.display());
            }
        }
    }
}

/// `pkictl sign-intermediate`.
pub fn sign(args: &SignIntermediateArgs, now: OffsetDateTime) -> Result<()> {
    let a = &args.common;
    let p = prepare(a)?;
    let text = files::read_text(&args.csr, "CSR")?;
    let csr = Csr::from_pem(&text).map_err(|e| {
        user(format!(
            "{}: {e}; make a new CSR (e.g. openssl req -new)",
            args.csr.display()
        ))
    })?;
    let cn =
        a.cn.clone()
            .or_else(|| csr.subject_cn().map(str::to_owned))
            .unwrap_or_else(|| a.name.clone());
    let ca = p
        .root
        .unlock(a.passphrase_file.as_deref(), a.pin_file.as_deref())?;
    let req = request(a, cn, p.trust_domain.clone());
    let issued = ca.issue_for_csr(&csr, &req, now)?;
    record_and_write(&p, a, &issued, ca.certificate(), &[], (None, None), now)?;
    summary(
        a,
        &issued,
        &[p.dir.join(CERT), p.dir.join(CHAIN)],
        Some(&format!("{} (from the CSR)", csr.key_type())),
    );
    Ok(())
}

/// `pkictl new-intermediate`.
pub fn new(args: &NewIntermediateArgs, now: OffsetDateTime) -> Result<()> {
    if args.pkcs11.pkcs11 {
        return new_on_token(args, now);
    }
    let a = &args.common;
    let p = prepare(a)?;
    let key_dir = args.out.clone().unwrap_or_else(|| p.dir.clone());
    let key_path = key_dir.join(KEY);
    refuse_key_overwrite(a, &p, &key_dir, &key_path, now)?;
    let ca = p
        .root
        .unlock(a.passphrase_file.as_deref(), a.pin_file.as_deref())?;
    let key_pass = if args.unencrypted_key_insecure {
        None
    } else {
        Some(passphrase::obtain(
            args.key_passphrase_file.as_deref(),
            "new intermediate key",
            "--key-passphrase-file",
            Purpose::Create,
        )?)
    };
    let cn = a.cn.clone().unwrap_or_else(|| a.name.clone());
    let req = request(a, cn, p.trust_domain.clone());
    let key = KeyPair::generate(args.key_type)?;
    let issued = ca.issue(&req, &key.public_key_spki(), now)?;
    let key_pem = match &key_pass {
        Some(pass) => key.to_encrypted_pem(pass)?,
        None => key.to_unencrypted_pem(),
    };
    let extra: Vec<&Path> = args.out.iter().map(PathBuf::as_path).collect();
    let key_file = KeyFile {
        dir: &key_dir,
        path: &key_path,
        text: &key_pem,
        mode: PRIVATE,
    };
    record_and_write(
        &p,
        a,
        &issued,
        ca.certificate(),
        &extra,
        (None, Some(key_file)),
        now,
    )?;
    if key_pass.is_none() {
        eprintln!(
            "warning: {} is NOT encrypted (--unencrypted-key-insecure): protect it",
            key_path.display()
        );
    }
    let written = written_files(args, &p, key_path);
    summary(
        a,
        &issued,
        &written,
        Some(&format!(
            "{} ({})",
            args.key_type,
            if key_pass.is_some() {
                "encrypted"
            } else {
                "UNENCRYPTED"
            }
        )),
    );
    Ok(())
}

/// `pkictl new-intermediate --pkcs11`: the key is made on (or, with
/// --pkcs11-existing-key, already lives on) a token; key.pkcs11.json says where.
fn new_on_token(args: &NewIntermediateArgs, now: OffsetDateTime) -> Result<()> {
    let a = &args.common;
    let t = &args.pkcs11;
    let p = prepare(a)?;
    let key_dir = args.out.clone().unwrap_or_else(|| p.dir.clone());
    let ref_path = key_dir.join(KEY_REF);
    refuse_key_overwrite(a, &p, &key_dir, &ref_path, now)?;
    let spec = t.spec()?;
    let ca = p
        .root
        .unlock(a.passphrase_file.as_deref(), a.pin_file.as_deref())?;
    let pin = token::pin(
        args.key_pin_file.as_deref(),
        "new intermediate key",
        "--key-pin-file",
    )?;
    let key = if t.pkcs11_existing_key {
        let allow = if t.allow_extractable_key {
            Extractable::Allow
        } else {
            Extractable::Refuse
        };
        Pkcs11Key::open(&spec, &t.existing_key()?, pin, allow).map_err(|e| match e {
            Pkcs11Error::Extractable { .. } => user(format!(
                "{e}; refusing it (pass --allow-extractable-key to use it anyway)"
            )),
            other => token::token_error(other),
        })?
    } else {
        let label = t
            .pkcs11_key_label
            .clone()
            .unwrap_or_else(|| format!("canopy-intermediate-{}", a.name));
        Pkcs11Key::generate(&spec, &label, args.key_type, pin).map_err(|e| match e {
            Pkcs11Error::KeyExists { .. } => user(format!(
                "{e} (pass --pkcs11-existing-key to certify that key)"
            )),
            other => token::token_error(other),
        })?
    };
    let reference = KeyReference::of(&key, &spec.module);
    let cn = a.cn.clone().unwrap_or_else(|| a.name.clone());
    let req = request(a, cn, p.trust_domain.clone());
    let issued = ca.issue(&req, key.public_key_spki(), now)?;
    let extra: Vec<&Path> = args.out.iter().map(PathBuf::as_path).collect();
    let reference_json = reference.to_json();
    let key_file = KeyFile {
        dir: &key_dir,
        path: &ref_path,
        text: &reference_json,
        mode: PUBLIC,
    };
    record_and_write(
        &p,
        a,
        &issued,
        ca.certificate(),
        &extra,
        (Some(reference.location.clone()), Some(key_file)),
        now,
    )?;
    let written = written_files(args, &p, ref_path);
    summary(
        a,
        &issued,
        &written,
        Some(&format!(
            "{} on token {:?} (serial {}), id {}, label {:?}",
            reference.key_type,
            reference.location.token_label,
            reference.location.token_serial,
            reference.location.key_id,
            reference.location.key_label
        )),
    );
    Ok(())
}

fn refuse_key_overwrite(
    a: &IntermediateArgs,
    p: &Prepared,
    key_dir: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<()> {
    if key_dir == p.dir && key_path.exists() && !p.dir.join(CERT).exists() {
        return set_aside_interrupted(key_path, now);
    }
    if key_path.exists() && !(a.replace && key_dir == p.dir) {
        return Err(user(format!(
            "{} already exists: refusing to overwrite a key; choose another --out",
            key_path.display()
        )));
    }
    Ok(())
}

/// A key file without its `cert.pem` in the intermediate's own folder is what a run
/// stopped between the two writes leaves (the key is written first). It is never
/// overwritten: it moves to `interrupted-UNIXTIME/` beside it, and the new run goes on.
fn set_aside_interrupted(key_path: &Path, now: OffsetDateTime) -> Result<()> {
    let dir = key_path.parent().expect("a key file is in a folder");
    let aside = dir.join(format!("interrupted-{}", now.unix_timestamp()));
    files::create_private_dir(&aside)?;
    let to = aside.join(key_path.file_name().expect("a key file has a name"));
    std::fs::rename(key_path, &to)
        .map_err(|e| crate::error::internal(format!("cannot move {}: {e}", key_path.display())))?;
    eprintln!(
        "note: {} had no certificate beside it (an interrupted run); moved it to {}",
        key_path.display(),
        to.display()
    );
    Ok(())
}

fn written_files(args: &NewIntermediateArgs, p: &Prepared, key_path: PathBuf) -> Vec<PathBuf> {
    let mut written = vec![p.dir.join(CERT), p.dir.join(CHAIN)];
    if let Some(out) = &args.out {
        written.push(out.join(CERT));
        written.push(out.join(CHAIN));
    }
    written.push(key_path);
    written
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_safe_directory_names() {
        for ok in ["aws", "azure", "eu-west-1", "gcp_prod", "a.b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../root",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
