//! The reconcile's pure half: read what a cluster's `cacerts` holds, decide what it should
//! hold, and build that Secret from inputs alone. The only impure step, minting a mesh CA
//! (a fresh key), happens between [`assess`] and [`build`], in the sync.

use std::collections::BTreeMap;

use canopy::ca::IssuedCertificate;
use canopy::cacerts::{Cacerts, Problem};
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::key::KeyPair;
use canopy::renewal::renew_at;
use canopy::rotation::Observed;
use canopy::spiffe::TrustDomain;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::istio::config::{IstioClusterConfig, Mode, RepairPolicy};
use crate::istio::setup::Signing;

/// The Secret's name istiod reads.
pub const SECRET_NAME: &str = "cacerts";
/// Label saying who manages the Secret.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value for canopy.
pub const CANOPY: &str = "canopy";
/// Label naming the cluster (as the issuer's config names it).
pub const CLUSTER_LABEL: &str = "canopy.dev/cluster";
/// Annotation: the CA's serial (set by the core's `Cacerts::annotations`).
pub const SERIAL_ANNOTATION: &str = "canopy.dev/ca-serial";
/// Annotation: when this CA was first published here (RFC 3339).
pub const SINCE_ANNOTATION: &str = "canopy.dev/ca-since";
/// Annotation: SHA-256 over the data canopy wrote; a mismatch means a hand edit.
pub const DATA_ANNOTATION: &str = "canopy.dev/data-sha256";
/// Annotation: the publishing mode.
pub const MODE_ANNOTATION: &str = "canopy.dev/mode";

/// A Secret's data entries, decoded. `ca-key.pem` is an unencrypted CA key (istiod
/// needs it so): `Debug` shows only names and sizes, and the bytes are wiped on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl std::ops::Deref for SecretData {
    type Target = BTreeMap<String, Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SecretData {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, Vec<u8>>> for SecretData {
    fn from(map: BTreeMap<String, Vec<u8>>) -> Self {
        SecretData(map)
    }
}

impl FromIterator<(String, Vec<u8>)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        SecretData(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("<{} bytes>", v.len()))),
            )
            .finish()
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for value in self.0.values_mut() {
            value.zeroize();
        }
    }
}

/// The `cacerts` Secret as found in a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// resourceVersion, for the update precondition.
    pub resource_version: Option<String>,
    /// Secret type.
    pub type_: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Data, decoded.
    pub data: SecretData,
}

/// Who last shaped the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Written by canopy and unchanged since.
    Canopy,
    /// Written by canopy, then edited by someone else.
    EditedByHand,
    /// Not written by canopy (hand-made, another tool).
    Foreign,
}

/// SHA-256 over the data entries, in key order, unambiguously framed.
pub fn data_hash(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(h.finalize())
}

impl Current {
    /// Who last shaped it.
    pub fn ownership(&self) -> Ownership {
        if self.labels.get(MANAGED_BY).map(String::as_str) != Some(CANOPY) {
            Ownership::Foreign
        } else if self.annotations.get(DATA_ANNOTATION) == Some(&data_hash(&self.data)) {
            Ownership::Canopy
        } else {
            Ownership::EditedByHand
        }
    }

    /// The files, as istiod would read them.
    pub fn cacerts(&self) -> Result<Cacerts, Vec<Problem>> {
        Cacerts::from_entries(self.data.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(|e| e.problems)
    }

    /// Everything istiod would reject in it, at `now`.
    pub fn problems(&self, now: OffsetDateTime) -> Vec<Problem> {
        let mut p = match self.cacerts() {
            Ok(c) => c
                .validate(now)
                .err()
                .map(|e| e.problems)
                .unwrap_or_default(),
            Err(p) => p,
        };
        if self.type_.as_deref().unwrap_or("Opaque") != "Opaque" {
            p.push(Problem {
                code: "secret-type",
                message: format!(
                    "Secret type is {:?}; istiod's plugged-in CA uses Opaque",
                    self.type_.as_deref().unwrap_or_default()
                ),
            });
        }
        p
    }

    /// One file as text, if present and UTF-8.
    pub fn file(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.data.get(name)?).ok()
    }

    /// The mesh CA certificate in it, if it parses.
    pub fn ca_cert(&self) -> Option<Certificate> {
        Certificate::from_pem(self.file(canopy::cacerts::CA_CERT)?).ok()
    }

