//! The decision: requester × request × policies → the names granted, the TTL, the
//! intermediate, or a typed [`Denial`]. Pure, so the whole authorization table is
//! tested without I/O.

use std::collections::HashMap;
use std::net::IpAddr;

use canopy::key::KeyType;
use canopy::profile::{Profile, MIN_TTL};
use canopy::spiffe::{SpiffeId, TrustDomain};
use canopy::ttl::Ttl;

use super::denial::{Denial, Rule};
use super::pattern::{DnsMatch, Vars};
use super::renewal::check_renewal;
use super::{applicable, Policy};
use crate::auth::Requester;
use crate::config::PolicyConfig;
use crate::names::ClusterName;

/// What a requester asks for, as the policy sees it (parsed from the CSR at the edge).
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// Profile.
    pub profile: Profile,
    /// SPIFFE ID of the certificate, if any.
    pub spiffe_id: Option<&'a SpiffeId>,
    /// DNS SANs.
    pub dns_names: &'a [String],
    /// IP SANs.
    pub ip_addresses: &'a [IpAddr],
    /// Requested lifetime (`None`: the default).
    pub ttl: Option<Ttl>,
    /// Key type of the CSR.
    pub key_type: KeyType,
    /// Intermediate named by the request (`None`: the requester's own).
    pub intermediate: Option<&'a str>,
    /// Whether the request asks for a CA certificate.
    pub requests_ca: bool,
}

/// What the issuer knows beside the policies: its trust domain, intermediates and its
/// own serving names.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// The trust domain.
    pub trust_domain: &'a TrustDomain,
    /// Every policy.
    pub policies: &'a [Policy],
    /// Intermediates this issuer holds.
    pub intermediates: &'a [&'a str],
    /// Intermediate of a requester without a cluster.
    pub default_intermediate: &'a str,
    /// Each cluster's intermediate.
    pub cluster_intermediates: &'a HashMap<ClusterName, String>,
    /// The listener's DNS names: never issued to anybody but the issuer.
    pub reserved_dns: &'a [String],
    /// The listener's IP addresses: likewise.
    pub reserved_ips: &'a [IpAddr],
}

/// What a request is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Name of the policy that allowed it.
    pub policy: String,
    /// Lifetime to issue (requested, capped by the policy).
    pub ttl: Ttl,
    /// Whether the requested TTL was cut to the policy's maximum.
    pub ttl_capped: bool,
    /// Intermediate that signs.
    pub intermediate: String,
}

/// Default lifetime of a workload certificate.
pub const DEFAULT_TTL: Ttl = Ttl::hours(24);

fn is_wildcard(name: &str) -> bool {
    name.starts_with("*.")
}

/// Whether DNS name `asked` (maybe a wildcard) is, or covers, `reserved`.
fn covers(asked: &str, reserved: &str) -> bool {
    if asked.eq_ignore_ascii_case(reserved) {
        return true;
    }
    match asked.strip_prefix("*.") {
        Some(parent) => reserved
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent)),
        None => false,
    }
}

/// Decides `ask` for `requester`.
pub fn decide(requester: &Requester, ask: &Ask<'_>, rules: &Rules<'_>) -> Result<Decision, Denial> {
    check_ask(requester, ask, rules)?;
    let (intermediate, home) = choose_intermediate(requester, ask, rules)?;
    let policies = applicable(rules.policies, requester);
    if policies.is_empty() {
        return Err(Denial::new(
            Rule::NoPolicy,
            format!("no policy applies to {requester}"),
        ));
    }
    let mut reasons = Vec::new();
    for policy in &policies {
        match decide_one(policy, requester, ask, intermediate, home) {
            Ok((ttl, ttl_capped)) => {
                return Ok(Decision {
                    policy: policy.config.name.clone(),
                    ttl,
                    ttl_capped,
                    intermediate: intermediate.to_string(),
                })
            }
            Err(denial) => reasons.push((policy.config.name.as_str(), denial)),
        }
    }
    Err(joined_denial(reasons))
}

