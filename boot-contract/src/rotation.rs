//! A PCR-policy key rotation: "node keys sealed to policies of key `from` may be resealed to
//! key `to`, at key generation `generation`", signed by the old PCR-policy key (it consents
//! to its successor) and by the update root (the release's root of trust names it).
//!
//! A release carries one in its signed runtime configuration. PID 1 of that release unseals
//! with the old key's bridge signature once, reseals to the new key at `generation`, and —
//! only after the release is blessed — raises the TPM's key generation to `generation`, from
//! which on every object sealed to the old key is refused by the TPM itself.
//!
//! Signed message (both signatures, over the same bytes):
//! `"sovereign/pcr-policy-key-rotation/v1\0" ‖ from (65-byte SEC1) ‖ to (65-byte SEC1) ‖ generation (u64 BE)`.
//! The old key signs it with ECDSA P-256 / SHA-256 (64 bytes `r ‖ s`), the root with Ed25519.
//! Pure: no IO.

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use serde::{Deserialize, Serialize};

/// The domain the rotation message starts with.
pub const DOMAIN: &[u8] = b"sovereign/pcr-policy-key-rotation/v1\0";
/// The highest key generation the TPM's bit field can express.
pub const MAX_GENERATION: u64 = 64;

/// A signed PCR-policy key rotation (hex fields, as in the runtime configuration's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrPolicyKeyRotation {
    /// The retiring PCR-policy key (uncompressed SEC1, hex).
    pub from: String,
    /// The new PCR-policy key (uncompressed SEC1, hex).
    pub to: String,
    /// The TPM key generation the node keys are resealed at (1..=64).
    pub generation: u64,
    /// The retiring key's ECDSA P-256 signature of the message (`r ‖ s`, hex).
    pub from_signature: String,
    /// The update root's Ed25519 signature of the message (hex).
    pub root_signature: String,
}

/// A rotation that verified: the two keys and the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRotation {
    /// The retiring key.
    pub from: p256::ecdsa::VerifyingKey,
    /// The new key.
    pub to: p256::ecdsa::VerifyingKey,
    /// The generation to reseal at.
    pub generation: u64,
}

/// Why a rotation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// A key is not hex or not a point on P-256.
    #[error("PCR-policy key rotation: the {which} key is not a P-256 public key ({why})")]
    BadKey {
        /// `from` or `to`.
        which: &'static str,
        /// The decoder's complaint.
        why: String,
    },
    /// The two keys are the same.
    #[error("PCR-policy key rotation: from and to are the same key")]
    SameKey,
    /// The generation is outside 1..=64.
    #[error("PCR-policy key rotation: generation {0} is outside 1..={MAX_GENERATION}")]
    Generation(u64),
    /// The retiring key did not sign it.
    #[error("PCR-policy key rotation: not signed by the retiring PCR-policy key ({0})")]
    FromSignature(String),
    /// The update root did not sign it.
    #[error("PCR-policy key rotation: not signed by the update root ({0})")]
    RootSignature(String),
}

fn sec1(key: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
    key.to_encoded_point(false).as_bytes().to_vec()
}

/// The signed message.
pub fn message(from: &p256::ecdsa::VerifyingKey, to: &p256::ecdsa::VerifyingKey, generation: u64) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&sec1(from));
    m.extend_from_slice(&sec1(to));
    m.extend_from_slice(&generation.to_be_bytes());
    m
}

fn key(hex_key: &str, which: &'static str) -> Result<p256::ecdsa::VerifyingKey, RotationError> {
    let bytes = hex::decode(hex_key).map_err(|e| RotationError::BadKey { which, why: e.to_string() })?;
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes).map_err(|e| RotationError::BadKey { which, why: e.to_string() })
}

