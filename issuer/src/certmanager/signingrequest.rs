//! The Kubernetes CSR API path: approved `certificates.k8s.io/v1`
//! CertificateSigningRequests for our signer names are signed like
//! CertificateRequests (same plan, same [`crate::Issuer::issue`]).
//!
//! Signer names: `clusterissuers.pki.canopy.dev/<name>` and
//! `issuers.pki.canopy.dev/<namespace>.<name>`. Duration comes from the annotation
//! `experimental.cert-manager.io/request-duration` (else `spec.expirationSeconds`),
//! a CA request from `experimental.cert-manager.io/request-is-ca`. The result is
//! `status.certificate` (leaf + intermediates), or a `Failed` condition.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::crd::{IssuerKind, GROUP};
use super::duration::format_go_duration;
use super::plan::{self, Asked};
use super::reconcile::{
    error_policy, publish, reconcile, Asker, Decision, RequestKind, Signed, Signing, Transient,
};
use super::signing::{issuer_settings, IssuerSettings};
use super::status::{apply_status, condition, Written};
use super::{Context, RequestOrigin};
use crate::auth::{AuthMethod, Requester};
use crate::{IssueError, SignRequest};

/// Annotation cert-manager sets with the requested duration.
pub const DURATION_ANNOTATION: &str = "experimental.cert-manager.io/request-duration";
/// Annotation cert-manager sets when a CA is requested.
pub const IS_CA_ANNOTATION: &str = "experimental.cert-manager.io/request-is-ca";

/// The issuer a signer name points at: (kind, namespace, name).
pub fn parse_signer_name(signer: &str) -> Option<(IssuerKind, Option<String>, String)> {
    let (prefix, rest) = signer.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    if prefix == format!("clusterissuers.{GROUP}") {
        return Some((IssuerKind::ClusterIssuer, None, rest.to_string()));
    }
    if prefix == format!("issuers.{GROUP}") {
        let (ns, name) = rest.split_once('.')?;
        if ns.is_empty() || name.is_empty() {
            return None;
        }
        return Some((IssuerKind::Issuer, Some(ns.to_string()), name.to_string()));
    }
    None
}

fn condition_true(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn is_finished(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
        || condition_true(csr, "Failed")
        || condition_true(csr, "Denied")
}

/// Runs the controller until its watch stream ends.
pub(crate) async fn run(ctx: Arc<Context>) {
    Controller::new(
        Api::<CertificateSigningRequest>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile::<CertificateSigningRequest>, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "certificatesigningrequest controller");
        }
    })
    .await;
}

/// What a pass writes to a CertificateSigningRequest's status.
pub(crate) enum Status {
    /// `status.certificate`: leaf followed by its intermediates.
    Issued { chain_pem: String },
    /// A `Failed` condition (reason [`REFUSED`]).
    Failed(String),
}

/// The reason of our `Failed` condition.
const REFUSED: &str = "CanopyRefused";

