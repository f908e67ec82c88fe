//! What a PodCertificateRequest gets, decided from the request and the API server's
//! own objects alone (no I/O): the proof of possession, the identity binding, the
//! lifetime and the refresh hint. The policy decision itself is the issuer's
//! ([`crate::Issuer::issue`]), like every other certificate's.

use canopy::csr::{Csr, CsrError};
use canopy::ttl::Ttl;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use time::{Duration, OffsetDateTime};

pub use super::refusal::{Reason, Refusal, Verdict};
use super::resource::PodCertificateRequestSpec;

/// The API server's default `maxExpirationSeconds`.
pub const DEFAULT_MAX_EXPIRATION_SECONDS: i32 = 86_400;
/// The shortest lifetime the API server accepts for an issued pod certificate.
pub const MIN_LIFETIME: Duration = Duration::HOUR;
/// `beginRefreshAt` must be at least this far from notBefore and from notAfter.
pub const REFRESH_MARGIN: Duration = Duration::minutes(10);

/// The proof of possession as `certificates.k8s.io/v1` defines it: `stubPKCS10Request`
/// is a PKCS#10 request whose self-signature verifies with the public key it carries.
/// The API server checks it on create; canopy checks it again before it certifies
/// that key. The request must be empty apart from the key (the kubelet's are): the
/// names come from the API server's records, never from the pod.
pub fn proof_of_possession(spec: &PodCertificateRequestSpec) -> Result<Csr, Refusal> {
    let csr = Csr::from_der(&spec.stub_pkcs10_request.0).map_err(|e| match e {
        CsrError::BadSignature => Refusal::denied(
            Reason::InvalidProofOfPossession,
            "the signature of spec.stubPKCS10Request does not verify with its public key: \
             no proof that the requester holds the private key",
        ),
        CsrError::Key(why) => Refusal::denied(
            Reason::UnsupportedKeyType,
            format!("{why}; canopy issues pod certificates for ECDSAP256 (recommended), ECDSAP384, RSA3072, RSA4096 or ED25519 as the policy allows"),
        ),
        other => Refusal::denied(
            Reason::InvalidStubPKCS10Request,
            format!("spec.stubPKCS10Request: {other}"),
        ),
    })?;
    let mut carried = Vec::new();
    if !csr.subject().is_empty() {
        carried.push(format!("subject {:?}", csr.subject()));
    }
    carried.extend(csr.uris().iter().map(|u| format!("URI {u:?}")));
    carried.extend(csr.dns_names().iter().map(|d| format!("DNS {d:?}")));
    carried.extend(csr.ip_addresses().iter().map(|ip| format!("IP {ip}")));
    carried.extend(csr.emails().iter().map(|e| format!("e-mail {e:?}")));
    if csr.requests_ca() {
        carried.push("a CA request".into());
    }
    if !carried.is_empty() {
        let list: Vec<String> = carried
            .iter()
            .map(|c| c.chars().take(128).collect())
            .collect();
        return Err(Refusal::denied(
            Reason::NonEmptyStubPKCS10Request,
            format!(
                "spec.stubPKCS10Request carries {}: canopy issues the pod's own identity from the API server's records and accepts only the kubelet's empty request",
                list.join(", ")
            ),
        ));
    }
    Ok(csr)
}

