//! The CertificateRequest reconciler: one pass per change, following the contract
//! (shared/contracts/cert-manager.md, "Handling a CertificateRequest") step by step.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use super::crd::{ClusterIssuer, Issuer as IssuerResource, IssuerKind, IssuerStatus, SigningSpec};
use super::plan::{self, Asked, IssuerSettings, NotReady};
use super::request::{reason, Approval, CertificateRequest};
use super::status::{apply_status, condition, now_rfc3339, Written};
use super::{prior, Context, RequestOrigin};
use crate::auth::AuthMethod;
use crate::store::StoreError;
use crate::{IssueError, SignRequest};

/// A transient failure: retried with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transient {
    /// The API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Runs the controller until its watch streams end.
pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<CertificateRequest>::all(client.clone()),
        watcher::Config::default(),
    );
    let cache = controller.store();
    let issuer_cache = cache.clone();
    controller
        .watches(
            Api::<IssuerResource>::all(client.clone()),
            watcher::Config::default(),
            move |issuer| {
                referencing(
                    &issuer_cache,
                    IssuerKind::Issuer,
                    issuer.namespace().as_deref(),
                    &issuer.name_any(),
                )
            },
        )
        .watches(
            Api::<ClusterIssuer>::all(client),
            watcher::Config::default(),
            move |issuer| referencing(&cache, IssuerKind::ClusterIssuer, None, &issuer.name_any()),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "certificaterequest controller");
            }
        })
        .await;
}

