#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sovereign_protocol::fuzz_request(data));
