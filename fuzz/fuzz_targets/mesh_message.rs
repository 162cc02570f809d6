#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sovereign_mesh::wire::Request::decode(data);
    let _ = sovereign_mesh::wire::Response::decode(data);
});
