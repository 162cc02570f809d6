//! Every refusal path of the governance kernel, each with its one-line reason, and the
//! acceptance path next to it (so each test would fail if the check disappeared).

#![allow(clippy::unwrap_used)] // test code

use ed25519_dalek::SigningKey;
use serde_json::json;
use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
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
