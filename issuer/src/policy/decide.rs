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
use crate::config::{ClusterName, PolicyConfig};

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
mod tests {
    use super::*;
    use crate::auth::{AuthMethod, KubernetesRequest};
    use crate::policy::Presented;

    const TD: &str = "mesh.example";
    const ISSUER_NAME: &str = "canopy-issuer.canopy.svc.cluster.local";

    fn td() -> TrustDomain {
        TD.parse().unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn who(path: &str) -> SpiffeId {
        id(&format!("spiffe://{TD}{path}"))
    }

    fn policies() -> Vec<Policy> {
        let yaml = format!(
            r#"
- name: ops
  spiffe_ids: ["spiffe://{TD}/**"]
  dns_names: ["*.*.svc.cluster.local", "*.canopy.svc.cluster.local"]
  profiles: [workload, server]
  revoke: true
- name: workloads
  identities: ["spiffe://{TD}/ns/*/sa/*"]
  spiffe_ids: ["{{self}}"]
  dns_names: ["{{sa}}.{{namespace}}.svc.cluster.local", "*.{{namespace}}.svc.cluster.local"]
  max_ttl: 2h
- name: cert-manager
  spiffe_ids: ["spiffe://{TD}/ns/*/sa/*"]
  dns_names: ["*.{{namespace}}.svc.cluster.local", "*.*.svc.cluster.local"]
  profiles: [workload, server]
  wildcards: true
- name: azure-only
  identities: ["spiffe://{TD}/batch/*"]
  spiffe_ids: ["{{self}}"]
  clusters: [azure]
"#
        );
        serde_yaml::from_str::<Vec<PolicyConfig>>(&yaml)
            .unwrap()
            .into_iter()
            .map(|config| Policy { config })
            .collect()
    }

    fn cluster(name: &str) -> ClusterName {
        name.parse().unwrap()
    }

    /// Requester kinds, one per column of the contract's table.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Token,
        JwtAws,
        JwtAzure,
        MtlsAws,
        CertManagerOwnNs,
        CertManagerTrusted,
        CsrApi,
    }

    fn requester(kind: Kind) -> Requester {
        let web = || who("/ns/shop/sa/web");
        match kind {
            Kind::Token => Requester::token("t1", "ops"),
            Kind::JwtAws => {
                Requester::service_account(AuthMethod::Kubernetes, Some(cluster("aws")), web())
            }
            Kind::JwtAzure => {
                Requester::service_account(AuthMethod::Kubernetes, Some(cluster("azure")), web())
            }
            Kind::MtlsAws => {
                let mut r =
                    Requester::service_account(AuthMethod::Mtls, Some(cluster("aws")), web());
                r.renewal_of = Some(Presented {
                    spiffe_id: Some(web()),
                    dns_names: vec!["web.shop.svc.cluster.local".into()],
                    ip_addresses: vec![],
                });
                r
            }
            Kind::CertManagerOwnNs | Kind::CertManagerTrusted | Kind::CsrApi => {
                let (method, kind_name, ns, user, trusted) = match kind {
                    Kind::CertManagerOwnNs => (
                        AuthMethod::CertManager,
                        "certificaterequest",
                        Some("shop"),
                        "system:serviceaccount:shop:deployer",
                        false,
                    ),
                    Kind::CertManagerTrusted => (
                        AuthMethod::CertManager,
                        "certificaterequest",
                        Some("istio-system"),
                        "system:serviceaccount:cert-manager:istio-csr",
                        true,
                    ),
                    _ => (
                        AuthMethod::CsrApi,
                        "certificatesigningrequest",
                        Some("shop"),
                        "system:serviceaccount:shop:web",
                        false,
                    ),
                };
                Requester::kubernetes_request(
                    KubernetesRequest {
                        method,
                        kind: kind_name,
                        cluster: &cluster("aws"),
                        policy: "cert-manager",
                        namespace: ns,
                        name: "r",
                        uid: "u",
                        username: Some(user),
                        groups: &[],
                        trusted,
                    },
                    &td(),
                )
            }
        }
    }