/// The requests waiting on an issuer (it changed; maybe it is Ready now).
fn referencing(
    cache: &Cache<CertificateRequest>,
    kind: IssuerKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<CertificateRequest>> {
    cache
        .state()
        .into_iter()
        .filter(|cr| {
            cr.our_issuer() == Some(kind)
                && cr.spec.issuer_ref.name == name
                && (kind == IssuerKind::ClusterIssuer || cr.namespace().as_deref() == namespace)
                && !cr.is_finished()
        })
        .map(|cr| ObjectRef::from_obj(&*cr))
        .collect()
}

fn error_policy(cr: Arc<CertificateRequest>, error: &Transient, ctx: Arc<Context>) -> Action {
    let key = cr.uid().unwrap_or_default();
    let delay = ctx
        .backoff
        .next(&key, ctx.settings.backoff_base, ctx.settings.backoff_max);
    tracing::warn!(
        cluster = %ctx.cluster,
        request = %format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
        error = %error,
        retry_in = ?delay,
        "transient error; will retry"
    );
    Action::requeue(delay)
}

/// The outcome to write.
enum Outcome {
    Pending(String),
    Issued {
        chain_pem: String,
        ca_pem: String,
        message: String,
    },
    Failed(String),
    Denied(String),
}

async fn reconcile(
    cached: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Transient> {
    // 1. Ours? 2./3. Approved, not yet final? Cheap checks on the cached copy first.
    if cached.our_issuer().is_none()
        || cached.is_finished()
        || cached.approval() == Approval::Waiting
    {
        return Ok(Action::await_change());
    }
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cache may lag behind our own last write: read again so we never sign twice.
    let Some(cr) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if cr.uid() != cached.uid() {
        return Ok(Action::await_change());
    }
    let Some(kind) = cr.our_issuer() else {
        return Ok(Action::await_change());
    };
    if cr.is_finished() {
        ctx.backoff.reset(&cr.uid().unwrap_or_default());
        return Ok(Action::await_change());
    }
    match cr.approval() {
        Approval::Waiting => return Ok(Action::await_change()),
        Approval::Denied(message) => {
            let message = if message.is_empty() {
                "the request was denied by an approver".to_string()
            } else {
                format!("the request was denied: {message}")
            };
            write(&api, &cr, &ctx, Outcome::Denied(message)).await?;
            return Ok(Action::await_change());
        }
        Approval::Approved => {}
    }

    // 4. The issuer must exist and be Ready.
    let settings = match issuer_settings(&ctx, kind, &namespace, &cr.spec.issuer_ref.name).await? {
        Ok(s) => s,
        Err(message) => {
            let delay = next_delay(&ctx, &cr);
            write(&api, &cr, &ctx, Outcome::Pending(message)).await?;
            return Ok(Action::requeue(delay));
        }
    };

    // 5. Decode, verify, map duration / isCA / usages.
    let csr_pem = match decode_request(&cr.spec.request) {
        Ok(pem) => pem,
        Err(message) => {
            write(&api, &cr, &ctx, Outcome::Failed(message)).await?;
            return Ok(Action::await_change());
        }
    };
    let asked = Asked {
        csr_pem: &csr_pem,
        duration: cr.spec.duration.as_deref(),
        is_ca: cr.spec.is_ca.unwrap_or(false),
        usages: cr.spec.usages.as_deref(),
    };
    let plan = match plan::plan(&asked, &settings) {
        Ok(p) => p,
        Err(refusal) => {
            write(&api, &cr, &ctx, Outcome::Failed(refusal.0)).await?;
            return Ok(Action::await_change());
        }
    };

    let uid = cr.uid().unwrap_or_default();
    let name = cr.name_any();
    let requester = ctx.requester(RequestOrigin {
        method: AuthMethod::CertManager,
        kind: "certificaterequest",
        namespace: Some(&namespace),
        name: &name,
        uid: &uid,
        username: cr.spec.username.as_deref(),
        groups: &cr.spec.groups,
    });
    let requester_name = requester.to_string();
    let spiffe_id = plan.csr.uris().first().cloned();

    // Signed before, status lost? Hand back that certificate.
    if cr.ready().is_some() {
        let now = crate::clock::timestamp().as_second();
        if let Some(record) = prior::find(
            ctx.issuer.store(),
            &requester_name,
            spiffe_id.as_deref(),
            now,
        )
        .await?
        {
            if let Some((chain_pem, ca_pem)) = prior::chain_of(&ctx.issuer, &record) {
                tracing::info!(cluster = %ctx.cluster, serial = %record.serial, "found the certificate signed before for this request");
                let message = format!(
                    "Certificate issued by intermediate {} (serial {})",
                    record.intermediate, record.serial
                );
                write(
                    &api,
                    &cr,
                    &ctx,
                    Outcome::Issued {
                        chain_pem,
                        ca_pem,
                        message,
                    },
                )
                .await?;
                return Ok(Action::await_change());
            }
        }
    }

    // Mark the attempt before signing: after a crash, the mark tells the next pass
    // to look for a certificate already signed.
    let signing = format!("Signing with intermediate {}", plan.intermediate);
    if write(&api, &cr, &ctx, Outcome::Pending(signing)).await? == Written::Gone {
        return Ok(Action::await_change());
    }
    let notes = plan.notes.clone();
    let request = SignRequest {
        csr: plan.csr,
        profile: plan.profile,
        ttl: Some(plan.ttl),
        intermediate: Some(plan.intermediate),
    };
    match ctx.issuer.issue(&requester, request).await {
        Ok(issued) => {
            let chain_pem = canopy::cert::Certificate::pem_of(&issued.chain);
            let mut message = format!(
                "Certificate issued by intermediate {} (serial {}, profile {}, expires {})",
                issued.intermediate,
                issued.serial,
                issued.profile,
                issued.not_after.unix_timestamp()
            );
            if issued.ttl_capped {
                message.push_str("; lifetime capped by policy");
            }
            for note in notes {
                message.push_str("; ");
                message.push_str(&note);
            }
            write(
                &api,
                &cr,
                &ctx,
                Outcome::Issued {
                    chain_pem,
                    ca_pem: issued.roots_pem.to_string(),
                    message,
                },
            )
            .await?;
            Ok(Action::await_change())
        }
        Err(
            e @ (IssueError::BadRequest { .. }
            | IssueError::Denied { .. }
            | IssueError::NotFound(_)),
        ) => {
            let message = match &e {
                IssueError::Denied { code, .. } => format!("denied by policy ({code}): {e}"),
                _ => format!("rejected ({}): {e}", e.code()),
            };
            write(&api, &cr, &ctx, Outcome::Failed(message)).await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            // Storage or internal: retry until the maximum retry duration has passed.
            if retries_exhausted(&ctx, &cr) {
                let message = format!(
                    "gave up after {:?} of retries: {e}",
                    ctx.settings.max_retry_duration
                );
                write(&api, &cr, &ctx, Outcome::Failed(message)).await?;
                return Ok(Action::await_change());
            }
            let delay = next_delay(&ctx, &cr);
            write(
                &api,
                &cr,
                &ctx,
                Outcome::Pending(format!("signing failed, retrying: {e}")),
            )
            .await?;
            Ok(Action::requeue(delay))
        }
    }
}

fn next_delay(ctx: &Context, cr: &CertificateRequest) -> Duration {
    ctx.backoff.next(
        &cr.uid().unwrap_or_default(),
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
    )
}

fn retries_exhausted(ctx: &Context, cr: &CertificateRequest) -> bool {
    let Some(created) = cr.meta().creation_timestamp.as_ref() else {
        return false;
    };
    let age = crate::clock::timestamp().duration_since(created.0);
    age.as_secs() >= 0 && age.unsigned_abs() >= ctx.settings.max_retry_duration
}

/// `spec.request`: base64 (the CRD's `format: byte`) of a PEM CSR.
fn decode_request(request: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(request.trim())
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "spec.request does not hold a PEM CSR".to_string())
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

/// Writes the outcome to `/status` and records an Event for final outcomes.
async fn write(
    api: &Api<CertificateRequest>,
    cr: &CertificateRequest,
    ctx: &Context,
    outcome: Outcome,
) -> Result<Written, kube::Error> {
    let previous = cr
        .ready()
        .map(|c| (c.status.as_str(), c.last_transition_time.as_deref()));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let (status, event): (Value, Option<(EventType, &str, String)>) = match &outcome {
        Outcome::Pending(message) => {
            // Unchanged Pending: no write, no watch event, no loop.
            if cr.ready().is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason::PENDING)
                    && c.message.as_deref() == Some(message.as_str())
            }) {
                return Ok(Written::Applied);
            }
            (
                json!({"conditions": [condition("Ready", "False", reason::PENDING, message, previous, None)]}),
                None,
            )
        }
        Outcome::Issued {
            chain_pem,
            ca_pem,
            message,
        } => (
            json!({
                "conditions": [condition("Ready", "True", reason::ISSUED, message, previous, None)],
                "certificate": b64(chain_pem),
                "ca": b64(ca_pem),
            }),
            Some((EventType::Normal, reason::ISSUED, message.clone())),
        ),
        Outcome::Failed(message) => (
            json!({
                "conditions": [condition("Ready", "False", reason::FAILED, message, previous, None)],
                "failureTime": now_rfc3339(),
            }),
            Some((EventType::Warning, reason::FAILED, message.clone())),
        ),
        Outcome::Denied(message) => (
            json!({
                "conditions": [condition("Ready", "False", reason::DENIED, message, previous, None)],
                "failureTime": now_rfc3339(),
            }),
            Some((EventType::Warning, reason::DENIED, message.clone())),
        ),
    };
    let written = apply_status(api, cr, status).await?;
    if written == Written::Gone {
        tracing::info!(
            cluster = %ctx.cluster,
            request = %format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
            "request deleted before its status was written; done"
        );
    }
    if let (Written::Applied, Some((type_, reason, note))) = (written, event) {
        ctx.backoff.reset(&cr.uid().unwrap_or_default());
        tracing::info!(
            cluster = %ctx.cluster,
            request = %format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
            reason,
            "{note}"
        );
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sign".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &cr.object_ref(&())).await {
            tracing::warn!(error = %e, "could not record an event");
        }
    }
    Ok(written)
}
