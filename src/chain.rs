//! Certification paths: from a certificate through intermediates to one of several roots.
//!
//! canopy's own verifier, used where rustls-webpki does not fit (a CA certificate as the
//! start of the path, as for istiod's `ca-cert.pem`). Names chain by exact DER, signatures
//! are checked with aws-lc-rs, and validity, CA flags, keyCertSign and pathlen are enforced.

use time::OffsetDateTime;

use crate::cert::{CertError, Certificate};

/// The longest path considered (leaf + intermediates + root).
pub const MAX_DEPTH: usize = 8;

/// Why a path could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("{subject} expired at {not_after}")]
    Expired {
        subject: String,
        not_after: OffsetDateTime,
    },
    #[error("{subject} is not valid until {not_before}")]
    NotYetValid {
        subject: String,
        not_before: OffsetDateTime,
    },
    #[error(
        "no issuer found for {subject} (issuer {issuer}): the chain does not reach a trusted root"
    )]
    NoIssuer { subject: String, issuer: String },
    #[error("signature of {subject} does not verify with its issuer's key")]
    BadSignature { subject: String },
    #[error("{subject} signs other certificates but is not a CA with keyCertSign")]
    NotCa { subject: String },
    #[error("{subject} has pathlen {path_len}, exceeded by the certificates below it")]
    PathLen { subject: String, path_len: u32 },
    #[error("{subject} is signed with SHA-1")]
    Sha1 { subject: String },
    #[error("no trusted roots given")]
    NoRoots,
    #[error("path longer than {MAX_DEPTH} certificates")]
    TooDeep,
}

/// Verifies `leaf` up to one of `roots` through `intermediates` at time `at`.
/// Returns the path, leaf first, root last.
pub fn verify_path(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    at: OffsetDateTime,
) -> Result<Vec<Certificate>, ChainError> {
    if roots.is_empty() {
        return Err(ChainError::NoRoots);
    }
    check_time(leaf, at)?;
    if leaf.has_sha1_signature() && !roots.contains(leaf) {
        return Err(ChainError::Sha1 {
            subject: leaf.subject().to_owned(),
        });
    }
    if roots.contains(leaf) {
        return Ok(vec![leaf.clone()]);
    }
    let mut path = vec![leaf.clone()];
    let mut first_error = None;
    if extend(&mut path, intermediates, roots, at, &mut first_error) {
        Ok(path)
    } else {
        Err(first_error.unwrap_or_else(|| ChainError::NoIssuer {
            subject: leaf.subject().to_owned(),
            issuer: leaf.issuer().to_owned(),
        }))
    }
}

fn check_time(c: &Certificate, at: OffsetDateTime) -> Result<(), ChainError> {
    if at > c.not_after() {
        return Err(ChainError::Expired {
            subject: c.subject().to_owned(),
            not_after: c.not_after(),
        });
    }
    if at < c.not_before() {
        return Err(ChainError::NotYetValid {
            subject: c.subject().to_owned(),
            not_before: c.not_before(),
        });
    }
    Ok(())
}

fn may_issue(child: &Certificate, parent: &Certificate) -> bool {
    child.issuer_raw() == parent.subject_raw()
        && match (child.authority_key_id(), parent.subject_key_id()) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        }
}

/// Checks `parent` as the issuer of `path.last()`; `cas_below` counts intermediates below it.
fn check_parent(
    path: &[Certificate],
    parent: &Certificate,
    at: OffsetDateTime,
) -> Result<(), ChainError> {
    let child = path.last().expect("path starts with the leaf");
    let subject = || parent.subject().to_owned();
    if !parent.is_ca() || parent.key_usage().is_some_and(|ku| !ku.key_cert_sign) {
        return Err(ChainError::NotCa { subject: subject() });
    }
    child.verify_signed_by(parent).map_err(|e| match e {
        CertError::BadSignature => ChainError::BadSignature {
            subject: child.subject().to_owned(),
        },
        _ => ChainError::BadSignature {
            subject: child.subject().to_owned(),
        },
    })?;
    check_time(parent, at)?;
    // Intermediates between `parent` and the leaf (the leaf itself does not count).
    let cas_below = path.iter().skip(1).filter(|c| !c.is_self_issued()).count() as u32;
    if let Some(limit) = parent.path_len() {
        if cas_below > limit {
            return Err(ChainError::PathLen {
                subject: subject(),
                path_len: limit,
            });
        }
    }
    Ok(())
}

