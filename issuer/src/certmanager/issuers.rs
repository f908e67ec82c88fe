//! Marks our `Issuer`s and `ClusterIssuer`s Ready (or not, with the reason), with
//! the generation the verdict was made from. Writes only when the verdict changed.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::crd::{ClusterIssuer, Issuer as IssuerResource, IssuerStatus, SigningSpec};
use super::plan::{IssuerSettings, NotReady, ReadyReason};
use super::status::{apply_status, condition};
use super::Context;

/// Either of our issuer kinds.
trait OurIssuer:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    fn signing(&self) -> &SigningSpec;
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    /// The API to write this object's status through.
    fn api_for(&self, client: kube::Client) -> Api<Self>;
}

impl OurIssuer for IssuerResource {
    fn signing(&self) -> &SigningSpec {
        &self.spec.signing
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl OurIssuer for ClusterIssuer {
    fn signing(&self) -> &SigningSpec {
        &self.spec.signing
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// Runs both issuer controllers.
pub(crate) async fn run(ctx: Arc<Context>) {
    tokio::join!(
        run_kind(Api::<IssuerResource>::all(ctx.client.clone()), ctx.clone()),
        run_kind(Api::<ClusterIssuer>::all(ctx.client.clone()), ctx.clone()),
    );
}

async fn run_kind<K: OurIssuer>(api: Api<K>, ctx: Arc<Context>)
where
    K::DynamicType: Default,
{
    Controller::new(api, watcher::Config::default())
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "issuer controller");
            }
        })
        .await;
}

fn error_policy<K: OurIssuer>(obj: Arc<K>, error: &kube::Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next(
        &obj.uid().unwrap_or_default(),
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
    );
    tracing::warn!(cluster = %ctx.cluster, issuer = %obj.name_any(), error = %error, "could not update issuer status; will retry");
    Action::requeue(delay)
}

/// The verdict on a spec: (status, reason, message).
fn verdict(ctx: &Context, spec: &SigningSpec) -> (&'static str, &'static str, String) {
    let authorities = ctx.issuer.authorities();
    let names = authorities.names();
    match IssuerSettings::from_spec(
        spec,
        &ctx.cluster_intermediate,
        &names,
        ctx.issuer.trust_domain(),
    ) {
        Ok(s) => (
            "True",
            ReadyReason::Verified.as_str(),
            format!(
                "Signing with intermediate {} of cluster {}",
                s.intermediate, ctx.cluster
            ),
        ),
        Err(NotReady { reason, message }) => ("False", reason.as_str(), message),
    }
}

async fn reconcile<K: OurIssuer>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let generation = obj.meta().generation;
    let (status, reason, message) = verdict(&ctx, obj.signing());
    let previous = obj
        .issuer_status()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let current = obj
        .issuer_status()
        .is_some_and(|s| s.observed_generation == generation)
        && previous.is_some_and(|c| {
            c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str())
                && c.observed_generation == generation
        });
    if current {
        return Ok(Action::await_change());
    }
    let api = obj.api_for(ctx.client.clone());
    let previous = previous.map(|c| (c.status.as_str(), c.last_transition_time.as_deref()));
    let mut body = json!({
        "conditions": [condition("Ready", status, reason, &message, previous, generation)],
    });
    if let Some(g) = generation {
        body["observedGeneration"] = json!(g);
    }
    apply_status(&api, &*obj, body).await?;
    tracing::info!(cluster = %ctx.cluster, kind = %K::kind(&()), issuer = %obj.name_any(), ready = status, reason, "issuer status");
    ctx.backoff.reset(&obj.uid().unwrap_or_default());
    Ok(Action::await_change())
}
