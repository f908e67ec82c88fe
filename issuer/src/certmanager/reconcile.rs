//! The one reconcile every request kind goes through (cert-manager's
//! CertificateRequest, the CSR API's CertificateSigningRequest, the kubelet's
//! PodCertificateRequest):
//!
//! observe the request fresh → already answered or not ours? stop → the kind decides
//! the requester and what to sign (or answers without signing) → a certificate signed
//! before for this request (a crash between signing and the status write) is handed
//! back, else one is signed through [`crate::Issuer::issue`] → the kind writes its
//! typed status. Transient failures are retried with backoff until the maximum retry
//! duration, counted from the request's creation, has passed; then the request fails.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use canopy::cert::Certificate;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::status::Written;
use super::{prior, Backoff};
use crate::auth::Requester;
use crate::names::ClusterName;
use crate::store::StoreError;
use crate::{IssueError, Issued, Issuer, SignRequest};

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

/// How long to wait between attempts and when to give up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// First retry delay; doubles per attempt.
    pub(crate) base: Duration,
    /// Longest retry delay.
    pub(crate) max: Duration,
    /// Give up this long after the request's creation.
    pub(crate) give_up_after: Duration,
}

/// What the controllers of one kind share: the cluster, the issuer, events, retries.
pub(crate) trait Shared: Send + Sync + 'static {
    /// The cluster's API client.
    fn client(&self) -> &Client;
    /// The cluster's name (for logs).
    fn cluster(&self) -> &ClusterName;
    /// The one issuance path.
    fn issuer(&self) -> &Issuer;
    /// Events on requests.
    fn recorder(&self) -> &Recorder;
    /// Per-request retry state.
    fn backoff(&self) -> &Backoff;
    /// Retry timing.
    fn retry(&self) -> Retry;
}

/// What a kind decided before anything is signed.
pub(crate) enum Decision<K: RequestKind> {
    /// Nothing to do until the request changes.
    Wait,
    /// Answered without signing (denied, or a request that can never succeed).
    Answer(K::Status),
    /// Not yet (the issuer is not Ready): the status, if the kind writes one, and a
    /// retry with backoff.
    Later(Option<K::Status>),
    /// Sign this.
    Sign(Box<Signing<K::Plan>>),
}

/// A request ready to be signed.
pub(crate) struct Signing<P> {
    /// What to sign.
    pub(crate) request: SignRequest,
    /// The SPIFFE ID a certificate signed before carries.
    pub(crate) spiffe_id: Option<String>,
    /// Who asks, and what the kind keeps for its status.
    pub(crate) asker: Asker<P>,
}

/// Who asks and what the kind keeps from its decision for the status it writes
/// after signing.
pub(crate) struct Asker<P> {
    /// Who asks: its name carries the request's UID, so a retry finds what was
    /// signed before.
    pub(crate) requester: Requester,
    /// The kind's own part.
    pub(crate) plan: P,
}

/// A certificate for the request: found signed before, or signed now.
pub(crate) enum Signed {
    /// Signed on an earlier pass whose status write was lost.
    Before(Box<prior::Earlier>),
    /// Signed on this pass.
    Now(Box<Issued>),
}

impl Signed {
    /// The leaf.
    pub(crate) fn leaf(&self) -> &Certificate {
        match self {
            Signed::Before(e) => &e.leaf,
            Signed::Now(i) => &i.certificate,
        }
    }

    /// Leaf followed by its intermediates, PEM (no root).
    pub(crate) fn chain_pem(&self) -> String {
        match self {
            Signed::Before(e) => format!("{}{}", e.leaf.to_pem(), e.intermediates_pem),
            Signed::Now(i) => Certificate::pem_of(&i.chain),
        }
    }

    /// The roots, PEM.
    pub(crate) fn roots_pem(&self) -> String {
        match self {
            Signed::Before(e) => e.roots_pem.clone(),
            Signed::Now(i) => i.roots_pem.to_string(),
        }
    }
}

/// A kind of signing request: how to read it, decide it and say the answer in its
/// own status. [`reconcile`] does the rest, the same for every kind.
pub(crate) trait RequestKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The controllers' shared state.
    type Context: Shared;
    /// This kind's status: what a pass writes.
    type Status: Send;
    /// What the kind keeps from its decision for the status after signing.
    type Plan: Send + Sync;

    /// The API this request lives in.
    fn api(&self, client: Client) -> Api<Self>;
    /// Whether the request may need work: ours, approved, not answered. Cheap:
    /// asked of the cached copy, then of the copy read fresh.
    fn wants(&self, ctx: &Self::Context) -> bool;
    /// What [`RequestKind::decide`] reads from the API server besides the request,
    /// read while the request is read fresh: from the cached copy, so only from
    /// fields of the spec that never change (the issuer it names).
    type Prefetch: Send;
    /// Reads the [`RequestKind::Prefetch`].
    fn prefetch(
        &self,
        ctx: &Self::Context,
    ) -> impl Future<Output = Result<Self::Prefetch, Transient>> + Send;
    /// The requester and what to sign, or an answer without signing.
    fn decide(
        &self,
        ctx: &Self::Context,
        prefetched: Self::Prefetch,
    ) -> impl Future<Output = Result<Decision<Self>, Transient>> + Send;
    /// The status of a signed request.
    fn issued(&self, asker: &Asker<Self::Plan>, signed: Signed) -> Self::Status;
    /// The final status when the issuer refused; `None` when the error is transient.
    fn refused(&self, asker: &Asker<Self::Plan>, error: &IssueError) -> Option<Self::Status>;
    /// The final status after retrying a transient error for too long.
    fn gave_up(
        &self,
        asker: &Asker<Self::Plan>,
        error: &IssueError,
        after: Duration,
    ) -> Self::Status;
    /// The status while retrying a transient error, if the kind writes one.
    fn retrying(&self, _error: &IssueError) -> Option<Self::Status> {
        None
    }
    /// Writes `status` (and, for an answer, its Event).
    fn write(
        &self,
        ctx: &Self::Context,
        status: Self::Status,
    ) -> impl Future<Output = Result<Written, Transient>> + Send;
}

