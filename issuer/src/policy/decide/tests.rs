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
            let mut r = Requester::service_account(AuthMethod::Mtls, Some(cluster("aws")), web());
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
