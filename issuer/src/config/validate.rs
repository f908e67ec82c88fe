//! The checks a configuration file must pass before it becomes [`Config`](super::Config):
//! one step per section, each naming the field at fault and why. Each value alone was
//! already parsed by serde; these are the rules across fields (names that must exist,
//! settings that need each other, limits that must fit together).

use std::collections::HashSet;

use super::file::{ClusterFile, ConfigFile, JwtFile};
use super::sections::PolicyConfig;
use crate::certmanager::CertManagerConfig;
use crate::invalid::{Invalid, Problem};
use crate::names::valid_name;
use crate::podcertificate::PodCertificatesConfig;

/// Profiles the API may issue.
pub const API_PROFILES: [&str; 3] = ["workload", "server", "client"];

/// Every check, in the order of the file's sections; the first problem found.
pub fn check(file: &ConfigFile) -> Result<(), Invalid> {
    storage(file)?;
    retention(file)?;
    audit(file)?;
    intermediates(file)?;
    listen(file)?;
    clusters(file)?;
    istio_lease(file)?;
    policies(file)?;
    tokens(file)?;
    limits(file)
}

/// `storage.url` names a backend canopy has; the pool has room for a connection.
pub fn storage(file: &ConfigFile) -> Result<(), Invalid> {
    let scheme = file.storage.url.split(':').next().unwrap_or_default();
    if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
        return Err(Problem::Rule("must start with sqlite: or postgres://").at("storage.url"));
    }
    if file.storage.max_connections == 0 {
        return Err(Problem::AtLeast(1).at("storage.max_connections"));
    }
    Ok(())
}

fn retention(file: &ConfigFile) -> Result<(), Invalid> {
    file.retention
        .validate()
        .map_err(|(field, reason)| Problem::Refused(reason).at(format!("retention.{field}")))
}

fn audit(file: &ConfigFile) -> Result<(), Invalid> {
    if file.roots.is_empty() {
        return Err(Problem::Rule("name at least one root certificate file").at("roots"));
    }
    if file.audit.retention.is_some() && file.audit.checkpoint_key.is_none() {
        return Err(Problem::Rule(
            "pruning needs signed checkpoints: set audit.checkpoint_key too",
        )
        .at("audit.retention"));
    }
    if file.audit.retention.is_some() && file.audit.archive_dir.is_none() {
        return Err(Problem::Rule(
            "entries are archived before they are pruned: set audit.archive_dir too",
        )
        .at("audit.retention"));
    }
    Ok(())
}

fn intermediates(file: &ConfigFile) -> Result<(), Invalid> {
    if file.intermediates.is_empty() {
        return Err(Problem::Rule("configure at least one intermediate").at("intermediates"));
    }
    let mut names = HashSet::new();
    for (i, inter) in file.intermediates.iter().enumerate() {
        if !valid_name(&inter.name) {
            return Err(Problem::BadName.at(format!("intermediates[{i}].name")));
        }
        if !names.insert(inter.name.as_str()) {
            return Err(Problem::Duplicate("name").at(format!("intermediates[{i}].name")));
        }
    }
    Ok(())
}

fn known_intermediate(file: &ConfigFile, name: &str, field: String) -> Result<(), Invalid> {
    if file.intermediates.iter().any(|i| i.name == name) {
        Ok(())
    } else {
        Err(Problem::NoSuchIntermediate.at(field))
    }
}

fn known_policy(file: &ConfigFile, name: &str, field: String) -> Result<(), Invalid> {
    if file.policies.iter().any(|p| p.name == name) {
        Ok(())
    } else {
        Err(Problem::NoSuchPolicy.at(field))
    }
}

fn listen(file: &ConfigFile) -> Result<(), Invalid> {
    if let Some(d) = &file.default_intermediate {
        known_intermediate(file, d, "default_intermediate".into())?;
    }
    if let Some(d) = &file.listen.intermediate {
        known_intermediate(file, d, "listen.intermediate".into())?;
    }
    let l = &file.listen;
    if l.tls.is_none() && l.server_names.is_empty() && l.server_ips.is_empty() {
        return Err(Problem::Rule(
            "give at least one name or IP for the issued server certificate",
        )
        .at("listen.server_names"));
    }
    Ok(())
}

