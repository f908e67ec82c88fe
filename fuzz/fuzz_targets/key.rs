#![no_main]
//! Key files of every form, with and without a passphrase (encrypted PKCS#8 parsing).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let pass = canopy::key::Passphrase::new("fuzz passphrase").expect("non-empty");
        let _ = canopy::key::KeyPair::from_pem_with(text, Some(&pass));
    }
    let _ = canopy::key::KeyPair::from_pkcs8_der(data);
    let _ = canopy::key::KeyType::from_spki(data);
});
