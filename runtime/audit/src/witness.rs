//! A witness of other nodes' audit logs (the offline core of C2SP `tlog-witness`): it cosigns a
//! log's checkpoint only if the log's own key signed it and it is consistent with the last
//! checkpoint the witness cosigned for that origin — so a node cannot show one history to one
//! auditor and another to the next without its witnesses noticing. The transport (the mesh) and
//! durable storage of [`Seen`] are the caller's: it must store the new [`Seen`] before sending
//! the cosignature.
//!
//! Pure: no IO. Must never: cosign a checkpoint not signed by the log's pinned key, one smaller
//! than or inconsistent with what it cosigned before, or a second root for a size it has seen
//! (a split view, reported with both roots).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use crate::merkle::{Hash, verify_consistency};
use crate::note::{Checkpoint, NoteVerifier, SignedNote, cosign_note};

/// The latest checkpoint cosigned per origin: `(size, root)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen(pub BTreeMap<String, (u64, Hash)>);

/// Why a checkpoint was not cosigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// Not a signed checkpoint.
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    /// No log with this origin is known to the witness.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// The log's key did not sign it.
    #[error("not signed by the log's key: {0}")]
    NotSigned(String),
    /// The proof starts from another size than the witness's latest (C2SP: 409 Conflict).
    #[error("the proof is from size {claimed}; this witness last cosigned size {seen}")]
    Conflict {
        /// The size the request's proof starts from.
        claimed: u64,
        /// The witness's latest size for the origin.
        seen: u64,
    },
    /// Smaller than a checkpoint already cosigned.
    #[error("size {got} is below size {seen}, already cosigned")]
    Rollback {
        /// The witness's latest.
        seen: u64,
        /// The checkpoint's.
        got: u64,
    },
    /// Another root for a size already cosigned: the log showed two histories.
    #[error("split view at size {size}: cosigned root {seen}, now shown root {shown}")]
    SplitView {
        /// The size.
        size: u64,
        /// The root cosigned before (hex).
        seen: String,
        /// The root shown now (hex).
        shown: String,
    },
    /// The consistency proof does not hold.
    #[error("not consistent with size {seen}: {why}")]
    Inconsistent {
        /// The witness's latest size.
        seen: u64,
        /// The proof's failure.
        why: String,
    },
}

/// A witness: its name and key, the logs it follows (origin → the log's verifier), and what it
/// has cosigned.
pub struct Witness {
    name: String,
    key: SigningKey,
    logs: BTreeMap<String, NoteVerifier>,
    seen: Seen,
}

impl Witness {
    /// A witness named `name` (its cosignature lines carry it), following `logs`, resuming from
    /// `seen`.
    pub fn new(name: impl Into<String>, key: SigningKey, logs: Vec<(String, NoteVerifier)>, seen: Seen) -> Self {
        Witness { name: name.into(), key, logs: logs.into_iter().collect(), seen }
    }

    /// Follows (or keeps following) the log `origin`, checked with `verifier`; what it cosigned
    /// for that origin before is kept.
    pub fn follow(&mut self, origin: String, verifier: NoteVerifier) {
        self.logs.insert(origin, verifier);
    }

    /// Puts back what the witness had cosigned (its state could not be stored durably).
    pub fn restore(&mut self, seen: Seen) {
        self.seen = seen;
    }

    /// What the witness has cosigned, to store durably before a cosignature leaves.
    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    /// Checks `note_text` (a checkpoint signed by its log) against the latest checkpoint of its
    /// origin through `proof`, a consistency proof from `old_size`; on success records it and
    /// returns the note with this witness's cosignature added (at POSIX `now`).
    pub fn add_checkpoint(
        &mut self,
        note_text: &str,
        old_size: u64,
        proof: &[Hash],
        now: u64,
    ) -> Result<SignedNote, WitnessError> {
        let mut note = SignedNote::parse(note_text).map_err(|e| WitnessError::Malformed(e.to_string()))?;
        let checkpoint = Checkpoint::parse_body(&note.body).map_err(|e| WitnessError::Malformed(e.to_string()))?;
        let log =
            self.logs.get(&checkpoint.origin).ok_or_else(|| WitnessError::UnknownLog(checkpoint.origin.clone()))?;
        log.verify_signature(&note).map_err(|e| WitnessError::NotSigned(e.to_string()))?;
        let (seen_size, seen_root) =
            self.seen.0.get(&checkpoint.origin).copied().unwrap_or((0, crate::merkle::empty_root()));
        if checkpoint.size < seen_size {
            return Err(WitnessError::Rollback { seen: seen_size, got: checkpoint.size });
        }
        if checkpoint.size == seen_size && seen_size > 0 {
            if checkpoint.root != seen_root {
                return Err(WitnessError::SplitView {
                    size: seen_size,
                    seen: hex::encode(seen_root),
                    shown: hex::encode(checkpoint.root),
                });
            }
        } else {
            if old_size != seen_size {
                return Err(WitnessError::Conflict { claimed: old_size, seen: seen_size });
            }
            verify_consistency(seen_size, checkpoint.size, &seen_root, &checkpoint.root, proof)
                .map_err(|e| WitnessError::Inconsistent { seen: seen_size, why: e.to_string() })?;
        }
        self.seen.0.insert(checkpoint.origin.clone(), (checkpoint.size, checkpoint.root));
        cosign_note(&mut note, &self.name, &self.key, now);
        Ok(note)
    }
}
