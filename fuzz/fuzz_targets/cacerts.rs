#![no_main]
//! `cacerts` Secrets read back from a cluster: split the input into the four files.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(5, |b| *b == 0).collect();
    let names = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem", "ca-crl.pem"];
    let entries: Vec<(&str, &[u8])> = names.iter().copied().zip(parts).collect();
    if let Ok(c) = canopy::cacerts::Cacerts::from_entries(entries) {
        let _ = c.validate(time::OffsetDateTime::UNIX_EPOCH);
    }
});
