//! Which root each cluster signs under and trusts in a pass: a root rotation's decisions
//! for the mesh, or, without one, the configured root its intermediate chains to; and
//! the rotation phases a report shows.

use std::sync::Arc;

use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::rotation::{ClusterPhase, Decision, MeshPhase, Observed, Root};
use time::OffsetDateTime;

use super::{ApiFailure, Syncer};
use crate::istio::desired::{Current, Target};
use crate::istio::report::ClusterReport;
use crate::istio::setup::{ClusterSetup, Signing};

/// What one pass decided for a cluster before writing.
pub(super) struct Plan<'a> {
    pub(super) signing: &'a Arc<Signing>,
    pub(super) sign_root: Certificate,
    pub(super) trust: Vec<Certificate>,
}

impl Syncer {
    /// The rotation's decisions for this pass, from what was observed.
    pub(super) fn decisions(
        &self,
        observed: &[Result<Option<Current>, ApiFailure>],
        now: OffsetDateTime,
    ) -> Option<Vec<Decision>> {
        let rot = self.setup.rotation.as_ref()?;
        let obs: Vec<Observed> = observed
            .iter()
            .map(|o| match o {
                Ok(Some(c)) => c.observed(&self.setup.roots, now),
                _ => Observed::default(),
            })
            .collect();
        Some(rot.rules.decide(&obs, now))
    }

    /// Which intermediate signs for `cluster` this pass, under which root, and which
    /// roots it trusts.
    pub(super) fn plan<'a>(
        &self,
        cluster: &'a ClusterSetup,
        decision: Option<&Decision>,
        now: OffsetDateTime,
    ) -> Result<Plan<'a>, String> {
        match (decision, &self.setup.rotation) {
            (Some(d), Some(rot)) => {
                let pick = |r: Root| match r {
                    Root::Old => rot.old_root.clone(),
                    Root::New => rot.new_root.clone(),
                };
                let signing = match d.sign_under {
                    Root::Old => cluster.intermediate.as_ref(),
                    Root::New => cluster
                        .next_intermediate
                        .as_ref()
                        .ok_or_else(|| "no intermediate under the new root".to_string())?
                        .as_ref(),
                }
                .map_err(Clone::clone)?;
                Ok(Plan {
                    signing,
                    sign_root: pick(d.sign_under),
                    trust: d.trust.iter().copied().map(pick).collect(),
                })
            }
            _ => {
                let signing = cluster.intermediate.as_ref().map_err(Clone::clone)?;
                let int = signing.certificate();
                // The configured root this intermediate chains to (checked at a time it is
                // valid, so an expired intermediate is reported as expired, not as unchained).
                let at = now.min(int.not_after()).max(int.not_before());
                let sign_root = self
                    .setup
                    .roots
                    .iter()
                    .find(|r| {
                        verify_path(int, &signing.chain[1..], std::slice::from_ref(r), at).is_ok()
                    })
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "intermediate {} does not chain to any configured root",
                            signing.name
                        )
                    })?;
                Ok(Plan {
                    signing,
                    sign_root,
                    trust: self.setup.roots.clone(),
                })
            }
        }
    }

    /// What `plan` wants in `cluster`.
    pub(super) fn target<'a>(
        &'a self,
        cluster: &'a ClusterSetup,
        plan: &'a Plan<'_>,
    ) -> Target<'a> {
        Target {
            cluster: cluster.name.as_str(),
            settings: &cluster.settings,
            signing: plan.signing,
            sign_root: &plan.sign_root,
            trust: plan.trust.clone(),
            trust_domain: &self.setup.trust_domain,
        }
    }

    /// Where a cluster stands in the rotation after the pass, if one is configured.
    pub(super) fn rotation_phase_of(
        &self,
        r: &ClusterReport,
        _now: OffsetDateTime,
    ) -> Option<ClusterPhase> {
        let rot = self.setup.rotation.as_ref()?;
        let o = Observed {
            trusts: r.roots.iter().map(|x| x.sha256.clone()).collect(),
            signs_under: r.signs_under.as_ref().map(|x| x.sha256.clone()),
            since: None,
        };
        Some(rot.rules.cluster_phase(&o))
    }

    /// Where the mesh stands in the rotation, if one is configured.
    pub(super) fn mesh_phase(
        &self,
        observed: &[Result<Option<Current>, ApiFailure>],
        now: OffsetDateTime,
    ) -> Option<MeshPhase> {
        let rot = self.setup.rotation.as_ref()?;
        let obs: Vec<Observed> = observed
            .iter()
            .map(|o| match o {
                Ok(Some(c)) => c.observed(&self.setup.roots, now),
                _ => Observed::default(),
            })
            .collect();
        let names: Vec<&str> = self
            .setup
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        Some(rot.rules.mesh_phase(&names, &obs, now))
    }
}
