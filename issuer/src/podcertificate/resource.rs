//! `certificates.k8s.io/v1` PodCertificateRequest, as k8s.io/api v0.37.2 defines it
//! (`certificates/v1/types.go`). k8s-openapi 0.29 knows only the v1beta1 shape of
//! Kubernetes 1.35 (with `pkixPublicKey`/`proofOfPossession`); the API went GA in 1.37
//! with `stubPKCS10Request` as the only proof of possession, so the type is here.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

/// Condition type: the certificate was issued (`status.certificateChain` is set).
pub const ISSUED: &str = "Issued";
/// Condition type: the signer refuses the request.
pub const DENIED: &str = "Denied";
/// Condition type: the signer could not issue.
pub const FAILED: &str = "Failed";

/// A pod's request for a certificate from a signer, created by the kubelet of the
/// pod's node for a `podCertificate` projected volume.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PodCertificateRequest {
    /// Object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The request; immutable after creation.
    pub spec: PodCertificateRequestSpec,
    /// The signer's answer.
    #[serde(default)]
    pub status: Option<PodCertificateRequestStatus>,
}

/// `spec` of a PodCertificateRequest: all fields written by the kubelet and checked by
/// the API server's NodeRestriction admission when a node creates it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificateRequestSpec {
    /// The signer asked.
    pub signer_name: String,
    /// The pod the certificate is mounted into.
    pub pod_name: String,
    /// Its UID.
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    /// The service account the pod runs as.
    pub service_account_name: String,
    /// Its UID.
    #[serde(rename = "serviceAccountUID")]
    pub service_account_uid: String,
    /// The node the pod is assigned to.
    pub node_name: String,
    /// Its UID.
    #[serde(rename = "nodeUID")]
    pub node_uid: String,
    /// Longest lifetime the certificate may have (the API server defaults it to 86400
    /// and keeps it in [3600, 7862400]).
    #[serde(default)]
    pub max_expiration_seconds: Option<i32>,
    /// A PKCS#10 request (DER) signed with the pod's new private key: the proof of
    /// possession, and the public key to certify. The kubelet's are empty otherwise.
    #[serde(rename = "stubPKCS10Request")]
    pub stub_pkcs10_request: ByteString,
    /// Free-form data from the pod's author; Kubernetes does not check it.
    #[serde(default)]
    pub unverified_user_annotations: Option<BTreeMap<String, String>>,
}

/// `status` of a PodCertificateRequest, written by the signer through `/status`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificateRequestStatus {
    /// At most one of Issued, Denied, Failed, with status True.
    #[serde(default)]
    pub conditions: Option<Vec<Condition>>,
    /// Leaf first, then intermediates (PEM).
    #[serde(default)]
    pub certificate_chain: Option<String>,
    /// The leaf's notBefore.
    #[serde(default)]
    pub not_before: Option<Time>,
    /// When the kubelet should start refreshing.
    #[serde(default)]
    pub begin_refresh_at: Option<Time>,
    /// The leaf's notAfter.
    #[serde(default)]
    pub not_after: Option<Time>,
}

impl PodCertificateRequest {
    /// Whether the request reached one of its terminal conditions (Issued, Denied,
    /// Failed): after that the API server keeps its status immutable.
    pub fn is_finished(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.status == "True" && [ISSUED, DENIED, FAILED].contains(&&*c.type_))
            })
    }
}

impl k8s_openapi::Resource for PodCertificateRequest {
    const API_VERSION: &'static str = "certificates.k8s.io/v1";
    const GROUP: &'static str = "certificates.k8s.io";
    const KIND: &'static str = "PodCertificateRequest";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "podcertificaterequests";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for PodCertificateRequest {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_servers_json() {
        let pcr: PodCertificateRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "PodCertificateRequest",
            "metadata": {"name": "req-web-x", "namespace": "shop", "uid": "u1"},
            "spec": {
                "signerName": "canopy.dev/spiffe", "podName": "web", "podUID": "p1",
                "serviceAccountName": "web", "serviceAccountUID": "s1",
                "nodeName": "node-1", "nodeUID": "n1", "maxExpirationSeconds": 86400,
                "stubPKCS10Request": "AAEC",
            },
            "status": {"conditions": [{"type": "Denied", "status": "True", "reason": "X",
                "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        assert_eq!(pcr.spec.pod_uid, "p1");
        assert_eq!(pcr.spec.service_account_uid, "s1");
        assert_eq!(pcr.spec.node_uid, "n1");
        assert_eq!(pcr.spec.stub_pkcs10_request.0, [0, 1, 2]);
        assert!(pcr.is_finished());
    }
}
