//! A governed action end to end: role signature → approvals → policy decision → binding →
//! permit → execution, with every refusal and decision in the audit log.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_audit::{AuditLog, DataKey};
use sovereign_governance::approvals::Approval;
use sovereign_governance::governor::{DecisionEvidence, GovernedRequest, Governor};
use sovereign_governance::kernel::{ExecutionRequest, Kernel};
use sovereign_governance::policy::{PolicyBundle, reevaluate};
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};

const NOW: u64 = 1_800_000_000_000;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

struct Setup {
    _dir: tempfile::TempDir,
    audit: Arc<AuditLog>,
    governor: Governor,
}

fn setup(revoked: Vec<[u8; 32]>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditLog::create(&dir.path().join("audit.log"), "test/node", &DataKey([1; 32])).unwrap());
    let kernel = Kernel::new(key(0x50), ReplayStore::open(&dir.path().join("replay")).unwrap().0, Arc::clone(&audit));
    let program = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies/production-approvals.cozo"),
    )
    .unwrap();
    let policy = PolicyBundle::sign("production-approvals", 1, &program, &key(0x42));
    let admin = key(0xad);
    let revocations = RevocationList::issue(1, revoked, vec![], &admin);
    let mut measurements = BTreeMap::new();
    measurements.insert("attested".to_string(), json!(true));
    let mut governor =
        Governor::new(kernel, policy, &[key(0x42).verifying_key()], admin.verifying_key(), revocations, measurements)
            .unwrap();
    governor.guard("promote", "approver", 2);
    Setup { _dir: dir, audit, governor }
}

fn request(id: &str, env: &str, nonce: u8) -> GovernedRequest {
    let op = key(1);
    let execution =
        ExecutionRequest { execution_id: id.into(), action: "promote".into(), context: json!({"model": "m1"}) };
    GovernedRequest {
        execution,
        resource: "model/m1".into(),
        environment: env.into(),
        role_signature: RoleSignature::create(
            "operator",
            RoleContext {
                action: "promote".into(),
                environment: env.into(),
                nonce: [nonce; 16],
                expiry_ms: NOW + 60_000,
            },
            &op,
        ),
        certificate: RoleCertificate::issue(&op.verifying_key(), &["operator"], 1, NOW + 3_600_000, &key(0xad)),
        signals: BTreeMap::new(),
        approvals: vec![],
        approver_certificates: vec![],
    }
}

fn approve(req: &mut GovernedRequest, approvers: &[u8]) {
    let digest = Governor::approval_digest(req);
    for (i, a) in approvers.iter().enumerate() {
        req.approvals.push(Approval::sign(digest, NOW + 60_000, &key(*a)));
        req.approver_certificates.push(RoleCertificate::issue(
            &key(*a).verifying_key(),
            &["approver"],
            100 + i as u64,
            NOW + 3_600_000,
            &key(0xad),
        ));
    }
}

