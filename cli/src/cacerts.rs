//! `pkictl cacerts`: the offline way to a correct Istio `cacerts` that publishes an
//! intermediate, validated with istiod's checks before anything is written.

use std::collections::BTreeMap;

use canopy::cacerts::{self as layout, Cacerts};
use canopy::key::KeyError;
use canopy::{Certificate, KeyPair};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::args::CacertsArgs;
use crate::error::{internal, user, CliError, Result};
use crate::files::{self, PRIVATE, PUBLIC};
use crate::intermediate::{self, CERT, KEY, KEY_REF};
use crate::passphrase::{self, Purpose};
use crate::root::RootDir;

/// `pkictl cacerts`.
pub fn run(args: &CacertsArgs, now: OffsetDateTime) -> Result<()> {
    intermediate::check_name(&args.intermediate)?;
    let root = RootDir::open(&args.root)?;
    let dir = root.intermediate_dir(&args.intermediate);
    let cert_path = dir.join(CERT);
    if !cert_path.is_file() {
        return Err(user(format!(
            "no intermediate {:?} under {} (no {}): sign it first with pkictl sign-intermediate or new-intermediate",
            args.intermediate,
            root.dir().display(),
            cert_path.display()
        )));
    }
    let ca_cert = Certificate::from_pem(&files::read_text(&cert_path, "intermediate certificate")?)
        .map_err(|e| user(format!("{}: {e}", cert_path.display())))?;
    let key_path = args.key.clone().unwrap_or_else(|| dir.join(KEY));
    if args.key.is_none() && dir.join(KEY_REF).is_file() {
        return Err(user(format!(
            "the key of intermediate {:?} lives on a PKCS#11 token ({}) and istiod needs its CA key in a file (ca-key.pem): publish an intermediate whose key is a file (new-intermediate without --pkcs11, or sign-intermediate with a CSR)",
            args.intermediate,
            dir.join(KEY_REF).display()
        )));
    }
    if !key_path.is_file() {
        return Err(user(format!(
            "no key for intermediate {:?} ({} does not exist): pass --key FILE, the key made with its CSR",
            args.intermediate,
            key_path.display()
        )));
    }
    let key = open_key(&key_path, args)?;
    let mut roots = vec![root.certificate()?];
    for extra in &args.extra_root {
        let certs = Certificate::parse_pem_all(&files::read_text(extra, "root")?)
            .map_err(|e| user(format!("{}: {e}", extra.display())))?;
        for c in certs {
            if !roots.contains(&c) {
                roots.push(c);
            }
        }
    }

    let refuse = |problems: Vec<layout::Problem>| {
        user(format!(
            "refusing to write cacerts, istiod would reject it: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    };
    let cacerts = Cacerts::build(std::slice::from_ref(&ca_cert), &key, &roots, now)
        .map_err(|e| refuse(e.problems))?;
    let validated = cacerts.validate(now).map_err(|e| refuse(e.problems))?;
    let manifest = match &args.secret_yaml {
        Some(_) => Some(
            cacerts
                .secret_manifest(&args.namespace, &BTreeMap::new())
                .map_err(|e| refuse(e.problems))?,
        ),
        None => None,
    };
    let yaml = manifest
        .map(|m| serde_yaml::to_string(&m).map(Zeroizing::new))
        .transpose()
        .map_err(|e| internal(format!("cannot render the Secret manifest: {e}")))?;

    // Everything is checked: now write.
    files::create_private_dir(&args.out)?;
    for (name, body) in cacerts.entries() {
        let text = std::str::from_utf8(body).map_err(|_| internal("cacerts entry is not text"))?;
        let mode = if name == layout::CA_KEY {
            PRIVATE
        } else {
            PUBLIC
        };
        files::write_atomic(&args.out.join(name), text, mode)?;
    }
    if let (Some(path), Some(yaml)) = (&args.secret_yaml, &yaml) {
        files::create_private_dir(&files::parent_of(path))?;
        files::write_atomic(path, yaml, PRIVATE)?;
    }
    println!(
        "wrote cacerts for intermediate {:?} ({}) to {}",
        args.intermediate,
        validated.ca_cert.subject(),
        args.out.display()
    );
    println!(
        "  path:  {}",
        validated
            .path
            .iter()
            .map(Certificate::subject)
            .collect::<Vec<_>>()
            .join(" -> ")
    );
    println!("  roots: {}", validated.roots.len());
    if let Some(p) = &args.secret_yaml {
        println!(
            "  Secret {}/cacerts manifest: {} (contains the key, mode 0600)",
            args.namespace,
            p.display()
        );
    }
    Ok(())
}

fn open_key(path: &std::path::Path, args: &CacertsArgs) -> Result<KeyPair> {
    let text = Zeroizing::new(files::read_text(path, "key")?);
    match KeyPair::from_pem_with(&text, None) {
        Ok(k) => Ok(k),
        Err(KeyError::Encrypted) => {
            let pass = passphrase::obtain(
                args.key_passphrase_file.as_deref(),
                "intermediate key",
                "--key-passphrase-file",
                Purpose::Unlock,
            )?;
            KeyPair::from_pem_with(&text, Some(&pass)).map_err(|e| match e {
                KeyError::WrongPassphrase => user(format!(
                    "wrong passphrase for the intermediate key {}: check --key-passphrase-file",
                    path.display()
                )),
                other => CliError::from(other),
            })
        }
        Err(e) => Err(user(format!("{}: {e}", path.display()))),
    }
}
