//! The reconcile's I/O half: read each cluster's `cacerts`, decide (pure, in `desired` and
//! the core's `rotation`), mint and record a mesh CA when needed, write the Secret once.
//!
//! The steps apart: `rotation` (which root a cluster signs under and trusts this pass),
//! `mesh_ca` (mint and record a mesh CA, audit each write), `status` (the same decisions,
//! nothing written).
//!
//! Writes are create-if-absent or replace-with-resourceVersion: never delete-and-recreate
//! (istiod watches the Secret), and a stale write (after a timeout, say) can only fail with
//! 409, never overwrite a newer Secret. The server applies a replace whole, so the Secret is
//! always either the old one or the complete new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use canopy::ca::IssuedCertificate;
use canopy::key::KeyPair;
use canopy::rotation::Decision;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::istio::desired::{
    self, assess, build, Blocked, CaPlan, Current, Desired, Material, Target, SECRET_NAME,
};
use crate::istio::report::{ClusterReport, Outcome, Report};
use crate::istio::setup::{ClusterSetup, IstioSetup, Signing};
use crate::kube_client::KubeAccess;
use crate::store::Store;

mod mesh_ca;
mod rotation;
mod status;

/// Field manager and actor name of the Istio sync.
pub const ACTOR: &str = "canopy-issuer/istio";
/// Attempts per cluster per pass (conflicts and transient errors).
pub const MAX_ATTEMPTS: u32 = 6;

/// A failed API call.
#[derive(Debug, Clone)]
pub enum ApiFailure {
    /// 409: someone else wrote first; re-read and decide again.
    Conflict(String),
    /// 5xx, 429, timeouts, connection errors: retry after a pause.
    Transient(String),
    /// Anything else (403, 422...): retrying will not help.
    Fatal(String),
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Conflict(m) | ApiFailure::Transient(m) | ApiFailure::Fatal(m) => {
                f.write_str(m)
            }
        }
    }
}

fn classify(e: kube::Error) -> ApiFailure {
    match e {
        kube::Error::Api(s) if s.code == 409 => {
            ApiFailure::Conflict(format!("409 {}: {}", s.reason, s.message))
        }
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
            ApiFailure::Transient(format!("{} {}: {}", s.code, s.reason, s.message))
        }
        kube::Error::Api(s) => ApiFailure::Fatal(format!("{} {}: {}", s.code, s.reason, s.message)),
        other => ApiFailure::Transient(other.to_string()),
    }
}

async fn timed<T>(
    limit: StdDuration,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiFailure> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(ApiFailure::Transient(format!(
            "the API server did not answer within {}s",
            limit.as_secs_f64()
        ))),
    }
}

/// A kube client for a target.
pub async fn connect(target: &KubeAccess, timeout: StdDuration) -> Result<kube::Client, String> {
    crate::kube_client::client(target, Some(timeout))
        .await
        .map_err(|e| e.to_string())
}

/// The Secret as canopy reads it.
pub fn current_of(s: &Secret) -> Current {
    Current {
        resource_version: s.metadata.resource_version.clone(),
        type_: s.type_.clone(),
        labels: s.metadata.labels.clone().unwrap_or_default(),
        annotations: s.metadata.annotations.clone().unwrap_or_default(),
        data: s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }
}

fn secret_of(namespace: &str, d: &Desired, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(d.labels.clone()),
            annotations: Some(d.annotations.clone()),
            resource_version,
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            d.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// Shared by every pass: the setup, storage, and one client per cluster (made on first use).
pub struct Syncer {
    /// What to sync.
    pub setup: Arc<IstioSetup>,
    store: Option<Store>,
    clients: Mutex<BTreeMap<String, kube::Client>>,
    /// Pause before retrying a transient failure (doubles per attempt).
    pub backoff: StdDuration,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("setup", &self.setup)
            .finish()
    }
}

impl Syncer {
    /// A syncer over `setup`, recording mesh CAs in `store`.
    pub fn new(setup: Arc<IstioSetup>, store: Store) -> Syncer {
        Syncer {
            setup,
            store: Some(store),
            clients: Mutex::new(BTreeMap::new()),
            backoff: StdDuration::from_millis(200),
        }
    }

    /// A syncer that only reads (for `status`): it can neither mint nor write.
    pub fn read_only(setup: Arc<IstioSetup>) -> Syncer {
        Syncer {
            setup,
            store: None,
            clients: Mutex::new(BTreeMap::new()),
            backoff: StdDuration::from_millis(200),
        }
    }

    fn timeout(&self) -> StdDuration {
        StdDuration::from_secs(self.setup.settings.request_timeout.as_seconds().max(1) as u64)
    }

