//! Update-bundle verification (issue 15 item 8), beside its naive baseline in the same run: the
//! whole check a node runs before it writes a byte of an update (container, root, key set, two
//! release signatures, every payload file's SHA-256, the manifest's and reference values'
//! signatures) on a bundle the size of the real one (a 22 MiB UKI), versus SHA-256 of the
//! bundle's bytes once — the least any verification of those bytes must do.
//!
//! Run: `cargo bench -p sovereign-update --bench verify` (prints a Markdown table).

use sha2::{Digest as _, Sha256};
use sovereign_bench::{TABLE_HEADER, time};
use sovereign_update::fuzzing::{genuine_bundle, key, trust};

fn main() {
    // Incompressible-looking UKI bytes of the real UKI's size.
    let uki: Vec<u8> = (0..22 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let bundle = genuine_bundle(2, uki, &[key(1), key(2)]);
    let trust = trust();
    let rows = [
        time("verify a 22 MiB update bundle (2-of-3 signatures, every file hashed)", 20, || {
            sovereign_update::verify(&bundle, &trust).map(|v| v.release_version).unwrap_or(0)
        }),
        time("baseline: SHA-256 of the bundle's bytes once", 20, || Sha256::digest(&bundle)),
    ];
    println!("bundle: {} bytes", bundle.len());
    println!("{TABLE_HEADER}");
    for r in &rows {
        println!("{}", r.row());
    }
}
