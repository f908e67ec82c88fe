//! The reconcile of one PodCertificateRequest: read it fresh, check it (proof of
//! possession, annotations, the API server's pod, service account and node), issue
//! through the one issuance path as the pod's service account, and write the
//! terminal status once (Issued with the chain and times, or Denied/Failed with a
//! reason). The API server keeps a terminal status immutable, so a request is
//! answered exactly once.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::decision::{self, Observed, Refusal, Verdict};
use super::resource::{PodCertificateRequest, ISSUED, UNSUPPORTED_KEY_TYPE};
use super::Context;
use crate::audit::Outcome;
use crate::auth::{PodCertificateRequester, Requester};
use crate::certmanager::status::{apply_status, condition};
use crate::error_code::ErrorCode;
use crate::{IssueError, SignRequest};

/// A failure worth retrying (the API server or storage).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transient {
    /// The API server.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The store.
    #[error("storage: {0}")]
    Storage(#[from] crate::store::StoreError),
}

/// Runs one watch per signer name (a field selector on `spec.signerName`) until the
/// streams end.
pub(crate) async fn run(ctx: Arc<Context>) {
    tracing::info!(cluster = %ctx.cluster, signers = ?ctx.settings.signer_names, "pod certificate signer starting");
    let controllers = ctx.settings.signer_names.iter().map(|signer| {
        let config = watcher::Config::default().fields(&format!("spec.signerName={signer}"));
        Controller::new(
            Api::<PodCertificateRequest>::all(ctx.client.clone()),
            config,
        )
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "podcertificaterequest controller");
            }
        })
    });
    futures::future::join_all(controllers).await;
}

fn error_policy(pcr: Arc<PodCertificateRequest>, error: &Transient, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next(
        &pcr.uid().unwrap_or_default(),
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
    );
    tracing::warn!(cluster = %ctx.cluster, pcr = %pcr.name_any(), error = %error, retry_in = ?delay, "transient error; will retry");
    Action::requeue(delay)
}