    /// The client of a cluster.
    pub async fn client(&self, cluster: &ClusterSetup) -> Result<kube::Client, String> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(cluster.name.as_str()) {
            return Ok(c.clone());
        }
        let c = connect(&cluster.target, self.timeout()).await?;
        clients.insert(cluster.name.to_string(), c.clone());
        Ok(c)
    }

    async fn read(&self, cluster: &ClusterSetup) -> Result<Option<Current>, ApiFailure> {
        let client = self.client(cluster).await.map_err(ApiFailure::Fatal)?;
        let api: Api<Secret> = Api::namespaced(client, &cluster.settings.namespace);
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            match timed(self.timeout(), api.get_opt(SECRET_NAME)).await {
                Ok(s) => return Ok(s.as_ref().map(current_of)),
                Err(ApiFailure::Fatal(m)) => return Err(ApiFailure::Fatal(m)),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(self.backoff * 2u32.pow(attempt.min(4))).await;
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Reads every cluster's Secret (errors per cluster).
    pub async fn observe(&self) -> Vec<Result<Option<Current>, ApiFailure>> {
        let mut out = Vec::new();
        for c in &self.setup.clusters {
            out.push(self.read(c).await);
        }
        out
    }

    /// Brings one cluster's Secret to what it should be, retrying conflicts and transient
    /// failures. `first` is what the pass observed (read again after a conflict).
    async fn sync_cluster(
        &self,
        cluster: &ClusterSetup,
        first: Result<Option<Current>, ApiFailure>,
        decision: Option<&Decision>,
        now: OffsetDateTime,
    ) -> ClusterReport {
        let ns = cluster.settings.namespace.as_str();
        let mut report = ClusterReport::new(cluster.name.as_str(), ns, Outcome::Unchanged);
        let plan = match self.plan(cluster, decision, now) {
            Ok(p) => p,
            Err(e) => {
                if let Ok(Some(c)) = &first {
                    report.describe(c, &self.setup.roots, now);
                    report.problems = c.problems(now);
                }
                report.outcome = Outcome::Failed(format!("{e}; nothing written"));
                return report;
            }
        };
        let target = self.target(cluster, &plan);
        let mut minted = None;
        let mut observed = Some(first);
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let current = match observed.take() {
                Some(r) => r,
                None => self.read(cluster).await,
            };
            let current = match current {
                Ok(c) => c,
                Err(e) => {
                    report.outcome = unreadable(ns, e);
                    return report;
                }
            };
            if attempt == 0 {
                if let Some(c) = &current {
                    report.describe(c, &self.setup.roots, now);
                }
            }
            let written = self
                .attempt(
                    cluster,
                    &target,
                    current.as_ref(),
                    &mut minted,
                    &mut report,
                    now,
                )
                .await;
            match written {
                Ok(outcome) => {
                    report.outcome = outcome;
                    return report;
                }
                Err(ApiFailure::Conflict(m)) => {
                    tracing::info!(cluster = %cluster.name, "cacerts changed while writing ({m}); reading it again");
                    last_error = m;
                }
                Err(ApiFailure::Transient(m)) => {
                    tracing::warn!(cluster = %cluster.name, attempt, "writing cacerts failed ({m}); retrying");
                    last_error = m;
                    tokio::time::sleep(self.backoff * 2u32.pow(attempt.min(4))).await;
                }
                Err(ApiFailure::Fatal(m)) => {
                    report.outcome =
                        Outcome::Failed(format!("the API server refused the write: {m}"));
                    return report;
                }
            }
        }
        report.outcome = Outcome::Failed(format!(
            "gave up after {MAX_ATTEMPTS} attempts; last error: {last_error}"
        ));
        report
    }

    /// One attempt at bringing `current` to what `target` wants: decide, mint if needed
    /// (once per pass: `minted` keeps it for the next attempt), build, write if it
    /// differs. The outcome, or the write's failure.
    async fn attempt(
        &self,
        cluster: &ClusterSetup,
        target: &Target<'_>,
        current: Option<&Current>,
        minted: &mut Option<(IssuedCertificate, KeyPair)>,
        report: &mut ClusterReport,
        now: OffsetDateTime,
    ) -> Result<Outcome, ApiFailure> {
        let assessment = assess(target, current, now);
        report.ownership = assessment.ownership;
        report.problems = assessment.problems.clone();
        let ca_plan = match assessment.plan {
            Ok(p) => p,
            Err(Blocked::Refused(m)) => {
                return Ok(Outcome::Failed(format!("{m}; nothing written")))
            }
            Err(Blocked::Reported(m)) => return Ok(Outcome::Reported(m)),
        };
        if let (CaPlan::Mint(why), true) = (&ca_plan, minted.is_none()) {
            match self.mint(cluster, target.signing, why, now).await {
                Ok(m) => *minted = Some(m),
                Err(e) => return Ok(Outcome::Failed(format!("{e}; nothing written"))),
            }
        }
        let (material, reason) =
            material(&ca_plan, current, minted.as_ref(), target.signing, report);
        let desired = match build(target, material, current, now) {
            Ok(d) => d,
            Err(e) => return Ok(Outcome::Failed(e.to_string())),
        };
        if current.is_some_and(|c| desired.matches(c)) {
            return Ok(Outcome::Unchanged);
        }
        let client = match self.client(cluster).await {
            Ok(c) => c,
            Err(e) => return Ok(Outcome::Failed(e)),
        };
        let written = self.write(client, cluster, current, &desired).await?;
        let what = if current.is_none() {
            "created"
        } else {
            "updated"
        };
        self.audit_write(cluster, what, &desired, now).await;
        report.describe(&current_of(&written), &self.setup.roots, now);
        let why = reason.unwrap_or_else(|| why_rewritten(assessment.ownership));
        Ok(if current.is_none() {
            Outcome::Created(why)
        } else {
            Outcome::Updated(why)
        })
    }

    /// Creates the Secret, or replaces `current` with its resourceVersion as the
    /// precondition (a concurrent write makes this 409).
    async fn write(
        &self,
        client: kube::Client,
        cluster: &ClusterSetup,
        current: Option<&Current>,
        desired: &Desired,
    ) -> Result<Secret, ApiFailure> {
        let ns = cluster.settings.namespace.as_str();
        let api: Api<Secret> = Api::namespaced(client, ns);
        let pp = PostParams {
            dry_run: false,
            field_manager: Some("canopy-issuer".into()),
        };
        match current {
            None => {
                timed(
                    self.timeout(),
                    api.create(&pp, &secret_of(ns, desired, None)),
                )
                .await
            }
            Some(c) => {
                let secret = secret_of(ns, desired, c.resource_version.clone());
                timed(self.timeout(), api.replace(SECRET_NAME, &pp, &secret)).await
            }
        }
    }

    /// One pass over every cluster at `now`: observe all, decide (rotation), write each.
    pub async fn pass(&self, now: OffsetDateTime) -> Report {
        let observed = self.observe().await;
        let decisions = self.decisions(&observed, now);
        let mut clusters = Vec::new();
        for (i, (cluster, first)) in self.setup.clusters.iter().zip(observed).enumerate() {
            let d = decisions.as_ref().map(|d| &d[i]);
            let mut r = self.sync_cluster(cluster, first, d, now).await;
            r.rotation = self.rotation_phase_of(&r, now);
            clusters.push(r);
        }
        let rotation = self.mesh_phase(&self.observe().await, now);
        Report {
            at: now,
            clusters,
            rotation,
        }
    }
}

