//! M-of-N approvals for guarded actions (promotion, update, policy change): each approval is an
//! operator's Ed25519 signature over the request digest and an expiry; the action may run only
//! when at least `threshold` distinct operators who hold the required role (valid, unrevoked
//! certificate) approved, before every counted approval expired. One key counts once.
//!
//! Pure: callers pass the time.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::Canonical;
use crate::signed::{Refusal, RevocationList, RoleCertificate};

/// Longest validity an approval may claim.
pub const MAX_APPROVAL_VALIDITY_MS: u64 = 7 * 24 * 3_600_000;

/// What must be approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guarded {
    /// SHA-256 of the guarded request (e.g. of the promotion's canonical JSON).
    pub request_digest: [u8; 32],
    /// The role approvers must hold.
    pub role: String,
    /// How many distinct approvers.
    pub threshold: usize,
}

/// One operator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// What is approved.
    pub request_digest: [u8; 32],
    /// Valid until, ms since the epoch.
    pub expiry_ms: u64,
    /// The approver.
    pub operator: [u8; 32],
    /// Ed25519 over the canonical bytes.
    pub signature: Vec<u8>,
}

impl Approval {
    fn signing_bytes(request_digest: &[u8; 32], expiry_ms: u64, operator: &[u8; 32]) -> Vec<u8> {
        Canonical::new("sovereign-approval/v1").fixed(request_digest).u64(expiry_ms).fixed(operator).into_bytes()
    }

    /// Approves `request_digest` until `expiry_ms`.
    pub fn sign(request_digest: [u8; 32], expiry_ms: u64, operator: &SigningKey) -> Self {
        let op = operator.verifying_key().to_bytes();
        let signature = operator.sign(&Self::signing_bytes(&request_digest, expiry_ms, &op)).to_bytes().to_vec();
        Approval { request_digest, expiry_ms, operator: op, signature }
    }
}

/// The outcome of counting approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Operators whose approvals counted, in the order given.
    pub counted: Vec<[u8; 32]>,
    /// Approvals that did not count, with the reason.
    pub rejected: Vec<(String, String)>,
}

/// Counts `approvals` for `guarded`; `Ok` only at threshold. `certificates` are the approvers'
/// role certificates (any order; the first valid one for an operator is used).
pub fn check_approvals(
    guarded: &Guarded,
    approvals: &[Approval],
    certificates: &[RoleCertificate],
    admin: &VerifyingKey,
    revoked: &RevocationList,
    now_ms: u64,
) -> Result<Tally, Refusal> {
    let mut tally = Tally { counted: vec![], rejected: vec![] };
    for a in approvals {
        let who = hex::encode(a.operator);
        let reject = |why: &str| (who.clone(), why.to_string());
        let verdict = (|| {
            if a.request_digest != guarded.request_digest {
                return Err(reject("approves another request"));
            }
            let key = VerifyingKey::from_bytes(&a.operator).map_err(|_| reject("not an Ed25519 key"))?;
            let sig = ed25519_dalek::Signature::from_slice(&a.signature).map_err(|_| reject("malformed signature"))?;
            key.verify_strict(&Approval::signing_bytes(&a.request_digest, a.expiry_ms, &a.operator), &sig)
                .map_err(|_| reject("signature does not verify"))?;
            if now_ms > a.expiry_ms {
                return Err(reject("expired"));
            }
            if a.expiry_ms > now_ms.saturating_add(MAX_APPROVAL_VALIDITY_MS) {
                return Err(reject("expires more than 7 days from now (clock skew?)"));
            }
            if tally.counted.contains(&a.operator) {
                return Err(reject("this operator already approved (one key counts once)"));
            }
            let holds_role = certificates
                .iter()
                .filter(|c| c.operator == a.operator)
                .any(|c| c.verify(admin, revoked, now_ms).is_ok() && c.roles.iter().any(|r| r == &guarded.role));
            if !holds_role {
                return Err(reject(&format!("holds no valid certificate for role {:?}", guarded.role)));
            }
            Ok(())
        })();
        match verdict {
            Ok(()) => tally.counted.push(a.operator),
            Err(r) => tally.rejected.push(r),
        }
    }
    if tally.counted.len() < guarded.threshold {
        let reasons: Vec<String> = tally.rejected.iter().map(|(k, why)| format!("{}…: {why}", &k[..8])).collect();
        return Err(Refusal::new(
            "approvals",
            format!(
                "{} of {} required approvals by role {:?}{}",
                tally.counted.len(),
                guarded.threshold,
                guarded.role,
                if reasons.is_empty() { String::new() } else { format!(" (not counted: {})", reasons.join("; ")) }
            ),
        ));
    }
    Ok(tally)
}
