#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sovereign_cli::attest::fuzz_evidence(data));
