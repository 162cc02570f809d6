#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sovereign_ledger::fuzzing::headers(data));
