//! The CertificateRequest reconciler: one pass per change, following the contract
//! (shared/contracts/cert-manager.md, "Handling a CertificateRequest") step by step.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::crd::{ClusterIssuer, Issuer as IssuerResource, IssuerKind};
use super::plan::{self, Asked};
use super::reconcile::{
    error_policy, name_of, publish, reconcile, Asker, Decision, RequestKind, Signed, Signing,
    Transient,
};
use super::request::{Approval, CertificateRequest, Reason};
use super::signing::{issuer_settings, IssuerSettings};
use super::status::{apply_status, condition, now_rfc3339, Written};
use super::{Context, RequestOrigin};
use crate::auth::AuthMethod;
use crate::{IssueError, SignRequest};

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
        .run(reconcile::<CertificateRequest>, error_policy, ctx)
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

/// What a pass writes to a CertificateRequest's status.
pub(crate) enum Status {
    /// `Ready=False`, reason `Pending`: not yet.
    Pending(String),
    /// `Ready=True`, reason `Issued`, with the chain and the root.
    Issued {
        chain_pem: String,
        ca_pem: String,
        message: String,
    },
    /// `Ready=False`, reason `Failed`: will never succeed.
    Failed(String),
    /// `Ready=False`, reason `Denied`: an approver said no.
    Denied(String),
}

impl Status {
    fn reason(&self) -> Reason {
        match self {
            Status::Pending(_) => Reason::Pending,
            Status::Issued { .. } => Reason::Issued,
            Status::Failed(_) => Reason::Failed,
            Status::Denied(_) => Reason::Denied,
        }
    }

    fn message(&self) -> &str {
        match self {
            Status::Pending(m) | Status::Failed(m) | Status::Denied(m) => m,
            Status::Issued { message, .. } => message,
        }
    }
}

/// What a CertificateRequest's status says after signing.
pub(crate) struct Plan {
    notes: Vec<String>,
}

impl RequestKind for CertificateRequest {
    type Context = Context;
    type Status = Status;
    type Plan = Plan;

    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }

    /// 1. Ours? 2./3. Approved (or denied), not yet final?
    fn wants(&self, _ctx: &Context) -> bool {
        self.our_issuer().is_some() && !self.is_finished() && self.approval() != Approval::Waiting
    }

    type Prefetch = Option<Result<IssuerSettings, String>>;

    /// For step 4: the issuer it names (`spec.issuerRef` never changes), read fresh;
    /// only for an approved request (a denied one is answered without it).
    async fn prefetch(&self, ctx: &Context) -> Result<Self::Prefetch, Transient> {
        let Some(kind) = self.our_issuer() else {
            return Ok(None);
        };
        if self.approval() != Approval::Approved {
            return Ok(None);
        }
        let namespace = self.namespace().unwrap_or_default();
        Ok(Some(
            issuer_settings(ctx, kind, &namespace, &self.spec.issuer_ref.name).await?,
        ))
    }

    async fn decide(
        &self,
        ctx: &Context,
        issuer: Self::Prefetch,
    ) -> Result<Decision<Self>, Transient> {
        if self.our_issuer().is_none() {
            return Ok(Decision::Wait);
        }
        match self.approval() {
            Approval::Waiting => return Ok(Decision::Wait),
            Approval::Denied(message) if message.is_empty() => {
                let message = "the request was denied by an approver".to_string();
                return Ok(Decision::Answer(Status::Denied(message)));
            }
            Approval::Denied(message) => {
                let message = format!("the request was denied: {message}");
                return Ok(Decision::Answer(Status::Denied(message)));
            }
            Approval::Approved => {}
        }
        let namespace = self.namespace().unwrap_or_default();
        // 4. The issuer must exist and be Ready. (Not read: the cached copy was not yet
        // approved. Approval is final, so this does not happen; a retry would read it.)
        let settings = match issuer {
            Some(Ok(s)) => s,
            Some(Err(message)) => return Ok(Decision::Later(Some(Status::Pending(message)))),
            None => return Ok(Decision::Later(None)),
        };
        // 5. Decode, verify, map duration / isCA / usages.
        let csr_pem = match decode_request(&self.spec.request) {
            Ok(pem) => pem,
            Err(message) => return Ok(Decision::Answer(Status::Failed(message))),
        };
        let asked = Asked {
            csr_pem: &csr_pem,
            duration: self.spec.duration.as_deref(),
            is_ca: self.spec.is_ca.unwrap_or(false),
            usages: self.spec.usages.as_deref(),
        };
        let plan = match plan::plan(&asked, &settings) {
            Ok(p) => p,
            Err(refusal) => return Ok(Decision::Answer(Status::Failed(refusal.0))),
        };
        let (uid, name) = (self.uid().unwrap_or_default(), self.name_any());
        let requester = ctx.requester(RequestOrigin {
            method: AuthMethod::CertManager,
            kind: "certificaterequest",
            namespace: Some(&namespace),
            name: &name,
            uid: &uid,
            username: self.spec.username.as_deref(),
            groups: &self.spec.groups,
        });
        Ok(Decision::Sign(Box::new(Signing {
            spiffe_id: plan.csr.uris().first().cloned(),
            asker: Asker {
                requester,
                plan: Plan { notes: plan.notes },
            },
            request: SignRequest {
                csr: plan.csr,
                profile: plan.profile,
                ttl: Some(plan.ttl),
                intermediate: Some(plan.intermediate),
            },
        })))
    }

    fn issued(&self, asker: &Asker<Plan>, signed: Signed) -> Status {
        let (chain_pem, ca_pem) = (signed.chain_pem(), signed.roots_pem());
        let message = match &signed {
            Signed::Before(earlier) => format!(
                "Certificate issued by intermediate {} (serial {})",
                earlier.record.intermediate, earlier.record.serial
            ),
            Signed::Now(issued) => {
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
                for note in &asker.plan.notes {
                    message.push_str("; ");
                    message.push_str(note);
                }
                message
            }
        };
        Status::Issued {
            chain_pem,
            ca_pem,
            message,
        }
    }

    fn refused(&self, _asker: &Asker<Plan>, e: &IssueError) -> Option<Status> {
        let message = match e {
            IssueError::Denied { code, .. } => format!("denied by policy ({code}): {e}"),
            IssueError::BadRequest { .. } | IssueError::NotFound(_) => {
                format!("rejected ({}): {e}", e.code())
            }
            _ => return None,
        };
        Some(Status::Failed(message))
    }

    fn gave_up(&self, _asker: &Asker<Plan>, e: &IssueError, after: Duration) -> Status {
        Status::Failed(format!("gave up after {after:?} of retries: {e}"))
    }

    fn retrying(&self, e: &IssueError) -> Option<Status> {
        Some(Status::Pending(format!("signing failed, retrying: {e}")))
    }

    async fn write(&self, ctx: &Context, status: Status) -> Result<Written, Transient> {
        Ok(write(&self.api(ctx.client.clone()), self, ctx, status).await?)
    }
}

