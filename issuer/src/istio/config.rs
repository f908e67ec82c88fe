//! The Istio settings of the issuer's config file: per cluster (`clusters[].istio`) and
//! mesh-wide (`istio:`, with the root rotation). Parsed with serde, checked by `validate`
//! with the configuration's typed errors.

use std::collections::BTreeMap;

use canopy::cert::Certificate;
use canopy::constraints::NameConstraints;
use canopy::key::KeyType;
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use serde::Deserialize;

use crate::invalid::{Invalid, Problem};

/// What canopy publishes in a cluster's `cacerts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A mesh CA minted under the cluster's intermediate (the intermediate key stays here).
    #[default]
    Subca,
    /// The cluster's intermediate itself (its key is published to istiod).
    Intermediate,
}

/// What to do with a `cacerts` that canopy did not write, or that was edited after it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairPolicy {
    /// Take it over when istiod would accept it and it chains to our intermediate (keep its
    /// CA until renewal, add our labels, lay the files out canonically); otherwise report.
    #[default]
    Adopt,
    /// Never overwrite it: report what is wrong.
    Report,
    /// Overwrite it with a fresh mesh CA unless it is usable as is.
    Replace,
}

/// `clusters[].istio`: keep this cluster's `cacerts` valid.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IstioClusterConfig {
    /// `subca` (default) or `intermediate`.
    #[serde(default)]
    pub mode: Mode,
    /// istiod's namespace (default `istio-system`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Lifetime of a mesh CA (default 90d); at least 6x `workload_ttl`.
    #[serde(default = "default_mesh_ca_ttl")]
    pub mesh_ca_ttl: Ttl,
    /// Longest workload certificate istiod issues in this cluster (default 24h).
    #[serde(default = "default_workload_ttl")]
    pub workload_ttl: Ttl,
    /// What to do with a Secret canopy did not write or that was edited by hand.
    #[serde(default)]
    pub repair: RepairPolicy,
    /// Key type of minted mesh CAs (default ecdsa-p256).
    #[serde(default)]
    pub key_type: KeyType,
    /// DNS names a minted mesh CA may certify: the permitted DNS subtrees of its name
    /// constraints (default `.NAMESPACE.svc`, istiod's own service names). Its permitted
    /// URIs are always the trust domain. A stolen `ca-key.pem` then mints nothing outside
    /// the mesh that Go, OpenSSL or webpki accept.
    #[serde(default)]
    pub mesh_ca_dns_names: Option<Vec<String>>,
    /// Whether a minted mesh CA's name constraints permit URIs in the trust domain only
    /// (default true). Go and OpenSSL/BoringSSL (istiod, Envoy) enforce URI constraints;
    /// rustls-webpki since 0.103.12 rejects every chain that has one, so a mesh whose
    /// workloads verify each other with rustls (Istio ambient's ztunnel) needs `false`,
    /// which keeps the DNS constraint and leaves URIs unconstrained.
    #[serde(default = "default_true")]
    pub mesh_ca_uri_constraint: bool,
}

fn default_true() -> bool {
    true
}

impl Default for IstioClusterConfig {
    fn default() -> Self {
        IstioClusterConfig {
            mode: Mode::default(),
            namespace: default_namespace(),
            mesh_ca_ttl: default_mesh_ca_ttl(),
            workload_ttl: default_workload_ttl(),
            repair: RepairPolicy::default(),
            key_type: KeyType::default(),
            mesh_ca_dns_names: None,
            mesh_ca_uri_constraint: true,
        }
    }
}

fn default_namespace() -> String {
    "istio-system".into()
}
fn default_mesh_ca_ttl() -> Ttl {
    Ttl::days(90)
}
fn default_workload_ttl() -> Ttl {
    Ttl::hours(24)
}
fn default_resync() -> Ttl {
    Ttl::minutes(1)
}
fn default_request_timeout() -> Ttl {
    Ttl::from_seconds(10).expect("positive")
}

