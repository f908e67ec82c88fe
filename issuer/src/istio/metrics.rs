//! Prometheus metrics of the Istio sync, registered into the issuer's registry.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::istio::report::{Outcome, Report};

/// Label: a cluster's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// Cluster name.
    pub cluster: String,
}

/// The Istio sync's metrics.
#[derive(Debug, Default)]
pub struct IstioMetrics {
    /// Seconds until the mesh CA in each cluster's `cacerts` expires.
    pub mesh_ca_expiry: Family<ClusterLabel, Gauge<i64, AtomicI64>>,
    /// Mesh CAs minted, per cluster.
    pub mesh_ca_issued: Family<ClusterLabel, Counter>,
    /// Passes that left a cluster without a valid Secret, per cluster.
    pub sync_failures: Family<ClusterLabel, Counter>,
}

impl IstioMetrics {
    /// Creates the metrics and registers them (`canopy_mesh_ca_expiry_seconds`, ...) in
    /// `registry` (which carries the `canopy` prefix).
    pub fn register(registry: &mut Registry) -> IstioMetrics {
        let m = IstioMetrics::default();
        registry.register(
            "mesh_ca_expiry_seconds",
            "Seconds until the mesh CA in the cluster's Istio cacerts expires",
            m.mesh_ca_expiry.clone(),
        );
        registry.register(
            "mesh_ca_issued",
            "Mesh CAs minted for Istio cacerts, per cluster",
            m.mesh_ca_issued.clone(),
        );
        registry.register(
            "cacerts_sync_failures",
            "Sync passes that left a cluster's cacerts not valid, per cluster",
            m.sync_failures.clone(),
        );
        m
    }

    /// Updates the metrics from a pass.
    pub fn observe(&self, report: &Report) {
        for c in &report.clusters {
            let label = ClusterLabel {
                cluster: c.cluster.clone(),
            };
            if let Some(ca) = &c.ca {
                self.mesh_ca_expiry
                    .get_or_create(&label)
                    .set(ca.expires_in_seconds);
            }
            if c.minted.is_some() && c.outcome.is_ok() {
                self.mesh_ca_issued.get_or_create(&label).inc();
            }
            if matches!(c.outcome, Outcome::Failed(_) | Outcome::Reported(_)) {
                self.sync_failures.get_or_create(&label).inc();
            }
        }
    }
}