/// canopy reads no `unverifiedUserAnnotations`; the API tells signers to deny keys
/// they do not recognise.
pub fn user_annotations(spec: &PodCertificateRequestSpec) -> Result<(), Refusal> {
    match &spec.unverified_user_annotations {
        Some(a) if !a.is_empty() => {
            let keys: Vec<String> = a.keys().take(8).map(|k| format!("{k:?}")).collect();
            Err(Refusal::denied(
                Reason::InvalidUnverifiedUserAnnotations,
                format!(
                    "canopy recognises no userAnnotations; remove {} from the podCertificate volume",
                    keys.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The API server's current objects the request names (absent: not found).
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    /// The pod `spec.podName` in the request's namespace.
    pub pod: Option<&'a Pod>,
    /// The service account `spec.serviceAccountName` in that namespace.
    pub service_account: Option<&'a ServiceAccount>,
    /// The node `spec.nodeName`.
    pub node: Option<&'a Node>,
}

/// The request's pod, service account and node are the API server's, UIDs included,
/// the pod runs as that service account on that node and mounts a `podCertificate`
/// volume for this signer. NodeRestriction checks the same when a node creates the
/// request; anybody else RBAC lets create PodCertificateRequests is not checked by the
/// API server, so canopy does not take the request's word for any of it.
pub fn binding(spec: &PodCertificateRequestSpec, observed: Observed<'_>) -> Result<(), Refusal> {
    let mismatch = |what: String| {
        Refusal::denied(
            Reason::IdentityMismatch,
            format!(
                "{what}: the request does not describe a pod the API server knows; nothing issued"
            ),
        )
    };
    let pod = observed.pod.ok_or_else(|| {
        Refusal::denied(
            Reason::PodNotFound,
            format!("pod {:?} does not exist", spec.pod_name),
        )
    })?;
    if pod.metadata.uid.as_deref() != Some(spec.pod_uid.as_str()) {
        return Err(mismatch(format!(
            "spec.podUID {:?} is not the UID of pod {:?}",
            spec.pod_uid, spec.pod_name
        )));
    }
    let pod_spec = pod.spec.as_ref();
    let pod_sa = pod_spec
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    if pod_sa != spec.service_account_name {
        return Err(mismatch(format!(
            "spec.serviceAccountName {:?} is not the service account pod {:?} runs as ({pod_sa:?})",
            spec.service_account_name, spec.pod_name
        )));
    }
    let pod_node = pod_spec.and_then(|s| s.node_name.as_deref());
    if pod_node != Some(spec.node_name.as_str()) {
        return Err(mismatch(format!(
            "pod {:?} is not bound to node {:?}",
            spec.pod_name, spec.node_name
        )));
    }
    let sa = observed.service_account.ok_or_else(|| {
        mismatch(format!(
            "service account {:?} does not exist",
            spec.service_account_name
        ))
    })?;
    if sa.metadata.uid.as_deref() != Some(spec.service_account_uid.as_str()) {
        return Err(mismatch(format!(
            "spec.serviceAccountUID {:?} is not the UID of service account {:?}",
            spec.service_account_uid, spec.service_account_name
        )));
    }
    let node = observed
        .node
        .ok_or_else(|| mismatch(format!("node {:?} does not exist", spec.node_name)))?;
    if node.metadata.uid.as_deref() != Some(spec.node_uid.as_str()) {
        return Err(mismatch(format!(
            "spec.nodeUID {:?} is not the UID of node {:?}",
            spec.node_uid, spec.node_name
        )));
    }
    let mounts = pod_spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.pod_certificate.as_ref())
        .any(|c| c.signer_name == spec.signer_name);
    if !mounts {
        return Err(Refusal::denied(
            Reason::NoPodCertificateVolume,
            format!(
                "pod {:?} mounts no podCertificate volume for signer {:?}",
                spec.pod_name, spec.signer_name
            ),
        ));
    }
    Ok(())
}

/// The lifetime to ask the policy for: `maxExpirationSeconds` less the issuer's
/// backdating of notBefore, so notAfter - notBefore stays within it.
pub fn requested_ttl(spec: &PodCertificateRequestSpec) -> Ttl {
    let max = i64::from(
        spec.max_expiration_seconds
            .unwrap_or(DEFAULT_MAX_EXPIRATION_SECONDS),
    );
    Ttl::from_seconds(max - canopy::profile::BACKDATE.whole_seconds()).unwrap_or(Ttl::minutes(1))
}

/// Refuses, before anything is signed, a lifetime the API server would not accept.
pub fn check_lifetime(granted: Ttl) -> Result<(), Refusal> {
    let lifetime = granted.as_duration() + canopy::profile::BACKDATE;
    if lifetime < MIN_LIFETIME {
        return Err(Refusal::failed(
            Reason::LifetimeTooShort,
            format!(
                "the policy grants {granted}, but pod certificates must live at least 1h: raise the policy's max_ttl"
            ),
        ));
    }
    Ok(())
}

/// When the kubelet should start refreshing: at 2/3 of the lifetime, kept at least
/// ten minutes from both ends as the API requires. `None` when the certificate is
/// too short for that (under 20 minutes).
pub fn begin_refresh_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let earliest = not_before + REFRESH_MARGIN;
    let latest = not_after - REFRESH_MARGIN;
    if earliest > latest {
        return None;
    }
    let at: OffsetDateTime = not_before + (not_after - not_before) * 2 / 3;
    Some(at.clamp(earliest, latest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PodCertificateProjection, PodSpec, ProjectedVolumeSource, Volume, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};

    const SIGNER: &str = "canopy.dev/spiffe";

    fn stub(params: CertificateParams, key: &KeyPair) -> Vec<u8> {
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn empty_params() -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p
    }

    fn spec(der: Vec<u8>) -> PodCertificateRequestSpec {
        PodCertificateRequestSpec {
            signer_name: SIGNER.into(),
            pod_name: "web".into(),
            pod_uid: "pod-uid".into(),
            service_account_name: "web".into(),
            service_account_uid: "sa-uid".into(),
            node_name: "node-1".into(),
            node_uid: "node-uid".into(),
            max_expiration_seconds: Some(86_400),
            stub_pkcs10_request: ByteString(der),
            unverified_user_annotations: None,
        }
    }

    fn meta(name: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        }
    }

    fn pod(sa: &str, node: &str, signer: &str) -> Pod {
        Pod {
            metadata: meta("web", "pod-uid"),
            spec: Some(PodSpec {
                service_account_name: Some(sa.into()),
                node_name: Some(node.into()),
                volumes: Some(vec![Volume {
                    name: "id".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            pod_certificate: Some(PodCertificateProjection {
                                signer_name: signer.into(),
                                key_type: "ECDSAP256".into(),
                                ..PodCertificateProjection::default()
                            }),
                            ..VolumeProjection::default()
                        }]),
                        ..ProjectedVolumeSource::default()
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn an_empty_stub_request_proves_possession() {
        let key = KeyPair::generate().unwrap();
        let csr = proof_of_possession(&spec(stub(empty_params(), &key))).unwrap();
        assert_eq!(csr.public_key_spki(), key.subject_public_key_info());
    }

    #[test]
    fn a_stub_request_whose_signature_does_not_verify_is_denied() {
        let key = KeyPair::generate().unwrap();
        let mut der = stub(empty_params(), &key);
        // The signature is the last bytes of the DER: flip one bit in it.
        let last = der.len() - 3;
        der[last] ^= 0x01;
        let r = proof_of_possession(&spec(der)).unwrap_err();
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Denied, Reason::InvalidProofOfPossession)
        );
        // Another key's request with this key's public key swapped in: same refusal.
        let other = KeyPair::generate().unwrap();
        let mine = stub(empty_params(), &key);
        let theirs = stub(empty_params(), &other);
        let (kp, op) = (
            key.subject_public_key_info(),
            other.subject_public_key_info(),
        );
        let at = theirs.windows(op.len()).position(|w| w == op).unwrap();
        let mut swapped = theirs.clone();
        swapped[at..at + kp.len()].copy_from_slice(&kp);
        assert_ne!(swapped, mine);
        let r = proof_of_possession(&spec(swapped)).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidProofOfPossession);
    }

    #[test]
    fn names_in_the_stub_request_are_refused() {
        let key = KeyPair::generate().unwrap();
        let mut p = empty_params();
        p.subject_alt_names.push(SanType::URI(
            "spiffe://mesh.example/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        ));
        let r = proof_of_possession(&spec(stub(p, &key))).unwrap_err();
        assert_eq!(r.reason, Reason::NonEmptyStubPKCS10Request);
        assert!(r.message.contains("kube-system/sa/admin"), "{}", r.message);
        let mut p = empty_params();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "admin");
        assert_eq!(
            proof_of_possession(&spec(stub(p, &key)))
                .unwrap_err()
                .reason,
            Reason::NonEmptyStubPKCS10Request
        );
    }

    #[test]
    fn an_unsupported_curve_is_denied_with_the_apis_reason() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let r = proof_of_possession(&spec(stub(empty_params(), &key))).unwrap_err();
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Denied, Reason::UnsupportedKeyType)
        );
    }

    #[test]
    fn user_annotations_are_denied() {
        let mut s = spec(Vec::new());
        assert!(user_annotations(&s).is_ok());
        s.unverified_user_annotations =
            Some([("canopy.dev/spiffe-id".to_string(), "x".to_string())].into());
        assert_eq!(
            user_annotations(&s).unwrap_err().reason,
            Reason::InvalidUnverifiedUserAnnotations
        );
    }

    #[test]
    fn the_request_must_match_the_api_servers_objects() {
        let s = spec(Vec::new());
        let sa = ServiceAccount {
            metadata: meta("web", "sa-uid"),
            ..ServiceAccount::default()
        };
        let node = Node {
            metadata: meta("node-1", "node-uid"),
            ..Node::default()
        };
        let good = pod("web", "node-1", SIGNER);
        let observed = |pod| Observed {
            pod,
            service_account: Some(&sa),
            node: Some(&node),
        };
        assert_eq!(binding(&s, observed(Some(&good))), Ok(()));

        let reason =
            |s: &PodCertificateRequestSpec, o: Observed<'_>| binding(s, o).unwrap_err().reason;
        assert_eq!(reason(&s, observed(None)), Reason::PodNotFound);
        let other_sa = pod("admin", "node-1", SIGNER);
        assert_eq!(
            reason(&s, observed(Some(&other_sa))),
            Reason::IdentityMismatch
        );
        let other_node = pod("web", "node-2", SIGNER);
        assert_eq!(
            reason(&s, observed(Some(&other_node))),
            Reason::IdentityMismatch
        );
        let other_signer = pod("web", "node-1", "example.com/other");
        assert_eq!(
            reason(&s, observed(Some(&other_signer))),
            Reason::NoPodCertificateVolume
        );
        for (field, value) in [("pod", "x"), ("sa", "x"), ("node", "x")] {
            let mut t = s.clone();
            match field {
                "pod" => t.pod_uid = value.into(),
                "sa" => t.service_account_uid = value.into(),
                _ => t.node_uid = value.into(),
            }
            assert_eq!(
                reason(&t, observed(Some(&good))),
                Reason::IdentityMismatch,
                "{field}"
            );
        }
        let no_sa = Observed {
            service_account: None,
            ..observed(Some(&good))
        };
        assert_eq!(reason(&s, no_sa), Reason::IdentityMismatch);
    }

    #[test]
    fn lifetime_fits_max_expiration_and_the_api_minimum() {
        let mut s = spec(Vec::new());
        s.max_expiration_seconds = Some(3600);
        let ttl = requested_ttl(&s);
        assert_eq!(
            ttl.as_duration() + canopy::profile::BACKDATE,
            Duration::HOUR
        );
        assert!(check_lifetime(ttl).is_ok());
        let r = check_lifetime(Ttl::minutes(30)).unwrap_err();
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Failed, Reason::LifetimeTooShort)
        );
        s.max_expiration_seconds = None;
        assert_eq!(
            requested_ttl(&s).as_duration() + canopy::profile::BACKDATE,
            Duration::DAY
        );
    }

    #[test]
    fn refresh_hint_stays_inside_the_apis_window() {
        let nb = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        for minutes in [20, 21, 30, 60, 61, 24 * 60] {
            let na = nb + Duration::minutes(minutes);
            let at = begin_refresh_at(nb, na).unwrap();
            assert!(
                at >= nb + REFRESH_MARGIN && at <= na - REFRESH_MARGIN,
                "{minutes}"
            );
        }
        assert_eq!(
            begin_refresh_at(nb, nb + Duration::hours(3)),
            Some(nb + Duration::hours(2))
        );
        assert_eq!(begin_refresh_at(nb, nb + Duration::minutes(19)), None);
    }
}
