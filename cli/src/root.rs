//! The root directory: its layout, opening it, unlocking its key, its ledger, and
//! `init-root`, which makes it atomically.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use canopy::chain::verify_path;
use canopy::ledger::{self, Entry, Record};
use canopy::pkcs11::{Extractable, Pkcs11Error, Pkcs11Key};
use canopy::{
    CaProfile, CaRequest, Certificate, CertificateAuthority, KeyPair, KeyType, Signer, TrustDomain,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::args::InitRootArgs;
use crate::error::{internal, user, CliError, Result};
use crate::files::{self, PRIVATE, PUBLIC};
use crate::output::{print_json, rfc3339, Format};
use crate::passphrase::{self, Purpose};
use crate::token::{self, KeyReference};

/// The root certificate.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The root key, encrypted.
pub const ROOT_KEY: &str = "root-key.pem";
/// Where the root key lives when it is on a PKCS#11 token (no secret in it).
pub const ROOT_KEY_REF: &str = "root-key.pkcs11.json";
/// The hash-chained record of everything the root signed.
pub const LEDGER: &str = "ledger.jsonl";
/// One directory per intermediate.
pub const INTERMEDIATES: &str = "intermediates";
/// The latest CRL.
pub const CRL: &str = "crl.pem";

/// Ledger kinds.
pub mod kind {
    /// The root itself.
    pub const ROOT: &str = "root";
    /// An intermediate the root signed.
    pub const INTERMEDIATE: &str = "intermediate";
    /// Another root's key certified by this root.
    pub const CROSS_SIGN: &str = "cross-sign";
    /// A revocation (note = reason).
    pub const REVOKE: &str = "revoke";
    /// A CRL (serial = CRL number).
    pub const CRL: &str = "crl";
}

/// An existing root directory.
#[derive(Debug, Clone)]
pub struct RootDir {
    dir: PathBuf,
}

impl RootDir {
    /// Opens a root directory made by `init-root`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(ROOT_CERT).is_file() {
            return Err(user(format!(
                "{} is not a pkictl root (no {ROOT_CERT}): pass the --root directory made by pkictl init-root",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the root directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `intermediates/NAME`.
    pub fn intermediate_dir(&self, name: &str) -> PathBuf {
        self.dir.join(INTERMEDIATES).join(name)
    }

    /// The root certificate.
    pub fn certificate(&self) -> Result<Certificate> {
        let text = files::read_text(&self.path(ROOT_CERT), "root certificate")?;
        Certificate::from_pem(&text)
            .map_err(|e| user(format!("{}: {e}", self.path(ROOT_CERT).display())))
    }

    /// The root as a CA: asks for the passphrase (file or prompt) and opens the key, or,
    /// for a root made with --pkcs11, asks for the token's PIN and opens the key there.
    pub fn unlock(
        &self,
        passphrase_file: Option<&Path>,
        pin_file: Option<&Path>,
    ) -> Result<CertificateAuthority> {
        if self.path(ROOT_KEY_REF).exists() {
            return self.unlock_token(pin_file);
        }
        let cert = self.certificate()?;
        let key_path = self.path(ROOT_KEY);
        let text = zeroize::Zeroizing::new(files::read_text(&key_path, "root key")?);
        let key = match KeyPair::from_pem_with(&text, None) {
            Ok(k) => k,
            Err(canopy::key::KeyError::Encrypted) => {
                let pass = passphrase::obtain(
                    passphrase_file,
                    "root key",
                    "--passphrase-file",
                    Purpose::Unlock,
                )?;
                KeyPair::from_pem_with(&text, Some(&pass)).map_err(|e| match e {
                    canopy::key::KeyError::WrongPassphrase => user(format!(
                        "wrong passphrase for the root key {}: check --passphrase-file",
                        key_path.display()
                    )),
                    other => CliError::from(other),
                })?
            }
            Err(e) => return Err(user(format!("{}: {e}", key_path.display()))),
        };
        if !cert.matches_key(&key) {
            return Err(user(format!(
                "{} does not match {}: the root directory is inconsistent",
                key_path.display(),
                ROOT_CERT
            )));
        }
        Ok(CertificateAuthority::new(cert, vec![], Arc::new(key))?)
    }

    /// The root whose key is on a token: the reference must name the key the ledger
    /// recorded when the root was made (token serial and key id), and the certificate's.
    fn unlock_token(&self, pin_file: Option<&Path>) -> Result<CertificateAuthority> {
        let cert = self.certificate()?;
        let reference = KeyReference::read(&self.path(ROOT_KEY_REF))?;
        let entries = self.ledger()?;
        let recorded = entries
            .first()
            .filter(|e| e.record.kind == kind::ROOT)
            .and_then(|e| e.record.key.as_ref());
        let same = recorded.is_some_and(|k| {
            k.token_serial == reference.location.token_serial
                && k.key_id == reference.location.key_id
        });
        if !same {
            return Err(user(format!(
                "{} names key {} on token serial {}, which is not the key the ledger recorded for this root: restore {ROOT_KEY_REF} from the ceremony backup",
                self.path(ROOT_KEY_REF).display(),
                reference.location.key_id,
                reference.location.token_serial
            )));
        }
        let pin = token::pin(pin_file, "root key", "--pin-file")?;
        let key = reference.open(pin)?;
        if cert.public_key_spki() != key.public_key_spki() {
            return Err(user(format!(
                "the key {} on token {:?} does not match {ROOT_CERT}: the root directory is inconsistent",
                reference.location.key_id, reference.location.token_label
            )));
        }
        Ok(CertificateAuthority::new(cert, vec![], Arc::new(key))?)
    }

    /// The ledger's entries, verified; a damaged ledger stops every command that signs.
    pub fn ledger(&self) -> Result<Vec<Entry>> {
        let path = self.path(LEDGER);
        let text = files::read_text(&path, "ledger")?;
        ledger::verify(&text).map_err(|e| {
            user(format!(
                "{}: {e}: the ledger was altered; restore it from a backup (pkictl ledger --verify shows where)",
                path.display()
            ))
        })
    }

    /// Appends one record after checking the ledger as it stands.
    pub fn append(&self, record: Record) -> Result<Entry> {
        let entries = self.ledger()?;
        let path = self.path(LEDGER);
        let mut text = files::read_text(&path, "ledger")?;
        let entry = ledger::next_entry(entries.last(), record);
        text.push_str(&ledger::to_line(&entry));
        files::write_atomic(&path, &text, PUBLIC)?;
        Ok(entry)
    }

    /// The trust domain in the root's URI SAN (`spiffe://TD`), if it has one.
    pub fn trust_domain(&self) -> Result<Option<TrustDomain>> {
        Ok(trust_domain_of(&self.certificate()?))
    }
}

/// The trust domain named by a CA certificate's `spiffe://TD` URI SAN.
pub fn trust_domain_of(cert: &Certificate) -> Option<TrustDomain> {
    cert.uris()
        .iter()
        .find_map(|u| u.parse::<TrustDomain>().ok())
}

/// A ledger record for a certificate.
pub fn cert_record(kind: &str, cert: &Certificate, note: &str, now: OffsetDateTime) -> Record {
    Record {
        key: None,
        kind: kind.to_owned(),
        time: rfc3339(now),
        serial: cert.serial().to_string(),
        subject: cert.subject().to_owned(),
        not_after: rfc3339(cert.not_after()),
        sha256: cert.fingerprint_sha256().to_owned(),
        note: note.to_owned(),
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `pkictl init-root`.
pub fn init_root(args: &InitRootArgs, now: OffsetDateTime) -> Result<()> {
    let dir = &args.dir;
    refuse_existing(dir)?;
    let key_type: KeyType = args.key_type.into();
    let (key, key_file): (Arc<dyn Signer>, KeyFile) = if args.pkcs11.pkcs11 {
        let key = token_key(args, key_type)?;
        let reference = KeyReference::of(&key, args.pkcs11.spec()?.module.as_path());
        (Arc::new(key), KeyFile::Token(reference))
    } else {
        let pass = passphrase::obtain(
            args.passphrase_file.as_deref(),
            "root key",
            "--passphrase-file",
            Purpose::Create,
        )?;
        let key = KeyPair::generate(key_type)?;
        let pem = key.to_encrypted_pem(&pass)?;
        (Arc::new(key), KeyFile::Encrypted(pem))
    };
    let key_type = key.key_type();
    let req = CaRequest {
        organization: args.org.clone(),
        trust_domain: args.trust_domain.clone(),
        ttl: Some(args.ttl),
        path_len: args.path_len,
        ..CaRequest::new(CaProfile::Root, args.cn.clone())
    };
    let ca = CertificateAuthority::new_root(key.clone(), &req, now)?;
    let cert = ca.certificate().clone();
    // The root must verify as its own trust anchor before anything is written.
    verify_path(&cert, &[], std::slice::from_ref(&cert), now)
        .map_err(|e| internal(format!("the new root does not verify: {e}")))?;
    let mut record = cert_record(kind::ROOT, &cert, &args.cn, now);
    if let KeyFile::Token(r) = &key_file {
        record.key = Some(r.location.clone());
    }
    let first = ledger::next_entry(None, record);

    let parent = files::parent_of(dir);
    files::create_private_dir(&parent)?;
    let staging = files::temp_sibling(dir);
    let result = (|| -> Result<()> {
        files::create_private_dir(&staging)?;
        files::write_new(&staging.join(ROOT_CERT), &cert.to_pem(), PUBLIC)?;
        match &key_file {
            KeyFile::Encrypted(pem) => files::write_new(&staging.join(ROOT_KEY), pem, PRIVATE)?,
            KeyFile::Token(r) => {
                files::write_new(&staging.join(ROOT_KEY_REF), &r.to_json(), PUBLIC)?
            }
        }
        files::write_new(&staging.join(LEDGER), &ledger::to_line(&first), PUBLIC)?;
        files::create_private_dir(&staging.join(INTERMEDIATES))?;
        files::sync_dir(&staging.join(INTERMEDIATES))
            .and_then(|_| files::sync_dir(&staging))
            .map_err(|e| internal(format!("cannot sync {}: {e}", staging.display())))?;
        // rename(2) onto an existing directory fails unless it is empty: no root is overwritten.
        fs::rename(&staging, dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
                user(format!(
                    "{} already exists: refusing to overwrite a root; choose another --dir",
                    dir.display()
                ))
            }
            _ => internal(format!(
                "cannot move the new root into {}: {e}",
                dir.display()
            )),
        })?;
        files::sync_dir(&parent)
            .map_err(|e| internal(format!("cannot sync {}: {e}", parent.display())))
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }

    let td = trust_domain_of(&cert);
    match args.output.output {
        Format::Json => print_json(&serde_json::json!({
            "dir": dir.display().to_string(),
            "subject": cert.subject(),
            "serial": cert.serial().to_string(),
            "key_type": key_type.to_string(),
            "not_before": rfc3339(cert.not_before()),
            "not_after": rfc3339(cert.not_after()),
            "path_len": cert.path_len(),
            "trust_domain": td.as_ref().map(ToString::to_string),
            "sha256_fingerprint": cert.fingerprint_sha256(),
            "files": [ROOT_CERT, key_file.name(), LEDGER],
            "key": match &key_file {
                KeyFile::Token(r) => serde_json::to_value(r).ok(),
                KeyFile::Encrypted(_) => None,
            },
        })),
        Format::Text => {
            println!("created root {} in {}", cert.subject(), dir.display());
            println!("  serial:      {}", cert.serial());
            match &key_file {
                KeyFile::Encrypted(_) => {
                    println!("  key:         {key_type} (encrypted, {ROOT_KEY}, mode 0600)")
                }
                KeyFile::Token(r) => println!(
                    "  key:         {key_type} on token {:?} (serial {}), id {}, label {:?} ({ROOT_KEY_REF})",
                    r.location.token_label,
                    r.location.token_serial,
                    r.location.key_id,
                    r.location.key_label
                ),
            }
            println!("  valid until: {}", rfc3339(cert.not_after()));
            if let Some(td) = td {
                println!("  trust domain: spiffe://{td}");
            }
            println!("  sha256:      {}", cert.fingerprint_sha256());
        }
    }
    Ok(())
}

/// What init-root writes for the key: the encrypted key, or where it lives on a token.
enum KeyFile {
    Encrypted(zeroize::Zeroizing<String>),
    Token(KeyReference),
}

impl KeyFile {
    fn name(&self) -> &'static str {
        match self {
            KeyFile::Encrypted(_) => ROOT_KEY,
            KeyFile::Token(_) => ROOT_KEY_REF,
        }
    }
}

/// The root key on the token: made there, or (--pkcs11-existing-key) one already there.
fn token_key(args: &InitRootArgs, key_type: KeyType) -> Result<Pkcs11Key> {
    let p = &args.pkcs11;
    let spec = p.spec()?;
    let pin = token::pin(args.pin_file.as_deref(), "root key", "--pin-file")?;
    if p.pkcs11_existing_key {
        let allow = if p.allow_extractable_key {
            Extractable::Allow
        } else {
            Extractable::Refuse
        };
        let key = Pkcs11Key::open(&spec, &p.existing_key()?, pin, allow).map_err(|e| match e {
            Pkcs11Error::Extractable { .. } => user(format!(
                "{e}; refusing it for a root (pass --allow-extractable-key to use it anyway)"
            )),
            other => token::token_error(other),
        })?;
        if key.is_extractable() {
            eprintln!("warning: the root key can leave the token (--allow-extractable-key)");
        }
        return Ok(key);
    }
    let label = p.pkcs11_key_label.as_deref().unwrap_or("canopy-root");
    Pkcs11Key::generate(&spec, label, key_type, pin).map_err(|e| match e {
        Pkcs11Error::KeyExists { .. } => user(format!(
            "{e} (pass --pkcs11-existing-key to make the root with it)"
        )),
        other => token::token_error(other),
    })
}

fn refuse_existing(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(user(format!("cannot use {}: {e}", dir.display()))),
        Ok(m) if m.is_dir() => {
            let empty = fs::read_dir(dir)
                .map_err(|e| user(format!("cannot read {}: {e}", dir.display())))?
                .next()
                .is_none();
            if empty {
                Ok(())
            } else if dir.join(ROOT_CERT).exists() {
                Err(user(format!(
                    "{} already holds a root: refusing to overwrite it; choose another --dir",
                    dir.display()
                )))
            } else {
                Err(user(format!(
                    "{} exists and is not empty: refusing to write a root into it; choose another --dir",
                    dir.display()
                )))
            }
        }
        Ok(_) => Err(user(format!(
            "{} exists and is not a directory: choose another --dir",
            dir.display()
        ))),
    }
}
