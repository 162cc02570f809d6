//! The policy engine: Datalog programs (CozoScript) from signed policy bundles, evaluated by
//! CozoDB in memory into a deterministic decision record.
//!
//! A policy program defines `allow[reason]` and/or `deny[reason]` rules over the input
//! relations the engine provides:
//!
//! | relation | rows |
//! | --- | --- |
//! | `input_principal[key]` | the operator's public key (hex) |
//! | `input_role[role]` | each role from the operator's verified role certificates |
//! | `input_action[action]`, `input_resource[resource]`, `input_environment[environment]` | one row each |
//! | `input_context[key, value]` | the request context (scalars) |
//! | `input_signal[name, value]` | signals (numbers, booleans, strings) |
//! | `input_measurement[name, value]` | platform measurements (e.g. `attested`, PCR digests) |
//!
//! The verdict: **deny overrides allow** — any `deny` row denies with its reasons; otherwise any
//! `allow` row allows with its reasons; otherwise deny ("no rule allowed this request"). Any
//! error (parse, evaluation, time-out, size) is a deny that names the error. The record lists
//! reasons sorted and de-duplicated, so the same policy and input give byte-identical records.
//!
//! Bounded: program ≤ 64 KiB, input ≤ 256 facts of ≤ 1 KiB each, evaluation ≤ 1 s (CozoDB
//! `:timeout`), ≤ 1,000 result rows. Decisions are memoized on (policy hash, input hash): sound
//! because evaluation is deterministic, and what keeps a governed action under CozoDB's
//! per-query cost.
//!
//! Must never: allow on an error, or produce two different records for one (policy, input).

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, canonical_json, sha256};
use crate::kernel::{PolicyState, Verdict};
use crate::signed::Refusal;

/// Largest policy program.
pub const MAX_PROGRAM: usize = 64 * 1024;
/// Most input facts.
pub const MAX_FACTS: usize = 256;
/// Largest single input value or key.
pub const MAX_VALUE: usize = 1024;
/// Most result rows.
pub const MAX_ROWS: usize = 1000;
/// Memoized decisions kept.
pub const MEMO_CAPACITY: usize = 4096;

/// A signed policy bundle: a named, versioned Datalog program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    /// Name (e.g. `claims-approval`).
    pub name: String,
    /// Version (monotonic per name).
    pub version: u64,
    /// The CozoScript program.
    pub program: String,
    /// The signer (the release key or an admin key).
    pub signer: [u8; 32],
    /// Ed25519 over [`PolicyBundle::signing_bytes`].
    pub signature: Vec<u8>,
}

impl PolicyBundle {
    /// `Canonical("sovereign-policy-bundle/v1") ‖ name ‖ version ‖ program ‖ signer`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        Canonical::new("sovereign-policy-bundle/v1")
            .text(&self.name)
            .u64(self.version)
            .text(&self.program)
            .fixed(&self.signer)
            .into_bytes()
    }

    /// The policy hash: SHA-256 of the signing bytes.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.signing_bytes())
    }

    /// Signs a program.
    pub fn sign(name: &str, version: u64, program: &str, key: &SigningKey) -> Self {
        let mut b = PolicyBundle {
            name: name.into(),
            version,
            program: program.into(),
            signer: key.verifying_key().to_bytes(),
            signature: vec![],
        };
        b.signature = key.sign(&b.signing_bytes()).to_bytes().to_vec();
        b
    }

    /// Checks the signer is trusted, the signature, and the bounds.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), Refusal> {
        const WHAT: &str = "policy bundle";
        if !trusted.iter().any(|k| k.as_bytes() == &self.signer) {
            return Err(Refusal::new(WHAT, "signed by a key that may not sign policies"));
        }
        let key = VerifyingKey::from_bytes(&self.signer).map_err(|_| Refusal::new(WHAT, "signer is not a key"))?;
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| Refusal::new(WHAT, "signature is not 64 bytes"))?;
        key.verify_strict(&self.signing_bytes(), &sig).map_err(|_| Refusal::new(WHAT, "signature does not verify"))?;
        if self.program.len() > MAX_PROGRAM {
            return Err(Refusal::new(WHAT, format!("program is {} bytes; limit {MAX_PROGRAM}", self.program.len())));
        }
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(Refusal::new(WHAT, "name must be 1–128 bytes"));
        }
        Ok(())
    }

    /// Parses a bundle from its JSON form, refusing anything malformed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Refusal> {
        serde_json::from_slice(bytes).map_err(|e| Refusal::new("policy bundle", format!("malformed: {e}")))
    }
}

/// A request to decide.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// The operator's public key (hex).
    pub principal: String,
    /// Roles from the operator's verified certificates.
    pub roles: Vec<String>,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The environment.
    pub environment: String,
    /// Context scalars.
    #[serde(default)]
    pub context: BTreeMap<String, serde_json::Value>,
    /// Signals (AI recommendations, scores, flags).
    #[serde(default)]
    pub signals: BTreeMap<String, serde_json::Value>,
    /// Platform measurements.
    #[serde(default)]
    pub measurements: BTreeMap<String, serde_json::Value>,
}

impl PolicyInput {
    /// SHA-256 of the canonical JSON of the input.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&canonical_json(&serde_json::to_value(self).unwrap_or(serde_json::Value::Null)))
    }
}

/// The decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The policy's name and version.
    pub policy: String,
    /// [`PolicyBundle::hash`].
    pub policy_hash: [u8; 32],
    /// [`PolicyInput::hash`].
    pub input_hash: [u8; 32],
    /// The reasons (fired rules' reasons, or the error), sorted, unique.
    pub reasons: Vec<String>,
}

impl DecisionRecord {
    /// `Canonical("sovereign-decision/v1") ‖ verdict ‖ policy ‖ policy_hash ‖ input_hash ‖ reasons`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let verdict = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        Canonical::new("sovereign-decision/v1")
            .text(verdict)
            .text(&self.policy)
            .fixed(&self.policy_hash)
            .fixed(&self.input_hash)
            .texts(&self.reasons)
            .into_bytes()
    }

    /// What the kernel binds: the verdict and the record's hash.
    pub fn state(&self) -> PolicyState {
        PolicyState { verdict: self.verdict, record_hash: sha256(&self.canonical_bytes()) }
    }
}

#[cfg(feature = "engine")]
mod evaluate;
#[cfg(feature = "engine")]
pub use evaluate::{PolicyEngine, reevaluate};
