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
use canopy::spiffe::SpiffeId;
use canopy::ttl::Ttl;

use super::duration::{format_go_duration, parse_go_duration};
pub use super::signing::{IssuerSettings, NotReady, ReadyReason};
use crate::policy::Vars;

/// Lifetime when a request names none (the contract's default).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

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
    let auth = extended_usages(asked.usages.unwrap_or_default())?;
    let spiffe_ids = spiffe_ids(&csr)?;
    let mut notes = Vec::new();
    let profile = profile(issuer, &spiffe_ids, auth, &mut notes);
    within_issuer_limits(issuer, &spiffe_ids, &csr)?;
    let ttl = lifetime(asked.duration, issuer.max_duration, &mut notes)?;
    Ok(SignPlan {
        csr,
        profile,
        ttl,
        intermediate: issuer.intermediate.clone(),
        notes,
    })
}

/// Which extended usages were asked for.
#[derive(Clone, Copy, Debug, Default)]
struct Auth {
    server: bool,
    client: bool,
}

/// The extended usages asked for; anything but key usages and server/client auth
/// is refused.
fn extended_usages(usages: &[String]) -> Result<Auth, Refusal> {
    let mut auth = Auth::default();
    for usage in usages {
        match usage.as_str() {
            "server auth" => auth.server = true,
            "client auth" => auth.client = true,
            u if KEY_USAGES.contains(&u) => {}
            other => {
                return Err(Refusal(format!(
                    "usage {:?} is not issued by canopy (leaf certificates carry digital signature, key encipherment, server auth and/or client auth)",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    Ok(auth)
}

/// The CSR's URI SANs, each a SPIFFE ID.
fn spiffe_ids(csr: &Csr) -> Result<Vec<SpiffeId>, Refusal> {
    csr.uris()
        .iter()
        .map(|uri| {
            SpiffeId::from_str(uri).map_err(|e| {
                Refusal(format!(
                    "URI SAN {:?} is not a SPIFFE ID: {e}",
                    uri.chars().take(128).collect::<String>()
                ))
            })
        })
        .collect()
}

/// The profile: the issuer's, else from the names and usages; notes a usage the
/// profile does not grant.
fn profile(
    issuer: &IssuerSettings,
    spiffe_ids: &[SpiffeId],
    auth: Auth,
    notes: &mut Vec<String>,
) -> Profile {
    let profile = match issuer.profile {
        Some(p) => p,
        None if !spiffe_ids.is_empty() => Profile::Workload,
        None if auth.client && !auth.server => Profile::Client,
        None => Profile::Server,
    };
    let grants_client = matches!(profile, Profile::Workload | Profile::Client);
    let grants_server = matches!(profile, Profile::Workload | Profile::Server);
    if auth.client && !grants_client {
        notes.push(format!(
            "client auth not included: the {profile} profile grants server auth only (add a SPIFFE ID for both)"
        ));
    }
    if auth.server && !grants_server {
        notes.push(format!(
            "server auth not included: the {profile} profile grants client auth only"
        ));
    }
    profile
}

/// The issuer's `allowedSpiffeIds` and `allowedDnsNames`.
fn within_issuer_limits(
    issuer: &IssuerSettings,
    spiffe_ids: &[SpiffeId],
    csr: &Csr,
) -> Result<(), Refusal> {
    if let Some(allowed) = &issuer.allowed_spiffe_ids {
        for id in spiffe_ids {
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
    Ok(())
}

/// The lifetime asked (default 90 days), raised to the minimum and capped by the
/// issuer's `maxDuration`, with a note for each change.
fn lifetime(
    asked: Option<&str>,
    max_duration: Option<Duration>,
    notes: &mut Vec<String>,
) -> Result<Ttl, Refusal> {
    let mut duration = match asked {
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
    if let Some(max) = max_duration {
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
    Ok(Ttl::from_seconds(seconds).expect("at least the minimum lifetime"))
}

#[cfg(test)]
mod tests {
    use super::super::crd::SigningSpec;
    use super::*;
    use canopy::spiffe::TrustDomain;
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
}
