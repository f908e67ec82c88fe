#![no_main]
//! SPIFFE IDs and trust domains: accepted ones must print back exactly as given.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<canopy::spiffe::SpiffeId>() {
            assert_eq!(id.to_string(), s);
            let _ = id.kubernetes_parts();
        }
        let _ = s.parse::<canopy::spiffe::TrustDomain>();
        let _ = s.parse::<canopy::ttl::Ttl>();
        let _ = s.parse::<canopy::serial::Serial>();
    }
});
