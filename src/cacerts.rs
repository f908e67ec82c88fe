//! The Istio `cacerts` Secret layout and istiod's checks (shared/contracts/istio-cacerts.md).
//!
//! [`Cacerts::validate`] refuses anything istiod would reject, so nothing wrong is published.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cert::Certificate;
use crate::chain::verify_path;
use crate::crl::Crl;
use crate::key::{KeyError, KeyPair};

/// The mesh CA certificate istiod signs with.
pub const CA_CERT: &str = "ca-cert.pem";
/// Its private key, unencrypted.
pub const CA_KEY: &str = "ca-key.pem";
/// `ca-cert.pem`, every higher intermediate, then the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The trusted root(s).
pub const ROOT_CERT: &str = "root-cert.pem";
/// Optional CRLs, one per CA in the chain (Istio 1.27+).
pub const CA_CRL: &str = "ca-crl.pem";
/// Keys that switch istiod to another layout and must never be written beside ours.
pub const FORBIDDEN_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// The files of a `cacerts` Secret. The key is wiped from memory on drop.
pub struct Cacerts {
    pub ca_cert: String,
    pub ca_key: Zeroizing<String>,
    pub cert_chain: String,
    pub root_cert: String,
    pub ca_crl: Option<String>,
}

impl std::fmt::Debug for Cacerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cacerts")
            .field("ca_cert", &self.ca_cert.len())
            .field("ca_key", &"<redacted>")
            .field("cert_chain", &self.cert_chain.len())
            .field("root_cert", &self.root_cert.len())
            .field("ca_crl", &self.ca_crl.as_ref().map(String::len))
            .finish()
    }
}

/// One thing istiod would reject (or that breaks the mesh), with a stable code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A `cacerts` that fails istiod's checks.
#[derive(Debug, thiserror::Error)]
#[error("cacerts would be rejected by istiod: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

/// What a valid `cacerts` holds, parsed.
#[derive(Debug)]
pub struct Validated {
    pub ca_cert: Certificate,
    /// The verified path from `ca-cert.pem` to a root, root last.
    pub path: Vec<Certificate>,
    pub roots: Vec<Certificate>,
}

fn problem(code: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        code,
        message: message.into(),
    }
}

impl Cacerts {
    /// Lays out a `cacerts` for a mesh CA: `chain` is the CA certificate followed by every
    /// certificate above it up to the root (the root may be included or not), `roots` are all
    /// trusted roots (two during a rotation).
    pub fn build(
        chain: &[Certificate],
        key: &KeyPair,
        roots: &[Certificate],
        now: OffsetDateTime,
    ) -> Result<Self, Invalid> {
        let ca = chain.first().ok_or_else(|| Invalid {
            problems: vec![problem("no-ca-cert", "no CA certificate given")],
        })?;
        let mut full: Vec<Certificate> = chain
            .iter()
            .filter(|c| !roots.contains(c))
            .cloned()
            .collect();
        // Find the root this chain reaches, and end cert-chain.pem with it.
        match verify_path(ca, &full[1..], roots, now) {
            Ok(p) => full.push(p.last().expect("path has a root").clone()),
            Err(e) => {
                return Err(Invalid {
                    problems: vec![problem(
                        "chain-incomplete",
                        format!("the chain does not reach a root in root-cert.pem: {e}"),
                    )],
                })
            }
        }
        Ok(Self {
            ca_cert: ca.to_pem(),
            ca_key: key.to_unencrypted_pem(),
            cert_chain: Certificate::pem_of(&full),
            root_cert: Certificate::pem_of(roots),
            ca_crl: None,
        })
    }