fn time_of(t: OffsetDateTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(t.unix_timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

async fn reconcile(
    cached: Arc<PodCertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Transient> {
    // The field selector already keeps other signers out; check again, since writing
    // another signer's request would be the one unforgivable bug here.
    if !ctx.settings.signer_names.contains(&cached.spec.signer_name) || cached.is_finished() {
        return Ok(Action::await_change());
    }
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<PodCertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(pcr) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if pcr.uid() != cached.uid()
        || pcr.is_finished()
        || !ctx.settings.signer_names.contains(&pcr.spec.signer_name)
    {
        return Ok(Action::await_change());
    }
    let uid = pcr.uid().unwrap_or_default();
    let spec = &pcr.spec;
    let name = pcr.name_any();
    // Named after the request; its identity is the pod's service account, which is
    // used only once the request is checked against the API server's objects.
    let requester = Requester::pod_certificate(
        PodCertificateRequester {
            cluster: &ctx.cluster,
            policy: &ctx.settings.policy,
            namespace: &namespace,
            service_account: &spec.service_account_name,
            name: &name,
            uid: &uid,
        },
        ctx.issuer.trust_domain(),
    );

    let csr = match decision::proof_of_possession(spec)
        .and_then(|csr| decision::user_annotations(spec).map(|()| csr))
    {
        Ok(csr) => csr,
        Err(refusal) => return refuse(&api, &pcr, &ctx, refusal, Some(&requester)).await,
    };
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&spec.pod_name)
        .await?;
    let service_account = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&spec.service_account_name)
        .await?;
    let node = Api::<Node>::all(ctx.client.clone())
        .get_opt(&spec.node_name)
        .await?;
    let observed = Observed {
        pod: pod.as_ref(),
        service_account: service_account.as_ref(),
        node: node.as_ref(),
    };
    if let Err(refusal) = decision::binding(spec, observed) {
        return refuse(&api, &pcr, &ctx, refusal, Some(&requester)).await;
    }

    let request = SignRequest {
        csr,
        profile: canopy::profile::Profile::Workload,
        ttl: Some(decision::requested_ttl(spec)),
        intermediate: None,
    };
    // A lifetime the API server would refuse is refused before anything is signed.
    if let Ok((_, grant)) = ctx.issuer.decide(&requester, &request) {
        if let Err(refusal) = decision::check_lifetime(grant.ttl) {
            return refuse(&api, &pcr, &ctx, refusal, Some(&requester)).await;
        }
    }
    // A crash between signing and the status write leaves a recorded certificate for
    // this request (its UID is in the requester): hand that one back.
    let spiffe_id = requester.spiffe_id().map(ToString::to_string);
    let now = crate::clock::now().unix_timestamp();
    let earlier = crate::certmanager::prior::find(
        ctx.issuer.store(),
        &requester.to_string(),
        spiffe_id.as_deref(),
        now,
    )
    .await?;
    let chain = match earlier.as_ref().and_then(|r| {
        let leaf = canopy::cert::Certificate::from_der(r.der.clone()).ok()?;
        let inter = ctx.issuer.authorities().get(&r.intermediate)?;
        Some((leaf, inter.chain_pem.clone()))
    }) {
        Some((leaf, intermediates)) => (leaf, intermediates),
        None => match ctx.issuer.issue(&requester, request).await {
            Ok(issued) => {
                let rest: String = issued.chain[1..].iter().map(|c| c.to_pem()).collect();
                (issued.certificate, rest)
            }
            Err(e) => {
                let refusal = match &e {
                    IssueError::Denied { code, message }
                        if *code == ErrorCode::KeyTypeNotAllowed =>
                    {
                        Refusal::denied(UNSUPPORTED_KEY_TYPE, message.clone())
                    }
                    IssueError::Denied { message, .. } => {
                        Refusal::denied("PolicyDenied", message.clone())
                    }
                    IssueError::BadRequest { message, .. } | IssueError::NotFound(message) => {
                        Refusal::denied("BadRequest", message.clone())
                    }
                    IssueError::Unavailable { message, .. } => {
                        Refusal::failed("SignerUnavailable", message.clone())
                    }
                    IssueError::Internal(_) => {
                        Refusal::failed("InternalError", format!("{e} ({})", e.code()))
                    }
                    IssueError::Storage(_) | IssueError::Unauthenticated { .. } => {
                        return retry_or_fail(&api, &pcr, &ctx, &requester, &e.to_string()).await;
                    }
                };
                // issue() audited it.
                return refuse(&api, &pcr, &ctx, refusal, None).await;
            }
        },
    };
    let (leaf, intermediates) = chain;
    let (not_before, not_after) = (leaf.not_before(), leaf.not_after());
    let Some(refresh) = decision::begin_refresh_at(not_before, not_after) else {
        let refusal = Refusal::failed(
            "LifetimeTooShort",
            "the issued certificate is too short-lived for a refresh window (the intermediate expires soon?)",
        );
        return refuse(&api, &pcr, &ctx, refusal, Some(&requester)).await;
    };
    let status = json!({
        "conditions": [condition(ISSUED, "True", "Issued", &format!("issued {}", requester.spiffe_id().map(ToString::to_string).unwrap_or_default()), None, None)],
        "certificateChain": format!("{}{}", leaf.to_pem(), intermediates),
        "notBefore": time_of(not_before),
        "beginRefreshAt": time_of(refresh),
        "notAfter": time_of(not_after),
    });
    match apply_status(&api, &pcr, status).await {
        Ok(_) => {}
        // The API server judged the status (times, key, lifetime): it will not take
        // this certificate, so say so instead of retrying forever.
        Err(kube::Error::Api(s)) if s.code == 422 => {
            let refusal = Refusal::failed(
                "StatusRejected",
                format!(
                    "the API server refused the issued certificate: {}",
                    s.message
                ),
            );
            return refuse(&api, &pcr, &ctx, refusal, Some(&requester)).await;
        }
        Err(e) => return Err(e.into()),
    }
    ctx.backoff.reset(&uid);
    ctx.issuer
        .metrics()
        .pod_certificate(&spec.signer_name, "issued");
    publish(
        &ctx,
        &pcr,
        EventType::Normal,
        "Issued",
        format!("certificate issued, serial {}", leaf.serial()),
    )
    .await;
    Ok(Action::await_change())
}

/// Retries a transient failure with backoff until `max_retry` after the request's
/// creation, then marks it Failed.
async fn retry_or_fail(
    api: &Api<PodCertificateRequest>,
    pcr: &PodCertificateRequest,
    ctx: &Context,
    requester: &Requester,
    error: &str,
) -> Result<Action, Transient> {
    let age = pcr
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| crate::clock::timestamp().duration_since(t.0).unsigned_abs());
    if age.is_some_and(|a| a >= ctx.settings.max_retry_duration) {
        let refusal = Refusal::failed("GaveUpRetrying", format!("gave up retrying: {error}"));
        return refuse(api, pcr, ctx, refusal, Some(requester)).await;
    }
    tracing::warn!(cluster = %ctx.cluster, pcr = %pcr.name_any(), error, "signing failed; will retry");
    let delay = ctx.backoff.next(
        &pcr.uid().unwrap_or_default(),
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
    );
    Ok(Action::requeue(delay))
}

/// Writes the Denied or Failed condition (and nothing else, as the API requires),
/// auditing the refusal as `audit` unless the issuance path already did.
async fn refuse(
    api: &Api<PodCertificateRequest>,
    pcr: &PodCertificateRequest,
    ctx: &Context,
    refusal: Refusal,
    audit: Option<&Requester>,
) -> Result<Action, Transient> {
    if let Some(requester) = audit {
        let outcome = match refusal.verdict {
            Verdict::Denied => Outcome::Denied,
            Verdict::Failed => Outcome::Failed,
        };
        let now = crate::clock::now();
        ctx.issuer
            .refused_as(requester, outcome, refusal.reason, &refusal.message, now)
            .await;
    }
    let type_ = refusal.verdict.condition();
    let status: Value = json!({
        "conditions": [condition(type_, "True", refusal.reason, &refusal.message, None, None)],
    });
    apply_status(api, pcr, status).await?;
    ctx.backoff.reset(&pcr.uid().unwrap_or_default());
    let outcome = match refusal.verdict {
        Verdict::Denied => "denied",
        Verdict::Failed => "failed",
    };
    ctx.issuer
        .metrics()
        .pod_certificate(&pcr.spec.signer_name, outcome);
    publish(
        ctx,
        pcr,
        EventType::Warning,
        type_,
        format!("{}: {}", refusal.reason, refusal.message),
    )
    .await;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Context,
    pcr: &PodCertificateRequest,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tracing::info!(cluster = %ctx.cluster, pcr = %format!("{}/{}", pcr.namespace().unwrap_or_default(), pcr.name_any()), reason, "{note}");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Sign".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pcr.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record an event");
    }
}
