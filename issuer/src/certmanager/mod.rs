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
//! - `settings`: the `cert_manager:` block and what the controllers hold;
//! - `context`: what every reconcile of a cluster shares, and who a request's creator is;
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
pub(crate) mod context;
mod issuers;
pub(crate) mod prior;
pub(crate) mod reconcile;
mod settings;
mod signing;
mod signingrequest;
pub(crate) mod status;

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;

use crate::config::ClusterConfig;
pub use crate::leader::LeaseConfig;
use crate::leader::{LeaderError, Leadership};
use crate::Issuer;

pub(crate) use context::{Backoff, Context, RequestOrigin};
pub use settings::{CertManagerConfig, Settings};

pub use crd::{crd_files, crds_yaml, write_crds};
pub use status::FIELD_MANAGER;

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
        let lease = settings.lease.clone();
        let ctx = Arc::new(Context::new(cluster, client.clone(), issuer, settings)?);
        let leadership = Leadership::new(client, lease)?;
        let work = || run_controllers(ctx.clone());
        leadership.run(work, shutdown, &is_leader).await;
        tracing::info!(cluster = %cluster.name, "cert-manager controllers stopped");
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
