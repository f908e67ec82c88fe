//! What a sync pass did and what `status` shows, per cluster, as text and JSON.

use std::fmt;

use canopy::cacerts::Problem;
use canopy::cert::Certificate;
use canopy::renewal::life_used;
use canopy::rotation::{ClusterPhase, MeshPhase};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::istio::desired::{renewal_time, Current, Ownership};

/// A trusted root as shown to an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootInfo {
    /// Subject DN.
    pub subject: String,
    /// SHA-256 fingerprint, lowercase hex.
    pub sha256: String,
}

impl RootInfo {
    /// From a certificate.
    pub fn of(c: &Certificate) -> RootInfo {
        RootInfo {
            subject: c.subject().to_string(),
            sha256: c.fingerprint_sha256().to_string(),
        }
    }
}

/// The CA a cluster's `cacerts` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaInfo {
    /// Subject DN.
    pub subject: String,
    /// Serial, hex.
    pub serial: String,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When canopy renews it.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_at: OffsetDateTime,
    /// Seconds until it expires (negative once expired), at the time of the report.
    pub expires_in_seconds: i64,
    /// Whether it is in the last tenth of its life.
    pub in_last_tenth: bool,
}

impl CaInfo {
    /// From a certificate at `now`.
    pub fn of(c: &Certificate, now: OffsetDateTime) -> CaInfo {
        CaInfo {
            subject: c.subject().to_string(),
            serial: c.serial().to_string(),
            not_before: c.not_before(),
            not_after: c.not_after(),
            renew_at: renewal_time(c),
            expires_in_seconds: (c.not_after() - now).whole_seconds(),
            in_last_tenth: life_used(c.not_before(), c.not_after(), now) >= 0.9,
        }
    }
}

/// What a sync did in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result", content = "detail")]
pub enum Outcome {
    /// The Secret did not exist and was created.
    Created(String),
    /// The Secret was updated in place, for this reason.
    Updated(String),
    /// The Secret was already right: nothing written.
    Unchanged,
    /// Not written by policy; the message says what is wrong.
    Reported(String),
    /// Could not be made valid; nothing (more) written.
    Failed(String),
    /// (`status` only) a sync would change it, for this reason.
    Pending(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created(d) => write!(f, "created: {d}"),
            Outcome::Updated(d) => write!(f, "updated: {d}"),
            Outcome::Unchanged => f.write_str("up to date, nothing written"),
            Outcome::Reported(d) => write!(f, "not replaced (repair policy): {d}"),
            Outcome::Failed(d) => write!(f, "failed: {d}"),
            Outcome::Pending(d) => write!(f, "a sync would change it: {d}"),
        }
    }
}

impl Outcome {
    /// Whether the cluster ends the pass with a valid Secret written or kept by canopy.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Created(_) | Outcome::Updated(_) | Outcome::Unchanged
        )
    }
}

/// One cluster's state (and, after a sync, what was done).
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// Cluster name.
    pub cluster: String,
    /// Namespace of the Secret.
    pub namespace: String,
    /// What the sync did, or (for `status`) would do.
    pub outcome: Outcome,
    /// Who shaped the Secret found (None: there was none).
    pub ownership: Option<Ownership>,
    /// What istiod would reject in the Secret as found.
    pub problems: Vec<Problem>,
    /// Warnings that do not block (a CA cut short by its intermediate's expiry...).
    pub warnings: Vec<String>,
    /// Roots in `root-cert.pem` now.
    pub roots: Vec<RootInfo>,
    /// The CA in `ca-cert.pem` now.
    pub ca: Option<CaInfo>,
    /// The root the CA chains to now.
    pub signs_under: Option<RootInfo>,
    /// Where this cluster stands in a root rotation.
    pub rotation: Option<ClusterPhase>,
    /// Serial of a mesh CA minted in this pass.
    pub minted: Option<String>,
}

