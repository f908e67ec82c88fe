//! The PodCertificateRequest kind of the one reconcile
//! ([`crate::certmanager::reconcile`]): read it fresh, check it (proof of
//! possession, annotations, the API server's pod, service account and node), issue
//! through the one issuance path as the pod's service account, and write the
//! terminal status once (Issued with the chain and times, or Denied/Failed with a
//! reason). The API server keeps a terminal status immutable, so a request is
//! answered exactly once.

use std::sync::Arc;
use std::time::Duration;

use canopy::cert::Certificate;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;

use super::decision::{self, Observed, Reason, Refusal, Verdict};
use super::resource::{PodCertificateRequest, ISSUED};
use super::Context;
use crate::audit::Outcome;
use crate::auth::{PodCertificateRequester, Requester};
use crate::certmanager::reconcile::{
    error_policy, publish, reconcile, Asker, Decision, RequestKind, Signed, Signing, Transient,
};
use crate::certmanager::status::{apply_status, condition, Written};
use crate::error_code::ErrorCode;
use crate::{IssueError, SignRequest};

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
        .run(
            reconcile::<PodCertificateRequest>,
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "podcertificaterequest controller");
            }
        })
    });
    futures::future::join_all(controllers).await;
}

/// What a pass writes to a PodCertificateRequest's status.
pub(crate) enum Status {
    /// `Issued`, with the chain and its times.
    Issued(Box<Answered>),
    /// `Denied` or `Failed`, audited as `audit` unless the issuance path already did.
    Refused {
        /// Why.
        refusal: Refusal,
        /// Who asked, when the refusal was not audited yet.
        audit: Option<Box<Requester>>,
    },
}

/// An issued certificate as the status carries it.
pub(crate) struct Answered {
    /// The leaf.
    leaf: Certificate,
    /// Leaf followed by its intermediates, PEM.
    chain_pem: String,
    /// When the kubelet should start refreshing.
    refresh: OffsetDateTime,
    /// Who asked (audited if the API server refuses the status).
    requester: Requester,
}

fn refused(refusal: Refusal, audit: &Requester) -> Status {
    Status::Refused {
        refusal,
        audit: Some(Box::new(audit.clone())),
    }
}

fn time_of(t: OffsetDateTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(t.unix_timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

impl RequestKind for PodCertificateRequest {
    type Context = Context;
    type Status = Status;
    type Plan = ();

    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }

    /// The field selector already keeps other signers out; check again, since
    /// writing another signer's request would be the one unforgivable bug here.
    fn wants(&self, ctx: &Context) -> bool {
        ctx.settings.signer_names.contains(&self.spec.signer_name) && !self.is_finished()
    }

    /// The binding checks read the pod, node and service account in `decide`, after
    /// the request is read fresh.
    type Prefetch = ();

    async fn prefetch(&self, _ctx: &Context) -> Result<(), Transient> {
        Ok(())
    }

    async fn decide(&self, ctx: &Context, (): ()) -> Result<Decision<Self>, Transient> {
        let requester = requester(self, ctx);
        let spec = &self.spec;
        let csr = match decision::proof_of_possession(spec)
            .and_then(|csr| decision::user_annotations(spec).map(|()| csr))
        {
            Ok(csr) => csr,
            Err(refusal) => return Ok(Decision::Answer(refused(refusal, &requester))),
        };
        if let Err(refusal) = check_binding(self, ctx).await? {
            return Ok(Decision::Answer(refused(refusal, &requester)));
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
                return Ok(Decision::Answer(refused(refusal, &requester)));
            }
        }
        Ok(Decision::Sign(Box::new(Signing {
            request,
            spiffe_id: requester.spiffe_id().map(ToString::to_string),
            asker: Asker {
                requester,
                plan: (),
            },
        })))
    }

    fn issued(&self, asker: &Asker<()>, signed: Signed) -> Status {
        let leaf = signed.leaf().clone();
        let Some(refresh) = decision::begin_refresh_at(leaf.not_before(), leaf.not_after()) else {
            let refusal = Refusal::failed(
                Reason::LifetimeTooShort,
                "the issued certificate is too short-lived for a refresh window (the intermediate expires soon?)",
            );
            return refused(refusal, &asker.requester);
        };
        Status::Issued(Box::new(Answered {
            leaf,
            chain_pem: signed.chain_pem(),
            refresh,
            requester: asker.requester.clone(),
        }))
    }

    /// issue() audited these.
    fn refused(&self, _asker: &Asker<()>, e: &IssueError) -> Option<Status> {
        let refusal = match e {
            IssueError::Denied { code, message } if *code == ErrorCode::KeyTypeNotAllowed => {
                Refusal::denied(Reason::UnsupportedKeyType, message.clone())
            }
            IssueError::Denied { message, .. } => {
                Refusal::denied(Reason::PolicyDenied, message.clone())
            }
            IssueError::BadRequest { message, .. } | IssueError::NotFound(message) => {
                Refusal::denied(Reason::BadRequest, message.clone())
            }
            IssueError::Unavailable { message, .. } => {
                Refusal::failed(Reason::SignerUnavailable, message.clone())
            }
            IssueError::Internal(_) => {
                Refusal::failed(Reason::InternalError, format!("{e} ({})", e.code()))
            }
            IssueError::Storage(_) | IssueError::Unauthenticated { .. } => return None,
        };
        Some(Status::Refused {
            refusal,
            audit: None,
        })
    }

    fn gave_up(&self, asker: &Asker<()>, e: &IssueError, _after: Duration) -> Status {
        let refusal = Refusal::failed(Reason::GaveUpRetrying, format!("gave up retrying: {e}"));
        refused(refusal, &asker.requester)
    }

    async fn write(&self, ctx: &Context, status: Status) -> Result<Written, Transient> {
        match status {
            Status::Issued(answered) => write_issued(self, ctx, *answered).await,
            Status::Refused { refusal, audit } => {
                refuse(self, ctx, refusal, audit.as_deref()).await
            }
        }
    }
}

