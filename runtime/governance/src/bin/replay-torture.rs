//! Crash-test writer for the replay store (`tests/crash.rs` kills it with SIGKILL): claims
//! identifiers in batches forever and prints `acked N` after each batch is acknowledged.
//! Not part of the appliance.

#![forbid(unsafe_code)]

use std::io::Write as _;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: replay-torture STORE");
        std::process::exit(2);
    };
    let (mut store, _) = match sovereign_governance::replay::ReplayStore::open(std::path::Path::new(&path)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("replay-torture: {e}");
            std::process::exit(1);
        }
    };
    // Two identifiers per batch: continue after the last batch that is on disk.
    let start = store.len() as u64 / 2;
    let mut out = std::io::stdout().lock();
    for n in start.. {
        let id = |k: u64| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&k.to_be_bytes());
            b
        };
        if let Err(e) = store.claim_all(&[("a", id(2 * n)), ("b", id(2 * n + 1))]) {
            eprintln!("replay-torture: {e}");
            std::process::exit(1);
        }
        let _ = writeln!(out, "acked {n}");
        let _ = out.flush();
    }
}