fn clusters(file: &ConfigFile) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for (i, c) in file.clusters.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            return Err(Problem::Duplicate("cluster name").at(format!("clusters[{i}].name")));
        }
        cluster(file, c, &format!("clusters[{i}]"))?;
    }
    Ok(())
}

/// One cluster, at `at` (`clusters[i]`).
fn cluster(file: &ConfigFile, c: &ClusterFile, at: &str) -> Result<(), Invalid> {
    known_intermediate(file, &c.intermediate, format!("{at}.intermediate"))?;
    if let Some(cm) = &c.cert_manager {
        cert_manager(file, cm, &format!("{at}.cert_manager"))?;
    }
    if let Some(pc) = &c.pod_certificates {
        pod_certificates(file, pc, &format!("{at}.pod_certificates"))?;
    }
    if let Some(istio) = &c.istio {
        istio
            .validate()
            .map_err(|e| e.below(&format!("{at}.istio")))?;
    }
    if c.in_cluster && c.kubeconfig.is_some() {
        return Err(
            Problem::Rule("set either kubeconfig or in_cluster, not both")
                .at(format!("{at}.in_cluster")),
        );
    }
    if c.context.is_some() && c.kubeconfig.is_none() {
        return Err(Problem::Rule("a context needs a kubeconfig").at(format!("{at}.context")));
    }
    if let Some(jwt) = &c.jwt {
        self::jwt(jwt, &format!("{at}.jwt"))?;
    }
    Ok(())
}

fn cert_manager(file: &ConfigFile, cm: &CertManagerConfig, at: &str) -> Result<(), Invalid> {
    known_policy(file, &cm.policy, format!("{at}.policy"))?;
    if let Some(j) = cm
        .trusted_requesters
        .iter()
        .position(|u| u.trim().is_empty())
    {
        return Err(Problem::Rule(
            "name a Kubernetes user, e.g. system:serviceaccount:istio-system:istio-csr",
        )
        .at(format!("{at}.trusted_requesters[{j}]")));
    }
    Ok(())
}

fn pod_certificates(
    file: &ConfigFile,
    pc: &PodCertificatesConfig,
    at: &str,
) -> Result<(), Invalid> {
    known_policy(file, &pc.policy, format!("{at}.policy"))?;
    if pc.signer_names.is_empty() {
        return Err(
            Problem::Rule("name at least one signer, e.g. canopy.dev/spiffe")
                .at(format!("{at}.signer_names")),
        );
    }
    let mut seen = HashSet::new();
    for (j, name) in pc.signer_names.iter().enumerate() {
        let field = format!("{at}.signer_names[{j}]");
        if let Some(problem) = crate::podcertificate::signer_name_problem(name) {
            return Err(Problem::Rule(problem).at(field));
        }
        if !seen.insert(name.as_str()) {
            return Err(Problem::Duplicate("signer name").at(field));
        }
    }
    Ok(())
}

fn jwt(jwt: &JwtFile, at: &str) -> Result<(), Invalid> {
    if jwt.audiences.is_empty() || jwt.audiences.iter().any(|a| a.is_empty()) {
        return Err(
            Problem::Rule("name at least one non-empty audience").at(format!("{at}.audiences"))
        );
    }
    if jwt.issuer.trim().is_empty() {
        return Err(Problem::Rule(
            "name the cluster's service-account issuer (the iss of its tokens)",
        )
        .at(format!("{at}.issuer")));
    }
    if jwt.jwks.is_some() == jwt.jwks_file.is_some() {
        return Err(Problem::Rule("set exactly one of jwks_file or jwks").at(at));
    }
    Ok(())
}

fn istio_lease(file: &ConfigFile) -> Result<(), Invalid> {
    let Some(lease) = file.istio.as_ref().and_then(|i| i.lease.as_ref()) else {
        return Ok(());
    };
    match file
        .clusters
        .iter()
        .find(|c| c.name.as_str() == lease.cluster)
    {
        None => return Err(Problem::NoSuchCluster.at("istio.lease.cluster")),
        Some(c) if !c.in_cluster && c.kubeconfig.is_none() => {
            return Err(Problem::Rule(
                "the cluster needs a kubeconfig or in_cluster to hold the Lease",
            )
            .at("istio.lease.cluster"))
        }
        Some(_) => {}
    }
    if lease.namespace.trim().is_empty() {
        return Err(Problem::Rule("name the issuer's own namespace").at("istio.lease.namespace"));
    }
    Ok(())
}

