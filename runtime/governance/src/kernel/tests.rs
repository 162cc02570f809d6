//! The kernel's own checks of a binding, driven directly (the crate-private `bind` and
//! `authorize` are not reachable from the integration tests): every refusal with its reason,
//! and the acceptance path next to it.

#![allow(clippy::unwrap_used)] // test code

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_audit::{AuditLog, DataKey};

use super::*;

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

struct Fixture {
    _dir: tempfile::TempDir,
    replay: std::path::PathBuf,
    audit: Arc<AuditLog>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("audit.log"), "test/node", &DataKey([5; 32])).unwrap();
    Fixture { replay: dir.path().join("replay"), audit: Arc::new(log), _dir: dir }
}

fn kernel(f: &Fixture, node: u8) -> Kernel {
    Kernel::new(key(node), ReplayStore::open(&f.replay).unwrap().0, Arc::clone(&f.audit))
}

fn request(id: &str) -> ExecutionRequest {
    ExecutionRequest {
        execution_id: id.into(),
        action: "promote".into(),
        context: json!({"model": "m1", "env": "production"}),
    }
}

const ALLOW: PolicyState = PolicyState { verdict: Verdict::Allow, record_hash: [0x11; 32] };

#[test]
fn execution_needs_a_verified_binding_and_each_id_runs_once_even_across_restarts() {
    let f = fixture();
    let mut k = kernel(&f, 0x20);
    let req = request("exec-1");
    let binding = k.bind(&ALLOW, &req, [1; 16], NOW + 60_000).unwrap();
    let permit = k.authorize(&req, &ALLOW, Some(&binding), NOW).unwrap();
    assert_eq!(k.execute(permit, NOW, |ctx| ctx.execution_id.clone()).unwrap(), "exec-1");

    let refused = |k: &mut Kernel, req: &ExecutionRequest, state: &PolicyState, b: Option<&_>| {
        k.authorize(req, state, b, NOW).unwrap_err().to_string()
    };
    // No binding.
    assert_eq!(refused(&mut k, &request("exec-2"), &ALLOW, None), "execution: blocked: no policy binding provided");
    // Replayed execution ID (fresh binding).
    let again = k.bind(&ALLOW, &req, [2; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req, &ALLOW, Some(&again)).contains("already used (replay)"));
    // A binding for another context, another decision, expired, or signed by another node.
    let req3 = request("exec-3");
    let other_ctx = k.bind(&ALLOW, &request("exec-4"), [3; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req3, &ALLOW, Some(&other_ctx)).contains("another execution context"));
    let other_state = PolicyState { verdict: Verdict::Allow, record_hash: [0x22; 32] };
    let b = k.bind(&other_state, &req3, [4; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req3, &ALLOW, Some(&b)).contains("another policy state"));
    let stale = k.bind(&ALLOW, &req3, [5; 16], NOW - 1).unwrap();
    assert!(refused(&mut k, &req3, &ALLOW, Some(&stale)).contains("expired"));
    let forever = k.bind(&ALLOW, &req3, [11; 16], NOW + 24 * HOUR).unwrap();
    assert!(refused(&mut k, &req3, &ALLOW, Some(&forever)).contains("clock skew"));
    let foreign =
        Kernel::new(key(0x21), ReplayStore::open(&f.replay.with_extension("x")).unwrap().0, Arc::clone(&f.audit))
            .bind(&ALLOW, &req3, [6; 16], NOW + 60_000)
            .unwrap();
    assert!(refused(&mut k, &req3, &ALLOW, Some(&foreign)).contains("not signed by this node"));
    // A deny decision cannot be bound or executed.
    let deny = PolicyState { verdict: Verdict::Deny, record_hash: [0x11; 32] };
    assert!(k.bind(&deny, &req3, [7; 16], NOW + 60_000).is_err());
    let b = k.bind(&ALLOW, &req3, [8; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req3, &deny, Some(&b)).contains("denies"));
    // A replayed binding nonce, under a new execution ID.
    let req5 = request("exec-5");
    let reuse = k.bind(&ALLOW, &req5, [1; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req5, &ALLOW, Some(&reuse)).contains("nonce"));

    // Restart: the replay store is reloaded from disk; exec-1 is still used.
    drop(k);
    let mut k = kernel(&f, 0x20);
    let b = k.bind(&ALLOW, &req, [9; 16], NOW + 60_000).unwrap();
    assert!(refused(&mut k, &req, &ALLOW, Some(&b)).contains("already used (replay)"));
    let req6 = request("exec-6");
    let b = k.bind(&ALLOW, &req6, [10; 16], NOW + 60_000).unwrap();
    k.authorize(&req6, &ALLOW, Some(&b), NOW).unwrap();

    // Every attempt is in the audit log: 2 authorized, 2 executions (start+end) for exec-1,
    // and one refusal per refused attempt.
    let bytes = std::fs::read(f.audit.path()).unwrap();
    let decoded = sovereign_audit::logfile::decode(&bytes, &DataKey([5; 32])).unwrap();
    let kinds: Vec<&str> =
        decoded.entries.iter().map(|e| sovereign_audit::Entry::decode(e).unwrap().kind.name()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "refusal").count(), 10, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "policy_binding").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "execution_start").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "execution_end").count(), 1, "{kinds:?}");
}

#[test]
fn a_permit_runs_once_and_only_on_the_kernel_that_issued_it() {
    let f = fixture();
    let mut k = kernel(&f, 0x30);
    let req = request("exec-a");
    let b = k.bind(&ALLOW, &req, [1; 16], NOW + 60_000).unwrap();
    let permit = k.authorize(&req, &ALLOW, Some(&b), NOW).unwrap();
    let mut other =
        Kernel::new(key(0x31), ReplayStore::open(&f.replay.with_extension("o")).unwrap().0, Arc::clone(&f.audit));
    assert!(other.execute(permit, NOW, |_| ()).unwrap_err().to_string().contains("not issued by this kernel"));
}
