#![no_main]
//! The root's ledger file: verification must never panic on a damaged file.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = canopy::ledger::verify(text);
    }
});