    /// The roots in `root-cert.pem`, if it parses.
    pub fn roots(&self) -> Vec<Certificate> {
        self.data
            .get(canopy::cacerts::ROOT_CERT)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| Certificate::parse_pem_all(t).ok())
            .unwrap_or_default()
    }

    /// The root (among `roots`) the mesh CA verifies to through `cert-chain.pem`.
    pub fn signing_root(&self, roots: &[Certificate], now: OffsetDateTime) -> Option<Certificate> {
        let ca = self.ca_cert()?;
        let chain = self
            .data
            .get(canopy::cacerts::CERT_CHAIN)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| Certificate::parse_pem_all(t).ok())
            .unwrap_or_default();
        let path = verify_path(&ca, chain.get(1..).unwrap_or_default(), roots, now).ok()?;
        path.last().cloned()
    }

    /// When the current CA was first published: the annotation if it names this CA, else
    /// its notBefore.
    pub fn since(&self) -> Option<OffsetDateTime> {
        let ca = self.ca_cert()?;
        let ours = self.annotations.get(SERIAL_ANNOTATION) == Some(&ca.serial().to_string());
        let annotated = self
            .annotations
            .get(SINCE_ANNOTATION)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        match (ours, annotated) {
            (true, Some(t)) => Some(t),
            _ => Some(ca.not_before()),
        }
    }

    /// What the rotation rules need to know about this cluster.
    pub fn observed(&self, roots: &[Certificate], now: OffsetDateTime) -> Observed {
        Observed {
            trusts: self
                .roots()
                .iter()
                .map(|c| c.fingerprint_sha256().to_string())
                .collect(),
            signs_under: self
                .signing_root(roots, now)
                .map(|r| r.fingerprint_sha256().to_string()),
            since: self.since(),
        }
    }
}

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

/// The CA material for the Secret, once decided (and, for a new one, minted).
#[derive(Debug)]
pub enum Material<'a> {
    /// The CA in the current Secret.
    Keep(&'a Current),
    /// A mesh CA just minted.
    Minted(&'a IssuedCertificate, &'a KeyPair),
    /// The intermediate itself.
    Publish,
}

/// The Secret canopy wants in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Data entries.
    pub data: SecretData,
    /// Labels (ours plus those of others already on the Secret).
    pub labels: BTreeMap<String, String>,
    /// Annotations (ours plus those of others).
    pub annotations: BTreeMap<String, String>,
    /// The CA published.
    pub ca: Certificate,
}

impl Desired {
    /// Whether `current` already is exactly this (then nothing is written).
    pub fn matches(&self, current: &Current) -> bool {
        current.type_.as_deref().unwrap_or("Opaque") == "Opaque"
            && current.data == self.data
            && current.labels == self.labels
            && current.annotations == self.annotations
    }
}

/// Why a desired Secret could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// It would fail istiod's checks: nothing is written.
    #[error("the cacerts canopy would write fails istiod's checks, so nothing was written: {0}")]
    Invalid(#[from] canopy::cacerts::Invalid),
    /// The material is unusable.
    #[error("{0}")]
    Material(String),
}