impl PcrPolicyKeyRotation {
    /// Signs a rotation from `from` to `to` at `generation` with the retiring key and the root.
    pub fn sign(
        from: &p256::ecdsa::SigningKey,
        to: &p256::ecdsa::VerifyingKey,
        generation: u64,
        root: &ed25519_dalek::SigningKey,
    ) -> Self {
        let m = message(from.verifying_key(), to, generation);
        let from_signature: p256::ecdsa::Signature = from.sign(&m);
        PcrPolicyKeyRotation {
            from: hex::encode(sec1(from.verifying_key())),
            to: hex::encode(sec1(to)),
            generation,
            from_signature: hex::encode(from_signature.to_bytes()),
            root_signature: hex::encode(root.sign(&m).to_bytes()),
        }
    }

    /// Checks both signatures (the retiring key's and `root`'s) and the generation's range.
    pub fn verify(&self, root: &ed25519_dalek::VerifyingKey) -> Result<VerifiedRotation, RotationError> {
        let (from, to) = (key(&self.from, "from")?, key(&self.to, "to")?);
        if from == to {
            return Err(RotationError::SameKey);
        }
        if !(1..=MAX_GENERATION).contains(&self.generation) {
            return Err(RotationError::Generation(self.generation));
        }
        let m = message(&from, &to, self.generation);
        let sig = hex::decode(&self.from_signature)
            .map_err(|e| e.to_string())
            .and_then(|b| p256::ecdsa::Signature::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(RotationError::FromSignature)?;
        from.verify(&m, &sig).map_err(|e| RotationError::FromSignature(e.to_string()))?;
        let sig = hex::decode(&self.root_signature)
            .map_err(|e| e.to_string())
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(RotationError::RootSignature)?;
        root.verify_strict(&m, &sig).map_err(|e| RotationError::RootSignature(e.to_string()))?;
        Ok(VerifiedRotation { from, to, generation: self.generation })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> (p256::ecdsa::SigningKey, p256::ecdsa::SigningKey, ed25519_dalek::SigningKey) {
        (
            p256::ecdsa::SigningKey::from_slice(&[1u8; 32]).unwrap(),
            p256::ecdsa::SigningKey::from_slice(&[2u8; 32]).unwrap(),
            ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]),
        )
    }

    #[test]
    fn a_rotation_verifies_only_whole_and_under_its_root() {
        let (old, new, root) = keys();
        let r = PcrPolicyKeyRotation::sign(&old, new.verifying_key(), 1, &root);
        let v = r.verify(&root.verifying_key()).unwrap();
        assert_eq!((v.from, v.to, v.generation), (*old.verifying_key(), *new.verifying_key(), 1));
        let other_root = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        assert!(matches!(r.verify(&other_root.verifying_key()), Err(RotationError::RootSignature(_))));
        // Any field changed breaks the old key's signature first.
        let mut g = r.clone();
        g.generation = 2;
        assert!(matches!(g.verify(&root.verifying_key()), Err(RotationError::FromSignature(_))));
        let mut t = r.clone();
        t.to = hex::encode(sec1(&p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap().verifying_key().clone()));
        assert!(matches!(t.verify(&root.verifying_key()), Err(RotationError::FromSignature(_))));
        // Signed by the root and the *new* key instead of the old one: refused.
        let m = message(old.verifying_key(), new.verifying_key(), 1);
        let forged: p256::ecdsa::Signature = new.sign(&m);
        let f = PcrPolicyKeyRotation { from_signature: hex::encode(forged.to_bytes()), ..r.clone() };
        assert!(matches!(f.verify(&root.verifying_key()), Err(RotationError::FromSignature(_))));
        let z = PcrPolicyKeyRotation::sign(&old, new.verifying_key(), 0, &root);
        assert_eq!(z.verify(&root.verifying_key()), Err(RotationError::Generation(0)));
        let same = PcrPolicyKeyRotation::sign(&old, old.verifying_key(), 1, &root);
        assert_eq!(same.verify(&root.verifying_key()), Err(RotationError::SameKey));
        let junk = PcrPolicyKeyRotation { from: "zz".into(), ..r };
        assert!(matches!(junk.verify(&root.verifying_key()), Err(RotationError::BadKey { which: "from", .. })));
    }
}
