//! Istio `cacerts` sync (shared/contracts/istio-cacerts.md): per configured cluster, keep
//! `istio-system/cacerts` valid — a mesh CA minted under the cluster's intermediate
//! (`subca`) or the intermediate itself (`intermediate`) — renew it at 2/3 of its life, and
//! drive a root rotation across clusters.
//!
//! Data flows one way: read the Secret → decide ([`desired::assess`], the core's
//! `rotation`) → mint and record if needed → build the Secret from inputs alone
//! ([`desired::build`], validated as istiod would) → write it once, in place.
//!
//! Entry points: [`sync_once`] (the bootstrap Job), [`status`], [`Controller`] (in `serve`).

pub mod config;
pub mod controller;
pub mod desired;
pub mod metrics;
pub mod report;
pub mod setup;
pub mod sync;

use std::sync::Arc;

use time::OffsetDateTime;

pub use config::{IstioClusterConfig, IstioConfig, Mode, RepairPolicy, RotationConfig};
pub use controller::{Controller, Health};
pub use metrics::IstioMetrics;
pub use report::{ClusterReport, Outcome, Report};
pub use setup::{IstioSetup, SetupError};
pub use sync::Syncer;

use crate::store::Store;

/// `canopy-issuer cacerts sync --once`: one pass over every cluster at `now`. The report's
/// [`Report::exit_code`] is 0 only when every cluster holds a valid Secret; its `Display`
/// names each failed cluster and why. Safe to re-run: a correct Secret is not written.
pub async fn sync_once(setup: Arc<IstioSetup>, store: Store, now: OffsetDateTime) -> Report {
    Syncer::new(setup, store).pass(now).await
}

/// `canopy-issuer status`: what each cluster holds (roots, mesh CA, rotation phase,
/// problems) and what a sync would do; writes nothing.
pub async fn status(setup: Arc<IstioSetup>, now: OffsetDateTime) -> Report {
    Syncer::read_only(setup).status(now).await
}
