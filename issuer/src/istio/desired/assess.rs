//! Deciding what a cluster's `cacerts` should hold: whether the signing intermediate
//! can be used at all, whether the CA there may stay (ours, right issuer and root, not
//! yet due for renewal), and, under the repair policy, whether canopy may change it.

use canopy::cacerts::Problem;
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::key::KeyPair;
use canopy::renewal::renew_at;
use canopy::spiffe::TrustDomain;
use time::OffsetDateTime;

use super::current::{Current, Ownership};
use crate::istio::config::{IstioClusterConfig, Mode, RepairPolicy};
use crate::istio::setup::Signing;

/// What this pass wants in one cluster.
#[derive(Debug)]
pub struct Target<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// Its settings.
    pub settings: &'a IstioClusterConfig,
    /// The intermediate to sign under (or publish).
    pub signing: &'a Signing,
    /// The root the CA must chain to.
    pub sign_root: &'a Certificate,
    /// The roots for `root-cert.pem`, in order.
    pub trust: Vec<Certificate>,
    /// Trust domain, for a minted CA's URI SAN.
    pub trust_domain: &'a TrustDomain,
}

/// What to do about the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaPlan {
    /// Keep the CA that is there.
    Keep,
    /// Mint a new mesh CA (subca mode), for this reason.
    Mint(String),
    /// Publish the intermediate itself (intermediate mode), for this reason.
    Publish(String),
}

/// Why nothing may be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The inputs are unusable (bad intermediate, ...): an error.
    Refused(String),
    /// The Secret is not canopy's to change under the repair policy: reported.
    Reported(String),
}

/// What was found, and what to do.
#[derive(Clone, Debug)]
pub struct Assessment {
    /// Who shaped the Secret (None: absent).
    pub ownership: Option<Ownership>,
    /// What istiod would reject in the current Secret.
    pub problems: Vec<Problem>,
    /// The decision about the CA.
    pub plan: Result<CaPlan, Blocked>,
}

