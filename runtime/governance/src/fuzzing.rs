//! Bodies of the fuzz targets (`fuzz/`): arbitrary bytes through the parsers of untrusted
//! governance input. None may panic.

use ed25519_dalek::SigningKey;

use crate::approvals::{Guarded, check_approvals};
use crate::governor::GovernedRequest;
use crate::policy::PolicyBundle;
use crate::signed::RevocationList;

/// A policy bundle as it arrives (JSON), through signature and bounds checks.
pub fn policy_bundle(data: &[u8]) {
    let trusted = [SigningKey::from_bytes(&[0x42; 32]).verifying_key()];
    if let Ok(bundle) = PolicyBundle::from_json(data) {
        let _ = bundle.verify(&trusted);
        let _ = bundle.hash();
    }
}

/// A governed request envelope (JSON) through every signature check it carries.
pub fn governed_request(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<GovernedRequest>(data) else { return };
    let admin = SigningKey::from_bytes(&[0xad; 32]).verifying_key();
    let revoked = RevocationList::default();
    let now = 1_800_000_000_000;
    let _ = request.role_signature.verify(
        &request.execution.action,
        &request.environment,
        &request.certificate,
        &admin,
        &revoked,
        now,
    );
    let _ = request.execution.bound_context();
    let guarded = Guarded {
        request_digest: crate::governor::Governor::approval_digest(&request),
        role: "approver".into(),
        threshold: 2,
    };
    let _ = check_approvals(&guarded, &request.approvals, &request.approver_certificates, &admin, &revoked, now);
}
