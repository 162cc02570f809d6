//! TPM enhanced-authorization policy digests, computed offline from *predicted* PCR values, and
//! signed PCR policies (TPM2_PolicyAuthorize with an ECDSA P-256 PCR-policy key).
//!
//! A sealed object's `authPolicy` is `PolicyAuthorize(policy key name)`; it unseals only in a
//! session whose PolicyPCR digest the policy key has signed. A release therefore signs the PCR
//! values it predicts, and a newer signed release unseals the same object while a tampered
//! image (different PCRs, no valid signature) cannot.
//!
//! Pure: no IO, no TPM. Signing happens here too (the vendor's build machine), verification of
//! the signature for reports here, and the binding check in the TPM at unseal time.

use p256::ecdsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
use serde::{Deserialize, Serialize};

use crate::pcr::{PcrSelection, PcrValues, Sha256Digest};
use crate::structures::{EcdsaSignature, ecc_p256_verification_public, object_name};

/// `TPM_CC_PolicyPCR`.
pub const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// `TPM_CC_PolicyAuthorize`.
pub const TPM_CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
/// The `policyRef` Sovereign signs under (distinguishes PCR policies from anything else the
/// key might ever sign). v2: every policy signed under it carries the anti-rollback floor's
/// PolicyNV; a v1 policy (none did) cannot unseal an object sealed under v2.
pub const POLICY_REF: &[u8] = b"sovereign/pcr-policy/v2";

/// `policyDigest' = H(policyDigest || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || pcrDigest)`.
pub fn policy_pcr(
    previous: &Sha256Digest,
    selection: &PcrSelection,
    values: &PcrValues,
) -> Result<Sha256Digest, PolicyError> {
    let pcr_digest =
        values.composite_digest(selection).ok_or_else(|| PolicyError::MissingValue(selection.to_string()))?;
    Ok(Sha256Digest::of_parts(&[&previous.0, &TPM_CC_POLICY_PCR.to_be_bytes(), &selection.marshal(), &pcr_digest.0]))
}

/// The policy digest of a fresh session after `TPM2_PolicyPCR(selection, values)`.
pub fn pcr_policy_digest(selection: &PcrSelection, values: &PcrValues) -> Result<Sha256Digest, PolicyError> {
    policy_pcr(&Sha256Digest::default(), selection, values)
}

/// `PolicyAuthorize(keyName, policyRef)` from a fresh session:
/// `H(H(0…0 || TPM_CC_PolicyAuthorize || keyName) || policyRef)`.
pub fn authorize_policy_digest(key_name: &[u8], policy_ref: &[u8]) -> Sha256Digest {
    let first = Sha256Digest::of_parts(&[&[0u8; 32], &TPM_CC_POLICY_AUTHORIZE.to_be_bytes(), key_name]);
    Sha256Digest::of_parts(&[&first.0, policy_ref])
}

/// The digest the policy key signs to approve `approved_policy`: `aHash = H(approvedPolicy || policyRef)`.
pub fn authorization_hash(approved_policy: &Sha256Digest, policy_ref: &[u8]) -> Sha256Digest {
    Sha256Digest::of_parts(&[&approved_policy.0, policy_ref])
}

/// Why a policy could not be computed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A selected PCR has no predicted value.
    #[error("no value given for every PCR in {0}")]
    MissingValue(String),
    /// The policy's PCR values do not hash to its approved policy digest.
    #[error("signed PCR policy is inconsistent: its PCR values give policy {computed}, it claims {claimed}")]
    Inconsistent {
        /// Digest computed from the values.
        computed: Sha256Digest,
        /// Digest the policy claims.
        claimed: Sha256Digest,
    },
    /// The signature is malformed or does not verify under the key.
    #[error("signed PCR policy signature does not verify under the PCR-policy key: {0}")]
    BadSignature(String),
    /// The document could not be decoded.
    #[error("signed PCR policy is malformed: {0}")]
    Malformed(String),
    /// A release version the anti-rollback floor cannot express.
    #[error("release version {0} is beyond the anti-rollback floor's range (1..=64)")]
    VersionBeyondFloor(u64),
}

/// The PCR-policy public key as the TPM sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKey {
    /// The P-256 verification key.
    pub key: p256::ecdsa::VerifyingKey,
}

impl PolicyKey {
    /// Wraps a verification key.
    pub fn new(key: p256::ecdsa::VerifyingKey) -> Self {
        PolicyKey { key }
    }

