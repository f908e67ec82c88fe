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

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::certificaterequest::{issuer_settings, Transient};
use super::crd::{IssuerKind, GROUP};
use super::duration::format_go_duration;
use super::plan::{self, Asked};
use super::status::{apply_status, condition};
use super::{prior, Context, RequestOrigin};
use crate::auth::AuthMethod;
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
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "certificatesigningrequest controller");
        }
    })
    .await;
}

fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &Transient,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoff.next(
        &csr.uid().unwrap_or_default(),
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
    );
    tracing::warn!(cluster = %ctx.cluster, csr = %csr.name_any(), error = %error, retry_in = ?delay, "transient error; will retry");
    Action::requeue(delay)
}

async fn reconcile(
    cached: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Transient> {
    let Some((kind, namespace, issuer_name)) = parse_signer_name(&cached.spec.signer_name) else {
        return Ok(Action::await_change());
    };
    if is_finished(&cached) || !condition_true(&cached, "Approved") {
        return Ok(Action::await_change());
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let Some(csr) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if csr.uid() != cached.uid() || is_finished(&csr) || !condition_true(&csr, "Approved") {
        return Ok(Action::await_change());
    }
    let uid = csr.uid().unwrap_or_default();
    let delay = || {
        ctx.backoff
            .next(&uid, ctx.settings.backoff_base, ctx.settings.backoff_max)
    };

    let settings = match issuer_settings(
        &ctx,
        kind,
        namespace.as_deref().unwrap_or(""),
        &issuer_name,
    )
    .await?
    {
        Ok(s) => s,
        Err(message) => {
            tracing::info!(cluster = %ctx.cluster, csr = %csr.name_any(), "{message}; will retry");
            return Ok(Action::requeue(delay()));
        }
    };
    let Ok(csr_pem) = String::from_utf8(csr.spec.request.0.clone()) else {
        fail(
            &api,
            &csr,
            &ctx,
            "spec.request does not hold a PEM CSR".into(),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let annotations = csr.annotations();
    let expiration = csr.spec.expiration_seconds.map(|s| {
        format_go_duration(std::time::Duration::from_secs(
            u64::try_from(s).unwrap_or(0),
        ))
    });
    let duration = annotations.get(DURATION_ANNOTATION).cloned().or(expiration);
    let is_ca = annotations
        .get(IS_CA_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let asked = Asked {
        csr_pem: &csr_pem,
        duration: duration.as_deref(),
        is_ca,
        usages: csr.spec.usages.as_deref(),
    };
    let plan = match plan::plan(&asked, &settings) {
        Ok(p) => p,
        Err(refusal) => {
            fail(&api, &csr, &ctx, refusal.0).await?;
            return Ok(Action::await_change());
        }
    };

    // A CSR is cluster-scoped: a service account's names are bound to its own
    // namespace, anybody else's to the namespace of the Issuer the signer names.
    let username = csr.spec.username.as_deref();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let bound_namespace = username
        .and_then(|u| u.strip_prefix("system:serviceaccount:"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns.to_string())
        .or(namespace);
    let name = csr.name_any();
    let requester = ctx.requester(RequestOrigin {
        method: AuthMethod::CsrApi,
        kind: "certificatesigningrequest",
        namespace: bound_namespace.as_deref(),
        name: &name,
        uid: &uid,
        username,
        groups: &groups,
    });
    // No Pending marker exists in this API, so always look for an earlier signature.
    let spiffe_id = plan.csr.uris().first().cloned();
    let now = crate::clock::timestamp().as_second();
    let earlier = prior::find(
        ctx.issuer.store(),
        &requester.to_string(),
        spiffe_id.as_deref(),
        now,
    )
    .await?;
    let chain_pem = match earlier
        .as_ref()
        .and_then(|r| prior::chain_of(&ctx.issuer, r))
    {
        Some((chain, _)) => chain,
        None => {
            let request = SignRequest {
                csr: plan.csr,
                profile: plan.profile,
                ttl: Some(plan.ttl),
                intermediate: Some(plan.intermediate),
            };
            match ctx.issuer.issue(&requester, request).await {
                Ok(issued) => canopy::cert::Certificate::pem_of(&issued.chain),
                Err(
                    e @ (IssueError::BadRequest { .. }
                    | IssueError::Denied { .. }
                    | IssueError::NotFound(_)),
                ) => {
                    fail(&api, &csr, &ctx, format!("{} ({})", e, e.code())).await?;
                    return Ok(Action::await_change());
                }
                Err(e) => {
                    let age = csr
                        .meta()
                        .creation_timestamp
                        .as_ref()
                        .map(|t| crate::clock::timestamp().duration_since(t.0).unsigned_abs());
                    if age.is_some_and(|a| a >= ctx.settings.max_retry_duration) {
                        fail(&api, &csr, &ctx, format!("gave up retrying: {e}")).await?;
                        return Ok(Action::await_change());
                    }
                    tracing::warn!(cluster = %ctx.cluster, csr = %csr.name_any(), error = %e, "signing failed; will retry");
                    return Ok(Action::requeue(delay()));
                }
            }
        }
    };
    use base64::Engine;
    let body = json!({
        "certificate": base64::engine::general_purpose::STANDARD.encode(chain_pem.as_bytes()),
    });
    apply_status(&api, &csr, body).await?;
    ctx.backoff.reset(&uid);
    publish(
        &ctx,
        &csr,
        EventType::Normal,
        "Issued",
        "certificate issued".into(),
    )
    .await;
    Ok(Action::await_change())
}

async fn fail(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    ctx: &Context,
    message: String,
) -> Result<(), kube::Error> {
    let body = json!({
        "conditions": [condition("Failed", "True", "CanopyRefused", &message, None, None)],
    });
    apply_status(api, csr, body).await?;
    ctx.backoff.reset(&csr.uid().unwrap_or_default());
    publish(ctx, csr, EventType::Warning, "Failed", message).await;
    Ok(())
}

async fn publish(
    ctx: &Context,
    csr: &CertificateSigningRequest,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tracing::info!(cluster = %ctx.cluster, csr = %csr.name_any(), reason, "{note}");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Sign".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &csr.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record an event");
    }
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