fn extend(
    path: &mut Vec<Certificate>,
    intermediates: &[Certificate],
    roots: &[Certificate],
    at: OffsetDateTime,
    first_error: &mut Option<ChainError>,
) -> bool {
    if path.len() >= MAX_DEPTH {
        first_error.get_or_insert(ChainError::TooDeep);
        return false;
    }
    let child = path.last().expect("non-empty").clone();
    for root in roots.iter().filter(|r| may_issue(&child, r)) {
        match check_parent(path, root, at) {
            Ok(()) => {
                path.push(root.clone());
                return true;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for ca in intermediates.iter().filter(|c| may_issue(&child, c)) {
        if path.contains(ca) {
            continue;
        }
        if ca.has_sha1_signature() {
            first_error.get_or_insert(ChainError::Sha1 {
                subject: ca.subject().to_owned(),
            });
            continue;
        }
        match check_parent(path, ca, at) {
            Ok(()) => {
                path.push(ca.clone());
                if extend(path, intermediates, roots, at, first_error) {
                    return true;
                }
                path.pop();
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    false
}

/// Several trusted roots (more than one during a root rotation), deduplicated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootBundle {
    roots: Vec<Certificate>,
}

impl RootBundle {
    /// A bundle of the given roots, in order, without duplicates.
    pub fn new(roots: impl IntoIterator<Item = Certificate>) -> Self {
        let mut b = Self::default();
        for r in roots {
            b.add(r);
        }
        b
    }

    /// Parses a PEM bundle.
    pub fn from_pem(text: &str) -> Result<Self, CertError> {
        Ok(Self::new(Certificate::parse_pem_all(text)?))
    }

    /// Adds a root unless already present.
    pub fn add(&mut self, root: Certificate) {
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
    }

    /// Removes a root by SHA-256 fingerprint; true if one was removed.
    pub fn remove(&mut self, fingerprint: &str) -> bool {
        let before = self.roots.len();
        self.roots.retain(|r| r.fingerprint_sha256() != fingerprint);
        before != self.roots.len()
    }

    /// The roots, in order.
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// Concatenated PEM.
    pub fn to_pem(&self) -> String {
        Certificate::pem_of(&self.roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::dns::DnsName;
    use crate::key::{KeyPair, KeyType};
    use crate::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest, Subject};
    use crate::spiffe::SpiffeId;
    use rcgen::PublicKeyData;
    use std::sync::Arc;
    use time::Duration;

    fn ca_req(profile: CaProfile, cn: &str) -> CaRequest {
        CaRequest {
            trust_domain: Some("mesh.example".parse().unwrap()),
            ..CaRequest::new(profile, cn)
        }
    }

    fn hierarchy(now: OffsetDateTime) -> (CertificateAuthority, CertificateAuthority, Certificate) {
        let root = CertificateAuthority::new_root(
            Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap()),
            &ca_req(CaProfile::Root, "Root"),
            now,
        )
        .unwrap();
        let (int, key) = root
            .issue_with_new_key(
                &ca_req(CaProfile::Intermediate, "aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let int_ca = CertificateAuthority::new(int.certificate, vec![], Arc::new(key)).unwrap();
        let leaf_key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let leaf = int_ca
            .issue(
                &LeafRequest {
                    spiffe_id: Some(
                        SpiffeId::kubernetes(&"mesh.example".parse().unwrap(), "ns1", "sa1")
                            .unwrap(),
                    ),
                    trust_domain: Some("mesh.example".parse().unwrap()),
                    ..LeafRequest::new(LeafProfile::Workload)
                },
                &leaf_key.public_key_spki(),
                now,
            )
            .unwrap();
        (root, int_ca, leaf.certificate)
    }

    #[test]
    fn builds_path_and_reports_failures() {
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let (root, int, leaf) = hierarchy(now);
        let roots = [root.certificate().clone()];
        let path = verify_path(&leaf, &[int.certificate().clone()], &roots, now).unwrap();
        assert_eq!(path.len(), 3);

        let err = verify_path(&leaf, &[], &roots, now).unwrap_err();
        assert!(matches!(err, ChainError::NoIssuer { .. }), "{err}");

        let later = now + Duration::days(2);
        let err = verify_path(&leaf, &[int.certificate().clone()], &roots, later).unwrap_err();
        assert!(matches!(err, ChainError::Expired { .. }), "{err}");

        let (other_root, other_int, _) = hierarchy(now);
        let err = verify_path(
            &leaf,
            &[other_int.certificate().clone()],
            &[other_root.certificate().clone()],
            now,
        )
        .unwrap_err();
        assert!(matches!(err, ChainError::NoIssuer { .. }), "{err}");
    }

    #[test]
    fn a_leaf_cannot_sign() {
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let (root, int, _) = hierarchy(now);
        // A server leaf whose key then "signs" a certificate of its own.
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let req = LeafRequest {
            subject: Subject {
                common_name: Some("leaf.example".into()),
                organization: None,
            },
            dns_names: vec![DnsName::try_from("leaf.example").unwrap()],
            ..LeafRequest::new(LeafProfile::Server)
        };
        let leaf = int
            .issue(&req, &leaf_key.subject_public_key_info(), now)
            .unwrap()
            .certificate;
        assert!(CertificateAuthority::new(
            leaf.clone(),
            vec![],
            Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap())
        )
        .is_err());
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&leaf.der().to_vec().into(), &leaf_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["victim.example".to_string()]).unwrap();
        params.use_authority_key_identifier_extension = true;
        let child_key = rcgen::KeyPair::generate().unwrap();
        let child = Certificate::from_der(
            params
                .signed_by(&child_key, &issuer)
                .unwrap()
                .der()
                .to_vec(),
        )
        .unwrap();
        let err = verify_path(
            &child,
            &[leaf, int.certificate().clone()],
            std::slice::from_ref(root.certificate()),
            now,
        )
        .unwrap_err();
        assert!(matches!(err, ChainError::NotCa { .. }), "{err}");
    }
}
