#![no_main]
//! A `cacerts` Secret read back from a cluster, as the Istio sync reads it: a Kubernetes
//! Secret (JSON, as the API server returns it) → `current_of` → ownership, the four
//! files, what istiod would reject, the roots and the signing path.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(secret) = serde_json::from_slice::<k8s_openapi::api::core::v1::Secret>(data) else {
        return;
    };
    let current = canopy_issuer::istio::sync::current_of(&secret);
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let _ = current.ownership();
    let _ = current.problems(now);
    let roots = current.roots();
    let _ = current.observed(&roots, now);
});