fn policies(file: &ConfigFile) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for (i, p) in file.policies.iter().enumerate() {
        let at = format!("policies[{i}]");
        if !valid_name(&p.name) {
            return Err(Problem::BadName.at(format!("{at}.name")));
        }
        if !names.insert(p.name.as_str()) {
            return Err(Problem::Duplicate("policy name").at(format!("{at}.name")));
        }
        policy_patterns(file, p, &at)?;
        policy_scope(file, p, &at)?;
    }
    Ok(())
}

/// A policy's SPIFFE ID patterns stay in this issuer's trust domain; `{self}` only where
/// it means something.
fn policy_patterns(file: &ConfigFile, p: &PolicyConfig, at: &str) -> Result<(), Invalid> {
    for (j, pattern) in p.identities.iter().chain(&p.spiffe_ids).enumerate() {
        if !pattern.is_self() && !pattern.in_trust_domain(&file.trust_domain) {
            let list = if j < p.identities.len() {
                format!("identities[{j}]")
            } else {
                format!("spiffe_ids[{}]", j - p.identities.len())
            };
            return Err(Problem::Rule(
                "pattern must start with spiffe://TRUST_DOMAIN/ of this issuer",
            )
            .at(format!("{at}.{list}")));
        }
    }
    if let Some(j) = p.identities.iter().position(|pattern| pattern.is_self()) {
        return Err(Problem::Rule("{self} only makes sense in spiffe_ids")
            .at(format!("{at}.identities[{j}]")));
    }
    Ok(())
}

/// A policy's profiles, intermediates, clusters and key types exist.
fn policy_scope(file: &ConfigFile, p: &PolicyConfig, at: &str) -> Result<(), Invalid> {
    if let Some(j) = p
        .profiles
        .iter()
        .position(|profile| !API_PROFILES.contains(&profile.as_str()))
    {
        return Err(Problem::Rule(
            "must be one of workload, server, client (CA profiles are never issued by policy)",
        )
        .at(format!("{at}.profiles[{j}]")));
    }
    for (j, name) in p.intermediates.iter().enumerate() {
        known_intermediate(file, name, format!("{at}.intermediates[{j}]"))?;
    }
    if let Some(j) = p
        .clusters
        .iter()
        .position(|cluster| !file.clusters.iter().any(|c| c.name == *cluster))
    {
        return Err(Problem::NoSuchCluster.at(format!("{at}.clusters[{j}]")));
    }
    if p.key_types.is_empty() {
        return Err(Problem::Rule("allow at least one key type").at(format!("{at}.key_types")));
    }
    Ok(())
}

fn tokens(file: &ConfigFile) -> Result<(), Invalid> {
    if file.tokens.default_ttl > file.tokens.max_ttl {
        return Err(
            Problem::Rule("must not be longer than tokens.max_ttl").at("tokens.default_ttl")
        );
    }
    Ok(())
}

fn limits(file: &ConfigFile) -> Result<(), Invalid> {
    let l = &file.limits;
    if l.rate_per_second == 0 || l.burst == 0 {
        return Err(Problem::AtLeast(1).at("limits.rate_per_second"));
    }
    if l.body_bytes < 4096 {
        return Err(Problem::AtLeast(4096).at("limits.body_bytes"));
    }
    if l.peer_rate_per_second == 0 || l.peer_burst == 0 {
        return Err(Problem::AtLeast(1).at("limits.peer_rate_per_second"));
    }
    if l.max_connections == 0 {
        return Err(Problem::AtLeast(1).at("limits.max_connections"));
    }
    if l.max_connections_per_peer == 0 || l.max_connections_per_peer > l.max_connections {
        return Err(
            Problem::Rule("must be between 1 and limits.max_connections")
                .at("limits.max_connections_per_peer"),
        );
    }
    if l.buffered_body_bytes < l.body_bytes {
        return Err(
            Problem::Rule("must be at least limits.body_bytes (one whole body must fit)")
                .at("limits.buffered_body_bytes"),
        );
    }
    if l.http2_max_concurrent_streams == 0 {
        return Err(Problem::AtLeast(1).at("limits.http2_max_concurrent_streams"));
    }
    Ok(())
}
