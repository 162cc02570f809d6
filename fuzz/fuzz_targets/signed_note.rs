#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sovereign_audit::fuzzing::signed_note(data));