/// The checks that come before any policy: no CA, the minimum lifetime, the trust
/// domain, the issuer's own names, an mTLS renewal's bounds.
fn check_ask(requester: &Requester, ask: &Ask<'_>, rules: &Rules<'_>) -> Result<(), Denial> {
    if ask.requests_ca
        || !matches!(
            ask.profile,
            Profile::Workload | Profile::Server | Profile::Client
        )
    {
        return Err(Denial::new(
            Rule::CaNotAllowed,
            format!(
                "a CA certificate was requested (profile {}{}): CA certificates are never issued to requesters",
                ask.profile,
                if ask.requests_ca { ", CA:TRUE or keyCertSign" } else { "" }
            ),
        ));
    }
    if let Some(ttl) = ask.ttl {
        if ttl < MIN_TTL {
            return Err(Denial::new(
                Rule::TtlTooShort,
                format!("requested ttl {ttl} is shorter than the minimum {MIN_TTL}"),
            ));
        }
    }
    if let Some(id) = ask.spiffe_id {
        if id.trust_domain() != rules.trust_domain {
            return Err(Denial::new(
                Rule::SpiffeIdNotAllowed,
                format!(
                    "SPIFFE ID {id} is outside trust domain {}",
                    rules.trust_domain
                ),
            ));
        }
    }
    for name in ask.dns_names {
        if let Some(reserved) = rules.reserved_dns.iter().find(|r| covers(name, r)) {
            return Err(Denial::new(
                Rule::ReservedName,
                format!("DNS name {name:?} is (or covers) {reserved:?}, a name this issuer serves on: it is issued to nobody else"),
            ));
        }
    }
    for ip in ask.ip_addresses {
        if rules.reserved_ips.contains(ip) {
            return Err(Denial::new(
                Rule::ReservedName,
                format!(
                    "IP address {ip} is one this issuer serves on: it is issued to nobody else"
                ),
            ));
        }
    }
    if let Some(presented) = &requester.renewal_of {
        check_renewal(presented, ask)?;
    }
    Ok(())
}

/// The intermediate asked for (or the requester's cluster's, or the default) and the
/// requester's home intermediate; refused when the issuer does not hold it.
fn choose_intermediate<'a>(
    requester: &Requester,
    ask: &Ask<'a>,
    rules: &Rules<'a>,
) -> Result<(&'a str, &'a str), Denial> {
    let home = match &requester.cluster {
        Some(cluster) => rules
            .cluster_intermediates
            .get(cluster)
            .map(String::as_str)
            .unwrap_or(rules.default_intermediate),
        None => rules.default_intermediate,
    };
    let intermediate = ask.intermediate.unwrap_or(home);
    if !rules.intermediates.contains(&intermediate) {
        return Err(Denial::new(
            Rule::UnknownIntermediate,
            format!(
                "unknown intermediate {:?} (this issuer has: {})",
                intermediate.chars().take(64).collect::<String>(),
                rules.intermediates.join(", ")
            ),
        ));
    }
    Ok((intermediate, home))
}

