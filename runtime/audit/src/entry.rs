//! Typed, versioned audit entries and their canonical encoding (postcard).
//!
//! An entry's Merkle leaf is its canonical encoding; its *entry hash* is the RFC 9162 leaf
//! hash of those bytes. Entries may carry their own Ed25519 signatures (by the node identity,
//! an operator, a witness), over a domain-separated encoding of the entry without signatures.
//!
//! Pure: no IO, no clock (the caller supplies timestamps).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::merkle::{Hash, leaf_hash};

/// The only entry format version this code writes and reads.
pub const ENTRY_VERSION: u16 = 1;
/// Largest accepted encoded entry.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Domain separator for entry signatures.
const SIGNING_CONTEXT: &[u8] = b"sovereign-audit-entry/v1\n";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EntryKind {
    /// A boot measurement (PCR extension, quote summary).
    BootMeasurement,
    /// A signed configuration snapshot.
    ConfigSnapshot,
    /// A role signature over an action in a context.
    RoleSignature,
    /// A policy decision record.
    PolicyDecision,
    /// A policy-state binding.
    PolicyBinding,
    /// An execution started.
    ExecutionStart,
    /// An execution ended.
    ExecutionEnd,
    /// An operator approval.
    Approval,
    /// An artifact was produced or consumed.
    Artifact,
    /// An update was staged, booted, accepted or rejected.
    Update,
    /// Attestation evidence was produced or checked.
    Attestation,
    /// Something was refused (with its reason).
    Refusal,
    /// GPU governance: a violation, an enforcement action and its outcome, the emergency stop
    /// engaged or cleared, a governed kernel launched.
    Gpu,
}

impl EntryKind {
    /// Every kind, in declaration order.
    pub const ALL: [EntryKind; 13] = [
        EntryKind::BootMeasurement,
        EntryKind::ConfigSnapshot,
        EntryKind::RoleSignature,
        EntryKind::PolicyDecision,
        EntryKind::PolicyBinding,
        EntryKind::ExecutionStart,
        EntryKind::ExecutionEnd,
        EntryKind::Approval,
        EntryKind::Artifact,
        EntryKind::Update,
        EntryKind::Attestation,
        EntryKind::Refusal,
        EntryKind::Gpu,
    ];

    /// The snake_case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::BootMeasurement => "boot_measurement",
            EntryKind::ConfigSnapshot => "config_snapshot",
            EntryKind::RoleSignature => "role_signature",
            EntryKind::PolicyDecision => "policy_decision",
            EntryKind::PolicyBinding => "policy_binding",
            EntryKind::ExecutionStart => "execution_start",
            EntryKind::ExecutionEnd => "execution_end",
            EntryKind::Approval => "approval",
            EntryKind::Artifact => "artifact",
            EntryKind::Update => "update",
            EntryKind::Attestation => "attestation",
            EntryKind::Refusal => "refusal",
            EntryKind::Gpu => "gpu",
        }
    }

    /// Parses [`EntryKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// How important an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Notice,
    /// Something went wrong but was contained.
    Warning,
    /// A security-relevant failure.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Severity::Info, Severity::Notice, Severity::Warning, Severity::Critical].into_iter().find(|s| s.name() == name)
    }
}

/// An Ed25519 signature an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature {
    /// The signer's public key.
    pub public_key: [u8; 32],
    /// The signature over [`Entry::signing_bytes`].
    #[serde(with = "serde_big_array")]
    pub signature: [u8; 64],
}

mod serde_big_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        <[u8; 64]>::try_from(v).map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version ([`ENTRY_VERSION`]).
    pub version: u16,
    /// What it records.
    pub kind: EntryKind,
    /// Milliseconds since the Unix epoch, from the writer's clock.
    pub timestamp_ms: u64,
    /// How important it is.
    pub severity: Severity,
    /// Digests of the things it refers to (artifacts, decisions, bindings, manifests).
    pub digests: Vec<Hash>,
    /// Kind-specific payload.
    pub payload: Vec<u8>,
    /// Signatures the entry carries.
    pub signatures: Vec<EntrySignature>,
}

