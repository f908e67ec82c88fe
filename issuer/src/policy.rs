//! Policy: who may obtain which certificates. Deny by default; every denial carries
//! a reason that is returned to the requester and written to the audit log.
//!
//! Deciding is pure: it takes the requester, what it asks for and the policies, and
//! returns either the grant (with the TTL to use) or the reason for refusal.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use canopy::key::KeyType;
use canopy::profile::MIN_TTL;
use canopy::spiffe::{SpiffeId, TrustDomain};
use canopy::ttl::Ttl;
use serde::Deserialize;

use crate::config::PolicyConfig;

/// A SPIFFE ID pattern: `*` matches within one path segment, `**` matches the rest
/// (any number of segments), `{self}` is the requester's own SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffePattern(String);

impl SpiffePattern {
    /// Whether this is the `{self}` placeholder.
    pub fn is_self(&self) -> bool {
        self.0 == "{self}"
    }

    /// Whether the pattern is confined to `td` (so it cannot match another domain).
    pub fn in_trust_domain(&self, td: &TrustDomain) -> bool {
        let prefix = format!("spiffe://{td}");
        self.0 == prefix || self.0.starts_with(&format!("{prefix}/"))
    }

    /// Whether `id` matches; `requester` is what `{self}` stands for.
    pub fn matches(&self, id: &SpiffeId, requester: Option<&SpiffeId>) -> bool {
        if self.is_self() {
            return requester == Some(id);
        }
        glob(self.0.as_bytes(), id.to_string().as_bytes())
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffePattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "{self}" {
            return Ok(SpiffePattern(s.to_string()));
        }
        // The pattern with every wildcard replaced must itself be a valid SPIFFE ID.
        let probe = s.replace("**", "x").replace('*', "x");
        SpiffeId::from_str(&probe).map_err(|e| format!("invalid SPIFFE ID pattern {s:?}: {e}"))?;
        if s.contains("***") {
            return Err(format!("invalid SPIFFE ID pattern {s:?}: use * or **"));
        }
        Ok(SpiffePattern(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for SpiffePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Glob over bytes: `**` matches anything, `*` anything but `/`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = &pattern[2..];
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            let mut i = 0;
            loop {
                if glob(rest, &text[i..]) {
                    return true;
                }
                if i == text.len() || text[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some(c) => text.first() == Some(c) && glob(&pattern[1..], &text[1..]),
    }
}

/// A DNS name pattern: labels, where a `*` label stands for exactly one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPattern(Vec<String>);

impl DnsPattern {
    /// Whether `name` (already checked as a DNS name) matches.
    pub fn matches(&self, name: &str) -> bool {
        let labels: Vec<&str> = name.split('.').collect();
        labels.len() == self.0.len()
            && self
                .0
                .iter()
                .zip(&labels)
                .all(|(p, l)| p == "*" || p.eq_ignore_ascii_case(l))
    }
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl FromStr for DnsPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let labels: Vec<String> = s.split('.').map(str::to_ascii_lowercase).collect();
        for label in &labels {
            if label != "*" && !valid_label(label) {
                return Err(format!(
                    "invalid DNS name pattern {s:?}: label {label:?} is not a DNS label or *"
                ));
            }
        }
        Ok(DnsPattern(labels))
    }
}

impl<'de> Deserialize<'de> for DnsPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The configuration it came from.
    pub config: PolicyConfig,
}

/// What a requester asks for, as the policy sees it.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// Profile name (`workload`, `server`, `client`, or a CA profile).
    pub profile: &'a str,
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
    /// Intermediate that would sign.
    pub intermediate: &'a str,
    /// Whether the CSR asks for a CA certificate.
    pub requests_ca: bool,
}

/// What policy grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Name of the policy that allowed it.
    pub policy: String,
    /// Lifetime to issue (requested, capped by the policy).
    pub ttl: Ttl,
    /// Whether the requested TTL was cut to the policy's maximum.
    pub ttl_capped: bool,
}

