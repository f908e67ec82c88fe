//! Leader election with a `coordination.k8s.io/v1` Lease, one per cluster.
//!
//! Controllers are active-passive: every replica runs each controller through
//! [`Leadership::run`] (the cert-manager CertificateRequests and CSR API of a cluster,
//! its pod certificates, the Istio `cacerts` sync of the mesh), and only the holder of
//! the controller's Lease runs the work. The holder renews the Lease every
//! `renew_interval`; a Lease whose `renewTime + leaseDurationSeconds` has passed is
//! free, and a standby takes it over (bumping `leaseTransitions`). Every write
//! carries the `resourceVersion` it read, so when two replicas race, the API server
//! answers one of them 409 and that one stays standby.
//!
//! A leader that cannot renew stops its work after `renew_deadline` (shorter than
//! the lease duration), so by the time a standby may take over, the old leader has
//! already stopped: two replicas never reconcile at once.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

/// How a replica competes for a Lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (e.g. the issuer's own namespace).
    pub namespace: String,
    /// Lease name, e.g. `canopy-issuer-certmanager`.
    pub name: String,
    /// This replica's identity (pod name + a random suffix), written as `holderIdentity`.
    pub identity: String,
    /// How long a Lease stays held without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps working without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby retries.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Defaults of client-go's leader election (15 s / 10 s / 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Where a Lease lives, as the config file says (`clusters[].cert_manager.lease`,
/// `istio.lease`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the issuer's own).
    pub namespace: String,
    /// Lease name (each use has its default).
    #[serde(default)]
    pub name: Option<String>,
    /// Lease duration (default 15s; renew deadline 2/3 of it, retry 2s or less).
    #[serde(default)]
    pub duration: Option<canopy::ttl::Ttl>,
}

impl LeaseConfig {
    /// The election settings: `default_name` unless the config names the Lease,
    /// `identity` as this replica's holder identity.
    pub fn settings(&self, default_name: &str, identity: &str) -> LeaseSettings {
        let name = self.name.clone().unwrap_or_else(|| default_name.into());
        let mut lease = LeaseSettings::new(self.namespace.clone(), name, identity);
        if let Some(d) = self.duration {
            let d = d.as_duration().unsigned_abs().max(Duration::from_secs(3));
            lease.lease_duration = d;
            lease.renew_deadline = d * 2 / 3;
            lease.retry_period = (d / 5).min(Duration::from_secs(2));
        }
        lease
    }
}

/// Why leader election could not run.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The settings cannot work.
    #[error("lease settings: {0}")]
    Settings(&'static str),
}

/// Result of one acquire-or-renew attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (acquired, took over or renewed).
    Leading,
    /// Someone else holds a live Lease, or won the race for it.
    Standby,
}

