//! `canopy-issuer status`: what every cluster's `cacerts` holds and what a sync would do
//! there, from the same decisions as a pass, writing nothing.

use canopy::rotation::Decision;
use time::OffsetDateTime;

use super::{ApiFailure, Syncer};
use crate::istio::desired::{assess, build, Blocked, CaPlan, Current, Material, Target};
use crate::istio::report::{ClusterReport, Outcome, Report};
use crate::istio::setup::ClusterSetup;

impl Syncer {
    /// What every cluster holds and what a sync would do, without writing anything.
    pub async fn status(&self, now: OffsetDateTime) -> Report {
        let observed = self.observe().await;
        let decisions = self.decisions(&observed, now);
        let clusters = self
            .setup
            .clusters
            .iter()
            .zip(&observed)
            .enumerate()
            .map(|(i, (cluster, found))| {
                let decision = decisions.as_ref().map(|d| &d[i]);
                let mut r = self.cluster_status(cluster, found, decision, now);
                r.rotation = self.rotation_phase_of(&r, now);
                r
            })
            .collect();
        Report {
            at: now,
            rotation: self.mesh_phase(&observed, now),
            clusters,
        }
    }

    /// What one cluster holds (`found`) and what a sync would do there.
    fn cluster_status(
        &self,
        cluster: &ClusterSetup,
        found: &Result<Option<Current>, ApiFailure>,
        decision: Option<&Decision>,
        now: OffsetDateTime,
    ) -> ClusterReport {
        let ns = cluster.settings.namespace.as_str();
        let mut r = ClusterReport::new(cluster.name.as_str(), ns, Outcome::Unchanged);
        let current = match found {
            Ok(c) => c.as_ref(),
            Err(e) => {
                r.outcome = Outcome::Failed(format!("cannot read {ns}/cacerts: {e}"));
                return r;
            }
        };
        if let Some(c) = current {
            r.describe(c, &self.setup.roots, now);
        }
        let plan = match self.plan(cluster, decision, now) {
            Ok(plan) => plan,
            Err(e) => {
                r.outcome = Outcome::Failed(e);
                return r;
            }
        };
        let target = self.target(cluster, &plan);
        let a = assess(&target, current, now);
        r.ownership = a.ownership;
        r.problems = a.problems;
        r.outcome = match a.plan {
            Err(Blocked::Refused(m)) => Outcome::Failed(m),
            Err(Blocked::Reported(m)) => Outcome::Reported(m),
            Ok(CaPlan::Mint(why)) | Ok(CaPlan::Publish(why)) => {
                Outcome::Pending(format!("a sync would write a new CA: {why}"))
            }
            Ok(CaPlan::Keep) => would_rewrite(&target, current, now),
        };
        r
    }
}

/// Whether a sync that keeps the CA would write anyway (files or labels out of date).
fn would_rewrite(target: &Target<'_>, current: Option<&Current>, now: OffsetDateTime) -> Outcome {
    let Some(c) = current else {
        return Outcome::Pending("a sync would create it".into());
    };
    match build(target, Material::Keep(c), Some(c), now) {
        Ok(d) if d.matches(c) => Outcome::Unchanged,
        Ok(_) => Outcome::Pending("a sync would rewrite files or labels".into()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