    /// Reads the files from a Secret's data or a directory listing (name → bytes).
    /// Unknown keys are ignored here; forbidden ones are reported by [`Self::validate_entries`].
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, Invalid> {
        let map: BTreeMap<&str, &[u8]> = entries.into_iter().collect();
        let mut problems = Self::validate_entries(map.keys().copied());
        let text = |name: &str, problems: &mut Vec<Problem>| -> Option<String> {
            match map.get(name) {
                None => None,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => Some(s.to_owned()),
                    Err(_) => {
                        problems.push(problem("not-text", format!("{name} is not UTF-8 PEM text")));
                        None
                    }
                },
            }
        };
        let ca_cert = text(CA_CERT, &mut problems);
        let ca_key = text(CA_KEY, &mut problems).map(Zeroizing::new);
        let cert_chain = text(CERT_CHAIN, &mut problems);
        let root_cert = text(ROOT_CERT, &mut problems);
        let ca_crl = text(CA_CRL, &mut problems);
        for (name, v) in [
            (CA_CERT, ca_cert.is_some()),
            (CA_KEY, ca_key.is_some()),
            (CERT_CHAIN, cert_chain.is_some()),
            (ROOT_CERT, root_cert.is_some()),
        ] {
            if !v && map.contains_key(name) {
                continue;
            }
            if !v {
                problems.push(problem("missing-file", format!("{name} is missing")));
            }
        }
        if !problems.is_empty() {
            return Err(Invalid { problems });
        }
        Ok(Self {
            ca_cert: ca_cert.expect("checked"),
            ca_key: ca_key.expect("checked"),
            cert_chain: cert_chain.expect("checked"),
            root_cert: root_cert.expect("checked"),
            ca_crl,
        })
    }

    /// Problems with the set of keys alone (forbidden keys present).
    pub fn validate_entries<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Problem> {
        names
            .into_iter()
            .filter(|n| FORBIDDEN_KEYS.contains(n))
            .map(|n| problem("forbidden-key", format!("{n} must not be in cacerts: istiod would switch to the tls.crt/tls.key layout")))
            .collect()
    }

    /// The Secret's data entries, in a stable order.
    pub fn entries(&self) -> Vec<(&'static str, &[u8])> {
        let mut v = vec![
            (CA_CERT, self.ca_cert.as_bytes()),
            (CA_KEY, self.ca_key.as_bytes()),
            (CERT_CHAIN, self.cert_chain.as_bytes()),
            (ROOT_CERT, self.root_cert.as_bytes()),
        ];
        if let Some(crl) = &self.ca_crl {
            v.push((CA_CRL, crl.as_bytes()));
        }
        v
    }

    /// Runs istiod's checks at `now`; every problem found is reported, not just the first.
    pub fn validate(&self, now: OffsetDateTime) -> Result<Validated, Invalid> {
        let mut p = Vec::new();
        for (name, body) in self.entries() {
            if !body.ends_with(b"\n") {
                p.push(problem(
                    "no-final-newline",
                    format!("{name} does not end with a newline"),
                ));
            }
        }
        if self.ca_key.contains("EC PARAMETERS") {
            p.push(problem(
                "ec-parameters",
                "ca-key.pem has an EC PARAMETERS block; write the key alone",
            ));
        }
        let key = match KeyPair::from_pem(&self.ca_key) {
            Ok(k) => Some(k),
            Err(KeyError::Encrypted) => {
                p.push(problem(
                    "key-encrypted",
                    "ca-key.pem is encrypted; istiod needs it unencrypted",
                ));
                None
            }
            Err(e) => {
                p.push(problem("key-unreadable", format!("ca-key.pem: {e}")));
                None
            }
        };
        let ca = match Certificate::from_pem(&self.ca_cert) {
            Ok(c) => Some(c),
            Err(e) => {
                p.push(problem("ca-cert-unreadable", format!("ca-cert.pem: {e}")));
                None
            }
        };
        let chain = Certificate::parse_pem_all(&self.cert_chain)
            .map_err(|e| p.push(problem("chain-unreadable", format!("cert-chain.pem: {e}"))))
            .ok();
        let roots = Certificate::parse_pem_all(&self.root_cert)
            .map_err(|e| p.push(problem("roots-unreadable", format!("root-cert.pem: {e}"))))
            .ok();
        let mut path = Vec::new();
        if let Some(ca) = &ca {
            if let Some(k) = &key {
                if !ca.matches_key(k) {
                    p.push(problem(
                        "key-mismatch",
                        "ca-key.pem does not match ca-cert.pem's public key",
                    ));
                }
            }
            if !ca.is_ca() || !ca.key_usage().is_some_and(|ku| ku.key_cert_sign) {
                p.push(problem(
                    "not-a-ca",
                    "ca-cert.pem is not a CA (needs CA:TRUE and keyCertSign)",
                ));
            }
            if now > ca.not_after() {
                p.push(problem(
                    "ca-expired",
                    format!("ca-cert.pem expired at {}", ca.not_after()),
                ));
            }
            if now < ca.not_before() {
                p.push(problem(
                    "ca-not-yet-valid",
                    format!("ca-cert.pem is not valid until {}", ca.not_before()),
                ));
            }
            match ca.key_type() {
                Some(kt) if kt.accepted_by_istiod() => {}
                Some(kt) => p.push(problem(
                    "key-type",
                    format!("{kt}: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048"),
                )),
                None => p.push(problem(
                    "key-type",
                    "unsupported key type: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048",
                )),
            }
            if let (Some(chain), Some(roots)) = (&chain, &roots) {
                if chain.first() != Some(ca) {
                    p.push(problem(
                        "chain-order",
                        "cert-chain.pem must start with ca-cert.pem",
                    ));
                }
                if chain.len() < 2 || !chain.last().is_some_and(|last| roots.contains(last)) {
                    p.push(problem(
                        "chain-incomplete",
                        "cert-chain.pem does not end with a root from root-cert.pem (it must hold ca-cert.pem, every intermediate, then the root)",
                    ));
                }
                match verify_path(ca, chain.get(1..).unwrap_or_default(), roots, now) {
                    Ok(found) => path = found,
                    Err(e) => p.push(problem("chain-unverified", format!("ca-cert.pem does not verify to root-cert.pem through cert-chain.pem: {e}"))),
                }
                for c in chain.iter().chain(roots.iter()) {
                    if c.has_sha1_signature() && !roots.contains(c) {
                        p.push(problem(
                            "sha1",
                            format!("{} is signed with SHA-1", c.subject()),
                        ));
                    }
                    if c.is_ca() && c.ext_key_usage().is_some() {
                        p.push(problem("ca-eku", format!("CA {} carries an extendedKeyUsage, which Go's verifier treats as a limit", c.subject())));
                    }
                }
                for r in roots {
                    if !r.is_ca() {
                        p.push(problem(
                            "root-not-ca",
                            format!("root-cert.pem holds a non-CA certificate {}", r.subject()),
                        ));
                    }
                }
            }
            if let (Some(crl_text), false) = (&self.ca_crl, path.is_empty()) {
                check_crls(crl_text, &path, &mut p);
            }
        }
        if p.is_empty() {
            Ok(Validated {
                ca_cert: ca.expect("no problems"),
                path,
                roots: roots.expect("no problems"),
            })
        } else {
            Err(Invalid { problems: p })
        }
    }

    /// The Secret as a Kubernetes manifest (type Opaque, base64 data), with canopy's labels
    /// and annotations naming the CA's serial and notAfter.
    pub fn secret_manifest(
        &self,
        namespace: &str,
        extra_labels: &BTreeMap<String, String>,
    ) -> Result<Value, Invalid> {
        let ca = Certificate::from_pem(&self.ca_cert).map_err(|e| Invalid {
            problems: vec![problem("ca-cert-unreadable", e.to_string())],
        })?;
        let mut labels: BTreeMap<String, String> = extra_labels.clone();
        labels.insert("app.kubernetes.io/managed-by".into(), "canopy".into());
        let data: serde_json::Map<String, Value> = self
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(STANDARD.encode(v))))
            .collect();
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": "cacerts",
                "namespace": namespace,
                "labels": labels,
                "annotations": Self::annotations(&ca),
            },
            "data": data,
        }))
    }

    /// canopy's annotations for a mesh CA: its serial, notAfter and fingerprint.
    pub fn annotations(ca: &Certificate) -> BTreeMap<String, String> {
        let fmt = time::format_description::well_known::Rfc3339;
        BTreeMap::from([
            ("canopy.dev/ca-serial".to_owned(), ca.serial().to_string()),
            (
                "canopy.dev/ca-not-after".to_owned(),
                ca.not_after().format(&fmt).unwrap_or_default(),
            ),
            (
                "canopy.dev/ca-sha256".to_owned(),
                ca.fingerprint_sha256().to_owned(),
            ),
        ])
    }
}