/// A refusal and its reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    /// Stable code for metrics and clients.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

impl Denial {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Denial {
            code,
            reason: reason.into(),
        }
    }
}

/// Default lifetime of a workload certificate.
pub const DEFAULT_TTL: Ttl = Ttl::hours(24);

/// The policies that apply to a SPIFFE identity (mTLS or service-account JWT).
pub fn applicable<'p>(policies: &'p [Policy], identity: &SpiffeId) -> Vec<&'p Policy> {
    policies
        .iter()
        .filter(|p| {
            p.config
                .identities
                .iter()
                .any(|pat| pat.matches(identity, None))
        })
        .collect()
}

/// Decides a request against the policies that apply to the requester.
pub fn decide(
    policies: &[&Policy],
    requester: Option<&SpiffeId>,
    requester_name: &str,
    ask: &Ask<'_>,
) -> Result<Grant, Denial> {
    if ask.requests_ca || !crate::config::API_PROFILES.contains(&ask.profile) {
        return Err(Denial::new(
            "ca_not_allowed",
            format!(
                "a CA certificate was requested (profile {:?}{}): CA certificates are never issued to workloads",
                ask.profile,
                if ask.requests_ca { ", CSR asks for CA:TRUE or keyCertSign" } else { "" }
            ),
        ));
    }
    if let Some(ttl) = ask.ttl {
        if ttl < MIN_TTL {
            return Err(Denial::new(
                "ttl_too_short",
                format!("requested ttl {ttl} is shorter than the minimum {MIN_TTL}"),
            ));
        }
    }
    if policies.is_empty() {
        return Err(Denial::new(
            "no_policy",
            format!("no policy applies to {requester_name}"),
        ));
    }
    let mut reasons = Vec::new();
    for policy in policies {
        match decide_one(policy, requester, ask) {
            Ok(grant) => return Ok(grant),
            Err(denial) => reasons.push((policy.config.name.as_str(), denial)),
        }
    }
    if reasons.len() == 1 {
        let (name, denial) = reasons.remove(0);
        return Err(Denial::new(
            denial.code,
            format!("policy {name:?}: {}", denial.reason),
        ));
    }
    let code = reasons[0].1.code;
    let joined = reasons
        .iter()
        .map(|(name, d)| format!("policy {name:?}: {}", d.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Denial::new(
        code,
        format!("no policy allows this request ({joined})"),
    ))
}

fn decide_one(
    policy: &Policy,
    requester: Option<&SpiffeId>,
    ask: &Ask<'_>,
) -> Result<Grant, Denial> {
    let p = &policy.config;
    if !p.profiles.iter().any(|x| x == ask.profile) {
        return Err(Denial::new(
            "profile_not_allowed",
            format!(
                "profile {:?} is not allowed (allowed: {})",
                ask.profile,
                p.profiles.join(", ")
            ),
        ));
    }
    if !p.intermediates.is_empty() && !p.intermediates.iter().any(|x| x == ask.intermediate) {
        return Err(Denial::new(
            "intermediate_not_allowed",
            format!("intermediate {:?} is not allowed", ask.intermediate),
        ));
    }
    if !p.key_types.contains(&ask.key_type) {
        let allowed: Vec<String> = p.key_types.iter().map(|k| k.to_string()).collect();
        return Err(Denial::new(
            "key_type_not_allowed",
            format!(
                "key type {} is not allowed (allowed: {})",
                ask.key_type,
                allowed.join(", ")
            ),
        ));
    }
    if let Some(id) = ask.spiffe_id {
        if !p.spiffe_ids.iter().any(|pat| pat.matches(id, requester)) {
            return Err(Denial::new(
                "spiffe_id_not_allowed",
                format!("SPIFFE ID {id} is outside this policy"),
            ));
        }
    }
    for name in ask.dns_names {
        if name.starts_with("*.")
            && !p
                .dns_names
                .iter()
                .any(|pat| pat.0.first().is_some_and(|l| l == "*") && pat.matches(name))
        {
            return Err(Denial::new(
                "wildcard_not_allowed",
                format!("wildcard DNS name {name:?} is not allowed by this policy"),
            ));
        }
        if !p.dns_names.iter().any(|pat| pat.matches(name)) {
            return Err(Denial::new(
                "dns_name_not_allowed",
                format!("DNS name {name:?} is outside this policy"),
            ));
        }
    }
    for ip in ask.ip_addresses {
        if !p.ip_addresses.contains(ip) {
            return Err(Denial::new(
                "ip_address_not_allowed",
                format!("IP address {ip} is outside this policy"),
            ));
        }
    }
    let wanted = ask.ttl.unwrap_or(DEFAULT_TTL);
    let (ttl, ttl_capped) = if wanted > p.max_ttl {
        (p.max_ttl, ask.ttl.is_some())
    } else {
        (wanted, false)
    };
    Ok(Grant {
        policy: p.name.clone(),
        ttl,
        ttl_capped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn policy(yaml: &str) -> Policy {
        Policy {
            config: serde_yaml::from_str(yaml).unwrap(),
        }
    }

    fn ask<'a>(spiffe: Option<&'a SpiffeId>, dns: &'a [String]) -> Ask<'a> {
        Ask {
            profile: "workload",
            spiffe_id: spiffe,
            dns_names: dns,
            ip_addresses: &[],
            ttl: None,
            key_type: KeyType::EcdsaP256,
            intermediate: "aws",
            requests_ca: false,
        }
    }

    #[test]
    fn spiffe_patterns() {
        let p: SpiffePattern = "spiffe://td/ns/*/sa/*".parse().unwrap();
        assert!(p.matches(&id("spiffe://td/ns/a/sa/b"), None));
        assert!(!p.matches(&id("spiffe://td/ns/a/sa/b/c"), None));
        assert!(!p.matches(&id("spiffe://td/ns/a/x/b"), None));
        let p: SpiffePattern = "spiffe://td/**".parse().unwrap();
        assert!(p.matches(&id("spiffe://td/ns/a/sa/b/c"), None));
        assert!(!p.matches(&id("spiffe://tdx/ns/a"), None));
        assert!(!p.matches(&id("spiffe://other/td/a"), None));
        let p: SpiffePattern = "spiffe://td/ns/prod-*/sa/web".parse().unwrap();
        assert!(p.matches(&id("spiffe://td/ns/prod-eu/sa/web"), None));
        assert!(!p.matches(&id("spiffe://td/ns/dev/sa/web"), None));
        let me = id("spiffe://td/ns/a/sa/b");
        let p: SpiffePattern = "{self}".parse().unwrap();
        assert!(p.matches(&me, Some(&me)));
        assert!(!p.matches(&id("spiffe://td/ns/a/sa/c"), Some(&me)));
        assert!(!p.matches(&me, None));
        assert!("spiffe://td/a b".parse::<SpiffePattern>().is_err());
        assert!("http://td/*".parse::<SpiffePattern>().is_err());
    }

    #[test]
    fn dns_patterns_match_one_label_per_star() {
        let p: DnsPattern = "*.svc.cluster.local".parse().unwrap();
        assert!(p.matches("web.svc.cluster.local"));
        assert!(!p.matches("a.web.svc.cluster.local"));
        assert!(!p.matches("svc.cluster.local"));
    }

    const WORKLOADS: &str = r#"
name: workloads
identities: ["spiffe://td/ns/*/sa/*"]
spiffe_ids: ["{self}"]
dns_names: ["*.svc.cluster.local"]
max_ttl: 2h
"#;

    #[test]
    fn self_only_and_ttl_capped() {
        let p = policy(WORKLOADS);
        let me = id("spiffe://td/ns/a/sa/b");
        let ps = applicable(std::slice::from_ref(&p), &me);
        assert_eq!(ps.len(), 1);
        let grant = decide(&ps, Some(&me), "me", &ask(Some(&me), &[])).unwrap();
        assert_eq!(grant.ttl, Ttl::hours(2));
        let mut a = ask(Some(&me), &[]);
        a.ttl = Some(Ttl::hours(1));
        assert_eq!(decide(&ps, Some(&me), "me", &a).unwrap().ttl, Ttl::hours(1));
        a.ttl = Some(Ttl::hours(48));
        let g = decide(&ps, Some(&me), "me", &a).unwrap();
        assert!(g.ttl_capped && g.ttl == Ttl::hours(2));
        a.ttl = Some(Ttl::from_seconds(60).unwrap());
        assert_eq!(
            decide(&ps, Some(&me), "me", &a).unwrap_err().code,
            "ttl_too_short"
        );
        let other = id("spiffe://td/ns/a/sa/c");
        let d = decide(&ps, Some(&me), "me", &ask(Some(&other), &[])).unwrap_err();
        assert_eq!(d.code, "spiffe_id_not_allowed");
        assert!(
            d.reason.contains("workloads") && d.reason.contains("sa/c"),
            "{d}"
        );
    }

    #[test]
    fn deny_by_default_and_never_ca() {
        let me = id("spiffe://td/ns/a/sa/b");
        assert_eq!(
            decide(&[], Some(&me), "me", &ask(Some(&me), &[]))
                .unwrap_err()
                .code,
            "no_policy"
        );
        let p = policy(WORKLOADS);
        let mut a = ask(Some(&me), &[]);
        a.requests_ca = true;
        assert_eq!(
            decide(&[&p], Some(&me), "me", &a).unwrap_err().code,
            "ca_not_allowed"
        );
        a.requests_ca = false;
        a.profile = "intermediate";
        assert_eq!(
            decide(&[&p], Some(&me), "me", &a).unwrap_err().code,
            "ca_not_allowed"
        );
    }

    #[test]
    fn dns_and_wildcards() {
        let p = policy(WORKLOADS);
        let me = id("spiffe://td/ns/a/sa/b");
        let ok = ["web.svc.cluster.local".to_string()];
        assert!(decide(&[&p], Some(&me), "me", &ask(Some(&me), &ok)).is_ok());
        let bad = ["web.example.com".to_string()];
        assert_eq!(
            decide(&[&p], Some(&me), "me", &ask(Some(&me), &bad))
                .unwrap_err()
                .code,
            "dns_name_not_allowed"
        );
        // a pattern `*.svc.cluster.local` allows names under it, including the wildcard
        let wild = ["*.svc.cluster.local".to_string()];
        assert!(decide(&[&p], Some(&me), "me", &ask(Some(&me), &wild)).is_ok());
        let wild = ["*.example.com".to_string()];
        assert_eq!(
            decide(&[&p], Some(&me), "me", &ask(Some(&me), &wild))
                .unwrap_err()
                .code,
            "wildcard_not_allowed"
        );
    }

    #[test]
    fn key_types_profiles_and_ips() {
        let p = policy(&format!("{WORKLOADS}key_types: [ecdsa-p384]\n"));
        let me = id("spiffe://td/ns/a/sa/b");
        assert_eq!(
            decide(&[&p], Some(&me), "me", &ask(Some(&me), &[]))
                .unwrap_err()
                .code,
            "key_type_not_allowed"
        );
        let p = policy(WORKLOADS);
        let mut a = ask(Some(&me), &[]);
        a.profile = "server";
        assert_eq!(
            decide(&[&p], Some(&me), "me", &a).unwrap_err().code,
            "profile_not_allowed"
        );
        let ips = ["10.0.0.1".parse().unwrap()];
        let mut a = ask(Some(&me), &[]);
        a.ip_addresses = &ips;
        assert_eq!(
            decide(&[&p], Some(&me), "me", &a).unwrap_err().code,
            "ip_address_not_allowed"
        );
    }
}
