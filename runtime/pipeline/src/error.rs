//! What can go wrong in the store and the engine, by kind. Every variant's message is one line
//! that names what failed and why; the engine answers a command that failed with that line
//! (`Reply::Refused`), and the daemon treats a failure to open as fatal.

use std::path::PathBuf;

/// Why the encrypted store failed or refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the store was doing ("creating", "writing", "renaming into", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file on the data partition is larger than anything the store writes.
    #[error("{}: {size} bytes, over the store's limit", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// An artifact larger than the store takes (refused before sealing).
    #[error("artifact of {size} bytes is over the store's {limit}-byte limit")]
    ArtifactTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The store key could not be set up.
    #[error("store key: {0}")]
    Key(String),
    /// Encryption failed.
    #[error("sealing {kind} {name} failed")]
    Seal {
        /// "artifact" or "record".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The file is not in the store's sealed format.
    #[error("{kind} {name}: not a sealed store file")]
    NotSealed {
        /// "artifact" or "record".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Decryption failed: altered, swapped for another file, or sealed by another node.
    #[error("{kind} {name}: authentication failed (altered, swapped, or another node's)")]
    Unauthentic {
        /// "artifact" or "record".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// No such artifact.
    #[error("artifact {0}: not stored")]
    Missing(String),
    /// The artifact decrypted but its bytes do not hash to its name.
    #[error("artifact {name}: content hashes to {actual}")]
    WrongContent {
        /// The artifact's name (its expected SHA-256).
        name: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// Why the engine could not do what a command asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The encrypted store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be opened or could not take an entry (nothing is done unlogged).
    #[error("audit log: {0}")]
    Audit(String),
    /// The state on the data partition is not the anchored one (rolled back, cut, missing,
    /// an older copy), or the anchor could not be read or advanced.
    #[error("{0}")]
    Anchor(String),
    /// The replay store (spent execution IDs) could not be opened.
    #[error("replay store: {0}")]
    Replay(String),
    /// The state directory could not be prepared.
    #[error("creating {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The WASM sandbox could not start, refused a module, or stopped it.
    #[error("{0}")]
    Sandbox(String),
    /// A signed input did not verify: the policy bundle, the revocation list, a role
    /// certificate or signature, a module's manifest.
    #[error("{0}")]
    Unverified(String),
    /// Governance refused the action (policy decision, replay, approvals, the governor itself).
    #[error("{0}")]
    Governance(String),
    /// The request does not fit the run or the pipeline (a missing module, a stage without
    /// input, an approval that is not wanted, …).
    #[error("{0}")]
    Invalid(String),
    /// A particular artifact (the dataset, a restored model) could not be read back.
    #[error("{what}: {source}")]
    Artifact {
        /// Which artifact.
        what: &'static str,
        /// Why the store refused it.
        source: StoreError,
    },
    /// No run by that ID.
    #[error("no run {0}")]
    UnknownRun(String),
    /// A record on the data partition does not decode or contradicts itself.
    #[error("{what}: {why}")]
    CorruptRecord {
        /// Which record.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A value could not be encoded as JSON.
    #[error("encoding {what}: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        why: String,
    },
    /// The node's TPM evidence could not be produced or read.
    #[error("attestation evidence: {0}")]
    Attestation(String),
}

impl EngineError {
    /// An [`EngineError::Invalid`] with this message.
    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        EngineError::Invalid(why.into())
    }

    /// An [`EngineError::Encode`] for `what`.
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |e| EngineError::Encode { what, why: e.to_string() }
    }
}
