//! How the controllers of one cluster behave: the `cert_manager:` block of the config
//! file and the settings the controllers hold.

use std::time::Duration;

use crate::leader::{LeaseConfig, LeaseSettings};
use crate::names::ClusterName;

/// How the controllers of one cluster behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Policy the controller's sign requests are decided under (like a token's).
    pub policy: String,
    /// Users whose requests are not bound to their namespace.
    pub trusted_requesters: Vec<String>,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<LeaseSettings>,
    /// Give up on transient errors (storage, API server) this long after a request
    /// was created, and mark it Failed.
    pub max_retry_duration: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Also sign `certificates.k8s.io/v1` CertificateSigningRequests for our signers.
    pub signing_requests: bool,
    /// Name of this replica in Events (`reportingInstance`).
    pub instance: String,
}

impl Settings {
    /// Defaults: leader election off, 1 h maximum retry, backoff 1 s → 5 min, CSR API on.
    pub fn new(policy: impl Into<String>) -> Self {
        Settings {
            policy: policy.into(),
            trusted_requesters: Vec::new(),
            lease: None,
            max_retry_duration: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            signing_requests: true,
            instance: "canopy-issuer".into(),
        }
    }
}

/// The `cert_manager:` block of a cluster in the issuer's config file.
///
/// ```yaml
/// clusters:
///   - name: eks-prod
///     intermediate: aws
///     in_cluster: true
///     cert_manager:
///       policy: cert-manager          # policy the controller's requests are decided under
///       lease: { namespace: canopy }  # leader election (omit for a single replica)
///       max_retry: 1h                 # give up on transient errors after this
///       signing_requests: true        # also the certificates.k8s.io CSR API
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertManagerConfig {
    /// Policy (by name) the controller's sign requests are decided under.
    pub policy: String,
    /// Leader election; omit to run without (one replica).
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
    /// Maximum retry duration for transient errors, from a request's creation.
    #[serde(default = "default_max_retry")]
    pub max_retry: canopy::ttl::Ttl,
    /// Also sign Kubernetes CertificateSigningRequests for our signer names.
    #[serde(default = "default_true")]
    pub signing_requests: bool,
    /// Kubernetes users (`spec.username`) whose requests are not bound to the
    /// namespace they are created in: istio-csr creates every request in
    /// istio-system on behalf of all namespaces
    /// (`system:serviceaccount:cert-manager:cert-manager-istio-csr`).
    #[serde(default)]
    pub trusted_requesters: Vec<String>,
}

fn default_max_retry() -> canopy::ttl::Ttl {
    canopy::ttl::Ttl::hours(1)
}

fn default_true() -> bool {
    true
}

impl Settings {
    /// Settings of a cluster from its config block; `identity` names this replica.
    pub fn from_config(
        cluster: &ClusterName,
        config: &CertManagerConfig,
        identity: &str,
    ) -> Settings {
        let mut s = Settings::new(config.policy.clone());
        s.max_retry_duration = config.max_retry.as_duration().unsigned_abs();
        s.signing_requests = config.signing_requests;
        s.trusted_requesters = config.trusted_requesters.clone();
        s.instance = identity.to_string();
        s.lease = config
            .lease
            .as_ref()
            .map(|l| l.settings(&format!("canopy-issuer-{cluster}"), identity));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_block_becomes_settings() {
        let c: CertManagerConfig = serde_yaml::from_str(
            "policy: cert-manager\nlease: { namespace: canopy, duration: 30s }\nmax_retry: 2h\n",
        )
        .unwrap();
        let cluster: ClusterName = "eks-prod".parse().unwrap();
        let s = Settings::from_config(&cluster, &c, "pod-1_ab");
        assert_eq!(s.policy, "cert-manager");
        assert_eq!(s.max_retry_duration, Duration::from_secs(7200));
        assert!(s.signing_requests);
        let lease = s.lease.unwrap();
        assert_eq!(lease.name, "canopy-issuer-eks-prod");
        assert_eq!(lease.lease_duration, Duration::from_secs(30));
        assert!(
            lease.retry_period < lease.renew_deadline
                && lease.renew_deadline < lease.lease_duration
        );
        assert!(serde_yaml::from_str::<CertManagerConfig>("policy: x\nbogus: 1\n").is_err());
    }
}