    /// What is asked: SPIFFE ID, DNS names, intermediate named.
    #[derive(Clone, Copy, Debug)]
    enum Names {
        /// spiffe://TD/ns/shop/sa/web.
        OwnId,
        /// spiffe://TD/ns/istio-system/sa/istiod.
        OtherNamespaceId,
        /// Own ID + web.shop.svc.cluster.local.
        OwnDns,
        /// Own ID + api.payments.svc.cluster.local.
        OtherNamespaceDns,
        /// Own ID + *.shop.svc.cluster.local.
        Wildcard,
        /// Own ID + the issuer's own serving name.
        IssuersName,
        /// Own ID + the IP the issuer serves on.
        IssuersIp,
        /// Own ID, the other cloud's intermediate named.
        OtherIntermediate,
        /// Own ID, the own cluster's intermediate named.
        OwnIntermediate,
        /// Own ID, a CA asked for.
        Ca,
    }

    const KINDS: [Kind; 7] = [
        Kind::Token,
        Kind::JwtAws,
        Kind::JwtAzure,
        Kind::MtlsAws,
        Kind::CertManagerOwnNs,
        Kind::CertManagerTrusted,
        Kind::CsrApi,
    ];

    /// The expected outcome per requester kind, in [`KINDS`] order: `Ok(intermediate)`
    /// or the rule that refuses.
    type Row = (Names, [Result<&'static str, Rule>; 7]);

    #[rustfmt::skip]
    fn table() -> Vec<Row> {
        use Rule::*;
        vec![
            //                          token          jwt aws        jwt azure        mtls aws       cm own ns       cm trusted      csr api
            (Names::OwnId,             [Ok("aws"),     Ok("aws"),     Ok("azure"),     Ok("aws"),     Ok("aws"),      Ok("aws"),      Ok("aws")]),
            (Names::OtherNamespaceId,  [Ok("aws"),     Err(SpiffeIdOutsideNamespace), Err(SpiffeIdOutsideNamespace), Err(RenewalWidens), Err(SpiffeIdOutsideNamespace), Ok("aws"), Err(SpiffeIdOutsideNamespace)]),
            (Names::OwnDns,            [Ok("aws"),     Ok("aws"),     Ok("azure"),     Ok("aws"),     Ok("aws"),      Ok("aws"),      Ok("aws")]),
            (Names::OtherNamespaceDns, [Ok("aws"),     Err(DnsNameNotAllowed), Err(DnsNameNotAllowed), Err(RenewalWidens), Err(DnsNameOutsideNamespace), Ok("aws"), Err(DnsNameOutsideNamespace)]),
            (Names::Wildcard,          [Err(WildcardNotAllowed), Err(WildcardNotAllowed), Err(WildcardNotAllowed), Err(RenewalWidens), Ok("aws"), Ok("aws"), Ok("aws")]),
            (Names::IssuersName,       [Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName)]),
            (Names::IssuersIp,         [Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName), Err(ReservedName)]),
            (Names::OtherIntermediate, [Ok("azure"),   Err(IntermediateNotAllowed), Ok("azure"), Err(IntermediateNotAllowed), Err(IntermediateNotAllowed), Err(IntermediateNotAllowed), Err(IntermediateNotAllowed)]),
            (Names::OwnIntermediate,   [Ok("aws"),     Ok("aws"),     Err(IntermediateNotAllowed), Ok("aws"), Ok("aws"),      Ok("aws"),      Ok("aws")]),
            (Names::Ca,                [Err(CaNotAllowed), Err(CaNotAllowed), Err(CaNotAllowed), Err(CaNotAllowed), Err(CaNotAllowed), Err(CaNotAllowed), Err(CaNotAllowed)]),
        ]
    }

    fn ask_for(
        names: Names,
        dns: &mut Vec<String>,
        ips: &mut Vec<IpAddr>,
    ) -> (SpiffeId, Option<&'static str>, bool) {
        let own = who("/ns/shop/sa/web");
        match names {
            Names::OwnId => (own, None, false),
            Names::OtherNamespaceId => (who("/ns/istio-system/sa/istiod"), None, false),
            Names::OwnDns => {
                dns.push("web.shop.svc.cluster.local".into());
                (own, None, false)
            }
            Names::OtherNamespaceDns => {
                dns.push("api.payments.svc.cluster.local".into());
                (own, None, false)
            }
            Names::Wildcard => {
                dns.push("*.shop.svc.cluster.local".into());
                (own, None, false)
            }
            Names::IssuersName => {
                dns.push(ISSUER_NAME.into());
                (own, None, false)
            }
            Names::IssuersIp => {
                ips.push("10.0.0.53".parse().unwrap());
                (own, None, false)
            }
            Names::OtherIntermediate => (own, Some("azure"), false),
            Names::OwnIntermediate => (own, Some("aws"), false),
            Names::Ca => (own, None, true),
        }
    }