    /// The `TPMT_PUBLIC` loaded into the TPM to verify policy signatures.
    pub fn tpm_public(&self) -> Vec<u8> {
        ecc_p256_verification_public(&self.key)
    }

    /// The key's TPM name.
    pub fn name(&self) -> Vec<u8> {
        object_name(&self.tpm_public())
    }

    /// The `authPolicy` of objects sealed to policies signed by this key at PCR-policy key
    /// generation `generation`: PolicyAuthorize(this key), then PolicyNV(the TPM's key
    /// generation ≤ `generation`), so that raising the generation retires every older copy.
    pub fn sealing_policy(&self, generation: u64) -> Result<Sha256Digest, PolicyError> {
        crate::floor::key_generation_assertion(&authorize_policy_digest(&self.name(), POLICY_REF), generation)
            .ok_or(PolicyError::VersionBeyondFloor(generation))
    }
}

/// A PCR policy signed by the PCR-policy key: "these PCR values may unseal".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPcrPolicy {
    /// The PCRs and their predicted values (sha256 bank).
    pub pcrs: PcrValues,
    /// `PolicyPCR` digest of those values (the `approvedPolicy`).
    pub approved_policy: Sha256Digest,
    /// The `policyRef` signed with it (hex).
    #[serde(with = "hex_bytes")]
    pub policy_ref: Vec<u8>,
    /// ECDSA signature over `H(approvedPolicy || policyRef)`, marshalled `TPMT_SIGNATURE` (hex).
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    /// During a PCR-policy key rotation: the same approval signed by the *previous* key, with
    /// which a node still sealed to that key unseals once more to reseal to the new one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes_opt")]
    pub bridge_signature: Option<Vec<u8>>,
    /// The release version the policy holds for: its approved policy adds a PolicyNV assertion
    /// that the anti-rollback floor (`floor::FLOOR_INDEX`) is at most this version, so the TPM
    /// refuses it once a newer release was marked good.
    pub release_version: u64,
}

/// The approved policy of `pcrs` for `release_version`: PolicyPCR, then the floor's PolicyNV.
pub fn approved_digest(pcrs: &PcrValues, release_version: u64) -> Result<Sha256Digest, PolicyError> {
    let pcr = pcr_policy_digest(&pcrs.selection(), pcrs)?;
    crate::floor::release_assertion(&pcr, release_version).ok_or(PolicyError::VersionBeyondFloor(release_version))
}

impl SignedPcrPolicy {
    /// Signs `pcrs` for release `release_version` with the PCR-policy key: the TPM unseals
    /// under it only while these PCRs hold and the anti-rollback floor is at most that version.
    pub fn sign(pcrs: PcrValues, release_version: u64, key: &p256::ecdsa::SigningKey) -> Result<Self, PolicyError> {
        let approved_policy = approved_digest(&pcrs, release_version)?;
        let ahash = authorization_hash(&approved_policy, POLICY_REF);
        let sig: p256::ecdsa::Signature =
            key.sign_prehash(&ahash.0).map_err(|e| PolicyError::BadSignature(e.to_string()))?;
        Ok(SignedPcrPolicy {
            pcrs,
            approved_policy,
            policy_ref: POLICY_REF.to_vec(),
            signature: EcdsaSignature::from_p256(&sig).marshal(),
            bridge_signature: None,
            release_version,
        })
    }

    /// Adds the previous PCR-policy key's signature of the same approval (a key rotation).
    pub fn add_bridge(&mut self, previous: &p256::ecdsa::SigningKey) -> Result<(), PolicyError> {
        let ahash = authorization_hash(&self.approved_policy, &self.policy_ref);
        let sig: p256::ecdsa::Signature =
            previous.sign_prehash(&ahash.0).map_err(|e| PolicyError::BadSignature(e.to_string()))?;
        self.bridge_signature = Some(EcdsaSignature::from_p256(&sig).marshal());
        Ok(())
    }

    /// The policy as signed by the previous key (its bridge signature in place of the
    /// signature), or `None` when it carries none.
    pub fn bridged(&self) -> Option<SignedPcrPolicy> {
        let signature = self.bridge_signature.clone()?;
        Some(SignedPcrPolicy { signature, bridge_signature: None, ..self.clone() })
    }