/// `spec.request`: base64 (the CRD's `format: byte`) of a PEM CSR.
fn decode_request(request: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(request.trim())
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "spec.request does not hold a PEM CSR".to_string())
}

/// The status body of `status`, or `None` when it would not change (an unchanged
/// Pending: no write, no watch event, no loop).
fn body(cr: &CertificateRequest, status: &Status) -> Option<Value> {
    let previous = cr
        .ready()
        .map(|c| (c.status.as_str(), c.last_transition_time.as_deref()));
    let (reason, message) = (status.reason(), status.message());
    let ready = match status {
        Status::Issued { .. } => "True",
        _ => "False",
    };
    let condition = condition("Ready", ready, reason.as_str(), message, previous, None);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    Some(match status {
        Status::Pending(message) => {
            if cr.ready().is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason.as_str())
                    && c.message.as_deref() == Some(message.as_str())
            }) {
                return None;
            }
            json!({"conditions": [condition]})
        }
        Status::Issued {
            chain_pem, ca_pem, ..
        } => json!({
            "conditions": [condition],
            "certificate": b64(chain_pem),
            "ca": b64(ca_pem),
        }),
        Status::Failed(_) | Status::Denied(_) => json!({
            "conditions": [condition],
            "failureTime": now_rfc3339(),
        }),
    })
}

/// Writes `status` to `/status` and records an Event for final answers.
async fn write(
    api: &Api<CertificateRequest>,
    cr: &CertificateRequest,
    ctx: &Context,
    status: Status,
) -> Result<Written, kube::Error> {
    let Some(body) = body(cr, &status) else {
        return Ok(Written::Applied);
    };
    let written = apply_status(api, cr, body).await?;
    if written == Written::Gone {
        tracing::info!(
            cluster = %ctx.cluster,
            request = %name_of(cr),
            "request deleted before its status was written; done"
        );
    }
    let event = match status.reason() {
        Reason::Pending => None,
        Reason::Issued => Some(EventType::Normal),
        Reason::Failed | Reason::Denied => Some(EventType::Warning),
    };
    if let (Written::Applied, Some(type_)) = (written, event) {
        ctx.backoff.reset(&cr.uid().unwrap_or_default());
        let note = status.message().to_string();
        publish(ctx, cr, type_, status.reason().as_str(), note).await;
    }
    Ok(written)
}