    fn run(kind: Kind, names: Names) -> Result<String, Rule> {
        let policies = policies();
        let clusters: HashMap<ClusterName, String> = [
            (cluster("aws"), "aws".to_string()),
            (cluster("azure"), "azure".to_string()),
        ]
        .into();
        let td = td();
        let reserved_dns = [ISSUER_NAME.to_string()];
        let reserved_ips: [IpAddr; 1] = ["10.0.0.53".parse().unwrap()];
        let rules = Rules {
            trust_domain: &td,
            policies: &policies,
            intermediates: &["aws", "azure"],
            default_intermediate: "aws",
            cluster_intermediates: &clusters,
            reserved_dns: &reserved_dns,
            reserved_ips: &reserved_ips,
        };
        let requester = requester(kind);
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        let (mut spiffe, intermediate, ca) = ask_for(names, &mut dns, &mut ips);
        // The trusted requester and the namespaced cert-manager creator ask for the
        // names of the namespace they act for.
        if matches!(
            kind,
            Kind::CertManagerOwnNs | Kind::CertManagerTrusted | Kind::CsrApi
        ) && matches!(names, Names::OwnId)
        {
            spiffe = who("/ns/shop/sa/web");
        }
        let ask = Ask {
            profile: Profile::Workload,
            spiffe_id: Some(&spiffe),
            dns_names: &dns,
            ip_addresses: &ips,
            ttl: None,
            key_type: KeyType::EcdsaP256,
            intermediate,
            requests_ca: ca,
        };
        decide(&requester, &ask, &rules)
            .map(|d| d.intermediate)
            .map_err(|d| d.rule)
    }

    /// Every rule a request can break; a rule added to [`Rule`] must be listed here
    /// (the match is exhaustive) and then has to show up in a test below.
    fn every_rule() -> Vec<Rule> {
        let all = [
            Rule::CaNotAllowed,
            Rule::TtlTooShort,
            Rule::NoPolicy,
            Rule::ClusterNotAllowed,
            Rule::ProfileNotAllowed,
            Rule::UnknownIntermediate,
            Rule::IntermediateNotAllowed,
            Rule::KeyTypeNotAllowed,
            Rule::SpiffeIdNotAllowed,
            Rule::SpiffeIdOutsideNamespace,
            Rule::DnsNameNotAllowed,
            Rule::DnsNameOutsideNamespace,
            Rule::WildcardNotAllowed,
            Rule::IpAddressNotAllowed,
            Rule::ReservedName,
            Rule::RenewalWidens,
        ];
        for rule in all {
            // Exhaustive: a new variant does not compile until it is listed above.
            match rule {
                Rule::CaNotAllowed
                | Rule::TtlTooShort
                | Rule::NoPolicy
                | Rule::ClusterNotAllowed
                | Rule::ProfileNotAllowed
                | Rule::UnknownIntermediate
                | Rule::IntermediateNotAllowed
                | Rule::KeyTypeNotAllowed
                | Rule::SpiffeIdNotAllowed
                | Rule::SpiffeIdOutsideNamespace
                | Rule::DnsNameNotAllowed
                | Rule::DnsNameOutsideNamespace
                | Rule::WildcardNotAllowed
                | Rule::IpAddressNotAllowed
                | Rule::ReservedName
                | Rule::RenewalWidens => {}
            }
        }
        all.to_vec()
    }

