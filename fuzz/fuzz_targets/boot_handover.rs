#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(sovereign_boot_contract::Handover::decode(data)));