fn check_crls(text: &str, path: &[Certificate], p: &mut Vec<Problem>) {
    let blocks = match ::pem::parse_many(text) {
        Ok(b) => b,
        Err(e) => {
            p.push(problem("crl-unreadable", format!("ca-crl.pem: {e}")));
            return;
        }
    };
    let mut issuers = Vec::new();
    for b in blocks.into_iter().filter(|b| b.tag() == "X509 CRL") {
        match Crl::from_der(b.contents().to_vec()) {
            Ok(_) => {
                use x509_parser::prelude::FromDer;
                if let Ok((_, crl)) =
                    x509_parser::revocation_list::CertificateRevocationList::from_der(b.contents())
                {
                    issuers.push(crl.issuer().as_raw().to_vec());
                }
            }
            Err(e) => p.push(problem("crl-unreadable", format!("ca-crl.pem: {e}"))),
        }
    }
    for ca in path.iter().filter(|c| c.is_ca()) {
        if !issuers.iter().any(|i| i == ca.subject_raw()) {
            p.push(problem(
                "crl-missing",
                format!("ca-crl.pem has no CRL from {}", ca.subject()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::key::KeyType;
    use crate::profile::{CaProfile, CaRequest};
    use std::sync::Arc;

    fn req(profile: CaProfile, cn: &str) -> CaRequest {
        CaRequest {
            trust_domain: Some("mesh.example".parse().unwrap()),
            ..CaRequest::new(profile, cn)
        }
    }

    fn codes(e: Invalid) -> Vec<&'static str> {
        e.problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn built_cacerts_validate_and_common_mistakes_are_caught() {
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let root = CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap()),
            &req(CaProfile::Root, "Root"),
            now,
        )
        .unwrap();
        let (int, int_key) = root
            .issue_with_new_key(
                &req(CaProfile::Intermediate, "aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let int_ca =
            CertificateAuthority::new(int.certificate.clone(), vec![], Arc::new(int_key)).unwrap();
        let (mesh, mesh_key) = int_ca
            .issue_with_new_key(&req(CaProfile::MeshCa, "istiod"), KeyType::EcdsaP256, now)
            .unwrap();
        let roots = vec![root.certificate().clone()];
        let c = Cacerts::build(&mesh.chain, &mesh_key, &roots, now).unwrap();
        let v = c.validate(now).unwrap();
        assert_eq!(v.path.len(), 3);
        assert_eq!(
            Certificate::parse_pem_all(&c.cert_chain).unwrap().len(),
            3,
            "ca, intermediate, root"
        );

        // The classic hand-written mistake: cert-chain.pem holds only the CA cert.
        let mut bad = Cacerts::from_entries(c.entries()).unwrap();
        bad.cert_chain = bad.ca_cert.clone();
        let got = codes(bad.validate(now).unwrap_err());
        assert!(
            got.contains(&"chain-incomplete") && got.contains(&"chain-unverified"),
            "{got:?}"
        );

        // Key of another CA.
        let mut bad = Cacerts::from_entries(c.entries()).unwrap();
        bad.ca_key = KeyPair::generate(KeyType::EcdsaP256)
            .unwrap()
            .to_unencrypted_pem();
        assert!(codes(bad.validate(now).unwrap_err()).contains(&"key-mismatch"));

        // Missing final newline, expired CA, forbidden keys.
        let mut bad = Cacerts::from_entries(c.entries()).unwrap();
        bad.root_cert.pop();
        assert!(codes(bad.validate(now).unwrap_err()).contains(&"no-final-newline"));
        let later = now + time::Duration::days(91);
        assert!(codes(c.validate(later).unwrap_err()).contains(&"ca-expired"));
        let mut entries = c.entries();
        entries.push(("tls.crt", b"x\n"));
        assert!(codes(Cacerts::from_entries(entries).unwrap_err()).contains(&"forbidden-key"));

        // Publishing the intermediate itself (intermediate mode) is valid too.
        let (int2, int2_key) = root
            .issue_with_new_key(
                &req(CaProfile::Intermediate, "azure"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        Cacerts::build(&int2.chain, &int2_key, &roots, now)
            .unwrap()
            .validate(now)
            .unwrap();

        // An Ed25519 intermediate is refused.
        let (ed, ed_key) = root
            .issue_with_new_key(&req(CaProfile::Intermediate, "ed"), KeyType::Ed25519, now)
            .unwrap();
        let ed_c = Cacerts::build(&ed.chain, &ed_key, &roots, now).unwrap();
        assert!(codes(ed_c.validate(now).unwrap_err()).contains(&"key-type"));

        let manifest = c.secret_manifest("istio-system", &BTreeMap::new()).unwrap();
        assert_eq!(manifest["type"], "Opaque");
        assert_eq!(
            manifest["metadata"]["annotations"]["canopy.dev/ca-serial"],
            mesh.certificate.serial().to_string()
        );
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }
}
