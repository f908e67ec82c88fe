//! Deciding what to sign, purely: a request (CSR, duration, isCA, usages) and the
//! issuer resource it names become either a [`SignPlan`] for [`crate::Issuer::issue`]
//! or a [`Refusal`] that can never succeed (→ `Failed`).
//!
//! Both the cert-manager `CertificateRequest` path and the Kubernetes
//! `CertificateSigningRequest` path go through here.

use std::str::FromStr;
use std::time::Duration;

use canopy::csr::Csr;
use canopy::profile::{Profile, MIN_TTL};
use canopy::spiffe::{SpiffeId, TrustDomain};
use canopy::ttl::Ttl;

use super::crd::SigningSpec;
use super::duration::{format_go_duration, parse_go_duration};
use crate::policy::{DnsPattern, SpiffePattern, Vars};

/// Lifetime when a request names none (the contract's default).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

/// An issuer resource's spec, checked: what a Ready issuer signs with.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuerSettings {
    /// Intermediate that signs.
    pub intermediate: String,
    /// Profile forced by the issuer, if any.
    pub profile: Option<Profile>,
    /// Longest lifetime issued by this issuer.
    pub max_duration: Option<Duration>,
    /// SPIFFE IDs requests may carry (None: any the policy allows).
    pub allowed_spiffe_ids: Option<Vec<SpiffePattern>>,
    /// DNS names requests may carry (None: any the policy allows).
    pub allowed_dns_names: Option<Vec<DnsPattern>>,
}

/// Why an issuer resource is not Ready: (condition reason, message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// CamelCase reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

impl IssuerSettings {
    /// Checks a spec against what this issuer has.
    pub fn from_spec(
        spec: &SigningSpec,
        cluster_intermediate: &str,
        intermediates: &[&str],
        trust_domain: &TrustDomain,
    ) -> Result<IssuerSettings, NotReady> {
        let invalid = |message: String| NotReady {
            reason: "InvalidSpec",
            message,
        };
        let intermediate = spec
            .intermediate
            .clone()
            .unwrap_or_else(|| cluster_intermediate.to_string());
        if !intermediates.contains(&intermediate.as_str()) {
            return Err(NotReady {
                reason: "UnknownIntermediate",
                message: format!(
                    "spec.intermediate {:?} is not an intermediate of this canopy issuer (it has: {})",
                    intermediate.chars().take(64).collect::<String>(),
                    intermediates.join(", ")
                ),
            });
        }
        let profile = match spec.profile.as_deref() {
            None => None,
            Some(p @ ("workload" | "server" | "client")) => {
                Some(Profile::from_str(p).expect("a leaf profile name"))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "spec.profile {:?} is not one of workload, server, client",
                    other.chars().take(40).collect::<String>()
                )))
            }
        };
        let max_duration = match spec.max_duration.as_deref() {
            None => None,
            Some(text) => {
                let d = parse_go_duration(text)
                    .map_err(|e| invalid(format!("spec.maxDuration: {e}")))?;
                if d < MIN_TTL.as_duration().unsigned_abs() {
                    return Err(invalid(format!(
                        "spec.maxDuration {text} is shorter than the minimum lifetime {MIN_TTL}"
                    )));
                }
                Some(d)
            }
        };
        let allowed_spiffe_ids = match &spec.allowed_spiffe_ids {
            None => None,
            Some(list) => {
                let mut patterns = Vec::with_capacity(list.len());
                for (i, text) in list.iter().enumerate() {
                    let p = SpiffePattern::from_str(text)
                        .map_err(|e| invalid(format!("spec.allowedSpiffeIds[{i}]: {e}")))?;
                    if p.is_self() || !p.in_trust_domain(trust_domain) {
                        return Err(invalid(format!(
                            "spec.allowedSpiffeIds[{i}]: must start with spiffe://{trust_domain}/"
                        )));
                    }
                    patterns.push(p);
                }
                Some(patterns)
            }
        };
        let allowed_dns_names = match &spec.allowed_dns_names {
            None => None,
            Some(list) => {
                let mut patterns = Vec::with_capacity(list.len());
                for (i, text) in list.iter().enumerate() {
                    patterns.push(
                        DnsPattern::from_str(text)
                            .map_err(|e| invalid(format!("spec.allowedDnsNames[{i}]: {e}")))?,
                    );
                }
                Some(patterns)
            }
        };
        Ok(IssuerSettings {
            intermediate,
            profile,
            max_duration,
            allowed_spiffe_ids,
            allowed_dns_names,
        })
    }
}

