#![no_main]
//! CSRs arrive from the network (POST /v1/sign, CertificateRequests): DER and PEM.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = canopy::csr::Csr::from_der(data) {
        let _ = (csr.spiffe_ids(), csr.requests_ca(), csr.key_type());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = canopy::csr::Csr::from_pem(text);
    }
});
