//! The long-running Istio controller: a pass over every cluster at each mesh CA's renewal
//! time (2/3 of its life, with jitter) and at least every `resync`; metrics, Kubernetes
//! Events before expiry, and the readiness verdict. Passes run only on the holder of the
//! mesh's Lease (`istio.lease`), like every controller ([`crate::leader::Leadership`]).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use canopy::renewal::life_used;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::istio::metrics::IstioMetrics;
use crate::istio::report::{ClusterReport, Report};
use crate::istio::setup::IstioSetup;
use crate::istio::sync::Syncer;
use crate::leader::Leadership;
use crate::store::Store;

/// The last pass, shared with the HTTP handlers (`/readyz`, `/v1/status`).
#[derive(Debug, Default)]
pub struct Health {
    last: RwLock<Option<Report>>,
}

impl Health {
    /// The last pass's report.
    pub fn last(&self) -> Option<Report> {
        self.last.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn set(&self, report: Report) {
        if let Ok(mut r) = self.last.write() {
            *r = Some(report);
        }
    }

    /// Ready unless a cluster's mesh CA is in the last tenth of its life (or expired) and the
    /// last pass could not renew it. Returns one line per such cluster.
    pub fn readiness(&self, now: OffsetDateTime) -> Result<(), Vec<String>> {
        let Some(report) = self.last() else {
            return Ok(());
        };
        let bad: Vec<String> = report
            .clusters
            .iter()
            .filter_map(|c| {
                let ca = c.ca.as_ref()?;
                (life_used(ca.not_before, ca.not_after, now) >= 0.9).then(|| {
                    format!(
                        "cluster {}: mesh CA {} expires {} and was not renewed: {:?}",
                        c.cluster,
                        ca.serial,
                        ca.not_after.format(&Rfc3339).unwrap_or_default(),
                        c.outcome
                    )
                })
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }
}

/// Keeps every configured cluster's `cacerts` valid.
#[derive(Debug)]
pub struct Controller {
    syncer: Syncer,
    metrics: Option<Arc<IstioMetrics>>,
    health: Arc<Health>,
}

/// Why a Warning event is due for a cluster after a pass, if it is.
pub fn expiry_warning(c: &ClusterReport, now: OffsetDateTime) -> Option<String> {
    let ca = c.ca.as_ref()?;
    if now < ca.renew_at && !ca.in_last_tenth {
        return None;
    }
    Some(format!(
        "mesh CA {} in {}/cacerts expires {} and has not been renewed ({:?}); istiod stops issuing workload certificates when it expires",
        ca.serial,
        c.namespace,
        ca.not_after.format(&Rfc3339).unwrap_or_default(),
        c.outcome
    ))
}

impl Controller {
    /// A controller over `setup`, recording in `store`, updating `metrics` if given.
    pub fn new(
        setup: Arc<IstioSetup>,
        store: Store,
        metrics: Option<Arc<IstioMetrics>>,
    ) -> Controller {
        Controller {
            syncer: Syncer::new(setup, store),
            metrics,
            health: Arc::new(Health::default()),
        }
    }

    /// The shared health (readiness and last report).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The syncer (tests tune its backoff).
    pub fn syncer_mut(&mut self) -> &mut Syncer {
        &mut self.syncer
    }

    /// One pass at `now`: sync, metrics, events, health. Returns the report.
    pub async fn tick(&self, now: OffsetDateTime) -> Report {
        let report = self.syncer.pass(now).await;
        if let Some(m) = &self.metrics {
            m.observe(&report);
        }
        for (c, setup) in report.clusters.iter().zip(&self.syncer.setup.clusters) {
            let event = if let Some(why) = expiry_warning(c, now) {
                Some(("Warning", "MeshCAExpiring", why))
            } else {
                c.minted
                    .as_ref()
                    .filter(|_| c.outcome.is_ok())
                    .map(|serial| {
                        (
                            "Normal",
                            "MeshCAIssued",
                            format!(
                                "canopy published mesh CA {serial} in {}/cacerts",
                                c.namespace
                            ),
                        )
                    })
            };
            if let Some((kind, reason, message)) = event {
                let serial =
                    c.ca.as_ref()
                        .map(|ca| ca.serial.clone())
                        .unwrap_or_default();
                if let Err(e) = self
                    .event(setup, kind, reason, &serial, &message, now)
                    .await
                {
                    tracing::warn!(cluster = %c.cluster, error = %e, "could not post a Kubernetes Event");
                }
            }
            if !c.outcome.is_ok() {
                tracing::warn!(cluster = %c.cluster, outcome = ?c.outcome, "cacerts is not valid");
            }
        }
        self.health.set(report.clone());
        report
    }

    async fn event(
        &self,
        cluster: &crate::istio::setup::ClusterSetup,
        kind: &str,
        reason: &str,
        serial: &str,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let client = self.syncer.client(cluster).await?;
        let ns = &cluster.settings.namespace;
        let api: Api<Event> = Api::namespaced(client, ns);
        let at = now.format(&Rfc3339).unwrap_or_default();
        // One event per CA and reason: re-posting finds it there (409) and stops.
        let short: String = serial.chars().take(16).collect();
        let name = format!("cacerts.{}.{short}", reason.to_ascii_lowercase());
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Secret", "name": "cacerts", "namespace": ns},
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": at,
            "lastTimestamp": at,
            "source": {"component": "canopy-issuer"},
            "reportingComponent": "canopy-issuer",
        }))
        .map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// When the next pass is due after `report`: the earliest renewal, at most `resync` away.
    pub fn next_pass(&self, report: &Report, now: OffsetDateTime) -> OffsetDateTime {
        let resync = now + self.syncer.setup.settings.resync.as_duration();
        report
            .clusters
            .iter()
            .filter_map(|c| c.ca.as_ref().map(|ca| ca.renew_at))
            .filter(|t| *t > now)
            .fold(resync, OffsetDateTime::min)
    }

    /// Runs passes on the wall clock while this replica may (behind the mesh's Lease, or
    /// alone), until `shutdown` completes.
    pub async fn run(&self, leadership: &Leadership, shutdown: impl Future<Output = ()>) {
        let (is_leader, _) = watch::channel(false);
        leadership.run(|| self.passes(), shutdown, &is_leader).await;
        tracing::info!("istio cacerts controller stopped");
    }

    /// A pass at each due time, until dropped (the Lease lost, or shutdown).
    async fn passes(&self) {
        loop {
            let now = crate::clock::now();
            let report = self.tick(now).await;
            let wait = (self.next_pass(&report, now) - now).whole_seconds().max(1);
            tokio::time::sleep(StdDuration::from_secs(wait as u64)).await;
        }
    }
}
