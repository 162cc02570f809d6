//! The CozoDB policy engine: the example policies decide as documented, every error is a deny
//! with its reason, deny overrides allow, decisions are deterministic (property test) and
//! re-evaluable offline byte for byte.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_governance::kernel::Verdict;
use sovereign_governance::policy::{DecisionRecord, PolicyBundle, PolicyEngine, PolicyInput, reevaluate};

fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn release() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn bundle(name: &str) -> PolicyBundle {
    PolicyBundle::sign(name, 1, &example(&format!("{name}.cozo")), &release())
}

fn input(roles: &[&str], action: &str, resource: &str, env: &str) -> PolicyInput {
    PolicyInput {
        principal: "ab".repeat(32),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        action: action.into(),
        resource: resource.into(),
        environment: env.into(),
        ..Default::default()
    }
}

fn decide(b: &PolicyBundle, i: &PolicyInput) -> DecisionRecord {
    PolicyEngine::new().unwrap().decide(b, i)
}

#[test]
fn role_inheritance_example() {
    let b = bundle("role-inheritance");
    b.verify(&[release().verifying_key()]).unwrap();
    let r = decide(&b, &input(&["viewer"], "read", "report", "production"));
    assert_eq!((r.verdict, r.reasons.clone()), (Verdict::Allow, vec!["viewers may read".to_string()]));
    // An admin inherits viewer and operator.
    let r = decide(&b, &input(&["admin"], "read", "report", "production"));
    assert_eq!(r.verdict, Verdict::Allow);
    assert_eq!(r.reasons, vec!["admins may act".to_string(), "viewers may read".to_string()]);
    let r = decide(&b, &input(&["operator"], "deploy", "model", "staging"));
    assert_eq!(r.verdict, Verdict::Allow);
    let r = decide(&b, &input(&["operator"], "deploy", "model", "production"));
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["no rule allowed this request".to_string()]));
    // Deny overrides allow, even for an admin.
    let r = decide(&b, &input(&["admin"], "delete", "audit-log", "production"));
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["audit data is never deleted".to_string()]));
}

#[test]
fn claims_approval_from_signals_example() {
    let b = bundle("claims-approval");
    let file: PolicyInput = serde_json::from_str(&example("claims-approval.input.json")).unwrap();
    let r = decide(&b, &file);
    assert_eq!(r.verdict, Verdict::Allow, "{r:?}");
    assert_eq!(r.reasons, vec!["VIP claim up to 10000 with a very low fraud score".to_string()]);
    let with = |signals: serde_json::Value| {
        let mut i = file.clone();
        i.signals = serde_json::from_value(signals).unwrap();
        decide(&b, &i)
    };
    assert_eq!(with(json!({"claim_amount": 800, "fraud_score": 0.2})).verdict, Verdict::Allow);
    assert_eq!(with(json!({"claim_amount": 1200, "vip_customer": false, "fraud_score": 0.05})).verdict, Verdict::Deny);
    let r = with(json!({"claim_amount": 100, "fraud_score": 0.9}));
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["fraud score at or above 0.8".to_string()]));
    let r = with(json!({"fraud_score": 0.0}));
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["no claim amount signal".to_string()]));
}

#[test]
fn production_needs_approvals_example() {
    let b = bundle("production-approvals");
    let mut i = input(&["operator"], "promote", "model", "production");
    i.measurements.insert("attested".into(), json!(true));
    i.context.insert("approvals_verified".into(), json!(1));
    let r = decide(&b, &i);
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["production needs two approvals".to_string()]));
    i.context.insert("approvals_verified".into(), json!(2));
    assert_eq!(decide(&b, &i).verdict, Verdict::Allow);
    i.measurements.insert("attested".into(), json!(false));
    let r = decide(&b, &i);
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec!["production needs an attested platform".to_string()]));
    assert_eq!(decide(&b, &input(&["operator"], "promote", "model", "staging")).verdict, Verdict::Allow);
}

/// `licensed.cozo` appended to the Iron Path's policy: the same request is denied without the
/// licence fact (or with it false), allowed with it, and the record re-evaluates offline.
#[test]
fn the_licensed_example_denies_a_governed_action_without_a_licence() {
    let program = example("iron-path.cozo") + example("licensed.cozo").as_str();
    let b = PolicyBundle::sign("iron-path-licensed", 1, &program, &release());
    let mut i = input(&["pipeline-operator"], "pipeline.model_training", "model", "iron-path");
    i.measurements.insert("measured_boot".into(), json!(true));
    let denied = "this node has no valid Bitcoin licence (import one: sovereign license import)".to_string();
    let r = decide(&b, &i);
    assert_eq!((r.verdict, r.reasons), (Verdict::Deny, vec![denied.clone()]));
    i.measurements.insert("licensed".into(), json!(false));
    assert_eq!(decide(&b, &i).reasons, vec![denied]);
    i.measurements.insert("licensed".into(), json!(true));
    i.measurements.insert("licence_confirmations".into(), json!(6));
    let r = decide(&b, &i);
    assert_eq!(r.verdict, Verdict::Allow, "{:?}", r.reasons);
    reevaluate(&r, &b, &i).unwrap();
}