/// Why entry bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Too large.
    #[error("entry is {0} bytes; the limit is {MAX_ENTRY_BYTES}")]
    TooLarge(usize),
    /// Not a valid encoding.
    #[error("entry does not decode: {0}")]
    Malformed(String),
    /// Decodes, but is not the canonical encoding of what it decodes to.
    #[error("entry encoding is not canonical")]
    NotCanonical,
    /// Unknown version.
    #[error("entry version {0} is not supported (only {ENTRY_VERSION})")]
    Version(u16),
}

impl Entry {
    /// A new unsigned entry.
    pub fn new(kind: EntryKind, timestamp_ms: u64, severity: Severity, digests: Vec<Hash>, payload: Vec<u8>) -> Self {
        Entry { version: ENTRY_VERSION, kind, timestamp_ms, severity, digests, payload, signatures: Vec::new() }
    }

    /// The canonical encoding (the Merkle leaf data).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard encoding of an in-memory entry cannot fail")
    }

    /// Decodes and requires the canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let entry: Entry = postcard::from_bytes(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if entry.version != ENTRY_VERSION {
            return Err(EntryError::Version(entry.version));
        }
        if entry.encode() != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The RFC 9162 leaf hash of the canonical encoding.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// What signers sign: a domain separator and the entry with no signatures.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signatures.clear();
        let mut out = SIGNING_CONTEXT.to_vec();
        out.extend(unsigned.encode());
        out
    }

    /// Adds a signature by `key`.
    pub fn sign(mut self, key: &SigningKey) -> Self {
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        self.signatures.push(EntrySignature { public_key: key.verifying_key().to_bytes(), signature });
        self
    }

    /// Verifies every signature the entry carries; returns the index and reason of each bad one.
    pub fn verify_signatures(&self) -> Vec<(usize, String)> {
        let message = self.signing_bytes();
        let mut bad = Vec::new();
        for (i, s) in self.signatures.iter().enumerate() {
            let result = VerifyingKey::from_bytes(&s.public_key)
                .map_err(|e| format!("public key is not a valid Ed25519 point: {e}"))
                .and_then(|k| {
                    k.verify_strict(&message, &Signature::from_bytes(&s.signature))
                        .map_err(|_| format!("signature by {} does not verify", hex::encode(s.public_key)))
                });
            if let Err(e) = result {
                bad.push((i, e));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry::new(EntryKind::Artifact, 1_700_000_000_000, Severity::Info, vec![[7; 32]], b"model.bin".to_vec())
    }

    #[test]
    fn round_trips_canonically_and_refuses_other_versions() {
        let e = sample();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        let mut v2 = e.clone();
        v2.version = 2;
        assert_eq!(Entry::decode(&v2.encode()), Err(EntryError::Version(2)));
        let mut longer = e.encode();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
    }

    #[test]
    fn signatures_verify_and_detect_any_change() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let signed = sample().sign(&key);
        assert!(signed.verify_signatures().is_empty());
        let mut changed = signed.clone();
        changed.payload = b"other.bin".to_vec();
        assert_eq!(changed.verify_signatures().len(), 1);
        let mut forged = signed.clone();
        forged.signatures[0].signature[0] ^= 1;
        assert_eq!(forged.verify_signatures().len(), 1);
    }

    #[test]
    fn kinds_have_names_that_round_trip() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::from_name(k.name()), Some(k));
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Entry::decode(&bytes);
        }

        #[test]
        fn any_single_byte_change_changes_the_hash(payload in proptest::collection::vec(any::<u8>(), 1..64), i in any::<usize>()) {
            let e = Entry::new(EntryKind::Refusal, 1, Severity::Warning, vec![], payload.clone());
            let mut p = payload;
            let i = i % p.len();
            p[i] ^= 0x80;
            let f = Entry::new(EntryKind::Refusal, 1, Severity::Warning, vec![], p);
            prop_assert_ne!(e.hash(), f.hash());
        }
    }
}
