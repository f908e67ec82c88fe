//! The registry of served resource types (built-in kinds and CRD-defined kinds).

use serde_json::Value;
use std::collections::BTreeMap;

/// One served resource type.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    /// Served versions; the first one is the preferred (storage) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Subresources (`status`).
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

/// One line per built-in kind: (group, version, kind, plural, namespaced, subresources).
/// Only the kinds the remaining users touch: namespaces and Secrets (Istio sync), core
/// and events.k8s.io Events (both controllers' recorders), CRDs (cert-manager's and
/// ours), CertificateSigningRequests (watched by the cert-manager controllers).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    ("", "v1", "Namespace", "namespaces", false, &["status"]),
    ("", "v1", "Secret", "secrets", true, &[]),
    ("", "v1", "Event", "events", true, &[]),
    ("events.k8s.io", "v1", "Event", "events", true, &[]),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["status"],
    ),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        &["status"],
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
            .map(|(g, v, k, p, ns, subs)| ResourceType {
                group: g.to_string(),
                versions: vec![v.to_string()],
                kind: k.to_string(),
                plural: p.to_string(),
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

    /// Register (or replace) a kind.
    pub fn register(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        self.types.push(rt);
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The resource type an apiextensions.k8s.io/v1 CRD defines (not validated: the only
/// CRDs created here are cert-manager's and canopy's own).
pub(crate) fn crd_to_type(crd: &Value) -> ResourceType {
    let spec = &crd["spec"];
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let mut served: Vec<String> = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut subresources = Vec::new();
    // storage version first so it is the preferred one
    let mut ordered = versions;
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
        if v["subresources"].get("status").is_some() && subresources.is_empty() {
            subresources.push("status".to_string());
        }
    }
    ResourceType {
        group: s(&spec["group"]),
        versions: served,
        kind: s(&spec["names"]["kind"]),
        plural: s(&spec["names"]["plural"]),
        namespaced: s(&spec["scope"]) == "Namespaced",
        subresources,
        crd: true,
        schemas,
    }
}