/// Builds the Secret from the decided material, validates it as istiod would, and returns it.
pub fn build(
    t: &Target<'_>,
    material: Material<'_>,
    current: Option<&Current>,
    now: OffsetDateTime,
) -> Result<Desired, BuildError> {
    let bad = |e: String| BuildError::Material(e);
    let (chain, key, key_text): (Vec<Certificate>, KeyPair, Option<Zeroizing<String>>) =
        match material {
            Material::Keep(c) => {
                let ca_text = c.file(canopy::cacerts::CA_CERT).unwrap_or_default();
                let key_text = c.file(canopy::cacerts::CA_KEY).unwrap_or_default();
                let ca = Certificate::from_pem(ca_text).map_err(|e| bad(e.to_string()))?;
                let key = KeyPair::from_pem(key_text).map_err(|e| bad(e.to_string()))?;
                let mut chain = vec![ca.clone()];
                chain.extend(t.signing.chain.iter().filter(|c| **c != ca).cloned());
                // The key text as it is, unless it carries what istiod refuses.
                let keep_text = !key_text.contains("EC PARAMETERS")
                    && key_text.ends_with('\n')
                    && !key_text.contains("ENCRYPTED");
                (
                    chain,
                    key,
                    keep_text.then(|| Zeroizing::new(key_text.to_string())),
                )
            }
            Material::Minted(issued, key) => {
                let key =
                    KeyPair::from_pem(&key.to_unencrypted_pem()).map_err(|e| bad(e.to_string()))?;
                (issued.chain.clone(), key, None)
            }
            Material::Publish => {
                let key = KeyPair::from_pem(&t.signing.key.to_unencrypted_pem())
                    .map_err(|e| bad(e.to_string()))?;
                (t.signing.chain.clone(), key, None)
            }
        };
    let mut files = Cacerts::build(&chain, &key, &t.trust, now)?;
    if let Some(text) = key_text {
        files.ca_key = text;
    }
    // root-cert.pem stays byte-identical while the roots are the same: a change makes every
    // proxy reload its trust.
    if let Some(c) = current {
        if let Some(old) = c.data.get(canopy::cacerts::ROOT_CERT) {
            if old.ends_with(b"\n") && c.roots() == t.trust {
                if let Ok(text) = String::from_utf8(old.clone()) {
                    files.root_cert = text;
                }
            }
        }
    }
    let validated = files.validate(now)?;
    let reached = validated.path.last().cloned();
    if reached.as_ref() != Some(t.sign_root) {
        return Err(bad(format!(
            "the mesh CA does not chain to root {}",
            t.sign_root.fingerprint_sha256()
        )));
    }
    let ca = validated.ca_cert;
    let data: BTreeMap<String, Vec<u8>> = files
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    let mut labels: BTreeMap<String, String> =
        current.map(|c| c.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY.into(), CANOPY.into());
    labels.insert(CLUSTER_LABEL.into(), t.cluster.into());
    let mut annotations: BTreeMap<String, String> = current
        .map(|c| {
            c.annotations
                .iter()
                .filter(|(k, _)| !k.starts_with("canopy.dev/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    annotations.extend(Cacerts::annotations(&ca));
    let same_ca = current.and_then(Current::ca_cert).as_ref() == Some(&ca);
    let since = match current.filter(|_| same_ca).and_then(|c| {
        c.annotations
            .get(SINCE_ANNOTATION)
            .filter(|_| c.annotations.get(SERIAL_ANNOTATION) == Some(&ca.serial().to_string()))
    }) {
        Some(s) => s.clone(),
        None => now.format(&Rfc3339).unwrap_or_default(),
    };
    annotations.insert(SINCE_ANNOTATION.into(), since);
    annotations.insert(
        MODE_ANNOTATION.into(),
        match t.settings.mode {
            Mode::Subca => "subca",
            Mode::Intermediate => "intermediate",
        }
        .into(),
    );
    annotations.insert(DATA_ANNOTATION.into(), data_hash(&data));
    Ok(Desired {
        data: data.into(),
        labels,
        annotations,
        ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy::ca::CertificateAuthority;
    use canopy::key::KeyType;
    use canopy::profile::{CaProfile, CaRequest};
    use std::sync::Arc;
    use time::Duration;

    fn req(profile: CaProfile, cn: &str) -> CaRequest {
        CaRequest {
            trust_domain: Some("mesh.example".parse().unwrap()),
            ..CaRequest::new(profile, cn)
        }
    }

    fn current_of(d: &Desired) -> Current {
        Current {
            resource_version: Some("1".into()),
            type_: Some("Opaque".into()),
            labels: d.labels.clone(),
            annotations: d.annotations.clone(),
            data: d.data.clone(),
        }
    }

    #[test]
    fn decide_build_keep_renew_and_detect_hand_edits() {
        let now = time::macros::datetime!(2026-01-01 0:00 UTC);
        let key = Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap());
        let root = CertificateAuthority::new_root(key, &req(CaProfile::Root, "Root"), now).unwrap();
        let (int, int_key) = root
            .issue_with_new_key(
                &req(CaProfile::Intermediate, "aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let signing = Signing::new("aws", vec![int.certificate.clone()], int_key).unwrap();
        let settings = IstioClusterConfig::default();
        let td: TrustDomain = "mesh.example".parse().unwrap();
        let t = Target {
            cluster: "aws",
            settings: &settings,
            signing: &signing,
            sign_root: root.certificate(),
            trust: vec![root.certificate().clone()],
            trust_domain: &td,
        };
        // Nothing there: mint.
        assert!(matches!(assess(&t, None, now).plan, Ok(CaPlan::Mint(_))));
        let (mesh, mesh_key) = signing
            .ca
            .issue_with_new_key(
                &req(CaProfile::MeshCa, "aws mesh CA"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let d = build(&t, Material::Minted(&mesh, &mesh_key), None, now).unwrap();
        let cur = current_of(&d);
        assert_eq!(cur.ownership(), Ownership::Canopy);
        // Written and unchanged: keep, and the rebuilt Secret is identical (no write).
        let later = now + Duration::days(30);
        assert_eq!(assess(&t, Some(&cur), later).plan, Ok(CaPlan::Keep));
        assert!(build(&t, Material::Keep(&cur), Some(&cur), later)
            .unwrap()
            .matches(&cur));
        // At 2/3 of its life: renew.
        let due = now + Duration::days(61);
        assert!(
            matches!(assess(&t, Some(&cur), due).plan, Ok(CaPlan::Mint(why)) if why.starts_with("renewal due"))
        );
        // A hand edit is detected and, under `report`, left alone.
        let mut edited = cur.clone();
        edited
            .data
            .insert("cert-chain.pem".into(), d.data["ca-cert.pem"].clone());
        assert_eq!(edited.ownership(), Ownership::EditedByHand);
        let report = IstioClusterConfig {
            repair: RepairPolicy::Report,
            ..Default::default()
        };
        let t2 = Target {
            settings: &report,
            trust: t.trust.clone(),
            ..t
        };
        let a = assess(&t2, Some(&edited), later);
        assert!(matches!(a.plan, Err(Blocked::Reported(_))));
        assert!(a.problems.iter().any(|p| p.code == "chain-incomplete"));
    }

    #[test]
    fn secret_data_debug_shows_no_key_material() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n";
        let data: SecretData = [("ca-key.pem".to_string(), key.to_vec())]
            .into_iter()
            .collect();
        let current = Current {
            data,
            ..Current::default()
        };
        let text = format!("{current:?}");
        assert!(
            text.contains("ca-key.pem") && text.contains("bytes"),
            "{text}"
        );
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("MIGHAgEA"),
            "{text}"
        );
    }
}
