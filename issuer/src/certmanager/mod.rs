//! cert-manager external issuer (shared/contracts/cert-manager.md), one controller
//! per configured cluster:
//!
//! - [`crd`]: our `Issuer` / `ClusterIssuer` resources and their CRDs;
//! - `issuers`: marks those Ready (or not, with a reason);
//! - `certificaterequest`: signs approved cert-manager `CertificateRequest`s that
//!   name them;
//! - `signingrequest`: signs approved Kubernetes `CertificateSigningRequest`s for
//!   our signer names;
//! - `signing`: what an issuer resource signs with (its spec, checked);
//! - `reconcile`: the one reconcile both request kinds (and pod certificates) go
//!   through, each kind saying how to read, decide and write its own status.
//!
//! Every certificate goes through [`crate::Issuer::issue`] (one policy, one record,
//! one audit log), as a requester bound to the cluster's policy and carrying the
//! cluster and namespace, so it is listed by `GET /v1/certificates` like any other.
//! Only the Lease holder of a cluster reconciles ([`crate::leader`]).

pub mod crd;
pub mod duration;
pub mod plan;
pub mod request;

mod certificaterequest;
mod issuers;
pub(crate) mod prior;
pub(crate) mod reconcile;
mod signing;
mod signingrequest;
pub(crate) mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use tokio::sync::watch;

use crate::auth::{AuthMethod, KubernetesRequest, Requester};
use crate::config::ClusterConfig;
pub use crate::leader::LeaseConfig;
use crate::leader::{LeaderElector, LeaderError, LeaseSettings};
use crate::names::ClusterName;
use crate::Issuer;

pub use crd::{crd_files, crds_yaml, write_crds};
pub use status::FIELD_MANAGER;

/// How the controllers of one cluster behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Policy the controller's sign requests are decided under (like a token's).
    pub policy: String,
    /// Users whose requests are not bound to their namespace.
    pub trusted_requesters: Vec<String>,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<LeaseSettings>,
    /// Give up on transient errors (storage, API server) this long after a request
    /// was created, and mark it Failed.
    pub max_retry_duration: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Also sign `certificates.k8s.io/v1` CertificateSigningRequests for our signers.
    pub signing_requests: bool,
    /// Name of this replica in Events (`reportingInstance`).
    pub instance: String,
}

impl Settings {
    /// Defaults: leader election off, 1 h maximum retry, backoff 1 s → 5 min, CSR API on.
    pub fn new(policy: impl Into<String>) -> Self {
        Settings {
            policy: policy.into(),
            trusted_requesters: Vec::new(),
            lease: None,
            max_retry_duration: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            signing_requests: true,
            instance: "canopy-issuer".into(),
        }
    }
}

/// The `cert_manager:` block of a cluster in the issuer's config file.
///
/// ```yaml
/// clusters:
///   - name: eks-prod
///     intermediate: aws
///     in_cluster: true
///     cert_manager:
///       policy: cert-manager          # policy the controller's requests are decided under
///       lease: { namespace: canopy }  # leader election (omit for a single replica)
///       max_retry: 1h                 # give up on transient errors after this
///       signing_requests: true        # also the certificates.k8s.io CSR API
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertManagerConfig {
    /// Policy (by name) the controller's sign requests are decided under.
    pub policy: String,
    /// Leader election; omit to run without (one replica).
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
    /// Maximum retry duration for transient errors, from a request's creation.
    #[serde(default = "default_max_retry")]
    pub max_retry: canopy::ttl::Ttl,
    /// Also sign Kubernetes CertificateSigningRequests for our signer names.
    #[serde(default = "default_true")]
    pub signing_requests: bool,
    /// Kubernetes users (`spec.username`) whose requests are not bound to the
    /// namespace they are created in: istio-csr creates every request in
    /// istio-system on behalf of all namespaces
    /// (`system:serviceaccount:cert-manager:cert-manager-istio-csr`).
    #[serde(default)]
    pub trusted_requesters: Vec<String>,
}

fn default_max_retry() -> canopy::ttl::Ttl {
    canopy::ttl::Ttl::hours(1)
}

fn default_true() -> bool {
    true
}

impl Settings {
    /// Settings of a cluster from its config block; `identity` names this replica.
    pub fn from_config(
        cluster: &ClusterName,
        config: &CertManagerConfig,
        identity: &str,
    ) -> Settings {
        let mut s = Settings::new(config.policy.clone());
        s.max_retry_duration = config.max_retry.as_duration().unsigned_abs();
        s.signing_requests = config.signing_requests;
        s.trusted_requesters = config.trusted_requesters.clone();
        s.instance = identity.to_string();
        s.lease = config
            .lease
            .as_ref()
            .map(|l| l.settings(&format!("canopy-issuer-{cluster}"), identity));
        s
    }
}

