//! `pkictl inspect`: what a PEM file holds, for people and for scripts.

use std::path::Path;

use canopy::crl::Crl;
use canopy::{Certificate, Csr, KeyPair, Profile};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::args::InspectArgs;
use crate::error::{user, Result};
use crate::files;
use crate::output::{human_duration, print_json, rfc3339, Format};

/// One PEM block's label and its full text (BEGIN to END).
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), format!("{line}\n")));
            continue;
        }
        if let Some((label, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
            if line == format!("-----END {label}-----") {
                out.push(current.take().expect("is some"));
            }
        }
    }
    out
}

/// `pkictl inspect`.
pub fn run(args: &InspectArgs, now: OffsetDateTime) -> Result<()> {
    let mut reports = Vec::new();
    for path in &args.files {
        reports.push(inspect_file(path, now)?);
    }
    match args.output.output {
        Format::Json => print_json(&json!({ "files": reports })),
        Format::Text => {
            for r in &reports {
                print_text(r);
            }
        }
    }
    Ok(())
}

fn inspect_file(path: &Path, now: OffsetDateTime) -> Result<Value> {
    let text = zeroize::Zeroizing::new(files::read_text(path, "file")?);
    let blocks = pem_blocks(&text);
    if blocks.is_empty() {
        return Err(user(format!(
            "{}: no PEM block found (expected a certificate, CSR, key or CRL)",
            path.display()
        )));
    }
    let mut objects = Vec::new();
    let mut certs = Vec::new();
    for (label, body) in blocks.iter() {
        let body = zeroize::Zeroizing::new(body.clone());
        let obj = match label.as_str() {
            "CERTIFICATE" => {
                let c = Certificate::from_pem(&body)
                    .map_err(|e| user(format!("{}: {e}", path.display())))?;
                let v = cert_json(&c, now);
                certs.push(c);
                v
            }
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
                let csr =
                    Csr::from_pem(&body).map_err(|e| user(format!("{}: {e}", path.display())))?;
                json!({
                    "kind": "csr",
                    "subject": csr.subject(),
                    "sans": {"dns": csr.dns_names(), "uri": csr.uris(),
                             "ip": csr.ip_addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                             "email": csr.emails()},
                    "spiffe_ids": csr.spiffe_ids().into_iter().filter_map(|r| r.ok()).map(|s| s.to_string()).collect::<Vec<_>>(),
                    "requests_ca": csr.requests_ca(),
                    "key_type": csr.key_type().to_string(),
                    "spki_sha256": crate::root::sha256_hex(csr.public_key_spki()),
                    "signature_valid": true,
                })
            }
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                let k = KeyPair::from_pem(&body)
                    .map_err(|e| user(format!("{}: {e}", path.display())))?;
                json!({"kind": "private-key", "encrypted": false,
                       "key_type": k.key_type().to_string(), "spki_sha256": k.fingerprint()})
            }
            "ENCRYPTED PRIVATE KEY" => {
                json!({"kind": "private-key", "encrypted": true, "key_type": null, "spki_sha256": null})
            }
            "X509 CRL" => {
                let crl =
                    Crl::from_pem(&body).map_err(|e| user(format!("{}: {e}", path.display())))?;
                json!({"kind": "crl",
                       "this_update": rfc3339(crl.this_update()),
                       "next_update": crl.next_update().map(rfc3339),
                       "revoked": crl.revoked().iter().map(ToString::to_string).collect::<Vec<_>>(),
                       "sha256_fingerprint": crate::root::sha256_hex(crl.der())})
            }
            "EC PARAMETERS" => continue,
            other => json!({"kind": "unknown", "label": other}),
        };
        objects.push(obj);
    }
    let chain_problems = if certs.len() > 1 {
        chain_problems(&certs, now)
    } else {
        vec![]
    };
    Ok(json!({
        "path": path.display().to_string(),
        "objects": objects,
        "chain_problems": chain_problems,
    }))
}

fn cert_json(c: &Certificate, now: OffsetDateTime) -> Value {
    let profile = Profile::guess(c);
    json!({
        "kind": "certificate",
        "subject": c.subject(),
        "issuer": c.issuer(),
        "serial": c.serial().to_string(),
        "sans": {"dns": c.dns_names(), "uri": c.uris(),
                 "ip": c.ip_addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                 "email": c.emails()},
        "spiffe_id": c.spiffe_id().map(|s| s.to_string()),
        "is_ca": c.is_ca(),
        "path_len": c.path_len(),
        "profile": profile.map(|p| p.to_string()),
        "lint": profile.map(|p| p.lint(c)).unwrap_or_default(),
        "not_before": rfc3339(c.not_before()),
        "not_after": rfc3339(c.not_after()),
        "seconds_left": (c.not_after() - now).whole_seconds(),
        "time_left": human_duration(c.not_after() - now),
        "expired": now > c.not_after(),
        "key_type": c.key_type().map(|k| k.to_string()),
        "signature_algorithm": c.signature_algorithm(),
        "sha256_fingerprint": c.fingerprint_sha256(),
        "spki_sha256": crate::root::sha256_hex(c.public_key_spki()),
    })
}