/// One pass over one request of kind `K`.
pub(crate) async fn reconcile<K: RequestKind>(
    cached: Arc<K>,
    ctx: Arc<K::Context>,
) -> Result<Action, Transient> {
    if !cached.wants(&ctx) {
        return Ok(Action::await_change());
    }
    // The cache may lag behind our own last write: read again so we never sign twice.
    // What the decision reads besides (the issuer) is read at the same time.
    let api = cached.api(ctx.client().clone());
    let name = cached.name_any();
    let (fresh, prefetched) = tokio::join!(api.get_opt(&name), cached.prefetch(&ctx));
    let Some(request) = fresh? else {
        return Ok(Action::await_change());
    };
    if request.uid() != cached.uid() {
        return Ok(Action::await_change());
    }
    if !request.wants(&ctx) {
        ctx.backoff().reset(&uid_of(&request));
        return Ok(Action::await_change());
    }
    match request.decide(&ctx, prefetched?).await? {
        Decision::Wait => Ok(Action::await_change()),
        Decision::Answer(status) => answer(&request, &ctx, status).await,
        Decision::Later(status) => {
            let delay = next_delay(&request, &*ctx);
            if let Some(status) = status {
                request.write(&ctx, status).await?;
            }
            Ok(Action::requeue(delay))
        }
        Decision::Sign(signing) => sign_once(&request, &ctx, *signing).await,
    }
}

/// Hands back the certificate signed before, or signs one.
async fn sign_once<K: RequestKind>(
    request: &K,
    ctx: &K::Context,
    signing: Signing<K::Plan>,
) -> Result<Action, Transient> {
    let Signing {
        request: sign,
        spiffe_id,
        asker,
    } = signing;
    let issuer = ctx.issuer();
    // Every pass looks in the store (one indexed read) rather than marking the request
    // in the API server before signing: a write there costs more, and wakes cert-manager.
    let now = crate::clock::timestamp().as_second();
    let requester = asker.requester.to_string();
    let found = prior::find(issuer.store(), &requester, spiffe_id.as_deref(), now).await?;
    if let Some(earlier) = found.and_then(|r| prior::signed_before(issuer, r)) {
        tracing::info!(cluster = %ctx.cluster(), serial = %earlier.record.serial, "found the certificate signed before for this request");
        let status = request.issued(&asker, Signed::Before(Box::new(earlier)));
        return answer(request, ctx, status).await;
    }
    let error = match issuer.issue(&asker.requester, sign).await {
        Ok(issued) => {
            let status = request.issued(&asker, Signed::Now(Box::new(issued)));
            return answer(request, ctx, status).await;
        }
        Err(e) => e,
    };
    if let Some(status) = request.refused(&asker, &error) {
        return answer(request, ctx, status).await;
    }
    // Storage or the like: retry until the maximum retry duration has passed.
    let retry = ctx.retry();
    if retries_exhausted(request, retry.give_up_after) {
        let status = request.gave_up(&asker, &error, retry.give_up_after);
        return answer(request, ctx, status).await;
    }
    let delay = next_delay(request, ctx);
    tracing::warn!(cluster = %ctx.cluster(), request = %name_of(request), error = %error, "signing failed; will retry");
    if let Some(status) = request.retrying(&error) {
        request.write(ctx, status).await?;
    }
    Ok(Action::requeue(delay))
}

/// Writes a final status: nothing left to retry.
async fn answer<K: RequestKind>(
    request: &K,
    ctx: &K::Context,
    status: K::Status,
) -> Result<Action, Transient> {
    request.write(ctx, status).await?;
    ctx.backoff().reset(&uid_of(request));
    Ok(Action::await_change())
}

/// The retry delay after a transient error outside a pass (the API server failed).
pub(crate) fn error_policy<K: RequestKind>(
    request: Arc<K>,
    error: &Transient,
    ctx: Arc<K::Context>,
) -> Action {
    let delay = next_delay(&*request, &*ctx);
    tracing::warn!(
        cluster = %ctx.cluster(),
        request = %name_of(&*request),
        error = %error,
        retry_in = ?delay,
        "transient error; will retry"
    );
    Action::requeue(delay)
}

fn next_delay<K: RequestKind>(request: &K, ctx: &K::Context) -> Duration {
    let retry = ctx.retry();
    ctx.backoff().next(&uid_of(request), retry.base, retry.max)
}

fn retries_exhausted<K: RequestKind>(request: &K, give_up_after: Duration) -> bool {
    let Some(created) = request.meta().creation_timestamp.as_ref() else {
        return false;
    };
    let age = crate::clock::timestamp().duration_since(created.0);
    age.as_secs() >= 0 && age.unsigned_abs() >= give_up_after
}

fn uid_of<K: Resource>(request: &K) -> String {
    request.meta().uid.clone().unwrap_or_default()
}

/// `namespace/name`, or `name` for a cluster-scoped request.
pub(crate) fn name_of<K: Resource>(request: &K) -> String {
    let meta = request.meta();
    let name = meta.name.clone().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    }
}

/// Logs an answer and records it as an Event on the request.
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &impl Shared,
    request: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tracing::info!(cluster = %ctx.cluster(), request = %name_of(request), reason, "{note}");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Sign".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder()
        .publish(&event, &request.object_ref(&()))
        .await
    {
        tracing::warn!(error = %e, "could not record an event");
    }
}
