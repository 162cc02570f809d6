#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sovereign_measured_boot::fuzzing::signature(data));