/// What a request asks for, whichever API it came through.
#[derive(Clone, Debug, Default)]
pub struct Asked<'a> {
    /// The CSR, PEM.
    pub csr_pem: &'a str,
    /// Requested lifetime (a Go duration), if any.
    pub duration: Option<&'a str>,
    /// Whether a CA was asked for.
    pub is_ca: bool,
    /// cert-manager usage names; `None` = the default (digital signature, key encipherment).
    pub usages: Option<&'a [String]>,
}

/// A request that can be handed to [`crate::Issuer::issue`].
#[derive(Clone, Debug)]
pub struct SignPlan {
    /// The CSR, parsed and its signature verified (the one parse on this path).
    pub csr: Csr,
    /// Profile to issue.
    pub profile: Profile,
    /// Lifetime to ask for (the policy may cap it further).
    pub ttl: Ttl,
    /// Intermediate that signs.
    pub intermediate: String,
    /// Notes for the status message (lifetime raised or capped, usages not granted).
    pub notes: Vec<String>,
}

/// Why a request can never be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Usages that come with every leaf profile (they only restate the key's purpose).
const KEY_USAGES: [&str; 4] = [
    "signing",
    "digital signature",
    "key encipherment",
    "key agreement",
];

/// Turns a request into a plan, or refuses it for good.
pub fn plan(asked: &Asked<'_>, issuer: &IssuerSettings) -> Result<SignPlan, Refusal> {
    let csr = Csr::from_pem(asked.csr_pem)
        .map_err(|e| Refusal(format!("the request does not hold a valid CSR: {e}")))?;
    if asked.is_ca || csr.requests_ca() {
        return Err(Refusal(
            "a CA certificate was requested (isCA or CA:TRUE/keyCertSign in the CSR): canopy never issues CA certificates to workloads".into(),
        ));
    }

    let mut server_auth = false;
    let mut client_auth = false;
    for usage in asked.usages.unwrap_or_default() {
        match usage.as_str() {
            "server auth" => server_auth = true,
            "client auth" => client_auth = true,
            u if KEY_USAGES.contains(&u) => {}
            other => {
                return Err(Refusal(format!(
                    "usage {:?} is not issued by canopy (leaf certificates carry digital signature, key encipherment, server auth and/or client auth)",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }

    let mut spiffe_ids = Vec::new();
    for uri in csr.uris() {
        match SpiffeId::from_str(uri) {
            Ok(id) => spiffe_ids.push(id),
            Err(e) => {
                return Err(Refusal(format!(
                    "URI SAN {:?} is not a SPIFFE ID: {e}",
                    uri.chars().take(128).collect::<String>()
                )))
            }
        }
    }

    let mut notes = Vec::new();
    let profile = match issuer.profile {
        Some(p) => p,
        None if !spiffe_ids.is_empty() => Profile::Workload,
        None if client_auth && !server_auth => Profile::Client,
        None => Profile::Server,
    };
    let grants_client = matches!(profile, Profile::Workload | Profile::Client);
    let grants_server = matches!(profile, Profile::Workload | Profile::Server);
    if client_auth && !grants_client {
        notes.push(format!(
            "client auth not included: the {profile} profile grants server auth only (add a SPIFFE ID for both)"
        ));
    }
    if server_auth && !grants_server {
        notes.push(format!(
            "server auth not included: the {profile} profile grants client auth only"
        ));
    }

    if let Some(allowed) = &issuer.allowed_spiffe_ids {
        for id in &spiffe_ids {
            if !allowed.iter().any(|p| p.matches(id, &Vars::default())) {
                return Err(Refusal(format!(
                    "SPIFFE ID {id} is not in the issuer's spec.allowedSpiffeIds"
                )));
            }
        }
    }
    if let Some(allowed) = &issuer.allowed_dns_names {
        for name in csr.dns_names() {
            if !allowed
                .iter()
                .any(|p| p.matches(name, &Vars::default()).is_some())
            {
                return Err(Refusal(format!(
                    "DNS name {:?} is not in the issuer's spec.allowedDnsNames",
                    name.chars().take(253).collect::<String>()
                )));
            }
        }
    }

    let mut duration = match asked.duration {
        Some(text) => {
            parse_go_duration(text).map_err(|e| Refusal(format!("spec.duration: {e}")))?
        }
        None => DEFAULT_DURATION,
    };
    let min = MIN_TTL.as_duration().unsigned_abs();
    if duration < min {
        notes.push(format!(
            "duration {} raised to the minimum {}",
            format_go_duration(duration),
            format_go_duration(min)
        ));
        duration = min;
    }
    if let Some(max) = issuer.max_duration {
        if duration > max {
            notes.push(format!(
                "duration {} capped to the issuer's maxDuration {}",
                format_go_duration(duration),
                format_go_duration(max)
            ));
            duration = max;
        }
    }
    let seconds = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2);
    let ttl = Ttl::from_seconds(seconds).expect("at least the minimum lifetime");

    Ok(SignPlan {
        csr,
        profile,
        ttl,
        intermediate: issuer.intermediate.clone(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn csr(uris: &[&str], dns: &[&str], ca: bool) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI(u.to_string().try_into().unwrap()));
        }
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn td() -> TrustDomain {
        "mesh.example".parse().unwrap()
    }

    fn settings(spec: SigningSpec) -> IssuerSettings {
        IssuerSettings::from_spec(&spec, "aws", &["aws", "azure"], &td()).unwrap()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn istio_csr_request_is_a_one_hour_workload() {
        let pem = csr(&["spiffe://mesh.example/ns/a/sa/b"], &[], false);
        let u = usages(&["client auth", "server auth"]);
        let p = plan(
            &Asked {
                csr_pem: &pem,
                duration: Some("1h0m0s"),
                is_ca: false,
                usages: Some(&u),
            },
            &settings(SigningSpec::default()),
        )
        .unwrap();
        assert_eq!(p.profile, Profile::Workload);
        assert_eq!(p.ttl, Ttl::hours(1));
        assert_eq!(p.intermediate, "aws");
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn profiles_follow_sans_and_usages() {
        let dns = csr(&[], &["web.example.com"], false);
        let s = settings(SigningSpec::default());
        fn asked<'a>(dns: &'a str, u: Option<&'a [String]>) -> Asked<'a> {
            Asked {
                csr_pem: dns,
                duration: None,
                is_ca: false,
                usages: u,
            }
        }
        let asked = |u| asked(&dns, u);
        let p = plan(&asked(None), &s).unwrap();
        assert_eq!(p.profile, Profile::Server);
        assert_eq!(p.ttl.as_seconds(), DEFAULT_DURATION.as_secs() as i64);
        let client = usages(&["digital signature", "client auth"]);
        assert_eq!(
            plan(&asked(Some(&client)), &s).unwrap().profile,
            Profile::Client
        );
        let both = usages(&["server auth", "client auth"]);
        let p = plan(&asked(Some(&both)), &s).unwrap();
        assert_eq!(p.profile, Profile::Server);
        assert_eq!(p.notes.len(), 1);
        let bad = usages(&["cert sign"]);
        assert!(plan(&asked(Some(&bad)), &s).is_err());
    }

    #[test]
    fn ca_requests_and_bad_csrs_are_refused() {
        let s = settings(SigningSpec::default());
        let pem = csr(&[], &["a.example"], false);
        let asked = Asked {
            csr_pem: &pem,
            is_ca: true,
            ..Asked::default()
        };
        assert!(plan(&asked, &s).unwrap_err().0.contains("CA"));
        let ca_csr = csr(&[], &["a.example"], true);
        let asked = Asked {
            csr_pem: &ca_csr,
            ..Asked::default()
        };
        assert!(plan(&asked, &s).is_err());
        let asked = Asked {
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ..Asked::default()
        };
        assert!(plan(&asked, &s).unwrap_err().0.contains("CSR"));
    }

    #[test]
    fn durations_are_raised_to_the_minimum_and_capped_by_the_issuer() {
        let pem = csr(&["spiffe://mesh.example/ns/a/sa/b"], &[], false);
        let s = settings(SigningSpec {
            max_duration: Some("24h".into()),
            ..SigningSpec::default()
        });
        let p = plan(
            &Asked {
                csr_pem: &pem,
                duration: Some("1m"),
                ..Asked::default()
            },
            &s,
        )
        .unwrap();
        assert_eq!(p.ttl, MIN_TTL);
        let p = plan(
            &Asked {
                csr_pem: &pem,
                ..Asked::default()
            },
            &s,
        )
        .unwrap();
        assert_eq!(p.ttl, Ttl::hours(24));
        assert!(plan(
            &Asked {
                csr_pem: &pem,
                duration: Some("1 hour"),
                ..Asked::default()
            },
            &s
        )
        .is_err());
    }

    #[test]
    fn issuer_limits_narrow_the_names() {
        let s = settings(SigningSpec {
            allowed_spiffe_ids: Some(vec!["spiffe://mesh.example/ns/a/**".into()]),
            allowed_dns_names: Some(vec!["*.example.com".into()]),
            ..SigningSpec::default()
        });
        let ok = csr(
            &["spiffe://mesh.example/ns/a/sa/b"],
            &["x.example.com"],
            false,
        );
        assert!(plan(
            &Asked {
                csr_pem: &ok,
                ..Asked::default()
            },
            &s
        )
        .is_ok());
        let other_ns = csr(&["spiffe://mesh.example/ns/b/sa/b"], &[], false);
        assert!(plan(
            &Asked {
                csr_pem: &other_ns,
                ..Asked::default()
            },
            &s
        )
        .is_err());
        let other_dns = csr(&[], &["x.example.org"], false);
        assert!(plan(
            &Asked {
                csr_pem: &other_dns,
                ..Asked::default()
            },
            &s
        )
        .is_err());
    }

    #[test]
    fn issuer_specs_are_checked() {
        let check = |spec: SigningSpec| IssuerSettings::from_spec(&spec, "aws", &["aws"], &td());
        assert_eq!(
            check(SigningSpec {
                intermediate: Some("gcp".into()),
                ..SigningSpec::default()
            })
            .unwrap_err()
            .reason,
            "UnknownIntermediate"
        );
        for bad in [
            SigningSpec {
                profile: Some("mesh-ca".into()),
                ..SigningSpec::default()
            },
            SigningSpec {
                max_duration: Some("forever".into()),
                ..SigningSpec::default()
            },
            SigningSpec {
                max_duration: Some("1m".into()),
                ..SigningSpec::default()
            },
            SigningSpec {
                allowed_spiffe_ids: Some(vec!["spiffe://other.example/x".into()]),
                ..SigningSpec::default()
            },
            SigningSpec {
                allowed_dns_names: Some(vec!["bad_label.example".into()]),
                ..SigningSpec::default()
            },
        ] {
            assert_eq!(check(bad).unwrap_err().reason, "InvalidSpec");
        }
    }
}