    #[test]
    fn authorization_table() {
        let mut failures = Vec::new();
        for (names, expected) in table() {
            for (kind, want) in KINDS.iter().zip(expected) {
                let got = run(*kind, names);
                if got.as_deref().map_err(|r| *r) != want {
                    failures.push(format!(
                        "{kind:?} × {names:?}: expected {want:?}, got {got:?}"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The rules the table does not reach, each refused once with its own case.
    fn other_rules() -> Vec<(Rule, Result<String, Rule>)> {
        let policies = policies();
        let clusters: HashMap<ClusterName, String> = [(cluster("aws"), "aws".to_string())].into();
        let td = td();
        let rules = Rules {
            trust_domain: &td,
            policies: &policies,
            intermediates: &["aws", "azure"],
            default_intermediate: "aws",
            cluster_intermediates: &clusters,
            reserved_dns: &[],
            reserved_ips: &[],
        };
        let token = Requester::token("t1", "ops");
        let jwt = requester(Kind::JwtAws);
        let own = who("/ns/shop/sa/web");
        let base = Ask {
            profile: Profile::Workload,
            spiffe_id: Some(&own),
            dns_names: &[],
            ip_addresses: &[],
            ttl: None,
            key_type: KeyType::EcdsaP256,
            intermediate: None,
            requests_ca: false,
        };
        let go = |r: &Requester, a: &Ask<'_>| {
            decide(r, a, &rules)
                .map(|d| d.intermediate)
                .map_err(|d| d.rule)
        };
        let other_td = id("spiffe://other.example/ns/shop/sa/web");
        let outside = ["api.example.com".to_string()];
        let ip = ["192.0.2.1".parse().unwrap()];
        let batch = Requester::service_account(
            AuthMethod::Kubernetes,
            Some(cluster("aws")),
            who("/batch/job"),
        );
        let nobody = Requester::token("t2", "no-such-policy");
        vec![
            (
                Rule::TtlTooShort,
                go(
                    &token,
                    &Ask {
                        ttl: Some(Ttl::from_seconds(60).unwrap()),
                        ..base
                    },
                ),
            ),
            (Rule::NoPolicy, go(&nobody, &base)),
            (
                Rule::ClusterNotAllowed,
                go(
                    &batch,
                    &Ask {
                        spiffe_id: batch.spiffe_id(),
                        ..base
                    },
                ),
            ),
            (
                Rule::ProfileNotAllowed,
                go(
                    &token,
                    &Ask {
                        profile: Profile::Client,
                        ..base
                    },
                ),
            ),
            (
                Rule::UnknownIntermediate,
                go(
                    &token,
                    &Ask {
                        intermediate: Some("gcp"),
                        ..base
                    },
                ),
            ),
            (
                Rule::KeyTypeNotAllowed,
                go(
                    &token,
                    &Ask {
                        key_type: KeyType::Ed25519,
                        ..base
                    },
                ),
            ),
            (
                Rule::SpiffeIdNotAllowed,
                go(
                    &token,
                    &Ask {
                        spiffe_id: Some(&other_td),
                        ..base
                    },
                ),
            ),
            (
                Rule::SpiffeIdNotAllowed,
                go(
                    &jwt,
                    &Ask {
                        spiffe_id: Some(&who("/ns/shop/sa/db")),
                        ..base
                    },
                ),
            ),
            (
                Rule::DnsNameNotAllowed,
                go(
                    &token,
                    &Ask {
                        dns_names: &outside,
                        ..base
                    },
                ),
            ),
            (
                Rule::IpAddressNotAllowed,
                go(
                    &token,
                    &Ask {
                        ip_addresses: &ip,
                        ..base
                    },
                ),
            ),
        ]
    }

    #[test]
    fn every_rule_has_a_case() {
        let mut seen: Vec<Rule> = table()
            .into_iter()
            .flat_map(|(_, row)| row.into_iter().filter_map(Result::err))
            .collect();
        for (rule, got) in other_rules() {
            assert_eq!(got, Err(rule), "case for {rule:?}");
            seen.push(rule);
        }
        for rule in every_rule() {
            assert!(
                seen.contains(&rule),
                "no test case refuses with {rule:?}: add a row"
            );
        }
    }

    #[test]
    fn ttl_capped_by_policy() {
        let policies = policies();
        let clusters: HashMap<ClusterName, String> = [(cluster("aws"), "aws".to_string())].into();
        let td = td();
        let rules = Rules {
            trust_domain: &td,
            policies: &policies,
            intermediates: &["aws"],
            default_intermediate: "aws",
            cluster_intermediates: &clusters,
            reserved_dns: &[],
            reserved_ips: &[],
        };
        let jwt = requester(Kind::JwtAws);
        let own = who("/ns/shop/sa/web");
        let ask = Ask {
            profile: Profile::Workload,
            spiffe_id: Some(&own),
            dns_names: &[],
            ip_addresses: &[],
            ttl: Some(Ttl::hours(48)),
            key_type: KeyType::EcdsaP256,
            intermediate: None,
            requests_ca: false,
        };
        let d = decide(&jwt, &ask, &rules).unwrap();
        assert_eq!(
            (d.ttl, d.ttl_capped, d.policy.as_str()),
            (Ttl::hours(2), true, "workloads")
        );
    }
}
