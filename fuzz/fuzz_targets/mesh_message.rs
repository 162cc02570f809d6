#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sovereign_mesh::wire::Request::decode(data);
    let _ = sovereign_mesh::wire::Response::decode(data);
    // Update distribution's framing: a request, and an answer to one (bounded to 1 MiB).
    let _ = sovereign_mesh::transfer::read_request(&mut &data[..]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let _ = sovereign_mesh::transfer::read_bundle(&mut &data[..], &[0; 32], 1 << 20, deadline, &mut |_, _| {});
});
