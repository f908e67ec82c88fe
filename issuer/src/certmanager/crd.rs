//! Our own resources, `Issuer` (namespaced) and `ClusterIssuer` (cluster-scoped) in
//! `pki.canopy.dev/v1alpha1`: what a CertificateRequest's `issuerRef` points at.
//! The CRDs in the Helm chart are rendered from these types ([`crds_yaml`]).

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Our API group.
pub const GROUP: &str = "pki.canopy.dev";
/// Our API version.
pub const VERSION: &str = "v1alpha1";

/// How an Issuer signs: which intermediate and profile, and limits layered on top of
/// the issuer's policy (they can only narrow it).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// Intermediate that signs (default: the cluster's intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<String>,
    /// Profile to issue: workload, server or client (default: chosen per request
    /// from its SANs and usages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Longest lifetime issued, as a Go duration (e.g. `24h`); the policy may cap lower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// SPIFFE ID patterns a request may carry (`*` = one path segment, `**` = the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_spiffe_ids: Option<Vec<String>>,
    /// DNS name patterns a request may carry (`*` = one label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_dns_names: Option<Vec<String>>,
}

/// A namespaced canopy issuer: signs CertificateRequests of its own namespace.
// Several printer columns repeat `type_ = "string"`; that is not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "pki.canopy.dev",
    version = "v1alpha1",
    kind = "Issuer",
    namespaced,
    status = "IssuerStatus",
    shortname = "cpissuer",
    category = "canopy",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Intermediate",
        type_ = "string",
        json_path = ".spec.intermediate"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// How it signs.
    #[serde(flatten)]
    pub signing: SigningSpec,
}

/// A cluster-wide canopy issuer: signs CertificateRequests of every namespace.
// Several printer columns repeat `type_ = "string"`; that is not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "pki.canopy.dev",
    version = "v1alpha1",
    kind = "ClusterIssuer",
    status = "IssuerStatus",
    shortname = "cpclusterissuer",
    category = "canopy",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Intermediate",
        type_ = "string",
        json_path = ".spec.intermediate"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIssuerSpec {
    /// How it signs.
    #[serde(flatten)]
    pub signing: SigningSpec,
}

/// Observed state of an Issuer or ClusterIssuer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready`: whether requests naming this issuer can be signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A status condition, as Kubernetes conventions describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason, CamelCase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Either kind of our issuers, as a CertificateRequest's `issuerRef.kind` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IssuerKind {
    /// Namespaced `Issuer`.
    Issuer,
    /// Cluster-scoped `ClusterIssuer`.
    ClusterIssuer,
}

impl IssuerKind {
    /// Parses `issuerRef.kind`: exactly `Issuer` or `ClusterIssuer`; empty means `Issuer`.
    pub fn from_ref(kind: Option<&str>) -> Option<IssuerKind> {
        match kind.unwrap_or("") {
            "" | "Issuer" => Some(IssuerKind::Issuer),
            "ClusterIssuer" => Some(IssuerKind::ClusterIssuer),
            _ => None,
        }
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

const GENERATED: &str = "# Generated from issuer/src/certmanager/crd.rs; do not edit.\n\
     # Regenerate: canopy-issuer crds --out charts/canopy-issuer/crds\n\
     # (or CANOPY_WRITE_CRDS=1 cargo test -p canopy-issuer --test issuer certmanager_crds::)\n";

/// The CRD files of the Helm chart: (file name, YAML).
pub fn crd_files() -> Vec<(&'static str, String)> {
    let render = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        format!(
            "{GENERATED}{}",
            serde_yaml::to_string(&crd).expect("a CRD serializes to YAML")
        )
    };
    vec![
        ("pki.canopy.dev_issuers.yaml", render(Issuer::crd())),
        (
            "pki.canopy.dev_clusterissuers.yaml",
            render(ClusterIssuer::crd()),
        ),
    ]
}

/// Both CRDs as one multi-document YAML (for `kubectl apply -f -`).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for (_, yaml) in crd_files() {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    out
}

/// Writes [`crd_files`] into `dir` (e.g. `charts/canopy-issuer/crds`).
pub fn write_crds(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, yaml) in crd_files() {
        std::fs::write(dir.join(name), yaml)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_ref_kind_is_exact() {
        assert_eq!(IssuerKind::from_ref(None), Some(IssuerKind::Issuer));
        assert_eq!(IssuerKind::from_ref(Some("")), Some(IssuerKind::Issuer));
        assert_eq!(
            IssuerKind::from_ref(Some("ClusterIssuer")),
            Some(IssuerKind::ClusterIssuer)
        );
        assert_eq!(IssuerKind::from_ref(Some("issuer")), None);
        assert_eq!(IssuerKind::from_ref(Some("AWSPCAIssuer")), None);
    }

    #[test]
    fn crds_have_status_subresource_and_list_map_conditions() {
        let yaml = crds_yaml();
        assert!(yaml.contains("kind: Issuer\n") || yaml.contains("kind: Issuer"));
        let crd = Issuer::crd();
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let json = serde_json::to_value(&crd).unwrap();
        let conditions = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["properties"]["allowedSpiffeIds"].is_object(), "{spec}");
        assert_eq!(ClusterIssuer::crd().spec.scope, "Cluster");
    }
}
