//! The reconcile's I/O half: read each cluster's `cacerts`, decide (pure, in `desired` and
//! the core's `rotation`), mint and record a mesh CA when needed, write the Secret once.
//!
//! Writes are create-if-absent or replace-with-resourceVersion: never delete-and-recreate
//! (istiod watches the Secret), and a stale write (after a timeout, say) can only fail with
//! 409, never overwrite a newer Secret. The server applies a replace whole, so the Secret is
//! always either the old one or the complete new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use canopy::ca::IssuedCertificate;
use canopy::cert::Certificate;
use canopy::chain::verify_path;
use canopy::key::KeyPair;
use canopy::profile::{CaProfile, CaRequest, Profile};
use canopy::rotation::{Decision, Observed, Root};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::audit::{AuditEvent, Outcome as AuditOutcome};
use crate::istio::desired::{
    self, assess, build, Blocked, CaPlan, Current, Desired, Material, Target, SECRET_NAME,
};
use crate::istio::report::{ClusterReport, Outcome, Report};
use crate::istio::setup::{ClusterSetup, IstioSetup, Signing};
use crate::kube_client::KubeAccess;
use crate::store::{CertificateRecord, Store, Write};

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

/// What one pass decided for a cluster before writing.
struct Plan<'a> {
    signing: &'a Arc<Signing>,
    sign_root: Certificate,
    trust: Vec<Certificate>,
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

    /// The rotation's decisions for this pass, from what was observed.
    fn decisions(
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

    fn plan<'a>(
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

    /// Mints a mesh CA under `signing` and records it (certificate store + audit log)
    /// before it is published anywhere.
    async fn mint(
        &self,
        cluster: &ClusterSetup,
        signing: &Signing,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(IssuedCertificate, KeyPair), String> {
        let req = CaRequest {
            trust_domain: Some(self.setup.trust_domain.clone()),
            ttl: Some(cluster.settings.mesh_ca_ttl),
            path_len: Some(0),
            clamp_to_issuer: true,
            name_constraints: Some(
                cluster
                    .settings
                    .mesh_ca_constraints(&self.setup.trust_domain),
            ),
            ..CaRequest::new(CaProfile::MeshCa, format!("{} mesh CA", cluster.name))
        };
        let (issued, key) = signing
            .ca
            .issue_with_new_key(&req, cluster.settings.key_type, now)
            .map_err(|e| {
                format!(
                    "cannot mint a mesh CA under intermediate {}: {e}",
                    signing.name
                )
            })?;
        let cert = &issued.certificate;
        let record = CertificateRecord {
            cluster: Some(cluster.name.to_string()),
            namespace: Some(cluster.settings.namespace.clone()),
            ..CertificateRecord::new(
                cert,
                &signing.name,
                &Profile::MeshCa.to_string(),
                ACTOR,
                "internal",
                now.unix_timestamp(),
            )
        };
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            ACTOR,
            "sign",
            cert.serial().to_string(),
            AuditOutcome::Ok,
            json!({
                "profile": "mesh-ca",
                "intermediate": signing.name,
                "cluster": cluster.name.as_str(),
                "reason": reason,
                "not_after": cert.not_after().unix_timestamp(),
                "clamped": issued.clamped,
                "fingerprint": cert.fingerprint_sha256(),
            }),
        );
        self.store
            .as_ref()
            .ok_or("no storage to record the mesh CA in")?
            .commit(&[Write::Issued(Box::new(record), event)])
            .await
            .map_err(|e| {
                format!("could not record the new mesh CA, so it was not published: {e}")
            })?;
        Ok((issued, key))
    }

    async fn audit_write(
        &self,
        cluster: &ClusterSetup,
        what: &str,
        d: &Desired,
        now: OffsetDateTime,
    ) {
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            ACTOR,
            "cacerts.write",
            cluster.name.to_string(),
            AuditOutcome::Ok,
            json!({
                "cluster": cluster.name.as_str(),
                "namespace": cluster.settings.namespace,
                "what": what,
                "ca_serial": d.ca.serial().to_string(),
                "ca_not_after": d.ca.not_after().unix_timestamp(),
            }),
        );
        let Some(store) = &self.store else { return };
        if let Err(e) = store.append_events(&[event]).await {
            tracing::warn!(cluster = %cluster.name, error = %e, "could not audit a cacerts write");
        }
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
        let target = Target {
            cluster: cluster.name.as_str(),
            settings: &cluster.settings,
            signing: plan.signing,
            sign_root: &plan.sign_root,
            trust: plan.trust.clone(),
            trust_domain: &self.setup.trust_domain,
        };
        let mut minted: Option<(IssuedCertificate, KeyPair)> = None;
        let mut observed = Some(first);
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let current = match observed.take() {
                Some(r) => r,
                None => self.read(cluster).await,
            };
            let current = match current {
                Ok(c) => c,
                Err(ApiFailure::Fatal(m)) => {
                    report.outcome = Outcome::Failed(format!("cannot read {ns}/cacerts: {m}"));
                    return report;
                }
                Err(e) => {
                    report.outcome =
                        Outcome::Failed(format!("cannot read {ns}/cacerts: {e}; nothing written"));
                    return report;
                }
            };
            if attempt == 0 {
                if let Some(c) = &current {
                    report.describe(c, &self.setup.roots, now);
                }
            }
            let assessment = assess(&target, current.as_ref(), now);
            report.ownership = assessment.ownership;
            report.problems = assessment.problems.clone();
            let ca_plan = match assessment.plan {
                Ok(p) => p,
                Err(Blocked::Refused(m)) => {
                    report.outcome = Outcome::Failed(format!("{m}; nothing written"));
                    return report;
                }
                Err(Blocked::Reported(m)) => {
                    report.outcome = Outcome::Reported(m);
                    return report;
                }
            };
            let (material, reason) = match &ca_plan {
                CaPlan::Keep => (
                    Material::Keep(current.as_ref().expect("keep needs a Secret")),
                    None,
                ),
                CaPlan::Publish(why) => (Material::Publish, Some(why.clone())),
                CaPlan::Mint(why) => {
                    // One mint per pass: a retry after a conflict reuses it.
                    if minted.is_none() {
                        match self.mint(cluster, plan.signing, why, now).await {
                            Ok(m) => minted = Some(m),
                            Err(e) => {
                                report.outcome = Outcome::Failed(format!("{e}; nothing written"));
                                return report;
                            }
                        }
                    }
                    let (issued, key) = minted.as_ref().expect("minted");
                    if issued.clamped {
                        report.warnings.push(format!(
                            "the mesh CA was cut to intermediate {}'s expiry ({}): renew the intermediate",
                            plan.signing.name,
                            plan.signing.certificate().not_after()
                        ));
                    }
                    report.minted = Some(issued.certificate.serial().to_string());
                    (Material::Minted(issued, key), Some(why.clone()))
                }
            };
            let desired = match build(&target, material, current.as_ref(), now) {
                Ok(d) => d,
                Err(e) => {
                    report.outcome = Outcome::Failed(e.to_string());
                    return report;
                }
            };
            if let Some(c) = &current {
                if desired.matches(c) {
                    report.outcome = Outcome::Unchanged;
                    return report;
                }
            }
            let client = match self.client(cluster).await {
                Ok(c) => c,
                Err(e) => {
                    report.outcome = Outcome::Failed(e);
                    return report;
                }
            };
            let api: Api<Secret> = Api::namespaced(client, ns);
            let pp = PostParams {
                dry_run: false,
                field_manager: Some("canopy-issuer".into()),
            };
            let result = match &current {
                None => {
                    timed(
                        self.timeout(),
                        api.create(&pp, &secret_of(ns, &desired, None)),
                    )
                    .await
                }
                Some(c) => {
                    timed(
                        self.timeout(),
                        api.replace(
                            SECRET_NAME,
                            &pp,
                            &secret_of(ns, &desired, c.resource_version.clone()),
                        ),
                    )
                    .await
                }
            };
            match result {
                Ok(written) => {
                    let what = if current.is_none() {
                        "created"
                    } else {
                        "updated"
                    };
                    self.audit_write(cluster, what, &desired, now).await;
                    let why = reason.unwrap_or_else(|| match assessment.ownership {
                        Some(desired::Ownership::Foreign) => {
                            "adopted a cacerts canopy did not write".into()
                        }
                        Some(desired::Ownership::EditedByHand) => "repaired a hand edit".into(),
                        _ => "files or labels out of date".into(),
                    });
                    report.outcome = if current.is_none() {
                        Outcome::Created(why)
                    } else {
                        Outcome::Updated(why)
                    };
                    report.describe(&current_of(&written), &self.setup.roots, now);
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

    fn rotation_phase_of(
        &self,
        r: &ClusterReport,
        _now: OffsetDateTime,
    ) -> Option<canopy::rotation::ClusterPhase> {
        let rot = self.setup.rotation.as_ref()?;
        let o = Observed {
            trusts: r.roots.iter().map(|x| x.sha256.clone()).collect(),
            signs_under: r.signs_under.as_ref().map(|x| x.sha256.clone()),
            since: None,
        };
        Some(rot.rules.cluster_phase(&o))
    }

    fn mesh_phase(
        &self,
        observed: &[Result<Option<Current>, ApiFailure>],
        now: OffsetDateTime,
    ) -> Option<canopy::rotation::MeshPhase> {
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

    /// What every cluster holds and what a sync would do, without writing anything.
    pub async fn status(&self, now: OffsetDateTime) -> Report {
        let observed = self.observe().await;
        let decisions = self.decisions(&observed, now);
        let mut clusters = Vec::new();
        for (i, (cluster, found)) in self.setup.clusters.iter().zip(&observed).enumerate() {
            let ns = cluster.settings.namespace.as_str();
            let mut r = ClusterReport::new(cluster.name.as_str(), ns, Outcome::Unchanged);
            let current = match found {
                Ok(c) => c.clone(),
                Err(e) => {
                    r.outcome = Outcome::Failed(format!("cannot read {ns}/cacerts: {e}"));
                    clusters.push(r);
                    continue;
                }
            };
            if let Some(c) = &current {
                r.describe(c, &self.setup.roots, now);
            }
            let d = decisions.as_ref().map(|d| &d[i]);
            r.outcome = match self.plan(cluster, d, now) {
                Err(e) => Outcome::Failed(e),
                Ok(plan) => {
                    let target = Target {
                        cluster: cluster.name.as_str(),
                        settings: &cluster.settings,
                        signing: plan.signing,
                        sign_root: &plan.sign_root,
                        trust: plan.trust.clone(),
                        trust_domain: &self.setup.trust_domain,
                    };
                    let a = assess(&target, current.as_ref(), now);
                    r.ownership = a.ownership;
                    r.problems = a.problems;
                    match a.plan {
                        Err(Blocked::Refused(m)) => Outcome::Failed(m),
                        Err(Blocked::Reported(m)) => Outcome::Reported(m),
                        Ok(CaPlan::Mint(why)) | Ok(CaPlan::Publish(why)) => {
                            Outcome::Pending(format!("a sync would write a new CA: {why}"))
                        }
                        Ok(CaPlan::Keep) => match current
                            .as_ref()
                            .map(|c| (c, build(&target, Material::Keep(c), Some(c), now)))
                        {
                            Some((c, Ok(d))) if d.matches(c) => Outcome::Unchanged,
                            Some((_, Ok(_))) => {
                                Outcome::Pending("a sync would rewrite files or labels".into())
                            }
                            Some((_, Err(e))) => Outcome::Failed(e.to_string()),
                            None => Outcome::Pending("a sync would create it".into()),
                        },
                    }
                }
            };
            r.rotation = self.rotation_phase_of(&r, now);
            clusters.push(r);
        }
        Report {
            at: now,
            rotation: self.mesh_phase(&observed, now),
            clusters,
        }
    }
}
