//! What an issuer resource signs with: its spec checked into [`IssuerSettings`]
//! (or why it is [`NotReady`]), and the lookup of the issuer a request names.

use std::str::FromStr;
use std::time::Duration;

use canopy::profile::{Profile, MIN_TTL};
use canopy::spiffe::TrustDomain;
use kube::api::Api;

use super::crd::{ClusterIssuer, Issuer as IssuerResource, IssuerKind, IssuerStatus, SigningSpec};
use super::duration::parse_go_duration;
use super::Context;
use crate::policy::{DnsPattern, SpiffePattern};

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

/// Reasons of an issuer resource's `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyReason {
    /// The spec checks out: the issuer signs.
    Verified,
    /// The spec is invalid.
    InvalidSpec,
    /// `spec.intermediate` names no intermediate of this canopy issuer.
    UnknownIntermediate,
}

impl ReadyReason {
    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyReason::Verified => "Verified",
            ReadyReason::InvalidSpec => "InvalidSpec",
            ReadyReason::UnknownIntermediate => "UnknownIntermediate",
        }
    }
}

/// Why an issuer resource is not Ready: (condition reason, message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// The condition's reason.
    pub reason: ReadyReason,
    /// What to fix.
    pub message: String,
}

fn invalid(message: String) -> NotReady {
    NotReady {
        reason: ReadyReason::InvalidSpec,
        message,
    }
}

impl IssuerSettings {
    /// Checks a spec against what this issuer has.
    pub fn from_spec(
        spec: &SigningSpec,
        cluster_intermediate: &str,
        intermediates: &[&str],
        trust_domain: &TrustDomain,
    ) -> Result<IssuerSettings, NotReady> {
        let intermediate = spec
            .intermediate
            .clone()
            .unwrap_or_else(|| cluster_intermediate.to_string());
        if !intermediates.contains(&intermediate.as_str()) {
            return Err(NotReady {
                reason: ReadyReason::UnknownIntermediate,
                message: format!(
                    "spec.intermediate {:?} is not an intermediate of this canopy issuer (it has: {})",
                    intermediate.chars().take(64).collect::<String>(),
                    intermediates.join(", ")
                ),
            });
        }
        Ok(IssuerSettings {
            intermediate,
            profile: profile(spec.profile.as_deref())?,
            max_duration: max_duration(spec.max_duration.as_deref())?,
            allowed_spiffe_ids: spiffe_patterns(spec.allowed_spiffe_ids.as_deref(), trust_domain)?,
            allowed_dns_names: dns_patterns(spec.allowed_dns_names.as_deref())?,
        })
    }
}

/// `spec.profile`: a leaf profile, if any.
fn profile(name: Option<&str>) -> Result<Option<Profile>, NotReady> {
    match name {
        None => Ok(None),
        Some(p @ ("workload" | "server" | "client")) => {
            Ok(Some(Profile::from_str(p).expect("a leaf profile name")))
        }
        Some(other) => Err(invalid(format!(
            "spec.profile {:?} is not one of workload, server, client",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// `spec.maxDuration`: at least the minimum lifetime.
fn max_duration(text: Option<&str>) -> Result<Option<Duration>, NotReady> {
    let Some(text) = text else {
        return Ok(None);
    };
    let d = parse_go_duration(text).map_err(|e| invalid(format!("spec.maxDuration: {e}")))?;
    if d < MIN_TTL.as_duration().unsigned_abs() {
        return Err(invalid(format!(
            "spec.maxDuration {text} is shorter than the minimum lifetime {MIN_TTL}"
        )));
    }
    Ok(Some(d))
}

/// `spec.allowedSpiffeIds`: patterns inside this trust domain.
fn spiffe_patterns(
    list: Option<&[String]>,
    trust_domain: &TrustDomain,
) -> Result<Option<Vec<SpiffePattern>>, NotReady> {
    let Some(list) = list else {
        return Ok(None);
    };
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
    Ok(Some(patterns))
}

/// `spec.allowedDnsNames`: DNS patterns.
fn dns_patterns(list: Option<&[String]>) -> Result<Option<Vec<DnsPattern>>, NotReady> {
    let Some(list) = list else {
        return Ok(None);
    };
    let patterns = list
        .iter()
        .enumerate()
        .map(|(i, text)| {
            DnsPattern::from_str(text)
                .map_err(|e| invalid(format!("spec.allowedDnsNames[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(patterns))
}

/// The referenced issuer's checked settings, or why it is not usable yet.
pub(crate) async fn issuer_settings(
    ctx: &Context,
    kind: IssuerKind,
    namespace: &str,
    name: &str,
) -> Result<Result<IssuerSettings, String>, kube::Error> {
    let found: Option<(SigningSpec, Option<IssuerStatus>, Option<i64>)> = match kind {
        IssuerKind::Issuer => Api::<IssuerResource>::namespaced(ctx.client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|i| (i.spec.signing, i.status, i.metadata.generation)),
        IssuerKind::ClusterIssuer => Api::<ClusterIssuer>::all(ctx.client.clone())
            .get_opt(name)
            .await?
            .map(|i| (i.spec.signing, i.status, i.metadata.generation)),
    };
    let what = match kind {
        IssuerKind::Issuer => format!("Issuer {namespace}/{name}"),
        IssuerKind::ClusterIssuer => format!("ClusterIssuer {name}"),
    };
    let Some((spec, status, generation)) = found else {
        return Ok(Err(format!("{what} does not exist")));
    };
    let ready = status.as_ref().and_then(|s| {
        let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
        let current = s.observed_generation.is_none()
            || generation.is_none()
            || s.observed_generation == generation;
        Some((c.status == "True" && current, c.message.clone()))
    });
    match ready {
        Some((true, _)) => {}
        Some((false, message)) => {
            return Ok(Err(format!(
                "{what} is not Ready: {}",
                message.unwrap_or_default()
            )))
        }
        None => return Ok(Err(format!("{what} is not Ready yet"))),
    }
    let authorities = ctx.issuer.authorities();
    let names = authorities.names();
    Ok(IssuerSettings::from_spec(
        &spec,
        &ctx.cluster_intermediate,
        &names,
        ctx.issuer.trust_domain(),
    )
    .map_err(|NotReady { message, .. }| format!("{what} is not Ready: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "mesh.example".parse().unwrap()
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
            ReadyReason::UnknownIntermediate
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
            assert_eq!(check(bad).unwrap_err().reason, ReadyReason::InvalidSpec);
        }
    }
}