/// One denial from every applicable policy's: the first one's rule, all reasons.
fn joined_denial(reasons: Vec<(&str, Denial)>) -> Denial {
    let rule = reasons[0].1.rule;
    let joined = reasons
        .iter()
        .map(|(name, d)| format!("policy {name:?}: {}", d.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Denial::new(
        rule,
        if reasons.len() == 1 {
            joined
        } else {
            format!("no policy allows this request ({joined})")
        },
    )
}

fn decide_one(
    policy: &Policy,
    requester: &Requester,
    ask: &Ask<'_>,
    intermediate: &str,
    home: &str,
) -> Result<(Ttl, bool), Denial> {
    let p = &policy.config;
    check_scope(p, requester, ask, intermediate, home)?;
    check_names(p, requester, ask)?;
    let wanted = ask.ttl.unwrap_or(DEFAULT_TTL);
    Ok(if wanted > p.max_ttl {
        (p.max_ttl, ask.ttl.is_some())
    } else {
        (wanted, false)
    })
}

/// Whether the policy covers the requester's cluster, the profile, the intermediate
/// and the key type.
fn check_scope(
    p: &PolicyConfig,
    requester: &Requester,
    ask: &Ask<'_>,
    intermediate: &str,
    home: &str,
) -> Result<(), Denial> {
    if !p.clusters.is_empty()
        && !requester
            .cluster
            .as_ref()
            .is_some_and(|c| p.clusters.contains(c))
    {
        let cluster = requester
            .cluster
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "none".into());
        return Err(Denial::new(
            Rule::ClusterNotAllowed,
            format!("requester's cluster ({cluster}) is not one of the policy's clusters"),
        ));
    }
    let profile = ask.profile.to_string();
    if !p.profiles.contains(&profile) {
        return Err(Denial::new(
            Rule::ProfileNotAllowed,
            format!(
                "profile {profile:?} is not allowed (allowed: {})",
                p.profiles.join(", ")
            ),
        ));
    }
    let listed = p.intermediates.iter().any(|x| x == intermediate);
    let own_cluster = requester.cluster.is_some() && intermediate == home;
    let allowed =
        listed || own_cluster || (requester.cluster.is_none() && p.intermediates.is_empty());
    if !allowed {
        return Err(Denial::new(
            Rule::IntermediateNotAllowed,
            match &requester.cluster {
                Some(c) => format!("intermediate {intermediate:?} is not cluster {c}'s ({home}) and the policy does not list it"),
                None => format!("intermediate {intermediate:?} is not allowed"),
            },
        ));
    }
    if !p.key_types.contains(&ask.key_type) {
        let allowed: Vec<String> = p.key_types.iter().map(|k| k.to_string()).collect();
        return Err(Denial::new(
            Rule::KeyTypeNotAllowed,
            format!(
                "key type {} is not allowed (allowed: {})",
                ask.key_type,
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Whether the policy allows the SPIFFE ID, DNS names and IP addresses asked for.
fn check_names(p: &PolicyConfig, requester: &Requester, ask: &Ask<'_>) -> Result<(), Denial> {
    let who = Vars::of(requester);
    let bound_namespace = requester
        .namespace
        .as_deref()
        .filter(|_| p.bind_namespace && requester.bound_to_namespace);
    if let Some(id) = ask.spiffe_id {
        if let Some(ns) = bound_namespace {
            let mut segs = id.path().split('/').skip(1);
            if !(segs.next() == Some("ns") && segs.next() == Some(ns)) {
                return Err(Denial::new(
                    Rule::SpiffeIdOutsideNamespace,
                    format!("SPIFFE ID {id} is not in the requester's namespace {ns} (spiffe://{}/ns/{ns}/...)", id.trust_domain()),
                ));
            }
        }
        if !p.spiffe_ids.iter().any(|pat| pat.matches(id, &who)) {
            return Err(Denial::new(
                Rule::SpiffeIdNotAllowed,
                format!("SPIFFE ID {id} is outside this policy"),
            ));
        }
    }
    for name in ask.dns_names {
        if is_wildcard(name) && !p.wildcards {
            return Err(Denial::new(
                Rule::WildcardNotAllowed,
                format!("wildcard DNS name {name:?}: the policy does not say wildcards: true"),
            ));
        }
        let matched: Vec<DnsMatch> = p
            .dns_names
            .iter()
            .filter_map(|pat| pat.matches(name, &who))
            .collect();
        if matched.is_empty() {
            return Err(Denial::new(
                Rule::DnsNameNotAllowed,
                format!("DNS name {name:?} is outside this policy"),
            ));
        }
        if let Some(ns) = bound_namespace {
            if !matched.iter().any(|m| m.in_namespace) {
                return Err(Denial::new(
                    Rule::DnsNameOutsideNamespace,
                    format!("DNS name {name:?} is not under the requester's namespace {ns} (only patterns that spell out {{namespace}} grant names to a namespaced requester)"),
                ));
            }
        }
    }
    for ip in ask.ip_addresses {
        if !p.ip_addresses.contains(ip) {
            return Err(Denial::new(
                Rule::IpAddressNotAllowed,
                format!("IP address {ip} is outside this policy"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