/// The top-level `istio:` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IstioConfig {
    /// How often the controller re-checks every cluster (default 1m).
    #[serde(default = "default_resync")]
    pub resync: Ttl,
    /// Time limit of one Kubernetes API request (default 10s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Ttl,
    /// A root rotation in progress.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    /// Leader election: with several replicas, only the holder of this Lease syncs
    /// `cacerts` (else each replica would mint its own mesh CA). Omit for one replica.
    #[serde(default)]
    pub lease: Option<IstioLeaseConfig>,
}

/// `istio.lease`: one Lease for the whole mesh, because a pass decides for every cluster
/// at once (a root rotation moves the clusters in step). It lives in one cluster's API
/// server; while that cluster cannot be reached no replica syncs `cacerts` anywhere, and
/// mesh CAs, renewed at 2/3 of their life, have the last third to wait it out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IstioLeaseConfig {
    /// The cluster (by name) whose API server holds the Lease.
    pub cluster: String,
    /// Namespace of the Lease (the issuer's own).
    pub namespace: String,
    /// Lease name (default `canopy-issuer-istio`).
    #[serde(default)]
    pub name: Option<String>,
    /// Lease duration (default 15s; renew deadline 2/3 of it, retry 2s or less).
    #[serde(default)]
    pub duration: Option<Ttl>,
}

impl IstioLeaseConfig {
    /// Default name of the mesh's Lease.
    pub const DEFAULT_NAME: &'static str = "canopy-issuer-istio";

    /// Where the Lease lives, as any controller's Lease.
    pub fn lease(&self) -> crate::leader::LeaseConfig {
        crate::leader::LeaseConfig {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            duration: self.duration,
        }
    }
}

impl Default for IstioConfig {
    fn default() -> Self {
        IstioConfig {
            resync: default_resync(),
            request_timeout: default_request_timeout(),
            rotation: None,
            lease: None,
        }
    }
}

/// `istio.rotation`: move the mesh from `old_root` to `new_root`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// SHA-256 fingerprint of the root being retired (hex, colons allowed, as `openssl x509
    /// -fingerprint -sha256` prints it). Must be one of `roots`.
    pub old_root: String,
    /// SHA-256 fingerprint of the new root. Must be one of `roots`.
    pub new_root: String,
    /// For each cluster, the intermediate (chaining to the new root) its mesh CA moves under.
    pub intermediates: BTreeMap<String, String>,
}

/// Normalises a fingerprint to lowercase hex without colons.
pub fn normalize_fingerprint(fp: &str) -> String {
    fp.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl IstioClusterConfig {
    /// The name constraints of a mesh CA minted for this cluster.
    pub fn mesh_ca_constraints(&self, trust_domain: &TrustDomain) -> NameConstraints {
        let dns = self
            .mesh_ca_dns_names
            .clone()
            .unwrap_or_else(|| NameConstraints::istiod_dns(&self.namespace));
        let mut nc = NameConstraints::mesh(trust_domain, &dns);
        if !self.mesh_ca_uri_constraint {
            nc.permitted_uri_hosts.clear();
        }
        nc
    }

    /// Semantic checks; the first problem, its field named below `istio`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !valid_namespace(&self.namespace) {
            return Err(Problem::Rule(
                "must be a Kubernetes namespace name (lowercase letters, digits, '-')",
            )
            .at("namespace"));
        }
        if self.workload_ttl < Ttl::minutes(10) {
            return Err(Problem::Rule("must be at least 10m").at("workload_ttl"));
        }
        let six = self.workload_ttl.as_seconds().saturating_mul(6);
        if self.mesh_ca_ttl.as_seconds() < six {
            return Err(Problem::Refused(format!(
                "must be at least 6x workload_ttl ({} < 6 x {}): istiod signs workloads for up to workload_ttl and renews them well before",
                self.mesh_ca_ttl, self.workload_ttl
            ))
            .at("mesh_ca_ttl"));
        }
        if !self.mesh_ca_uri_constraint
            && self.mesh_ca_dns_names.as_ref().is_some_and(Vec::is_empty)
        {
            return Err(Problem::Rule(
                "is empty and mesh_ca_uri_constraint is false: a mesh CA would be unconstrained; name istiod's DNS names",
            )
            .at("mesh_ca_dns_names"));
        }
        if let Some(dns) = self.mesh_ca_dns_names.as_ref().filter(|d| !d.is_empty()) {
            let nc = NameConstraints {
                permitted_uri_hosts: vec![],
                permitted_dns: dns.clone(),
            };
            if let Err(e) = nc.validate() {
                return Err(Problem::Refused(e.to_string()).at("mesh_ca_dns_names"));
            }
        }
        if !self.key_type.accepted_by_istiod() {
            return Err(Problem::Refused(format!(
                "{}: istiod accepts only ECDSA P-256/P-384 or RSA >= 2048",
                self.key_type
            ))
            .at("key_type"));
        }
        Ok(())
    }
}

