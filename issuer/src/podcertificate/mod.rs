//! canopy as a signer of Kubernetes PodCertificateRequests (`certificates.k8s.io/v1`,
//! KEP-4317): a pod mounts a `podCertificate` projected volume naming one of canopy's
//! signers, its node's kubelet creates a PodCertificateRequest with a fresh key's stub
//! PKCS#10 request, and canopy answers in the request's status with a certificate for
//! `spiffe://TD/ns/NS/sa/SA`, signed by the cluster's intermediate.
//!
//! One controller per configured cluster, behind its own Lease, watching only the
//! requests whose `spec.signerName` is one of the cluster's signer names (a field
//! selector: other signers' requests are never read, let alone written):
//!
//! - [`resource`]: the v1 PodCertificateRequest type;
//! - [`refusal`]: the Denied/Failed answers and their typed reasons;
//! - [`decision`]: proof of possession, the binding to the API server's pod, service
//!   account and node, lifetime and refresh hint (pure);
//! - `controller`: the PodCertificateRequest kind of the one reconcile
//!   ([`crate::certmanager::reconcile`]), which issues through [`crate::Issuer::issue`] (one
//!   policy, one record, one audit log) and writes the status once.

pub mod decision;
pub mod refusal;
pub mod resource;

mod controller;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use crate::certmanager::context::ControllerSettings;
use crate::certmanager::reconcile::Retry;
use crate::certmanager::ControllerError;
use crate::config::ClusterConfig;
use crate::leader::{Leadership, LeaseConfig, LeaseSettings};
use crate::names::ClusterName;
use crate::Issuer;

/// canopy's default signer name.
pub const DEFAULT_SIGNER: &str = "canopy.dev/spiffe";

/// The `pod_certificates:` block of a cluster in the issuer's config file.
///
/// ```yaml
/// clusters:
///   - name: eks-prod
///     intermediate: aws
///     in_cluster: true
///     pod_certificates:
///       policy: pods                      # decides every pod certificate (TTL, key types)
///       signer_names: [canopy.dev/spiffe] # the signers pods name in podCertificate volumes
///       lease: { namespace: canopy }      # leader election (omit for a single replica)
///       max_retry: 1h                     # give up on transient errors after this
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodCertificatesConfig {
    /// Policy (by name) every pod certificate of this cluster is decided under.
    pub policy: String,
    /// Signer names canopy answers for in this cluster.
    #[serde(default = "default_signer_names")]
    pub signer_names: Vec<String>,
    /// Leader election; omit to run without (one replica).
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
    /// Maximum retry duration for transient errors, from a request's creation.
    #[serde(default = "default_max_retry")]
    pub max_retry: canopy::ttl::Ttl,
}

fn default_signer_names() -> Vec<String> {
    vec![DEFAULT_SIGNER.to_string()]
}

fn default_max_retry() -> canopy::ttl::Ttl {
    canopy::ttl::Ttl::hours(1)
}

/// Why a signer name cannot be configured (`None`: it can). The API server's rule
/// (`example.com/path`, a DNS subdomain and a path) plus: `kubernetes.io` and `k8s.io`
/// are reserved for the Kubernetes project.
pub fn signer_name_problem(name: &str) -> Option<&'static str> {
    let Some((domain, path)) = name.split_once('/') else {
        return Some("a signer name is DOMAIN/PATH, e.g. canopy.dev/spiffe");
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        return Some("the domain part must be a lower-case DNS name with a dot, e.g. canopy.dev");
    }
    if ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|r| domain == *r || domain.ends_with(&format!(".{r}")))
    {
        return Some("kubernetes.io and k8s.io signer names are reserved for Kubernetes");
    }
    if path.is_empty()
        || path.len() > 253
        || !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Some("the path part must be letters, digits, '-', '_' or '.', e.g. spiffe");
    }
    None
}

/// How the pod certificate signer of one cluster behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Policy every request is decided under.
    pub policy: String,
    /// Signer names answered.
    pub signer_names: Vec<String>,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<LeaseSettings>,
    /// Mark a request Failed when transient errors last this long after its creation.
    pub max_retry_duration: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Name of this replica in Events (`reportingInstance`).
    pub instance: String,
}

impl Settings {
    /// Settings of a cluster from its config block; `identity` names this replica.
    /// The default Lease is `canopy-issuer-pods-CLUSTER`, apart from the cert-manager
    /// controllers' (either may run without the other).
    pub fn from_config(
        cluster: &ClusterName,
        config: &PodCertificatesConfig,
        identity: &str,
    ) -> Self {
        Settings {
            policy: config.policy.clone(),
            signer_names: config.signer_names.clone(),
            lease: config
                .lease
                .as_ref()
                .map(|l| l.settings(&format!("canopy-issuer-pods-{cluster}"), identity)),
            max_retry_duration: config.max_retry.as_duration().unsigned_abs(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            instance: identity.to_string(),
        }
    }
}

impl ControllerSettings for Settings {
    fn retry(&self) -> Retry {
        Retry {
            base: self.backoff_base,
            max: self.backoff_max,
            give_up_after: self.max_retry_duration,
        }
    }
    fn instance(&self) -> &str {
        &self.instance
    }
}

/// Everything a reconcile needs: the controllers' one context, with this signer's
/// settings.
pub(crate) type Context = crate::certmanager::Context<Settings>;

/// The pod certificate signer of one cluster.
#[derive(Debug)]
pub struct Controller;

impl Controller {
    /// Runs the signer of `cluster` until `shutdown` completes: while this replica
    /// holds the Lease (or always, without leader election). `is_leader` mirrors
    /// leadership for observers.
    pub async fn run(
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
        let work = || controller::run(ctx.clone());
        leadership.run(work, shutdown, &is_leader).await;
        tracing::info!(cluster = %cluster.name, "pod certificate signer stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_block_becomes_settings() {
        let c: PodCertificatesConfig =
            serde_yaml::from_str("policy: pods\nlease: { namespace: canopy }\n").unwrap();
        assert_eq!(c.signer_names, [DEFAULT_SIGNER]);
        let s = Settings::from_config(&"aws".parse().unwrap(), &c, "pod-1_ab");
        assert_eq!(s.lease.unwrap().name, "canopy-issuer-pods-aws");
        assert_eq!(s.max_retry_duration, Duration::from_secs(3600));
        assert!(serde_yaml::from_str::<PodCertificatesConfig>("policy: x\nsigner: y\n").is_err());
    }

    #[test]
    fn signer_names_follow_the_apis_rule_and_leave_kubernetes_alone() {
        for good in ["canopy.dev/spiffe", "pki.example.com/mesh-v2", "a.b/c_d.e"] {
            assert_eq!(signer_name_problem(good), None, "{good}");
        }
        for bad in [
            "canopy.dev",
            "canopy.dev/",
            "/spiffe",
            "localhost/spiffe",
            "Canopy.dev/spiffe",
            "kubernetes.io/kube-apiserver-client-pod",
            "foo.kubernetes.io/x",
            "k8s.io/x",
            "canopy.dev/a/b",
        ] {
            assert!(signer_name_problem(bad).is_some(), "{bad}");
        }
    }
}
