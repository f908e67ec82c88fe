//! Prometheus metrics of the issuer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;

use crate::error_code::ErrorCode;

/// Label: the profile a certificate was issued under.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabel {
    /// Profile name.
    pub profile: String,
}

/// Label: why a request was refused or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable reason code.
    pub reason: String,
}

/// Label: an intermediate's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntermediateLabel {
    /// Intermediate name.
    pub intermediate: String,
}

/// Labels: a pod certificate signer and what became of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignerLabel {
    /// Signer name (`canopy.dev/spiffe`).
    pub signer: String,
    /// `issued`, `denied` or `failed`.
    pub outcome: String,
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Certificates issued, by profile.
    pub issued: Family<ProfileLabel, Counter>,
    /// Requests that failed (bad input, internal errors), by reason.
    pub failed: Family<ReasonLabel, Counter>,
    /// Requests refused by policy, authentication or rate limit, by reason.
    pub denied: Family<ReasonLabel, Counter>,
    /// Time to sign and record a certificate.
    pub sign_duration: Histogram,
    /// Signings begun and not yet answered (a store that does not commit shows here).
    pub signings_in_flight: Gauge,
    /// CRLs signed (a cached CRL is served until its revocations change).
    pub crls_signed: Counter,
    /// Seconds until each intermediate expires.
    pub intermediate_expiry: Family<IntermediateLabel, Gauge<i64, AtomicI64>>,
    /// Connections closed at accept, by reason (`total`, `per_peer`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Connections open now (TLS handshake included).
    pub connections_open: Gauge,
    /// PodCertificateRequests answered, by signer and outcome.
    pub pod_certificates: Family<SignerLabel, Counter>,
    /// Istio cacerts sync: mesh CA expiry per cluster, mints, failed passes.
    pub istio: std::sync::Arc<crate::istio::IstioMetrics>,
    /// Retention: rows deleted, pass duration, rows and bytes stored.
    pub retention: std::sync::Arc<crate::retention::RetentionMetrics>,
}

/// A new metric of type `M`, registered as `name` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("canopy");
        let crls_signed: Counter = registered(
            &mut registry,
            "crls_signed",
            "CRLs signed (cached between revocations)",
        );
        let issued: Family<ProfileLabel, Counter> = registered(
            &mut registry,
            "certificates_issued",
            "Certificates issued, by profile",
        );
        let failed: Family<ReasonLabel, Counter> = registered(
            &mut registry,
            "requests_failed",
            "Requests that failed, by reason",
        );
        let denied: Family<ReasonLabel, Counter> = registered(
            &mut registry,
            "requests_denied",
            "Requests denied, by reason",
        );
        let sign_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "sign_duration_seconds",
            "Time to sign and durably record a certificate",
            sign_duration.clone(),
        );
        let signings_in_flight: Gauge = registered(
            &mut registry,
            "signings_in_flight",
            "Signings begun and not yet answered (recorded or refused)",
        );
        let intermediate_expiry: Family<IntermediateLabel, Gauge<i64, AtomicI64>> = registered(
            &mut registry,
            "intermediate_expiry_seconds",
            "Seconds until the intermediate certificate expires",
        );
        let connections_refused: Family<ReasonLabel, Counter> = registered(
            &mut registry,
            "connections_refused",
            "Connections closed at accept because a connection cap was reached, by reason",
        );
        let connections_open: Gauge =
            registered(&mut registry, "connections_open", "Connections open now");
        let pod_certificates: Family<SignerLabel, Counter> = registered(
            &mut registry,
            "pod_certificate_requests",
            "PodCertificateRequests answered, by signer and outcome (issued, denied, failed)",
        );
        let istio = std::sync::Arc::new(crate::istio::IstioMetrics::register(&mut registry));
        let retention =
            std::sync::Arc::new(crate::retention::RetentionMetrics::register(&mut registry));
        Metrics {
            registry,
            istio,
            retention,
            issued,
            failed,
            denied,
            sign_duration,
            signings_in_flight,
            crls_signed,
            intermediate_expiry,
            connections_refused,
            connections_open,
            pod_certificates,
        }
    }

    /// Counts a CRL signed.
    pub fn crl_signed(&self) {
        self.crls_signed.inc();
    }

    /// Counts a failure answered with `code`.
    pub fn fail(&self, code: ErrorCode) {
        self.fail_as(code.as_str());
    }

    /// Counts a denial answered with `code`.
    pub fn deny(&self, code: ErrorCode) {
        self.deny_as(code.as_str());
    }

    /// Counts a request body refused because the budget of buffered bodies is in use:
    /// the client gets `busy`, the label says which budget.
    pub fn body_budget_exhausted(&self) {
        self.fail_as("body_budget_exhausted");
    }

    /// Counts a failure under a label of another vocabulary than [`ErrorCode`] (a
    /// Kubernetes condition reason of a request answered outside the API).
    pub fn fail_as(&self, reason: &str) {
        self.failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a denial under a label of another vocabulary than [`ErrorCode`].
    pub fn deny_as(&self, reason: &str) {
        self.denied
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a connection closed at accept.
    pub fn refuse_connection(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a PodCertificateRequest answered by `signer`.
    pub fn pod_certificate(&self, signer: &str, outcome: &str) {
        self.pod_certificates
            .get_or_create(&SignerLabel {
                signer: signer.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_contract() {
        let m = Metrics::new();
        m.issued
            .get_or_create(&ProfileLabel {
                profile: "workload".into(),
            })
            .inc();
        m.fail(ErrorCode::BadCsr);
        m.deny(ErrorCode::NoPolicy);
        m.refuse_connection("per_peer");
        m.sign_duration.observe(0.01);
        m.pod_certificate("canopy.dev/spiffe", "issued");
        m.intermediate_expiry
            .get_or_create(&IntermediateLabel {
                intermediate: "aws".into(),
            })
            .set(42);
        let text = m.encode();
        for needle in [
            "canopy_certificates_issued_total{profile=\"workload\"} 1",
            "canopy_requests_failed_total{reason=\"bad_csr\"} 1",
            "canopy_requests_denied_total{reason=\"no_policy\"} 1",
            "canopy_connections_refused_total{reason=\"per_peer\"} 1",
            "canopy_sign_duration_seconds_bucket",
            "canopy_signings_in_flight 0",
            "canopy_pod_certificate_requests_total{signer=\"canopy.dev/spiffe\",outcome=\"issued\"} 1",
            "canopy_intermediate_expiry_seconds{intermediate=\"aws\"} 42",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