impl IstioConfig {
    /// Checks against the rest of the config: `roots` holds the rotation's roots (given
    /// parsed, in config order), and the rotation names configured clusters and
    /// intermediates. The first problem, its field named below `istio`.
    pub fn validate(
        &self,
        roots: &[Certificate],
        is_cluster: impl Fn(&str) -> bool,
        is_intermediate: impl Fn(&str) -> bool,
    ) -> Result<(), Invalid> {
        if self.resync < Ttl::from_seconds(5).expect("positive") {
            return Err(Problem::Rule("must be at least 5s").at("resync"));
        }
        if self.request_timeout.as_seconds() < 1 {
            return Err(Problem::Rule("must be at least 1s").at("request_timeout"));
        }
        let Some(rot) = &self.rotation else {
            return Ok(());
        };
        let known = |fp: &str| {
            roots
                .iter()
                .any(|r| r.fingerprint_sha256() == normalize_fingerprint(fp))
        };
        for (field, fp) in [("old_root", &rot.old_root), ("new_root", &rot.new_root)] {
            if !known(fp) {
                return Err(Problem::Rule(
                    "no certificate in `roots` has this SHA-256 fingerprint (list both roots in `roots` during a rotation)",
                )
                .at(format!("rotation.{field}")));
            }
        }
        if normalize_fingerprint(&rot.old_root) == normalize_fingerprint(&rot.new_root) {
            return Err(Problem::Rule("is the same root as old_root").at("rotation.new_root"));
        }
        for (cluster, inter) in &rot.intermediates {
            let field = format!("rotation.intermediates.{cluster}");
            if !is_cluster(cluster) {
                return Err(Problem::NoSuchCluster.at(field));
            }
            if !is_intermediate(inter) {
                return Err(Problem::NoSuchIntermediate.at(field));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_parse_with_defaults_and_refuse_unknown_fields() {
        let c: IstioClusterConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.mode, Mode::Subca);
        assert_eq!(c.namespace, "istio-system");
        assert_eq!(c.mesh_ca_ttl, Ttl::days(90));
        assert_eq!(c.repair, RepairPolicy::Adopt);
        c.validate().unwrap();
        let c: IstioClusterConfig =
            serde_yaml::from_str("{mode: intermediate, repair: replace, mesh_ca_ttl: 30d}")
                .unwrap();
        assert_eq!(c.mode, Mode::Intermediate);
        assert_eq!(c.repair, RepairPolicy::Replace);
        assert!(serde_yaml::from_str::<IstioClusterConfig>("{mod: subca}").is_err());
        assert!(serde_yaml::from_str::<IstioClusterConfig>("{mode: sub-ca}").is_err());
        let short: IstioClusterConfig =
            serde_yaml::from_str("{mesh_ca_ttl: 5d, workload_ttl: 24h}").unwrap();
        assert_eq!(short.validate().unwrap_err().field, "mesh_ca_ttl");
        let ed: IstioClusterConfig = serde_yaml::from_str("{key_type: ed25519}").unwrap();
        assert_eq!(ed.validate().unwrap_err().field, "key_type");
    }

    #[test]
    fn fingerprints_accept_openssl_form() {
        assert_eq!(normalize_fingerprint("AB:CD:01"), "abcd01");
    }
}
