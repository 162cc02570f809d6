//! The guest side of the Sovereign sandbox ABI (`docs/sandbox.md`): safe wrappers around the
//! `sovereign.*` host functions for stage modules. The only `unsafe` in a stage module lives
//! here, at the FFI boundary the WASM import mechanism requires.
//!
//! Must never: touch memory the host did not describe, or import anything but `sovereign.*`.

#[link(wasm_import_module = "sovereign")]
unsafe extern "C" {
    fn input_len() -> i32;
    fn input_read(ptr: *mut u8, len: i32) -> i32;
    fn output_write(ptr: *const u8, len: i32) -> i32;
    fn log(ptr: *const u8, len: i32) -> i32;
}

/// The stage's input artifact.
pub fn input() -> Vec<u8> {
    // SAFETY: host functions of the sandbox ABI; the buffer is ours and `len` bytes long.
    let len = unsafe { input_len() }.max(0) as usize;
    let mut buf = vec![0u8; len];
    let n = unsafe { input_read(buf.as_mut_ptr(), len as i32) }.max(0) as usize;
    buf.truncate(n);
    buf
}

/// Appends to the stage's output artifact; false when the host refused.
pub fn output(bytes: &[u8]) -> bool {
    // SAFETY: the pointer and length describe a live slice.
    unsafe { output_write(bytes.as_ptr(), bytes.len() as i32) == 0 }
}

/// One log line.
pub fn log_line(line: &str) {
    // SAFETY: the pointer and length describe a live string.
    unsafe {
        log(line.as_ptr(), line.len() as i32);
    }
}

/// Formats a float with a fixed number of decimals, deterministically.
pub fn fixed(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

/// The `x,y` rows of a CSV text that parse as two numbers (a header or bad row is skipped).
pub fn csv_pairs(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let (x, y) = l.split_once(',')?;
            Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
        })
        .collect()
}