/// Why a cluster's Secret could not be read, as its outcome.
fn unreadable(ns: &str, e: ApiFailure) -> Outcome {
    match e {
        ApiFailure::Fatal(m) => Outcome::Failed(format!("cannot read {ns}/cacerts: {m}")),
        e => Outcome::Failed(format!("cannot read {ns}/cacerts: {e}; nothing written")),
    }
}

/// The CA material `plan` asks for (the mesh CA already minted for a `Mint`), and why
/// the Secret gets a new CA (`None`: it keeps its own).
fn material<'a>(
    plan: &CaPlan,
    current: Option<&'a Current>,
    minted: Option<&'a (IssuedCertificate, KeyPair)>,
    signing: &Signing,
    report: &mut ClusterReport,
) -> (Material<'a>, Option<String>) {
    match plan {
        CaPlan::Keep => (Material::Keep(current.expect("keep needs a Secret")), None),
        CaPlan::Publish(why) => (Material::Publish, Some(why.clone())),
        CaPlan::Mint(why) => {
            let (issued, key) = minted.expect("minted before its material is asked for");
            if issued.clamped {
                report.warnings.push(format!(
                    "the mesh CA was cut to intermediate {}'s expiry ({}): renew the intermediate",
                    signing.name,
                    signing.certificate().not_after()
                ));
            }
            report.minted = Some(issued.certificate.serial().to_string());
            (Material::Minted(issued, key), Some(why.clone()))
        }
    }
}

/// Why a Secret that keeps its CA was written anyway.
fn why_rewritten(ownership: Option<desired::Ownership>) -> String {
    match ownership {
        Some(desired::Ownership::Foreign) => "adopted a cacerts canopy did not write".into(),
        Some(desired::Ownership::EditedByHand) => "repaired a hand edit".into(),
        _ => "files or labels out of date".into(),
    }
}
