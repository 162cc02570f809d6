//! Governed action benchmark (SPEC §9: p50 ≤ 100 µs, p99 ≤ 500 µs): role signature check,
//! approvals-free policy decision, binding sign + verify, replay claims and audit appends,
//! through `Governor::govern` — the real path. Compared in the same run with the naive baseline
//! (a bare CozoDB evaluation for every decision, no memo), and split into its parts so the cost
//! of durability (fdatasync of the replay store and the audit log) is visible.
//!
//! Run: `cargo bench -p sovereign-governance --bench governed` (prints a Markdown table).
//! `SOVEREIGN_BENCH_DIR` chooses where the replay store and audit log live (default: a temp dir
//! under `target/`, i.e. the real disk).

use sovereign_bench::iterations;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_audit::{AuditLog, DataKey};
use sovereign_governance::governor::{GovernedRequest, Governor};
use sovereign_governance::kernel::{ExecutionRequest, Kernel};
use sovereign_governance::policy::{PolicyBundle, PolicyEngine, PolicyInput};
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};

const NOW: u64 = 1_800_000_000_000;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[(((v.len() as f64) - 1.0) * p).round() as usize]
}

fn row(name: &str, v: &[Duration]) -> String {
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    let total: Duration = v.iter().sum();
    format!(
        "| {name} | {} | {} | {} | {:.0} |",
        v.len(),
        us(pct(v, 0.5)),
        us(pct(v, 0.99)),
        v.len() as f64 / total.as_secs_f64()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("SOVEREIGN_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    let program = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies/role-inheritance.cozo"),
    )?;
    let release = key(0x42);
    let admin = key(0xad);
    let policy = PolicyBundle::sign("role-inheritance", 1, &program, &release);
    let audit = Arc::new(AuditLog::create(&dir.path().join("audit.log"), "bench/node", &DataKey([1; 32]))?);
    let kernel = Kernel::new(key(0x50), ReplayStore::open(&dir.path().join("replay"))?.0, Arc::clone(&audit));
    let mut governor = Governor::new(
        kernel,
        policy.clone(),
        &[release.verifying_key()],
        admin.verifying_key(),
        RevocationList::issue(1, vec![], vec![], &admin),
        BTreeMap::new(),
    )?;
    let op = key(1);
    let cert = RoleCertificate::issue(&op.verifying_key(), &["operator"], 1, NOW + 3_600_000, &admin);
    let mut n = 0u64;
    let request = |n: u64| {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&n.to_be_bytes());
        GovernedRequest {
            execution: ExecutionRequest {
                execution_id: format!("exec-{n}"),
                action: "deploy".into(),
                context: json!({"model": "m1"}),
            },
            resource: "model/m1".into(),
            environment: "staging".into(),
            role_signature: RoleSignature::create(
                "operator",
                RoleContext { action: "deploy".into(), environment: "staging".into(), nonce, expiry_ms: NOW + 60_000 },
                &op,
            ),
            certificate: cert.clone(),
            signals: BTreeMap::new(),
            approvals: vec![],
            approver_certificates: vec![],
        }
    };
    // Requests are prepared outside the timed region (the operator signs them on its side).
    let mut governed = Vec::new();
    for _ in 0..iterations(1100) {
        n += 1;
        let r = request(n);
        let t = Instant::now();
        let (permit, record) = governor.govern(&r, NOW).map_err(|e| e.to_string())?;
        let elapsed = t.elapsed();
        assert_eq!(record.verdict, sovereign_governance::kernel::Verdict::Allow);
        drop(permit);
        governed.push(elapsed);
    }
    governed.drain(..governed.len() / 11); // warm-up: the first 100 of 1,100

    // Parts: the decision alone from the memo, and a bare CozoDB evaluation (naive baseline).
    let input = PolicyInput {
        principal: hex::encode(op.verifying_key().as_bytes()),
        roles: vec!["operator".into()],
        action: "deploy".into(),
        resource: "model/m1".into(),
        environment: "staging".into(),
        ..Default::default()
    };
    let mut engine = PolicyEngine::new()?;
    engine.decide(&policy, &input);
    let time = |count: usize, f: &mut dyn FnMut()| -> Vec<Duration> {
        (0..count)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect()
    };
    let memo = time(iterations(10_000), &mut || {
        std::hint::black_box(engine.decide(&policy, &input));
    });
    let bare = time(iterations(300), &mut || {
        std::hint::black_box(engine.evaluate_uncached(&policy, &input));
    });
    // Bindings are minted only inside the governed path; their cost is one Ed25519 signature
    // and one verification over ~150 canonical bytes, timed here on a message of that size.
    let node = key(0x50);
    let binding = time(iterations(2000), &mut || {
        use ed25519_dalek::{Signer as _, Verifier as _};
        let message = [0x5a_u8; 150];
        let signature = node.sign(&message);
        node.verifying_key().verify(&message, &signature).expect("verifies");
    });
    let fsync_dir = tempfile::tempdir_in(dir.path())?;
    let mut store = ReplayStore::open(&fsync_dir.path().join("replay"))?.0;
    let mut i = 0u64;
    let claim = time(iterations(500), &mut || {
        i += 1;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.to_be_bytes());
        store.claim("bench", id).expect("claim");
    });

    println!("storage: {}", dir.path().display());
    println!("| path | n | p50 µs | p99 µs | per second (one thread) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "{}",
        row(
            "governed action: role signature + memoized decision + binding sign+verify + replay claims (1 fdatasync) + audit appends (1 fdatasync)",
            &governed
        )
    );
    println!("{}", row("part: decision from the memo", &memo));
    println!("{}", row("part: binding-sized Ed25519 sign + verify", &binding));
    println!("{}", row("part: one durable replay claim (write + fdatasync)", &claim));
    println!("{}", row("baseline: bare CozoDB evaluation of the policy (no memo)", &bare));
    Ok(())
}
