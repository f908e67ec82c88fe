//! `pkictl verify`: a certificate up to a trusted root, with canopy's path verifier.

use canopy::chain::{verify_path, RootBundle};
use canopy::Certificate;
use serde_json::json;
use time::OffsetDateTime;

use crate::args::VerifyArgs;
use crate::error::{user, Result};
use crate::files;
use crate::output::{print_json, rfc3339, Format};

/// `pkictl verify`.
pub fn run(args: &VerifyArgs, now: OffsetDateTime) -> Result<()> {
    let at = args.at.unwrap_or(now);
    let roots = RootBundle::from_pem(&files::read_text(&args.root, "root file")?)
        .map_err(|e| user(format!("{}: {e}", args.root.display())))?;
    let mut certs = Certificate::parse_pem_all(&files::read_text(&args.cert, "certificate")?)
        .map_err(|e| user(format!("{}: {e}", args.cert.display())))?;
    let leaf = certs.remove(0);
    let mut intermediates = certs;
    if let Some(chain) = &args.chain {
        let more = Certificate::parse_pem_all(&files::read_text(chain, "chain")?)
            .map_err(|e| user(format!("{}: {e}", chain.display())))?;
        intermediates.extend(more.into_iter().filter(|c| *c != leaf));
    }
    match verify_path(&leaf, &intermediates, roots.roots(), at) {
        Ok(path) => {
            match args.output.output {
                Format::Json => print_json(&json!({
                    "valid": true,
                    "at": rfc3339(at),
                    "path": path.iter().map(|c| json!({
                        "subject": c.subject(),
                        "serial": c.serial().to_string(),
                        "not_after": rfc3339(c.not_after()),
                        "sha256_fingerprint": c.fingerprint_sha256(),
                    })).collect::<Vec<_>>(),
                })),
                Format::Text => {
                    println!("OK: {} verifies at {}", leaf.subject(), rfc3339(at));
                    for (i, c) in path.iter().enumerate() {
                        let role = if i + 1 == path.len() {
                            "root"
                        } else if i == 0 {
                            "cert"
                        } else {
                            "via "
                        };
                        println!(
                            "  {role} {} (serial {}, until {})",
                            c.subject(),
                            c.serial(),
                            rfc3339(c.not_after())
                        );
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            if args.output.output == Format::Json {
                print_json(&json!({"valid": false, "at": rfc3339(at), "error": e.to_string()}));
            }
            Err(user(format!("verification failed: {e}")))
        }
    }
}
