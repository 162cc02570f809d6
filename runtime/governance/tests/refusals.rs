//! Every refusal path of the governance kernel, each with its one-line reason, and the
//! acceptance path next to it (so each test would fail if the check disappeared).

#![allow(clippy::unwrap_used)] // test code

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_audit::{AuditLog, DataKey};
use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
use sovereign_governance::kernel::{ExecutionRequest, Kernel, PolicyState, Verdict};
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{ConfigSnapshot, RevocationList, RoleCertificate, RoleContext, RoleSignature};

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn admin() -> SigningKey {
    key(0xad)
}

fn no_revocations() -> RevocationList {
    RevocationList::issue(1, vec![], vec![], &admin())
}

#[test]
fn config_snapshot_verifies_only_the_signed_config_from_the_trusted_key() {
    let config = json!({"pipeline": "iron-path", "stages": [1, 2], "governance": {"enforcement_level": "strict"}});
    let snap = ConfigSnapshot::create(&config, &key(1), NOW);
    snap.verify(&config, &key(1).verifying_key()).unwrap();
    // Key order does not matter (canonical JSON); content does.
    let reordered: serde_json::Value =
        serde_json::from_str(r#"{"stages":[1,2],"governance":{"enforcement_level":"strict"},"pipeline":"iron-path"}"#)
            .unwrap();
    snap.verify(&reordered, &key(1).verifying_key()).unwrap();
    let changed = json!({"pipeline": "iron-path", "stages": [1, 3], "governance": {"enforcement_level": "strict"}});
    assert!(snap.verify(&changed, &key(1).verifying_key()).unwrap_err().to_string().contains("differs"));
    assert!(snap.verify(&config, &key(2).verifying_key()).unwrap_err().to_string().contains("untrusted"));
    let mut forged = snap.clone();
    forged.timestamp_ms += 1;
    assert!(forged.verify(&config, &key(1).verifying_key()).unwrap_err().to_string().contains("does not verify"));
}

fn role_sig(op: &SigningKey, role: &str, action: &str, env: &str, nonce: u8, expiry: u64) -> RoleSignature {
    RoleSignature::create(
        role,
        RoleContext { action: action.into(), environment: env.into(), nonce: [nonce; 16], expiry_ms: expiry },
        op,
    )
}

#[test]
fn role_signatures_hold_only_in_their_context_with_a_valid_certificate() {
    let op = key(3);
    let cert = RoleCertificate::issue(&op.verifying_key(), &["operator", "admin"], 7, NOW + HOUR, &admin());
    let revoked = no_revocations();
    let a = admin().verifying_key();
    let sig = role_sig(&op, "admin", "deploy", "production", 1, NOW + 60_000);
    sig.verify("deploy", "production", &cert, &a, &revoked, NOW).unwrap();
    let err = |r: Result<(), sovereign_governance::signed::Refusal>| r.unwrap_err().to_string();
    // Wrong context.
    assert!(err(sig.verify("deploy", "staging", &cert, &a, &revoked, NOW)).contains("presented for deploy/staging"));
    assert!(
        err(sig.verify("rollback", "production", &cert, &a, &revoked, NOW)).contains("signed for deploy/production")
    );
    // Expired; or valid for so long that a clock is wrong (or the signature meant to be replayed).
    assert!(err(sig.verify("deploy", "production", &cert, &a, &revoked, NOW + 120_000)).contains("expired"));
    let far = role_sig(&op, "admin", "deploy", "production", 9, NOW + 2 * HOUR);
    assert!(err(far.verify("deploy", "production", &cert, &a, &revoked, NOW)).contains("clock skew"));
    // Tampered.
    let mut forged = sig.clone();
    forged.role = "operator".into();
    assert!(err(forged.verify("deploy", "production", &cert, &a, &revoked, NOW)).contains("does not verify"));
    // A role the certificate does not grant.
    let auditor = role_sig(&op, "auditor", "deploy", "production", 2, NOW + 60_000);
    assert!(err(auditor.verify("deploy", "production", &cert, &a, &revoked, NOW)).contains("does not hold role"));
    // Another operator's certificate.
    let other = RoleCertificate::issue(&key(4).verifying_key(), &["admin"], 8, NOW + HOUR, &admin());
    assert!(err(sig.verify("deploy", "production", &other, &a, &revoked, NOW)).contains("another operator"));
    // A certificate not from the admin root, expired, or revoked (by key or by serial).
    let self_issued = RoleCertificate::issue(&op.verifying_key(), &["admin"], 9, NOW + HOUR, &op);
    assert!(err(sig.verify("deploy", "production", &self_issued, &a, &revoked, NOW)).contains("admin root"));
    let old = RoleCertificate::issue(&op.verifying_key(), &["admin"], 10, NOW - 1, &admin());
    assert!(err(sig.verify("deploy", "production", &old, &a, &revoked, NOW)).contains("expired"));
    let by_key = RevocationList::issue(2, vec![op.verifying_key().to_bytes()], vec![], &admin());
    assert!(err(sig.verify("deploy", "production", &cert, &a, &by_key, NOW)).contains("revoked"));
    let by_serial = RevocationList::issue(3, vec![], vec![7], &admin());
    assert!(err(sig.verify("deploy", "production", &cert, &a, &by_serial, NOW)).contains("revoked"));
}

#[test]
fn revocation_lists_are_signed_and_never_go_back() {
    let list = RevocationList::issue(5, vec![[1; 32]], vec![3], &admin());
    list.verify(&admin().verifying_key(), 5).unwrap();
    assert!(list.verify(&admin().verifying_key(), 6).unwrap_err().to_string().contains("older"));
    assert!(list.verify(&key(9).verifying_key(), 0).unwrap_err().to_string().contains("admin root"));
    let mut forged = list.clone();
    forged.operators.clear();
    assert!(forged.verify(&admin().verifying_key(), 0).unwrap_err().to_string().contains("does not verify"));
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

#[test]
fn approvals_count_distinct_role_holders_up_to_the_threshold() {
    let digest = [0x77; 32];
    let guarded = Guarded { request_digest: digest, role: "approver".into(), threshold: 2 };
    let ops: Vec<SigningKey> = (1..=4).map(key).collect();
    let certs: Vec<RoleCertificate> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| RoleCertificate::issue(&o.verifying_key(), &["approver"], i as u64, NOW + HOUR, &admin()))
        .collect();
    let a = admin().verifying_key();
    let none = no_revocations();
    let approve = |o: &SigningKey| Approval::sign(digest, NOW + 60_000, o);
    let check = |approvals: &[Approval], revoked: &RevocationList| {
        check_approvals(&guarded, approvals, &certs, &a, revoked, NOW)
    };

    let tally = check(&[approve(&ops[0]), approve(&ops[1])], &none).unwrap();
    assert_eq!(tally.counted.len(), 2);
    // Below threshold.
    assert!(check(&[approve(&ops[0])], &none).unwrap_err().to_string().contains("1 of 2 required"));
    // One key counts once.
    let dup = check(&[approve(&ops[0]), approve(&ops[0])], &none).unwrap_err().to_string();
    assert!(dup.contains("counts once"), "{dup}");
    // Expired, wrong request, forged, no role, revoked: none counts.
    let expired = Approval::sign(digest, NOW - 1, &ops[1]);
    let other_request = Approval::sign([0x78; 32], NOW + 60_000, &ops[1]);
    let mut forged = approve(&ops[1]);
    forged.expiry_ms += 1;
    let stranger = approve(&key(9));
    let skewed = Approval::sign(digest, NOW + 30 * 24 * HOUR, &ops[1]);
    for (bad, why) in [
        (expired, "expired"),
        (skewed, "clock skew"),
        (other_request, "another request"),
        (forged, "does not verify"),
        (stranger, "no valid certificate"),
    ] {
        let e = check(&[approve(&ops[0]), bad], &none).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let revoked = RevocationList::issue(2, vec![ops[1].verifying_key().to_bytes()], vec![], &admin());
    assert!(check(&[approve(&ops[0]), approve(&ops[1])], &revoked).is_err());
    assert!(check(&[approve(&ops[0]), approve(&ops[1]), approve(&ops[2])], &revoked).is_ok());
}