impl RequestKind for CertificateSigningRequest {
    type Context = Context;
    type Status = Status;
    type Plan = ();

    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }

    fn wants(&self, _ctx: &Context) -> bool {
        parse_signer_name(&self.spec.signer_name).is_some()
            && !is_finished(self)
            && condition_true(self, "Approved")
    }

    type Prefetch = Option<Result<IssuerSettings, String>>;

    /// The issuer the signer name names (`spec.signerName` never changes), read fresh.
    async fn prefetch(&self, ctx: &Context) -> Result<Self::Prefetch, Transient> {
        let Some((kind, namespace, issuer_name)) = parse_signer_name(&self.spec.signer_name) else {
            return Ok(None);
        };
        let ns = namespace.as_deref().unwrap_or("");
        Ok(Some(issuer_settings(ctx, kind, ns, &issuer_name).await?))
    }

    async fn decide(
        &self,
        ctx: &Context,
        issuer: Self::Prefetch,
    ) -> Result<Decision<Self>, Transient> {
        let (Some((_, namespace, _)), Some(issuer)) =
            (parse_signer_name(&self.spec.signer_name), issuer)
        else {
            return Ok(Decision::Wait);
        };
        let settings = match issuer {
            Ok(s) => s,
            Err(message) => {
                tracing::info!(cluster = %ctx.cluster, csr = %self.name_any(), "{message}; will retry");
                return Ok(Decision::Later(None));
            }
        };
        let Ok(csr_pem) = String::from_utf8(self.spec.request.0.clone()) else {
            let message = "spec.request does not hold a PEM CSR".to_string();
            return Ok(Decision::Answer(Status::Failed(message)));
        };
        let (duration, is_ca) = asked_duration_and_ca(self);
        let asked = Asked {
            csr_pem: &csr_pem,
            duration: duration.as_deref(),
            is_ca,
            usages: self.spec.usages.as_deref(),
        };
        let plan = match plan::plan(&asked, &settings) {
            Ok(p) => p,
            Err(refusal) => return Ok(Decision::Answer(Status::Failed(refusal.0))),
        };
        Ok(Decision::Sign(Box::new(Signing {
            spiffe_id: plan.csr.uris().first().cloned(),
            asker: Asker {
                requester: requester(self, ctx, namespace),
                plan: (),
            },
            request: SignRequest {
                csr: plan.csr,
                profile: plan.profile,
                ttl: Some(plan.ttl),
                intermediate: Some(plan.intermediate),
            },
        })))
    }

    fn issued(&self, _asker: &Asker<()>, signed: Signed) -> Status {
        Status::Issued {
            chain_pem: signed.chain_pem(),
        }
    }

    fn refused(&self, _asker: &Asker<()>, e: &IssueError) -> Option<Status> {
        match e {
            IssueError::BadRequest { .. } | IssueError::Denied { .. } | IssueError::NotFound(_) => {
                Some(Status::Failed(format!("{} ({})", e, e.code())))
            }
            _ => None,
        }
    }

    fn gave_up(&self, _asker: &Asker<()>, e: &IssueError, _after: Duration) -> Status {
        Status::Failed(format!("gave up retrying: {e}"))
    }

    async fn write(&self, ctx: &Context, status: Status) -> Result<Written, Transient> {
        let api = self.api(ctx.client.clone());
        let (body, type_, reason, note) = match status {
            Status::Issued { chain_pem } => {
                let certificate =
                    base64::engine::general_purpose::STANDARD.encode(chain_pem.as_bytes());
                let body = json!({ "certificate": certificate });
                (
                    body,
                    EventType::Normal,
                    "Issued",
                    "certificate issued".into(),
                )
            }
            Status::Failed(message) => {
                let failed = condition("Failed", "True", REFUSED, &message, None, None);
                (
                    json!({ "conditions": [failed] }),
                    EventType::Warning,
                    "Failed",
                    message,
                )
            }
        };
        let written = apply_status(&api, self, body).await?;
        publish(ctx, self, type_, reason, note).await;
        Ok(written)
    }
}

/// The duration asked (the annotation, else `spec.expirationSeconds`) and whether a
/// CA is asked.
fn asked_duration_and_ca(csr: &CertificateSigningRequest) -> (Option<String>, bool) {
    let annotations = csr.annotations();
    let expiration = csr
        .spec
        .expiration_seconds
        .map(|s| format_go_duration(Duration::from_secs(u64::try_from(s).unwrap_or(0))));
    let duration = annotations.get(DURATION_ANNOTATION).cloned().or(expiration);
    let is_ca = annotations
        .get(IS_CA_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    (duration, is_ca)
}

/// A CSR is cluster-scoped: a service account's names are bound to its own
/// namespace, anybody else's to the namespace of the Issuer the signer names.
fn requester(
    csr: &CertificateSigningRequest,
    ctx: &Context,
    issuer_namespace: Option<String>,
) -> Requester {
    let username = csr.spec.username.as_deref();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let bound_namespace = username
        .and_then(|u| u.strip_prefix("system:serviceaccount:"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns.to_string())
        .or(issuer_namespace);
    let (uid, name) = (csr.uid().unwrap_or_default(), csr.name_any());
    ctx.requester(RequestOrigin {
        method: AuthMethod::CsrApi,
        kind: "certificatesigningrequest",
        namespace: bound_namespace.as_deref(),
        name: &name,
        uid: &uid,
        username,
        groups: &groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_names() {
        assert_eq!(
            parse_signer_name("clusterissuers.pki.canopy.dev/mesh"),
            Some((IssuerKind::ClusterIssuer, None, "mesh".into()))
        );
        assert_eq!(
            parse_signer_name("issuers.pki.canopy.dev/istio-system.mesh"),
            Some((
                IssuerKind::Issuer,
                Some("istio-system".into()),
                "mesh".into()
            ))
        );
        for other in [
            "kubernetes.io/kube-apiserver-client",
            "issuers.pki.canopy.dev/noname",
            "clusterissuers.pki.canopy.dev/",
            "clusterissuers.cert-manager.io/x",
        ] {
            assert_eq!(parse_signer_name(other), None, "{other}");
        }
    }
}