/// Stable jitter in 0..=1 for a CA, from its fingerprint: replicas and re-runs agree.
pub fn jitter(ca: &Certificate) -> f64 {
    let fp = ca.fingerprint_sha256();
    let n = u32::from_str_radix(fp.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    f64::from(n) / f64::from(u32::MAX)
}

/// When a CA is renewed.
pub fn renewal_time(ca: &Certificate) -> OffsetDateTime {
    renew_at(ca.not_before(), ca.not_after(), jitter(ca))
}

/// Why istiod would refuse a CA with this certificate's key, if it would.
pub fn key_refused(name: &str, cert: &Certificate) -> Option<String> {
    match cert.key_type() {
        Some(kt) if kt.accepted_by_istiod() => None,
        Some(kt) => Some(format!(
            "intermediate {name} has a {kt} key: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048 CA keys (not Ed25519, not RSA < 2048); sign a new intermediate with one of those"
        )),
        None => Some(format!(
            "intermediate {name} has an unsupported key type: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048 CA keys"
        )),
    }
}

/// Checks the signing intermediate before anything is built from it.
pub fn check_signing(t: &Target<'_>, now: OffsetDateTime) -> Result<(), String> {
    let int = t.signing.certificate();
    let name = &t.signing.name;
    if let Some(why) = key_refused(name, int) {
        return Err(why);
    }
    if now > int.not_after() {
        return Err(format!(
            "intermediate {name} expired at {}: sign a new one (pkictl sign-intermediate) and configure it",
            int.not_after()
        ));
    }
    if now < int.not_before() {
        return Err(format!(
            "intermediate {name} is not valid until {}",
            int.not_before()
        ));
    }
    verify_path(
        int,
        &t.signing.chain[1..],
        std::slice::from_ref(t.sign_root),
        now,
    )
    .map_err(|e| {
        format!(
            "intermediate {name} does not chain to root {} ({}): {e}",
            t.sign_root.subject(),
            t.sign_root.fingerprint_sha256()
        )
    })?;
    Ok(())
}

/// Whether the CA in the Secret may stay: it is ours to keep (right issuer, right root,
/// key matches, valid, not yet due for renewal). Returns why not.
fn keepable(t: &Target<'_>, current: &Current, now: OffsetDateTime) -> Result<(), String> {
    // Read the CA and key alone: other files (a broken chain, a stray tls.crt) are rebuilt.
    let missing = |n: &str| format!("{n} is missing or not text");
    let ca_text = current
        .file(canopy::cacerts::CA_CERT)
        .ok_or_else(|| missing("ca-cert.pem"))?;
    let key_text = current
        .file(canopy::cacerts::CA_KEY)
        .ok_or_else(|| missing("ca-key.pem"))?;
    let ca = Certificate::from_pem(ca_text).map_err(|e| format!("ca-cert.pem: {e}"))?;
    let key = KeyPair::from_pem(key_text).map_err(|e| format!("ca-key.pem: {e}"))?;
    if !ca.matches_key(&key) {
        return Err("ca-key.pem does not match ca-cert.pem".into());
    }
    if !ca.key_type().is_some_and(|k| k.accepted_by_istiod()) {
        return Err("its key type is not accepted by istiod".into());
    }
    let int = t.signing.certificate();
    match t.settings.mode {
        Mode::Subca => {
            if &ca == int
                || ca.verify_signed_by(int).is_err()
                || ca.issuer_raw() != int.subject_raw()
            {
                return Err(format!(
                    "its CA is not signed by intermediate {}",
                    t.signing.name
                ));
            }
            if ca.path_len() != Some(0) {
                return Err("its CA is not a pathlen-0 mesh CA".into());
            }
        }
        Mode::Intermediate => {
            if &ca != int {
                return Err(format!("it does not hold intermediate {}", t.signing.name));
            }
        }
    }
    let mut above = t.signing.chain.clone();
    if t.settings.mode == Mode::Intermediate {
        above.remove(0);
    }
    verify_path(&ca, &above, std::slice::from_ref(t.sign_root), now)
        .map_err(|e| format!("its CA does not verify to the root it must chain to: {e}"))?;
    if t.settings.mode == Mode::Subca && now >= renewal_time(&ca) {
        return Err(format!(
            "renewal due since {} (2/3 of its life; it expires {})",
            renewal_time(&ca),
            ca.not_after()
        ));
    }
    Ok(())
}

/// Decides what to do in one cluster.
pub fn assess(t: &Target<'_>, current: Option<&Current>, now: OffsetDateTime) -> Assessment {
    let ownership = current.map(Current::ownership);
    let problems = current.map(|c| c.problems(now)).unwrap_or_default();
    let fresh = |why: String| match t.settings.mode {
        Mode::Subca => CaPlan::Mint(why),
        Mode::Intermediate => CaPlan::Publish(why),
    };
    let plan = (|| {
        check_signing(t, now).map_err(Blocked::Refused)?;
        let Some(current) = current else {
            return Ok(fresh("no cacerts yet".into()));
        };
        let keep = keepable(t, current, now);
        let how = match ownership {
            Some(Ownership::EditedByHand) => "was edited by hand after canopy wrote it",
            _ => "was not written by canopy",
        };
        match (ownership.expect("current exists"), t.settings.repair) {
            (Ownership::Canopy, _) | (_, RepairPolicy::Replace) => Ok(match keep {
                Ok(()) => CaPlan::Keep,
                Err(why) => fresh(why),
            }),
            (_, RepairPolicy::Report) => Err(Blocked::Reported(format!(
                "cacerts {how}; repair policy is `report`, so canopy leaves it alone{}",
                summary(&problems)
            ))),
            (_, RepairPolicy::Adopt) if !problems.is_empty() => Err(Blocked::Reported(format!(
                "cacerts {how} and istiod would reject it{}; set `repair: replace` to let canopy replace it",
                summary(&problems)
            ))),
            (_, RepairPolicy::Adopt) => match keep {
                Ok(()) => Ok(CaPlan::Keep),
                // Ours in all but labels, only due for renewal: renew it.
                Err(why) if why.starts_with("renewal due") => Ok(fresh(why)),
                Err(why) => Err(Blocked::Reported(format!(
                    "cacerts {how} and cannot be adopted: {why}; set `repair: replace` to let canopy replace it"
                ))),
            },
        }
    })();
    Assessment {
        ownership,
        problems,
        plan,
    }
}

fn summary(problems: &[Problem]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}
