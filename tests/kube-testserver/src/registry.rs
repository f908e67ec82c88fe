//! The registry of served resource types (built-in kinds and CRD-defined kinds).

use serde_json::Value;
use std::collections::BTreeMap;

use crate::status::{ApiError, Cause};

/// One served resource type.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    /// Served versions; the first one is the preferred (storage) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Subresources such as `status`, `approval`, `scale`.
    pub subresources: Vec<String>,
    /// Defined by a CustomResourceDefinition.
    pub crd: bool,
    /// openAPIV3Schema per version (CRDs only).
    pub schemas: BTreeMap<String, Value>,
}

impl ResourceType {
    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    pub fn has_status(&self) -> bool {
        self.has_sub("status")
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether `metadata.generation` is maintained for this kind.
    pub fn tracks_generation(&self) -> bool {
        self.crd || !self.group.is_empty()
    }

    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas.get(version)
    }
}

/// One line per built-in kind: (group, version, kind, plural, namespaced, subresources, shortNames).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["status"],
        &["ns"],
    ),
    ("", "v1", "Secret", "secrets", true, &[], &[]),
    ("", "v1", "ConfigMap", "configmaps", true, &[], &["cm"]),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &[],
        &["sa"],
    ),
    ("", "v1", "Service", "services", true, &["status"], &["svc"]),
    ("", "v1", "Event", "events", true, &[], &["ev"]),
    ("", "v1", "Pod", "pods", true, &["status"], &["po"]),
    ("", "v1", "Endpoints", "endpoints", true, &[], &["ep"]),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["status"],
        &["pvc"],
    ),
    ("events.k8s.io", "v1", "Event", "events", true, &[], &["ev"]),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["status"],
        &["crd", "crds"],
    ),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        &["status", "approval"],
        &["csr"],
    ),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["status", "scale"],
        &["deploy"],
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["status", "scale"],
        &["sts"],
    ),
    (
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["status"],
        &["ds"],
    ),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["status", "scale"],
        &["rs"],
    ),
    ("batch", "v1", "Job", "jobs", true, &["status"], &[]),
    (
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        true,
        &["status"],
        &["cj"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        &[],
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &[],
        &["netpol"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["status"],
        &["ing"],
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["status"],
        &["pdb"],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["status"],
        &["hpa"],
    ),
];

/// All served resource types.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let types = BUILTINS
            .iter()
            .map(|(g, v, k, p, ns, subs, short)| ResourceType {
                group: g.to_string(),
                versions: vec![v.to_string()],
                kind: k.to_string(),
                plural: p.to_string(),
                singular: k.to_lowercase(),
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: Vec::new(),
                namespaced: *ns,
                subresources: subs.iter().map(|s| s.to_string()).collect(),
                crd: false,
                schemas: BTreeMap::new(),
            })
            .collect();
        Registry { types }
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `group/version` with this plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| {
            t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
        })
    }

    pub fn lookup_any_version(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
    }

    /// Groups in registration order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    for v in &t.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((t.group.clone(), t.versions.clone())),
            }
        }
        out
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
            .collect()
    }

    /// Register (or replace) a kind.
    pub fn register(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        self.types.push(rt);
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.group == group && t.plural == plural && t.crd));
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Validate an apiextensions.k8s.io/v1 CRD and derive the resource type it defines.
pub(crate) fn crd_to_type(crd: &Value) -> Result<ResourceType, ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = s(&spec["group"]);
    let names = &spec["names"];
    let plural = s(&names["plural"]);
    let kind = s(&names["kind"]);
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind"));
    }
    let scope = s(&spec["scope"]);
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "spec.scope",
            "FieldValueNotSupported",
            format!("Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &Value::String(name.to_string()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    }
    let storage_count = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !versions.is_empty() && storage_count != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        ));
    }
    let mut served: Vec<String> = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut subresources = Vec::new();
    // storage version first so it is the preferred one
    let mut ordered = versions.clone();
    ordered.sort_by_key(|v| v["storage"].as_bool() != Some(true));
    for v in &ordered {
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let vname = s(&v["name"]);
        served.push(vname.clone());
        if let Some(schema) = v["schema"].get("openAPIV3Schema") {
            schemas.insert(vname.clone(), schema.clone());
        }
        let subs = if v.get("subresources").is_some() {
            &v["subresources"]
        } else {
            &spec["subresources"]
        };
        if subs.get("status").is_some() && !subresources.contains(&"status".to_string()) {
            subresources.push("status".to_string());
        }
        if subs.get("scale").is_some() && !subresources.contains(&"scale".to_string()) {
            subresources.push("scale".to_string());
        }
    }
    let singular = match s(&names["singular"]) {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    Ok(ResourceType {
        group,
        versions: served,
        kind,
        plural,
        singular,
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced: scope == "Namespaced",
        subresources,
        crd: true,
        schemas,
    })
}