/// Competes for one Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn lease_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Whether a Lease is held by a live holder other than `me` at `now`.
fn held_by_other(spec: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if holder == me {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + duration > now
}

impl LeaderElector {
    /// An elector for the Lease named in `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Result<Self, LeaderError> {
        if settings.renew_deadline >= settings.lease_duration {
            return Err(LeaderError::Settings(
                "renew_deadline must be shorter than lease_duration",
            ));
        }
        if settings.retry_period >= settings.renew_deadline {
            return Err(LeaderError::Settings(
                "retry_period must be shorter than renew_deadline",
            ));
        }
        if settings.identity.is_empty() {
            return Err(LeaderError::Settings("identity must not be empty"));
        }
        Ok(LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One attempt: create the Lease, renew ours, or take over an expired one.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let s = &self.settings;
        let now = crate::clock::timestamp();
        let current = self.api.get_opt(&s.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds(s.lease_duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if held_by_other(spec, &s.identity, now) {
            return Ok(Attempt::Standby);
        }
        let ours = spec.holder_identity.as_deref() == Some(s.identity.as_str());
        if !ours {
            spec.holder_identity = Some(s.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(lease_seconds(s.lease_duration));
        // `lease` still carries the resourceVersion we read: a concurrent writer makes this 409.
        match self
            .api
            .replace(&s.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !ours {
                    tracing::info!(lease = %s.name, identity = %s.identity, "acquired the lease");
                }
                Ok(Attempt::Leading)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (if we hold it) so a standby need not wait for expiry.
    pub async fn release(&self) {
        let s = &self.settings;
        let Ok(Some(mut lease)) = self.api.get_opt(&s.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&s.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %s.name, error = %e, "could not release the lease");
        }
    }

    /// Runs `work()` whenever this replica leads, until `shutdown` completes.
    ///
    /// `work` is dropped (cancelled) as soon as leadership is lost or cannot be
    /// renewed within `renew_deadline`; when leadership is won again, a new one is
    /// started. `is_leader` mirrors the state for observers (metrics, tests). On
    /// shutdown the Lease is released, so a standby takes over at once. Controllers run
    /// through [`Leadership::run`].
    async fn run<F, Fut>(
        &self,
        mut work: F,
        shutdown: impl Future<Output = ()>,
        is_leader: &watch::Sender<bool>,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            if self.stand_by(&mut shutdown).await == Next::Stop {
                break;
            }
            tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "leading");
            let _ = is_leader.send(true);
            let next = self.lead(work(), &mut shutdown).await;
            let _ = is_leader.send(false);
            if next == Next::Stop {
                break;
            }
        }
        let _ = is_leader.send(false);
        self.release().await;
    }

    /// Retries the Lease every `retry_period` until this replica leads or `shutdown`
    /// completes.
    async fn stand_by(&self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Next {
        let s = &self.settings;
        loop {
            // Told to stop already: do not take a Lease only to give it back.
            if futures::poll!(shutdown.as_mut()).is_ready() {
                return Next::Stop;
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return Next::Lead,
                Ok(Attempt::Standby) => {}
                Err(e) => tracing::warn!(lease = %s.name, error = %e, "lease check failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(s.retry_period) => {}
                () = shutdown.as_mut() => return Next::Stop,
            }
        }
    }

    /// Runs `task` while renewing the Lease every `retry_period`; drops it when the
    /// Lease is lost, not renewed within `renew_deadline`, or `shutdown` completes.
    async fn lead(
        &self,
        task: impl Future<Output = ()>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Next {
        let s = &self.settings;
        let mut last_renewed = tokio::time::Instant::now();
        tokio::pin!(task);
        loop {
            tokio::select! {
                () = &mut task => {
                    // The work ended on its own (it should not): retry leadership from standby.
                    tracing::warn!(lease = %s.name, "controller stopped while leading");
                    return Next::StandBy;
                }
                () = tokio::time::sleep(s.retry_period) => {
                    match self.try_acquire_or_renew().await {
                        Ok(Attempt::Leading) => last_renewed = tokio::time::Instant::now(),
                        Ok(Attempt::Standby) => {
                            tracing::warn!(lease = %s.name, "lost the lease to another replica");
                            return Next::StandBy;
                        }
                        Err(e) => {
                            tracing::warn!(lease = %s.name, error = %e, "could not renew the lease");
                        }
                    }
                    if last_renewed.elapsed() >= s.renew_deadline {
                        tracing::warn!(lease = %s.name, "lease not renewed within the renew deadline; stepping down");
                        return Next::StandBy;
                    }
                }
                () = shutdown.as_mut() => return Next::Stop,
            }
        }
    }
}

/// What a replica does next in [`LeaderElector::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// It holds the Lease: run the work.
    Lead,
    /// It does not (or no longer) hold the Lease: compete again.
    StandBy,
    /// It was told to stop: release the Lease and return.
    Stop,
}

/// Who runs a controller: the holder of a Lease among the replicas, or this replica
/// alone (no leader election: the deployment runs one replica).
#[derive(Debug)]
pub enum Leadership {
    /// Only while this replica holds the Lease.
    Lease(Box<LeaderElector>),
    /// Always: there is no other replica to defer to.
    Alone,
}

impl Leadership {
    /// Behind the Lease of `lease`, or alone without one.
    pub fn new(client: Client, lease: Option<LeaseSettings>) -> Result<Self, LeaderError> {
        Ok(match lease {
            Some(settings) => Leadership::Lease(Box::new(LeaderElector::new(client, settings)?)),
            None => Leadership::Alone,
        })
    }

    /// Runs a controller (`work()`) while this replica may: until `shutdown` completes,
    /// and, behind a Lease, only while holding it (dropped when it is lost, started
    /// again when it is won back, the Lease released on shutdown). `is_leader` mirrors
    /// whether the work runs.
    pub async fn run<F, Fut>(
        &self,
        mut work: F,
        shutdown: impl Future<Output = ()>,
        is_leader: &watch::Sender<bool>,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        match self {
            Leadership::Lease(elector) => elector.run(work, shutdown, is_leader).await,
            Leadership::Alone => {
                let _ = is_leader.send(true);
                tokio::select! {
                    () = work() => {}
                    () = shutdown => {}
                }
                let _ = is_leader.send(false);
            }
        }
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

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = crate::clock::timestamp();
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[tokio::test]
    async fn alone_the_work_runs_at_once_and_stops_on_shutdown() {
        let (is_leader, mut leading) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = starts.clone();
        let run = tokio::spawn(async move {
            let work = || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>()
            };
            let shutdown = async move {
                let _ = stopped.await;
            };
            Leadership::Alone.run(work, shutdown, &is_leader).await;
        });
        leading.wait_for(|l| *l).await.unwrap();
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the run ends on shutdown")
            .unwrap();
        assert!(!*leading.borrow(), "not leading once stopped");
    }

    #[test]
    fn a_live_lease_of_another_holder_is_held() {
        let now = crate::clock::timestamp();
        assert!(held_by_other(&spec(Some("b"), 1, 15), "a", now));
        assert!(!held_by_other(&spec(Some("b"), 16, 15), "a", now));
        assert!(!held_by_other(&spec(Some("a"), 1, 15), "a", now));
        assert!(!held_by_other(&spec(None, 1, 15), "a", now));
        assert!(!held_by_other(&spec(Some(""), 1, 15), "a", now));
    }
}
