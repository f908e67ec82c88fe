#![no_main]
//! The issuer's YAML config file: parse and validate. Must answer with a `ConfigError`,
//! never panic (a bad config file is read once at start, by an operator's hand edit).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = canopy_issuer::config::Config::parse(text, std::path::Path::new("fuzz.yaml"));
    }
});
