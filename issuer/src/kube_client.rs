//! How the issuer reaches a cluster's API server, and the one place a kube client is
//! built from that: the cert-manager and pod certificate controllers, the Leases and
//! the Istio `cacerts` sync all connect through [`client`].

use std::path::PathBuf;
use std::time::Duration;

/// How to reach a cluster's API server (`clusters[].kubeconfig`, `context`, `in_cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeAccess {
    /// The pod's service account (`in_cluster: true`).
    InCluster,
    /// A kubeconfig file, at its current context or the one named.
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The context in it (absent: its current context).
        context: Option<String>,
    },
    /// Neither named: `$KUBECONFIG`, `~/.kube/config`, then the service account, as
    /// kubectl finds them.
    Inferred,
}

/// Why no client could be built; the message says which source failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The pod's service account is not usable.
    #[error("in-cluster config: {0}")]
    InCluster(String),
    /// The kubeconfig file cannot be read or has no usable context.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nothing to infer a configuration from.
    #[error("no kubeconfig or in-cluster config: {0}")]
    Inferred(String),
    /// The configuration was read but a client cannot be made from it.
    #[error("kube client: {0}")]
    Client(String),
}

/// A kube client for `access`; with `timeout`, every connect, read and write is bounded by it.
pub async fn client(
    access: &KubeAccess,
    timeout: Option<Duration>,
) -> Result<kube::Client, KubeClientError> {
    let mut config = match access {
        KubeAccess::InCluster => {
            kube::Config::incluster().map_err(|e| KubeClientError::InCluster(e.to_string()))?
        }
        KubeAccess::Kubeconfig { path, context } => {
            let err = |reason: String| KubeClientError::Kubeconfig {
                path: path.display().to_string(),
                reason,
            };
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| err(e.to_string()))?
        }
        KubeAccess::Inferred => kube::Config::infer()
            .await
            .map_err(|e| KubeClientError::Inferred(e.to_string()))?,
    };
    if let Some(timeout) = timeout {
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    kube::Client::try_from(config).map_err(|e| KubeClientError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named_in_the_error() {
        let access = KubeAccess::Kubeconfig {
            path: PathBuf::from("/nonexistent/canopy.kubeconfig"),
            context: None,
        };
        let Err(e) = client(&access, None).await else {
            panic!("a client from a kubeconfig that does not exist");
        };
        assert!(matches!(e, KubeClientError::Kubeconfig { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("kubeconfig /nonexistent/canopy.kubeconfig: "));
    }
}
