//! canopy as cert-manager's external issuer of both clusters, as the end-to-end tests
//! run it: one `canopy-issuer serve` (SQLite, durable as shipped) whose config names
//! both clusters with a `cert_manager:` block, canopy's CRDs and a ClusterIssuer in each.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use canopy_testsupport::cluster::TestCluster;

use crate::canopy_side::{self, BenchCa, TRUST_DOMAIN};
use crate::load::Endpoint;
use crate::server::Server;

/// The ClusterIssuer's name in each cluster.
pub const ISSUER: &str = "canopy";

/// A running canopy-issuer serving both clusters.
pub struct CanopyIssuer {
    /// The process.
    pub server: Server,
    /// Its `/metrics`.
    metrics: Endpoint,
}

impl CanopyIssuer {
    /// Installs canopy's CRDs and ClusterIssuer in each cluster and starts the issuer
    /// with SQLite storage in `dir`.
    pub fn start(bin: &Path, dir: &Path, clusters: &[TestCluster]) -> anyhow::Result<CanopyIssuer> {
        let crds = Command::new(bin)
            .arg("crds")
            .output()
            .with_context(|| format!("running {} crds", bin.display()))?;
        if !crds.status.success() {
            bail!(
                "canopy-issuer crds failed: {}",
                String::from_utf8_lossy(&crds.stderr)
            );
        }
        let crds = String::from_utf8(crds.stdout)?;
        let mut cluster_config = String::from("clusters:\n");
        for cluster in clusters {
            cluster.apply(&crds);
            canopy_testsupport::run_ok(cluster.kubectl().args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/clusterissuers.pki.canopy.dev",
            ]));
            cluster.apply(&format!(
                "apiVersion: pki.canopy.dev/v1alpha1\nkind: ClusterIssuer\nmetadata: {{name: {ISSUER}}}\nspec: {{}}\n"
            ));
            cluster_config.push_str(&format!(
                "  - name: {}\n    intermediate: bench\n    kubeconfig: {}\n    cert_manager:\n      policy: bench\n",
                cluster.name(),
                cluster.kubeconfig().display()
            ));
        }
        let ca: BenchCa = canopy_side::make_ca()?;
        let storage = format!("sqlite:{}", dir.join("issuer.db").display());
        let files = canopy_side::write_files(dir, &ca, &storage, &cluster_config)?;
        let (server, addr) = canopy_side::serve(bin, &files, &dir.join("issuer.log"))?;
        let metrics = Endpoint::new(&format!("https://{addr}/metrics"), &files.root_pem)?;
        Ok(CanopyIssuer { server, metrics })
    }

    /// canopy's own time to sign and record a certificate, from its
    /// `canopy_sign_duration_seconds` histogram: (count, the bucket bound under which
    /// 99 % fall, in ms).
    pub async fn sign_p99_ms(&self) -> anyhow::Result<(u64, f64)> {
        let (status, body) = self.metrics.call(hyper::Method::GET, "").await?;
        if !status.is_success() {
            bail!("canopy-issuer /metrics: HTTP {status}");
        }
        histogram_p99_ms(
            &String::from_utf8_lossy(&body),
            "canopy_sign_duration_seconds",
        )
    }
}

/// The SPIFFE ID each bench Certificate asks for.
pub fn spiffe_id(namespace: &str, name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{name}")
}

/// From Prometheus text: the count of histogram `name` and the upper bound (ms) of the
/// first bucket holding at least 99 % of it.
fn histogram_p99_ms(text: &str, name: &str) -> anyhow::Result<(u64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"}") else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((bound, count.trim().parse()?));
    }
    let Some(&(_, total)) = buckets.last() else {
        bail!("no {name} histogram in the metrics");
    };
    let want = (total as f64 * 0.99).ceil() as u64;
    let bound = buckets
        .iter()
        .find(|(_, count)| *count >= want)
        .map_or(f64::INFINITY, |(bound, _)| *bound);
    Ok((total, bound * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_first_bucket_holding_99_percent() {
        let text = "# TYPE x histogram\n\
                    x_bucket{le=\"0.001\"} 10\n\
                    x_bucket{le=\"0.005\"} 98\n\
                    x_bucket{le=\"0.01\"} 99\n\
                    x_bucket{le=\"+Inf\"} 100\n\
                    x_count 100\n";
        assert_eq!(histogram_p99_ms(text, "x").unwrap(), (100, 10.0));
        let all_fast = "x_bucket{le=\"0.001\"} 100\nx_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(histogram_p99_ms(all_fast, "x").unwrap(), (100, 1.0));
        assert!(histogram_p99_ms("nothing here", "x").is_err());
    }
}
