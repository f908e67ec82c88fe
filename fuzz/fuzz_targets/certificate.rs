#![no_main]
//! Certificates and chains read back from clusters and files: DER, PEM, chain building.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = canopy::cert::Certificate::from_der(data.to_vec()) {
        let _ = canopy::profile::Profile::guess(&cert);
        for p in canopy::profile::Profile::ALL {
            let _ = p.lint(&cert);
        }
        let at = cert.not_before();
        let _ = canopy::chain::verify_path(&cert, &[], std::slice::from_ref(&cert), at);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(certs) = canopy::cert::Certificate::parse_pem_all(text) {
            let now = time::OffsetDateTime::UNIX_EPOCH;
            let _ = canopy::chain::verify_path(&certs[0], &certs[1..], &certs[1..], now);
        }
    }
});
