//! The README's policy workflow through the real `sovereign` binary — sign, eval (exit 0 allow,
//! 1 deny), reevaluate — and offline re-evaluation of the decisions a compliance bundle carries:
//! an honest bundle passes; a bundle whose log records a decision the policy would not have made
//! fails by entry; without a pinned policy key nothing passes.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;
use std::process::{Command, Output};

use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};
use sovereign_governance::governor::DecisionEvidence;
use sovereign_governance::kernel::Verdict;
use sovereign_governance::policy::{PolicyBundle, PolicyEngine, PolicyInput};

fn sovereign(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovereign")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn write_key(path: &Path, seed: u8) -> String {
    std::fs::write(path, format!("{}\n", hex::encode([seed; 32]))).unwrap();
    hex::encode(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes())
}

#[test]
fn sign_eval_and_reevaluate_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let public = write_key(&dir.path().join("release.key"), 0x42);
    let program = examples().join("claims-approval.cozo");
    let input = examples().join("claims-approval.input.json");
    let out = sovereign(&[
        "policy",
        "sign",
        program.to_str().unwrap(),
        "--name",
        "claims-approval",
        "--version",
        "1",
        "--key",
        &p("release.key"),
        "--out",
        &p("bundle.json"),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let bundle_path = p("bundle.json");
    let eval = |input: &str, extra: &[&str]| {
        let mut args = vec!["policy", "eval", "--bundle", bundle_path.as_str(), "--input", input, "--trust", &public];
        args.extend_from_slice(extra);
        sovereign(&args)
    };
    let out = eval(input.to_str().unwrap(), &["--record-out", &p("record.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ALLOW: VIP claim up to 10000"), "{}", stdout(&out));
    // A high fraud score: exit 1, the reason named.
    let mut risky: serde_json::Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
    risky["signals"]["fraud_score"] = serde_json::json!(0.9);
    std::fs::write(dir.path().join("risky.json"), serde_json::to_vec(&risky).unwrap()).unwrap();
    let out = eval(&p("risky.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("DENY: fraud score at or above 0.8"), "{}", stdout(&out));
    // An untrusted signer is an error (exit 2), not a decision.
    let other = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().as_bytes());
    let out = sovereign(&[
        "policy",
        "eval",
        "--bundle",
        &p("bundle.json"),
        "--input",
        input.to_str().unwrap(),
        "--trust",
        &other,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("may not sign policies"), "{}", stdout(&out));
    // Re-evaluation: PASS for the record, FAIL for a flipped one.
    let re = |record: &str| {
        sovereign(&[
            "policy",
            "reevaluate",
            "--record",
            record,
            "--bundle",
            &p("bundle.json"),
            "--input",
            input.to_str().unwrap(),
            "--trust",
            &public,
        ])
    };
    assert_eq!(re(&p("record.json")).status.code(), Some(0));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("record.json")).unwrap()).unwrap();
    record["verdict"] = serde_json::json!("deny");
    std::fs::write(dir.path().join("forged.json"), serde_json::to_vec(&record).unwrap()).unwrap();
    let out = re(&p("forged.json"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAIL: decision re-evaluation: recomputed"), "{}", stdout(&out));
}

#[test]
fn verify_reevaluates_every_decision_in_a_compliance_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    let s = |n: &str| d.join(n).to_string_lossy().into_owned();
    assert!(sovereign(&["audit", "init", &s(""), "--origin", "sovereign.test/policy"]).status.success());
    let release = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let policy = PolicyBundle::sign(
        "claims-approval",
        1,
        &std::fs::read_to_string(examples().join("claims-approval.cozo")).unwrap(),
        &release,
    );
    std::fs::write(d.join("policy.json"), serde_json::to_vec(&policy).unwrap()).unwrap();
    let input: PolicyInput =
        serde_json::from_slice(&std::fs::read(examples().join("claims-approval.input.json")).unwrap()).unwrap();
    let honest = PolicyEngine::new().unwrap().decide(&policy, &input);
    assert_eq!(honest.verdict, Verdict::Allow);
    let data_key = DataKey(
        <[u8; 32]>::try_from(
            hex::decode(std::fs::read_to_string(d.join("data.key")).unwrap().trim()).unwrap().as_slice(),
        )
        .unwrap(),
    );
    let append = |record: &sovereign_governance::policy::DecisionRecord, input: &PolicyInput| {
        let (log, _) = AuditLog::open(&d.join("audit.log"), &data_key).unwrap();
        let payload = serde_json::to_vec(&DecisionEvidence { record: record.clone(), input: input.clone() }).unwrap();
        let digests = vec![record.state().record_hash, record.policy_hash, record.input_hash];
        log.append_entry(Entry::new(EntryKind::PolicyDecision, 1, Severity::Info, digests, payload)).unwrap();
    };
    append(&honest, &input);
    let node_pub = std::fs::read_to_string(d.join("node.pub")).unwrap().trim().to_string();
    let release_pub = hex::encode(release.verifying_key().as_bytes());
    let export_and_verify = |name: &str, policy_keys: &[&str]| {
        assert!(
            sovereign(&[
                "audit",
                "checkpoint",
                "--log",
                &s("audit.log"),
                "--data-key",
                &s("data.key"),
                "--node-key-file",
                &s("node.key")
            ])
            .status
            .success()
        );
        let out = sovereign(&[
            "audit",
            "export",
            "--log",
            &s("audit.log"),
            "--data-key",
            &s("data.key"),
            "--node-key-file",
            &s("node.key"),
            "--out",
            &s(name),
            "--policy",
            &s("policy.json"),
        ]);
        assert!(out.status.success(), "{}", stdout(&out));
        let mut args = vec!["verify".to_string(), s(name), "--node-key".into(), node_pub.clone()];
        for k in policy_keys {
            args.push("--policy-key".into());
            args.push(k.to_string());
        }
        sovereign(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = export_and_verify("honest.tar", &[&release_pub]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("decisions.reevaluated"), "{}", stdout(&out));
    // No pinned policy key: the policies cannot be trusted, so nothing passes.
    let out = export_and_verify("unpinned.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // The node records an allow the policy does not give (a high fraud score): caught.
    let mut lying_input = input.clone();
    lying_input.signals.insert("fraud_score".into(), serde_json::json!(0.95));
    let mut lie = honest.clone();
    lie.input_hash = lying_input.hash();
    append(&lie, &lying_input);
    let out = export_and_verify("lying.tar", &[&release_pub]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("decisions.reevaluated") && text.contains("recomputed Deny"), "{text}");
}