    /// The PCRs the policy covers.
    pub fn selection(&self) -> PcrSelection {
        self.pcrs.selection()
    }

    /// Checks internal consistency and the signature, in pure Rust (the TPM re-checks both).
    pub fn verify(&self, key: &PolicyKey) -> Result<(), PolicyError> {
        let computed = approved_digest(&self.pcrs, self.release_version)?;
        if computed != self.approved_policy {
            return Err(PolicyError::Inconsistent { computed, claimed: self.approved_policy });
        }
        let sig = EcdsaSignature::parse(&self.signature)
            .map_err(|e| PolicyError::BadSignature(e.to_string()))?
            .to_p256()
            .map_err(PolicyError::BadSignature)?;
        let ahash = authorization_hash(&self.approved_policy, &self.policy_ref);
        key.key.verify_prehash(&ahash.0, &sig).map_err(|e| PolicyError::BadSignature(e.to_string()))
    }

    /// Encodes as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializing a plain struct cannot fail")
    }

    /// Decodes from JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, PolicyError> {
        serde_json::from_slice(text).map_err(|e| PolicyError::Malformed(e.to_string()))
    }
}

mod hex_bytes_opt {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| hex::decode(t).map_err(serde::de::Error::custom)).transpose()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> PcrValues {
        let mut v = PcrValues::new();
        v.extend(15, &Sha256Digest::of(b"manifest"));
        v.set(11, Sha256Digest::of(b"uki"));
        v
    }

    #[test]
    fn signed_policy_verifies_and_detects_tampering() {
        let key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let pk = PolicyKey::new(*key.verifying_key());
        let policy = SignedPcrPolicy::sign(values(), 3, &key).unwrap();
        policy.verify(&pk).unwrap();
        let round = SignedPcrPolicy::from_json(policy.to_json().as_bytes()).unwrap();
        assert_eq!(round, policy);

        let mut changed = policy.clone();
        changed.pcrs.set(11, Sha256Digest::of(b"other uki"));
        assert!(matches!(changed.verify(&pk), Err(PolicyError::Inconsistent { .. })));

        let other = p256::ecdsa::SigningKey::from_slice(&[10u8; 32]).unwrap();
        let wrong = SignedPcrPolicy::sign(values(), 3, &other).unwrap();
        assert!(matches!(wrong.verify(&pk), Err(PolicyError::BadSignature(_))));

        // The policy binds its release version: claiming another is inconsistent.
        let mut older = policy.clone();
        older.release_version = 2;
        assert!(matches!(older.verify(&pk), Err(PolicyError::Inconsistent { .. })));
        assert_eq!(SignedPcrPolicy::sign(values(), 65, &key).unwrap_err(), PolicyError::VersionBeyondFloor(65));
    }

    // Vectors printed by tpm2-tools 5.4 against swtpm 0.7 (an independent implementation of
    // the policy digest computation), recorded 2026-11-22:
    //   tpm2_createpolicy --policy-pcr -l sha256:15 -f <32 zero bytes>
    //   tpm2_createpolicy --policy-pcr -l sha256:11,15 -f <SHA256("uki") || extend(0, SHA256("manifest"))>
    //   tpm2_loadexternal -C o -G ecc -u key.pem -n name.bin   (name below)
    //   tpm2_policyauthorize -i <second policy> -q "sovereign/pcr-policy/v1" -n name.bin
    #[test]
    fn policy_digests_match_tpm2_tools() {
        let mut zero = PcrValues::new();
        zero.set(15, Sha256Digest::default());
        let d = pcr_policy_digest(&PcrSelection::new([15]).unwrap(), &zero).unwrap();
        assert_eq!(d.to_hex(), "7e247a603cd1052cabc095741b8ee2f7458aabeee960b8ec97d7f090171a039a");

        let d = pcr_policy_digest(&values().selection(), &values()).unwrap();
        assert_eq!(d.to_hex(), "2a50019c6dac992bc4644a70291153334ea09bd59eac0bfafbbe6a5a1e69ce16");

        let name = hex::decode("000b289aa6a8a98b17909a38d251467137440756081de008239e4772ad2b7af948c3").unwrap();
        assert_eq!(
            authorize_policy_digest(&name, b"sovereign/pcr-policy/v1").to_hex(),
            "a1066db04548a402254041439501b2f9b366c5caf4371e512c74308112e31ba1"
        );
    }
}
