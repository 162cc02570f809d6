//! Every execution's chain of custody, checked offline in a compliance bundle: a real governed
//! action (role signature, CozoDB decision, binding, permit, execution) exports a bundle that
//! passes; each forged link — an execution with no binding, a binding used twice, a binding of
//! no decision, a binding of a denying decision, an execution end with no start — fails
//! `executions.bound` naming the orphan's entry index.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};
use sovereign_cli::decisions::DecisionChecker;
use sovereign_governance::governor::{GovernedRequest, Governor};
use sovereign_governance::kernel::{ExecutionRequest, Kernel};
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};

const NOW: u64 = 1_800_000_000_000;
const DATA: DataKey = DataKey([7; 32]);

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

struct Governed {
    dir: tempfile::TempDir,
    audit: Arc<AuditLog>,
    policy: PolicyBundle,
    /// The digests of the real execution start: [binding, context].
    start: Vec<[u8; 32]>,
}

/// A log holding one governed `deploy` to staging (allowed by role inheritance) and one
/// governed `deploy` to production by an operator the policy denies there.
fn governed() -> Governed {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditLog::create(&dir.path().join("audit.log"), "test/custody", &DATA).unwrap());
    let program = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies/role-inheritance.cozo"),
    )
    .unwrap();
    let policy = PolicyBundle::sign("role-inheritance", 1, &program, &key(0x42));
    let admin = key(0xad);
    let kernel = Kernel::new(key(0x50), ReplayStore::open(&dir.path().join("replay")).unwrap().0, Arc::clone(&audit));
    let mut governor = Governor::new(
        kernel,
        policy.clone(),
        &[key(0x42).verifying_key()],
        admin.verifying_key(),
        RevocationList::issue(1, vec![], vec![], &admin),
        BTreeMap::new(),
    )
    .unwrap();
    let op = key(1);
    let request = |id: &str, env: &str, nonce: u8| GovernedRequest {
        execution: ExecutionRequest { execution_id: id.into(), action: "deploy".into(), context: json!({"m": 1}) },
        resource: "model/m1".into(),
        environment: env.into(),
        role_signature: RoleSignature::create(
            "operator",
            RoleContext {
                action: "deploy".into(),
                environment: env.into(),
                nonce: [nonce; 16],
                expiry_ms: NOW + 60_000,
            },
            &op,
        ),
        certificate: RoleCertificate::issue(&op.verifying_key(), &["operator"], 1, NOW + 3_600_000, &admin),
        signals: BTreeMap::new(),
        approvals: vec![],
        approver_certificates: vec![],
    };
    let (permit, _) = governor.govern(&request("e1", "staging", 1), NOW).unwrap();
    governor.execute(permit, NOW, |_| ()).unwrap();
    assert!(governor.govern(&request("e2", "production", 2), NOW).is_err(), "the policy denies production");
    let start = entries(&audit).into_iter().find(|e| e.kind == EntryKind::ExecutionStart).unwrap().digests;
    Governed { dir, audit, policy, start }
}

fn entries(audit: &AuditLog) -> Vec<Entry> {
    let bytes = std::fs::read(audit.path()).unwrap();
    let decoded = sovereign_audit::logfile::decode(&bytes, &DATA).unwrap();
    decoded.entries.iter().map(|e| Entry::decode(e).unwrap()).collect()
}

fn append(g: &Governed, kind: EntryKind, digests: Vec<[u8; 32]>) -> u64 {
    g.audit.append_entry(Entry::new(kind, NOW, Severity::Info, digests, b"forged".to_vec())).unwrap().0
}

/// Exports the log and verifies it with the policy key pinned; the `executions.bound` check.
fn custody(g: &Governed) -> (bool, String) {
    let options = ExportOptions {
        section_files: vec![("policies".into(), "policy.json".into(), serde_json::to_vec(&g.policy).unwrap())],
        ..Default::default()
    };
    let bundle = export_bundle(&g.audit, &DATA, &key(0x50), &options).unwrap();
    let trust = TrustedKeys { node: Some(key(0x50).verifying_key()), witnesses: vec![] };
    let checker = DecisionChecker { policy_signers: vec![key(0x42).verifying_key()] };
    let report = verify_bundle_with(&bundle, &trust, Some(&checker));
    let check = report.check("executions.bound").unwrap();
    let text = check.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect::<Vec<_>>().join("; ");
    let others: Vec<_> = report.failures().filter(|f| f.name != "executions.bound").map(|f| f.detail).collect();
    assert!(others.is_empty(), "only custody may fail here: {others:?}");
    (check.passed() && report.passed(), text)
}

#[test]
fn an_honest_governed_log_passes_custody() {
    let g = governed();
    let (passed, text) = custody(&g);
    assert!(passed, "{text}");
    let _ = &g.dir;
}

#[test]
fn an_execution_with_no_binding_is_an_orphan() {
    let g = governed();
    let at = append(&g, EntryKind::ExecutionStart, vec![[0xee; 32], g.start[1]]);
    let (passed, text) = custody(&g);
    assert!(!passed);
    assert_eq!(text, format!("entry {at}: orphan execution: no binding with its digest precedes it"));
}

#[test]
fn a_binding_runs_one_execution_with_its_own_context() {
    let g = governed();
    let twice = append(&g, EntryKind::ExecutionStart, g.start.clone());
    let elsewhere = append(&g, EntryKind::ExecutionStart, vec![g.start[0], [0xcc; 32]]);
    let (passed, text) = custody(&g);
    assert!(!passed);
    assert!(text.contains(&format!("entry {twice}: orphan execution: the binding at entry ")), "{text}");
    assert!(text.contains("was already used by another execution"), "{text}");
    assert!(text.contains(&format!("entry {elsewhere}: orphan execution: its context is not the one")), "{text}");
}

#[test]
fn a_binding_of_no_decision_or_of_a_denial_is_an_orphan_and_so_is_its_execution() {
    let g = governed();
    let unbound = append(&g, EntryKind::PolicyBinding, vec![[0xb1; 32], [0xd1; 32], [0xc1; 32]]);
    let run = append(&g, EntryKind::ExecutionStart, vec![[0xb1; 32], [0xc1; 32]]);
    // The denial of e2 is in the log: a binding of it is refused too.
    let denial = entries(&g.audit)
        .into_iter()
        .filter(|e| e.kind == EntryKind::PolicyDecision)
        .find(|e| e.severity == Severity::Notice)
        .unwrap()
        .digests[0];
    let of_denial = append(&g, EntryKind::PolicyBinding, vec![[0xb2; 32], denial, [0xc2; 32]]);
    let (passed, text) = custody(&g);
    assert!(!passed);
    assert!(text.contains(&format!("entry {unbound}: orphan binding: no decision with its record hash precedes it")));
    assert!(text.contains(&format!("entry {run}: orphan execution: the binding at entry {unbound} binds no allowing")));
    assert!(
        text.contains(&format!("entry {of_denial}: orphan binding: the decision it binds does not verify as allowing"))
    );
}

#[test]
fn an_end_with_no_start_and_a_kernel_entry_without_its_digests_are_named() {
    let g = governed();
    let end = append(&g, EntryKind::ExecutionEnd, vec![[0xe0; 32]]);
    let bare = append(&g, EntryKind::ExecutionStart, vec![]);
    let (passed, text) = custody(&g);
    assert!(!passed);
    assert!(text.contains(&format!("entry {end}: orphan execution end")), "{text}");
    assert!(
        text.contains(&format!("entry {bare}: execution_start entry with 0 digests: not a kernel entry")),
        "{text}"
    );
}
