//! `pkictl bundle`: several roots as one PEM file or one SPIFFE trust bundle.

use canopy::bundle::spiffe_bundle_json;
use canopy::chain::RootBundle;
use canopy::Certificate;

use crate::args::BundleArgs;
use crate::error::{user, Result};
use crate::files::{self, PUBLIC};
use crate::root::trust_domain_of;

/// `pkictl bundle`.
pub fn run(args: &BundleArgs) -> Result<()> {
    let mut bundle = RootBundle::default();
    for path in &args.roots {
        let certs = Certificate::parse_pem_all(&files::read_text(path, "root")?)
            .map_err(|e| user(format!("{}: {e}", path.display())))?;
        for c in certs {
            if !c.is_ca() {
                return Err(user(format!(
                    "{}: {} is not a CA certificate; a bundle holds roots",
                    path.display(),
                    c.subject()
                )));
            }
            bundle.add(c);
        }
    }
    let text = if args.spiffe {
        let td = args
            .trust_domain
            .as_ref()
            .ok_or_else(|| user("--spiffe needs --trust-domain TD"))?;
        for r in bundle.roots() {
            if let Some(other) = trust_domain_of(r).filter(|t| t != td) {
                return Err(user(format!(
                    "root {} belongs to trust domain {other}, not {td}",
                    r.subject()
                )));
            }
        }
        let v =
            spiffe_bundle_json(bundle.roots(), args.sequence, args.refresh_hint).map_err(user)?;
        format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("JSON values serialize")
        )
    } else {
        bundle.to_pem()
    };
    match &args.out {
        Some(out) => {
            files::write_atomic(out, &text, PUBLIC)?;
            eprintln!(
                "wrote {} root(s) to {}",
                bundle.roots().len(),
                out.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
