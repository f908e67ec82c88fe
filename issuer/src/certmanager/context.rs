//! What every reconcile of one cluster shares, whichever the controller (cert-manager's
//! requests and the CSR API, pod certificates): the client, the issuer, events, the
//! per-request backoff; and who a Kubernetes request's creator is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use super::{reconcile, ControllerError, Settings, FIELD_MANAGER};
use crate::auth::{AuthMethod, KubernetesRequest, Requester};
use crate::config::ClusterConfig;
use crate::names::ClusterName;
use crate::Issuer;

/// Refuses a cluster whose intermediate is not loaded: its controllers could sign
/// nothing.
fn check_intermediate(cluster: &ClusterConfig, issuer: &Issuer) -> Result<(), ControllerError> {
    if issuer.authorities().get(&cluster.intermediate).is_none() {
        return Err(ControllerError::Config {
            cluster: cluster.name.to_string(),
            reason: format!("intermediate {:?} is not loaded", cluster.intermediate),
        });
    }
    Ok(())
}

/// Events on requests, signed by this replica (`reportingInstance`).
fn recorder(client: Client, instance: &str) -> Recorder {
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(instance.to_string()),
    };
    Recorder::new(client, reporter)
}

/// Per-object retry state: exponential backoff.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before the next attempt for `key`, counting this failure.
    pub(crate) fn next(&self, key: &str, base: Duration, max: Duration) -> Duration {
        let mut map = self.attempts.lock().expect("backoff lock");
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = base.saturating_mul(1u32 << (*n).min(20)).min(max);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets `key` (it succeeded or is final).
    pub(crate) fn reset(&self, key: &str) {
        self.attempts.lock().expect("backoff lock").remove(key);
    }
}

/// What a controller's settings say to the reconcile.
pub(crate) trait ControllerSettings: Send + Sync + 'static {
    /// When to retry a transient failure, and when to give up.
    fn retry(&self) -> reconcile::Retry;
    /// Name of this replica in Events (`reportingInstance`).
    fn instance(&self) -> &str;
}

impl ControllerSettings for Settings {
    fn retry(&self) -> reconcile::Retry {
        reconcile::Retry {
            base: self.backoff_base,
            max: self.backoff_max,
            give_up_after: self.max_retry_duration,
        }
    }
    fn instance(&self) -> &str {
        &self.instance
    }
}

/// Everything a reconcile of one cluster needs, with the controller's settings `S`
/// (the cert-manager controllers' by default).
pub(crate) struct Context<S = Settings> {
    pub(crate) client: Client,
    pub(crate) cluster: ClusterName,
    pub(crate) cluster_intermediate: String,
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) settings: S,
    pub(crate) recorder: Recorder,
    pub(crate) backoff: Backoff,
}

impl<S: ControllerSettings> Context<S> {
    /// The context of a controller of `cluster`; refused when the cluster's
    /// intermediate is not loaded.
    pub(crate) fn new(
        cluster: &ClusterConfig,
        client: Client,
        issuer: Arc<Issuer>,
        settings: S,
    ) -> Result<Self, ControllerError> {
        check_intermediate(cluster, &issuer)?;
        Ok(Context {
            recorder: recorder(client.clone(), settings.instance()),
            client,
            cluster: cluster.name.clone(),
            cluster_intermediate: cluster.intermediate.clone(),
            issuer,
            settings,
            backoff: Backoff::default(),
        })
    }
}

impl<S: ControllerSettings> reconcile::Shared for Context<S> {
    fn client(&self) -> &Client {
        &self.client
    }
    fn cluster(&self) -> &ClusterName {
        &self.cluster
    }
    fn issuer(&self) -> &Issuer {
        &self.issuer
    }
    fn recorder(&self) -> &Recorder {
        &self.recorder
    }
    fn backoff(&self) -> &Backoff {
        &self.backoff
    }
    fn retry(&self) -> reconcile::Retry {
        self.settings.retry()
    }
}

/// A Kubernetes request as the controllers read it: enough to say who made it.
pub(crate) struct RequestOrigin<'a> {
    pub(crate) method: AuthMethod,
    pub(crate) kind: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: &'a str,
    pub(crate) uid: &'a str,
    pub(crate) username: Option<&'a str>,
    pub(crate) groups: &'a [String],
}

impl Context {
    /// The requester a Kubernetes request of this cluster is decided as: its creator
    /// (`spec.username`/`spec.groups`), bound to the request's namespace unless the
    /// creator is one of the cluster's `trusted_requesters`. Its name carries the
    /// request's UID: the certificate record then says which request it answered,
    /// and a retry finds it instead of signing twice.
    pub(crate) fn requester(&self, origin: RequestOrigin<'_>) -> Requester {
        let trusted = origin
            .username
            .is_some_and(|u| self.settings.trusted_requesters.iter().any(|t| t == u));
        Requester::kubernetes_request(
            KubernetesRequest {
                method: origin.method,
                kind: origin.kind,
                cluster: &self.cluster,
                policy: &self.settings.policy,
                namespace: origin.namespace,
                name: origin.name,
                uid: origin.uid,
                username: origin.username,
                groups: origin.groups,
                trusted,
            },
            self.issuer.trust_domain(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next("x", base, max)).collect();
        assert_eq!(
            delays.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            [100, 200, 400, 500, 500]
        );
        b.reset("x");
        assert_eq!(b.next("x", base, max), base);
    }
}