#[test]
fn a_governed_action_runs_only_with_role_approvals_policy_and_binding() {
    let mut s = setup(vec![]);
    // Production with two approvals on an attested platform: allowed, executed once.
    let mut req = request("e1", "production", 1);
    approve(&mut req, &[10, 11]);
    // `SOVEREIGN_FUZZ_SEEDS=fuzz/seeds cargo test` refreshes the fuzz seeds from real inputs.
    if let Some(seeds) = std::env::var_os("SOVEREIGN_FUZZ_SEEDS") {
        let seeds = std::path::PathBuf::from(seeds);
        let policy = PolicyBundle::sign("production-approvals", 1, "allow[r] := r = 'x'", &key(0x42));
        for (target, bytes) in [
            ("governed_request", serde_json::to_vec(&req).unwrap()),
            ("policy_bundle", serde_json::to_vec(&policy).unwrap()),
        ] {
            std::fs::create_dir_all(seeds.join(target)).unwrap();
            std::fs::write(seeds.join(target).join("real"), bytes).unwrap();
        }
    }
    let (permit, record) = s.governor.govern(&req, NOW).unwrap();
    assert_eq!(record.reasons, vec!["production with two approvals on an attested platform".to_string()]);
    assert_eq!(s.governor.execute(permit, NOW, |ctx| ctx.action.clone()).unwrap(), "promote");

    // Below threshold (one approval, or the same approver twice): stops at the approvals.
    let mut one = request("e2", "production", 2);
    approve(&mut one, &[10]);
    assert!(s.governor.govern(&one, NOW).unwrap_err().to_string().contains("1 of 2 required approvals"));
    let mut twice = request("e3", "production", 3);
    approve(&mut twice, &[10, 10]);
    assert!(s.governor.govern(&twice, NOW).unwrap_err().to_string().contains("counts once"));
    // Approvals for another request do not count.
    let mut moved = request("e4", "production", 4);
    moved.approvals = req.approvals.clone();
    moved.approver_certificates = req.approver_certificates.clone();
    assert!(s.governor.govern(&moved, NOW).unwrap_err().to_string().contains("another request"));
    // A replayed role signature (same nonce), even for a new execution.
    let mut replay = request("e5", "production", 1);
    approve(&mut replay, &[10, 11]);
    assert!(s.governor.govern(&replay, NOW).unwrap_err().to_string().contains("replay"));
    // A role signature for staging presented for production.
    let mut wrong_env = request("e6", "production", 6);
    approve(&mut wrong_env, &[10, 11]);
    wrong_env.role_signature = request("e6", "staging", 6).role_signature;
    assert!(s.governor.govern(&wrong_env, NOW).unwrap_err().to_string().contains("presented for promote/production"));

    // Every decision is audited with its input and re-evaluates offline.
    let bytes = std::fs::read(s.audit.path()).unwrap();
    let decoded = sovereign_audit::logfile::decode(&bytes, &DataKey([1; 32])).unwrap();
    let entries: Vec<sovereign_audit::Entry> =
        decoded.entries.iter().map(|e| sovereign_audit::Entry::decode(e).unwrap()).collect();
    let decisions: Vec<DecisionEvidence> = entries
        .iter()
        .filter(|e| e.kind.name() == "policy_decision")
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    assert_eq!(decisions.len(), 1);
    let program = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies/production-approvals.cozo"),
    )
    .unwrap();
    let policy = PolicyBundle::sign("production-approvals", 1, &program, &key(0x42));
    reevaluate(&decisions[0].record, &policy, &decisions[0].input).unwrap();
    let refusals = entries.iter().filter(|e| e.kind.name() == "refusal").count();
    assert_eq!(refusals, 5);
}

#[test]
fn policy_denials_and_revoked_operators_are_refused_and_audited() {
    let mut s = setup(vec![key(1).verifying_key().to_bytes()]);
    let mut req = request("r1", "production", 1);
    approve(&mut req, &[10, 11]);
    assert!(s.governor.govern(&req, NOW).unwrap_err().to_string().contains("revoked"));
    let mut s = setup(vec![]);
    // `promote` is guarded in every environment; with approvals, an operator in staging is
    // allowed by the policy's operator rule.
    let mut staging = request("r2", "staging", 2);
    approve(&mut staging, &[10, 11]);
    s.governor.govern(&staging, NOW).unwrap();
    // A viewer (valid certificate and role signature) in staging: the policy denies, by name.
    let mut viewer = request("r3", "staging", 3);
    approve(&mut viewer, &[10, 11]);
    viewer.certificate = RoleCertificate::issue(&key(1).verifying_key(), &["viewer"], 2, NOW + 60_000, &key(0xad));
    viewer.role_signature = RoleSignature::create(
        "viewer",
        RoleContext {
            action: "promote".into(),
            environment: "staging".into(),
            nonce: [3; 16],
            expiry_ms: NOW + 60_000,
        },
        &key(1),
    );
    let err = s.governor.govern(&viewer, NOW).unwrap_err().to_string();
    assert_eq!(err, "policy: production-approvals@1 denies: no rule allowed this request");
}