/// Named after the request; its identity is the pod's service account, which is
/// used only once the request is checked against the API server's objects.
fn requester(pcr: &PodCertificateRequest, ctx: &Context) -> Requester {
    let (namespace, name) = (pcr.namespace().unwrap_or_default(), pcr.name_any());
    let uid = pcr.uid().unwrap_or_default();
    Requester::pod_certificate(
        PodCertificateRequester {
            cluster: &ctx.cluster,
            policy: &ctx.settings.policy,
            namespace: &namespace,
            service_account: &pcr.spec.service_account_name,
            name: &name,
            uid: &uid,
        },
        ctx.issuer.trust_domain(),
    )
}

/// The request against the API server's pod, service account and node.
async fn check_binding(
    pcr: &PodCertificateRequest,
    ctx: &Context,
) -> Result<Result<(), Refusal>, kube::Error> {
    let (spec, namespace) = (&pcr.spec, pcr.namespace().unwrap_or_default());
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
    Ok(decision::binding(spec, observed))
}

/// Writes the Issued status with the chain and its times.
async fn write_issued(
    pcr: &PodCertificateRequest,
    ctx: &Context,
    answered: Answered,
) -> Result<Written, Transient> {
    let Answered {
        leaf,
        chain_pem,
        refresh,
        requester,
    } = answered;
    let api = pcr.api(ctx.client.clone());
    let spiffe_id = requester.spiffe_id().map(ToString::to_string);
    let message = format!("issued {}", spiffe_id.unwrap_or_default());
    let status = json!({
        "conditions": [condition(ISSUED, "True", Reason::Issued.as_str(), &message, None, None)],
        "certificateChain": chain_pem,
        "notBefore": time_of(leaf.not_before()),
        "beginRefreshAt": time_of(refresh),
        "notAfter": time_of(leaf.not_after()),
    });
    let written = match apply_status(&api, pcr, status).await {
        Ok(written) => written,
        // The API server judged the status (times, key, lifetime): it will not take
        // this certificate, so say so instead of retrying forever.
        Err(kube::Error::Api(s)) if s.code == 422 => {
            let refusal = Refusal::failed(
                Reason::StatusRejected,
                format!(
                    "the API server refused the issued certificate: {}",
                    s.message
                ),
            );
            return refuse(pcr, ctx, refusal, Some(&requester)).await;
        }
        Err(e) => return Err(e.into()),
    };
    ctx.issuer
        .metrics()
        .pod_certificate(&pcr.spec.signer_name, "issued");
    let note = format!("certificate issued, serial {}", leaf.serial());
    publish(ctx, pcr, EventType::Normal, "Issued", note).await;
    Ok(written)
}

/// Writes the Denied or Failed condition (and nothing else, as the API requires),
/// auditing the refusal as `audit` unless the issuance path already did.
async fn refuse(
    pcr: &PodCertificateRequest,
    ctx: &Context,
    refusal: Refusal,
    audit: Option<&Requester>,
) -> Result<Written, Transient> {
    let reason = refusal.reason.as_str();
    if let Some(requester) = audit {
        let outcome = match refusal.verdict {
            Verdict::Denied => Outcome::Denied,
            Verdict::Failed => Outcome::Failed,
        };
        let now = crate::clock::now();
        ctx.issuer
            .refused_as(requester, outcome, reason, &refusal.message, now)
            .await;
    }
    let type_ = refusal.verdict.condition();
    let status = json!({
        "conditions": [condition(type_, "True", reason, &refusal.message, None, None)],
    });
    let written = apply_status(&pcr.api(ctx.client.clone()), pcr, status).await?;
    let outcome = match refusal.verdict {
        Verdict::Denied => "denied",
        Verdict::Failed => "failed",
    };
    ctx.issuer
        .metrics()
        .pod_certificate(&pcr.spec.signer_name, outcome);
    let note = format!("{reason}: {}", refusal.message);
    publish(ctx, pcr, EventType::Warning, type_, note).await;
    Ok(written)
}
