//! Audit-log benchmarks (SPEC §9), each beside its naive baseline in the same run:
//!
//! - durable appends with group commit (goal ≥ 50,000 entries/s on one core): batched appends
//!   and concurrent single appends sharing fsyncs, versus one fsync per entry;
//! - export and offline verification of a 1,000,000-entry compliance bundle (goal ≥ 500,000
//!   entries/s), versus verifying every entry through its own inclusion proof.
//!
//! Run: `cargo bench -p sovereign-audit --bench audit` (prints a Markdown table). The log lives
//! in a temp dir on the machine's disk, so fsync costs are real.

use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use sovereign_audit::bundle::{TrustedKeys, verify_bundle};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::merkle::{MerkleTree, verify_inclusion};
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};

fn entry(i: u64) -> Entry {
    Entry::new(
        EntryKind::PolicyDecision,
        1_700_000_000_000 + i,
        Severity::Info,
        vec![[(i % 251) as u8; 32]],
        format!("decision {i}: allow").into_bytes(),
    )
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Row {
    name: String,
    n: u64,
    wall: f64,
    cpu: f64,
}

impl Row {
    fn print(&self) {
        println!(
            "| {} | {} | {:.3} | {:.0} | {:.0} |",
            self.name,
            self.n,
            self.wall,
            self.n as f64 / self.wall,
            if self.cpu > 0.0 { self.n as f64 / self.cpu } else { f64::NAN }
        );
    }
}

fn measure(name: &str, n: u64, f: impl FnOnce()) -> Row {
    let (t, c) = (Instant::now(), cpu_seconds());
    f();
    Row { name: name.into(), n, wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds() - c }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let key = DataKey([3; 32]);
    let node = SigningKey::from_bytes(&[4; 32]);
    let mut rows = Vec::new();
    // `cargo bench` measures at full size; CI's smoke run (no `--bench`) at a thousandth.
    let size = |full: u64| if sovereign_bench::measuring() { full } else { (full / 1_000).max(1) };

    // Naive baseline: one fsync per entry.
    let log = AuditLog::create(&dir.path().join("naive.log"), "bench/naive", &key)?;
    let naive = size(2_000);
    rows.push(measure("baseline: one fsync per entry (single appender)", naive, || {
        for i in 0..naive {
            log.append_entry(entry(i)).expect("append");
        }
    }));

    // Group commit, batched API: 1,000 entries per fsync.
    let log = AuditLog::create(&dir.path().join("batch.log"), "bench/batch", &key)?;
    let batches = size(200);
    rows.push(measure("group commit: batches of 1,000 entries per fsync", batches * 1_000, || {
        for b in 0..batches {
            log.append_batch((0..1_000).map(|i| entry(b * 1_000 + i)).collect()).expect("append");
        }
    }));

    // Group commit across concurrent single-entry appenders.
    let log = Arc::new(AuditLog::create(&dir.path().join("concurrent.log"), "bench/concurrent", &key)?);
    let per_thread = size(1_000);
    rows.push(measure("group commit: 64 threads appending single entries", 64 * per_thread, || {
        let handles: Vec<_> = (0..64u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        log.append_entry(entry(t * 1_000 + i)).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
    }));

    // A 1,000,000-entry log, exported and verified.
    let big = AuditLog::create(&dir.path().join("big.log"), "bench/big", &key)?;
    let big_batches = size(100);
    for b in 0..big_batches {
        big.append_batch((0..10_000).map(|i| entry(b * 10_000 + i)).collect())?;
    }
    let mut bundle = Vec::new();
    rows.push(measure(
        "export a 1,000,000-entry bundle (read, decrypt, sign checkpoint and index)",
        big_batches * 10_000,
        || {
            bundle = export_bundle(&big, &key, &node, &ExportOptions::default()).expect("export");
        },
    ));
    let trust = TrustedKeys { node: Some(node.verifying_key()), witnesses: vec![] };
    let mut passed = false;
    rows.push(measure("verify the 1,000,000-entry bundle offline (all checks)", big_batches * 10_000, || {
        passed = verify_bundle(&bundle, &trust).passed();
    }));
    assert!(passed, "benchmark bundle did not verify");

    // Every entry signed by an operator: the cost of entry signatures.
    let signed = AuditLog::create(&dir.path().join("signed.log"), "bench/signed", &key)?;
    let operator = SigningKey::from_bytes(&[5; 32]);
    let signed_entries = size(20_000);
    signed.append_batch((0..signed_entries).map(|i| entry(i).sign(&operator)).collect())?;
    let signed_bundle = export_bundle(&signed, &key, &node, &ExportOptions::default())?;
    let mut signed_ok = false;
    rows.push(measure("verify a 20,000-entry bundle in which every entry is signed", signed_entries, || {
        signed_ok = verify_bundle(&signed_bundle, &trust).passed();
    }));
    assert!(signed_ok, "signed benchmark bundle did not verify");

    // Naive verification: every entry through its own inclusion proof (100,000 entries).
    let mut tree = MerkleTree::new();
    let proved = size(100_000);
    let leaves: Vec<[u8; 32]> = (0..proved).map(|i| entry(i).hash()).collect();
    for l in &leaves {
        tree.push(*l);
    }
    let root = tree.root();
    let proofs: Vec<Vec<[u8; 32]>> = (0..proved).map(|i| tree.inclusion_proof(i, proved).expect("proof")).collect();
    rows.push(measure("baseline: verify 100,000 entries by one inclusion proof each", proved, || {
        for (i, (l, p)) in leaves.iter().zip(&proofs).enumerate() {
            verify_inclusion(l, i as u64, proved, p, &root).expect("verify");
        }
    }));

    println!("bundle size: {} bytes for {} entries", bundle.len(), big_batches * 10_000);
    println!("| benchmark | entries | wall s | entries/s (wall) | entries per CPU-second |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        r.print();
    }
    Ok(())
}