impl ClusterReport {
    /// A report with nothing known yet.
    pub fn new(cluster: &str, namespace: &str, outcome: Outcome) -> ClusterReport {
        ClusterReport {
            cluster: cluster.into(),
            namespace: namespace.into(),
            outcome,
            ownership: None,
            problems: Vec::new(),
            warnings: Vec::new(),
            roots: Vec::new(),
            ca: None,
            signs_under: None,
            rotation: None,
            minted: None,
        }
    }

    /// Fills in what a Secret holds (roots, CA, signing root).
    pub fn describe(&mut self, secret: &Current, roots: &[Certificate], now: OffsetDateTime) {
        self.roots = secret.roots().iter().map(RootInfo::of).collect();
        self.ca = secret.ca_cert().map(|c| CaInfo::of(&c, now));
        self.signs_under = secret.signing_root(roots, now).map(|r| RootInfo::of(&r));
    }
}

/// Every cluster's report, plus the mesh's rotation phase.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When the report was made.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Per cluster, in config order.
    pub clusters: Vec<ClusterReport>,
    /// The rotation's phase, if one is configured.
    pub rotation: Option<MeshPhase>,
}

impl Report {
    /// Whether every cluster has a valid Secret written or kept by canopy (exit 0).
    pub fn all_ok(&self) -> bool {
        self.clusters.iter().all(|c| c.outcome.is_ok())
    }

    /// The process exit code for `cacerts sync --once`: 0 when all clusters are valid.
    pub fn exit_code(&self) -> u8 {
        if self.all_ok() {
            0
        } else {
            1
        }
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterReport> {
        self.clusters.iter().find(|c| c.cluster == name)
    }

    /// JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn ts(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(phase) = &self.rotation {
            let text = match phase {
                MeshPhase::AddingNewRoot { pending } => {
                    format!("1/3 adding the new root (pending: {})", pending.join(", "))
                }
                MeshPhase::Moving { moved, total } => {
                    format!("2/3 moving mesh CAs to the new root ({moved}/{total} moved)")
                }
                MeshPhase::Draining { until } => format!(
                    "3/3 waiting one workload TTL for leaves under the old root (until {})",
                    ts(*until)
                ),
                MeshPhase::RemovingOldRoot { pending } => {
                    format!(
                        "3/3 removing the old root (pending: {})",
                        pending.join(", ")
                    )
                }
                MeshPhase::Complete => "complete: the old root is gone everywhere".into(),
            };
            writeln!(f, "root rotation: {text}")?;
        }
        for c in &self.clusters {
            let (word, detail) = match &c.outcome {
                Outcome::Created(d) => ("created", d.as_str()),
                Outcome::Updated(d) => ("updated", d.as_str()),
                Outcome::Unchanged => ("ok", "up to date, nothing written"),
                Outcome::Reported(d) => ("REPORTED", d.as_str()),
                Outcome::Failed(d) => ("FAILED", d.as_str()),
                Outcome::Pending(d) => ("PENDING", d.as_str()),
            };
            writeln!(
                f,
                "cluster {} ({}/cacerts): {word}: {detail}",
                c.cluster, c.namespace
            )?;
            if let Some(ca) = &c.ca {
                writeln!(
                    f,
                    "  mesh CA: {} serial {} expires {} (renew at {})",
                    ca.subject,
                    ca.serial,
                    ts(ca.not_after),
                    ts(ca.renew_at)
                )?;
            }
            for r in &c.roots {
                writeln!(f, "  trusts root: {} sha256 {}", r.subject, r.sha256)?;
            }
            if let Some(p) = c.rotation {
                writeln!(
                    f,
                    "  rotation: {}",
                    serde_json::to_value(p)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or_default()
                )?;
            }
            for p in &c.problems {
                writeln!(f, "  problem: {p}")?;
            }
            for w in &c.warnings {
                writeln!(f, "  warning: {w}")?;
            }
        }
        Ok(())
    }
}