/// Problems of a chain in file order: each certificate must be issued by the next.
fn chain_problems(certs: &[Certificate], now: OffsetDateTime) -> Vec<String> {
    let mut v = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        if now > c.not_after() {
            v.push(format!(
                "#{i} {} expired at {}",
                c.subject(),
                rfc3339(c.not_after())
            ));
        }
        if now < c.not_before() {
            v.push(format!(
                "#{i} {} is not valid until {}",
                c.subject(),
                rfc3339(c.not_before())
            ));
        }
        if let Some(next) = certs.get(i + 1) {
            if c.issuer_raw() != next.subject_raw() {
                v.push(format!(
                    "#{i} {} is issued by {}, but the next certificate is {} (wrong order or a missing intermediate)",
                    c.subject(), c.issuer(), next.subject()
                ));
            } else if c.verify_signed_by(next).is_err() {
                v.push(format!(
                    "#{i} {} is not signed by the key of #{}",
                    c.subject(),
                    i + 1
                ));
            }
            if !next.is_ca() {
                v.push(format!(
                    "#{} {} signs #{i} but is not a CA",
                    i + 1,
                    next.subject()
                ));
            }
        } else if c.is_self_issued() && c.verify_signed_by(c).is_err() {
            v.push(format!(
                "#{i} {} is self-issued but its signature does not verify",
                c.subject()
            ));
        }
    }
    v
}

fn print_text(r: &Value) {
    println!("{}:", r["path"].as_str().unwrap_or_default());
    let empty = vec![];
    for (i, o) in r["objects"].as_array().unwrap_or(&empty).iter().enumerate() {
        let s = |k: &str| match &o[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let list = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        match o["kind"].as_str().unwrap_or_default() {
            "certificate" => {
                println!("  [{i}] certificate");
                println!("      subject:     {}", s("subject"));
                println!("      issuer:      {}", s("issuer"));
                println!("      serial:      {}", s("serial"));
                for (k, name) in [
                    ("dns", "DNS"),
                    ("uri", "URI"),
                    ("ip", "IP"),
                    ("email", "email"),
                ] {
                    let l = list(&o["sans"][k]);
                    if !l.is_empty() {
                        println!("      SAN {name:<8} {l}");
                    }
                }
                println!("      SPIFFE ID:   {}", s("spiffe_id"));
                println!("      profile:     {} (guessed)", s("profile"));
                for f in o["lint"].as_array().unwrap_or(&empty) {
                    println!("      lint:        {}", f.as_str().unwrap_or_default());
                }
                println!(
                    "      valid:       {} .. {}",
                    s("not_before"),
                    s("not_after")
                );
                println!("      time left:   {}", s("time_left"));
                println!("      key:         {}", s("key_type"));
                println!("      signature:   {}", s("signature_algorithm"));
                println!("      sha256:      {}", s("sha256_fingerprint"));
            }
            "csr" => {
                println!("  [{i}] CSR (signature verified)");
                println!("      subject:     {}", s("subject"));
                for (k, name) in [
                    ("dns", "DNS"),
                    ("uri", "URI"),
                    ("ip", "IP"),
                    ("email", "email"),
                ] {
                    let l = list(&o["sans"][k]);
                    if !l.is_empty() {
                        println!("      SAN {name:<8} {l}");
                    }
                }
                println!("      asks for CA: {}", s("requests_ca"));
                println!("      key:         {}", s("key_type"));
                println!("      key sha256:  {}", s("spki_sha256"));
            }
            "private-key" if o["encrypted"] == Value::Bool(true) => {
                println!(
                    "  [{i}] private key, encrypted (public half not shown without the passphrase)"
                );
            }
            "private-key" => {
                println!("  [{i}] private key, UNENCRYPTED");
                println!("      key:         {}", s("key_type"));
                println!("      key sha256:  {}", s("spki_sha256"));
            }
            "crl" => {
                println!("  [{i}] CRL");
                println!("      this update: {}", s("this_update"));
                println!("      next update: {}", s("next_update"));
                println!("      revoked:     {}", list(&o["revoked"]));
            }
            _ => println!("  [{i}] {} (not inspected)", s("label")),
        }
    }
    let problems = r["chain_problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        if r["objects"].as_array().map_or(0, |a| {
            a.iter().filter(|o| o["kind"] == "certificate").count()
        }) > 1
        {
            println!("  chain: ok (each certificate is issued by the next)");
        }
    } else {
        for p in problems {
            println!("  chain problem: {}", p.as_str().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pem_blocks;

    #[test]
    fn splits_pem_blocks_and_ignores_text_between() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\nBag Attributes\n-----BEGIN EC PRIVATE KEY-----\nREVG\n-----END EC PRIVATE KEY-----\n-----BEGIN X\nunterminated\n";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, "CERTIFICATE");
        assert_eq!(
            blocks[0].1,
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(blocks[1].0, "EC PRIVATE KEY");
    }
}
