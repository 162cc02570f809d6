//! Stage invocation overhead (SPEC §9: ≤ 10 µs): `Sandbox::run` of a trivial `run` export —
//! a fresh store with limits, fuel and epoch deadline, a pooled instance, the call, teardown —
//! against the naive baseline of an on-demand (non-pooled) engine that also compiles the module
//! every time.
//!
//! Run: `cargo bench -p sovereign-sandbox --bench invoke` (prints a Markdown table).

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sovereign_bench::iterations;
use sovereign_sandbox::{Limits, ModuleManifest, Sandbox};

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[(((v.len() as f64) - 1.0) * p).round() as usize]
}

fn row(name: &str, v: &[Duration]) -> String {
    let us = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e6);
    format!("| {name} | {} | {} | {} |", v.len(), us(pct(v, 0.5)), us(pct(v, 0.99)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let release = SigningKey::from_bytes(&[0x42; 32]);
    let wasm =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#)?;
    let manifest = ModuleManifest::sign("trivial", 1, &wasm, &[], &release);
    let sandbox = Sandbox::new(64 << 20)?;
    let module = sandbox.load(&wasm, &manifest, &release.verifying_key())?;
    let limits = Limits::default();
    for _ in 0..iterations(1000) {
        sandbox.run(&module, &[], b"", limits)?;
    }
    let pooled: Vec<Duration> = (0..iterations(20_000))
        .map(|_| {
            let t = Instant::now();
            let out = sandbox.run(&module, &[], b"", limits);
            let d = t.elapsed();
            assert!(out.is_ok());
            d
        })
        .collect();
    // Naive: compile and instantiate on demand every time (what a sandbox without a loaded
    // module cache and pool would do).
    let naive: Vec<Duration> = (0..iterations(200))
        .map(|_| {
            let t = Instant::now();
            let m = sandbox.load(&wasm, &manifest, &release.verifying_key()).expect("load");
            let out = sandbox.run(&m, &[], b"", limits);
            let d = t.elapsed();
            assert!(out.is_ok());
            d
        })
        .collect();
    println!("| path | n | p50 µs | p99 µs |");
    println!("| --- | ---: | ---: | ---: |");
    println!("{}", row("pooled store + instance + call of a trivial export (Sandbox::run)", &pooled));
    println!("{}", row("baseline: verify manifest + compile + instantiate + call each time", &naive));
    Ok(())
}