#[test]
fn every_policy_or_input_error_is_a_deny_with_its_reason() {
    let deny_reason = |program: &str, i: &PolicyInput| {
        let r = decide(&PolicyBundle::sign("p", 1, program, &release()), i);
        assert_eq!(r.verdict, Verdict::Deny, "{program}");
        r.reasons.join("; ")
    };
    let ok = input(&["viewer"], "read", "x", "staging");
    assert!(deny_reason("allow[r] := nonsense[", &ok).starts_with("policy error"));
    assert!(deny_reason("allow[r] := undefined_relation[r]", &ok).starts_with("policy error"));
    assert!(deny_reason("allow[r] := r = 1\n?[x] := x = 1", &ok).contains("may not define a query"));
    assert!(deny_reason("allow[r] := r = 'x'\n:create evil {a}", &ok).contains("only rules are allowed"));
    assert!(deny_reason("%if true %then %end", &ok).contains("only rules are allowed"));
    assert!(deny_reason(&format!("allow[r] := r = '{}'", "x".repeat(70_000)), &ok).contains("limit"));
    // Inputs: too many facts, oversized values, non-scalar context.
    let mut big = ok.clone();
    for n in 0..300 {
        big.signals.insert(format!("s{n}"), json!(n));
    }
    assert!(deny_reason("allow[r] := r = 'x'", &big).contains("input error"));
    let mut long = ok.clone();
    long.resource = "r".repeat(2000);
    assert!(deny_reason("allow[r] := r = 'x'", &long).contains("input error"));
    let mut nested = ok.clone();
    nested.context.insert("k".into(), json!({"a": 1}));
    assert!(deny_reason("allow[r] := r = 'x'", &nested).contains("only scalars"));
    // A program that allows nothing denies; one that allows does.
    assert!(deny_reason("deny[r] := r = 'never'", &ok).contains("never"));
    assert!(deny_reason("helper[r] := r = 1", &ok).contains("neither allow"));
    assert_eq!(decide(&PolicyBundle::sign("p", 1, "allow[r] := r = 'yes'", &release()), &ok).verdict, Verdict::Allow);
}

#[test]
fn bundles_must_be_signed_by_a_trusted_key() {
    let b = bundle("role-inheritance");
    let trusted = [release().verifying_key()];
    b.verify(&trusted).unwrap();
    let stranger = SigningKey::from_bytes(&[7; 32]);
    assert!(b.verify(&[stranger.verifying_key()]).unwrap_err().to_string().contains("may not sign"));
    let mut tampered = b.clone();
    tampered.program.push_str("\nallow[r] := r = 'backdoor'");
    assert!(tampered.verify(&trusted).unwrap_err().to_string().contains("does not verify"));
    assert!(PolicyBundle::from_json(b"{\"name\": 1}").unwrap_err().to_string().contains("malformed"));
    let round = PolicyBundle::from_json(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(round, b);
}

#[test]
fn offline_reevaluation_reproduces_the_record_byte_for_byte() {
    let b = bundle("claims-approval");
    let i: PolicyInput = serde_json::from_str(&example("claims-approval.input.json")).unwrap();
    let record = decide(&b, &i);
    reevaluate(&record, &b, &i).unwrap();
    let mut flipped = record.clone();
    flipped.verdict = Verdict::Deny;
    assert!(reevaluate(&flipped, &b, &i).unwrap_err().to_string().contains("recomputed"));
    let mut other = i.clone();
    other.signals.insert("fraud_score".into(), json!(0.5));
    assert!(reevaluate(&record, &b, &other).unwrap_err().to_string().contains("another input"));
    let b2 = PolicyBundle::sign("claims-approval", 2, &b.program, &release());
    assert!(reevaluate(&record, &b2, &i).unwrap_err().to_string().contains("another policy"));
}

#[test]
fn memoized_and_fresh_decisions_are_identical() {
    let b = bundle("role-inheritance");
    let mut engine = PolicyEngine::new().unwrap();
    let i = input(&["operator"], "deploy", "m", "staging");
    let first = engine.decide(&b, &i);
    let second = engine.decide(&b, &i);
    assert_eq!(engine.memo_hits, 1);
    assert_eq!(first.canonical_bytes(), second.canonical_bytes());
    assert_eq!(first.canonical_bytes(), PolicyEngine::new().unwrap().evaluate_uncached(&b, &i).canonical_bytes());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn decisions_are_deterministic(amount in 0i64..20_000, score in 0u32..100, vip: bool, roles in proptest::collection::vec("[a-z]{1,8}", 0..4)) {
        let b = bundle("claims-approval");
        let mut signals = BTreeMap::new();
        signals.insert("claim_amount".to_string(), json!(amount));
        signals.insert("fraud_score".to_string(), json!(f64::from(score) / 100.0));
        signals.insert("vip_customer".to_string(), json!(vip));
        let i = PolicyInput { roles, signals, ..input(&[], "approve-claim", "claim", "production") };
        let a = PolicyEngine::new().unwrap().evaluate_uncached(&b, &i);
        let c = PolicyEngine::new().unwrap().evaluate_uncached(&b, &i);
        proptest::prop_assert_eq!(a.canonical_bytes(), c.canonical_bytes());
        let expected_allow = score < 80 && ((amount <= 1000 && score < 30) || (vip && amount <= 10_000 && score < 10));
        proptest::prop_assert_eq!(a.verdict == Verdict::Allow, expected_allow);
    }
}