/// This replica's identity for Leases and Events: `POD_NAME` (set it from the
/// downward API), else the host name, plus a random suffix so a restarted pod with
/// the same name is a new holder.
pub fn replica_identity() -> String {
    use rand::RngCore;
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "canopy-issuer".into());
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    format!("{base}_{}", hex::encode(b))
}

/// Why a controller could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No way to reach the cluster's API server.
    #[error("cluster {cluster}: {reason}")]
    Client {
        /// Cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("cluster {cluster}: {reason}")]
    Config {
        /// Cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// Leader election settings.
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// A kube client for a configured cluster: its kubeconfig (and context), or the
/// in-cluster service account.
pub async fn client_for(cluster: &ClusterConfig) -> Result<Client, ControllerError> {
    crate::kube_client::client(&cluster.access, None)
        .await
        .map_err(|e| ControllerError::Client {
            cluster: cluster.name.to_string(),
            reason: e.to_string(),
        })
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

/// Everything a reconcile of one cluster needs.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) cluster: ClusterName,
    pub(crate) cluster_intermediate: String,
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) settings: Settings,
    pub(crate) recorder: Recorder,
    pub(crate) backoff: Backoff,
}

impl reconcile::Shared for Context {
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
        reconcile::Retry {
            base: self.settings.backoff_base,
            max: self.settings.backoff_max,
            give_up_after: self.settings.max_retry_duration,
        }
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

/// The controllers of one cluster.
#[derive(Debug)]
pub struct Controller;

impl Controller {
    /// Runs the controllers of `cluster` until `shutdown` completes: while this
    /// replica holds the cluster's Lease (or always, without leader election).
    pub async fn run(
        cluster: &ClusterConfig,
        client: Client,
        issuer: Arc<Issuer>,
        settings: Settings,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ControllerError> {
        let (leader_tx, _) = watch::channel(false);
        Self::run_observed(cluster, client, issuer, settings, shutdown, leader_tx).await
    }

    /// Like [`Controller::run`], reporting leadership changes on `is_leader`.
    pub async fn run_observed(
        cluster: &ClusterConfig,
        client: Client,
        issuer: Arc<Issuer>,
        settings: Settings,
        shutdown: impl Future<Output = ()> + Send,
        is_leader: watch::Sender<bool>,
    ) -> Result<(), ControllerError> {
        if issuer.authorities().get(&cluster.intermediate).is_none() {
            return Err(ControllerError::Config {
                cluster: cluster.name.to_string(),
                reason: format!("intermediate {:?} is not loaded", cluster.intermediate),
            });
        }
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(settings.instance.clone()),
        };
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client: client.clone(),
            cluster: cluster.name.clone(),
            cluster_intermediate: cluster.intermediate.clone(),
            issuer,
            settings: settings.clone(),
            backoff: Backoff::default(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let elector = match &settings.lease {
            Some(lease) => Some(LeaderElector::new(client, lease.clone())?),
            None => None,
        };
        let work = {
            let ctx = ctx.clone();
            move || run_controllers(ctx.clone())
        };
        let cluster_name = cluster.name.to_string();
        let run = async move {
            match elector {
                Some(elector) => elector.run(work, stop_rx, is_leader).await,
                None => {
                    let _ = is_leader.send(true);
                    let mut stop_rx = stop_rx;
                    tokio::select! {
                        () = run_controllers(ctx) => {}
                        _ = stop_rx.wait_for(|s| *s) => {}
                    }
                    let _ = is_leader.send(false);
                }
            }
        };
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            () = shutdown => {
                let _ = stop_tx.send(true);
                run.await;
            }
        }
        tracing::info!(cluster = %cluster_name, "cert-manager controllers stopped");
        Ok(())
    }
}

async fn run_controllers(ctx: Arc<Context>) {
    tracing::info!(cluster = %ctx.cluster, "cert-manager controllers starting");
    let requests = certificaterequest::run(ctx.clone());
    let issuers = issuers::run(ctx.clone());
    if ctx.settings.signing_requests {
        tokio::join!(requests, issuers, signingrequest::run(ctx.clone()));
    } else {
        tokio::join!(requests, issuers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_block_becomes_settings() {
        let c: CertManagerConfig = serde_yaml::from_str(
            "policy: cert-manager\nlease: { namespace: canopy, duration: 30s }\nmax_retry: 2h\n",
        )
        .unwrap();
        let cluster: ClusterName = "eks-prod".parse().unwrap();
        let s = Settings::from_config(&cluster, &c, "pod-1_ab");
        assert_eq!(s.policy, "cert-manager");
        assert_eq!(s.max_retry_duration, Duration::from_secs(7200));
        assert!(s.signing_requests);
        let lease = s.lease.unwrap();
        assert_eq!(lease.name, "canopy-issuer-eks-prod");
        assert_eq!(lease.lease_duration, Duration::from_secs(30));
        assert!(
            lease.retry_period < lease.renew_deadline
                && lease.renew_deadline < lease.lease_duration
        );
        assert!(serde_yaml::from_str::<CertManagerConfig>("policy: x\nbogus: 1\n").is_err());
    }

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
