//! `sovereign-audit`: the tamper-evident audit log, its checkpoints and the compliance bundle
//! a third party verifies offline.
//!
//! Pure core (no IO, no clock, no randomness): [`merkle`] (RFC 9162 trees and proofs),
//! [`entry`] (typed, versioned entries), [`note`] (C2SP checkpoints, signed notes,
//! cosignatures), [`logfile`] (the encrypted file format), [`bundle`] (the bundle format and its
//! verifier), [`verify`] (reports, raw-log verification). Thin edges: [`store`] (the durable
//! log with group commit) and [`export`].
//!
//! Invariants: an append is acknowledged only once durable; recovery drops only a torn,
//! unacknowledged tail and refuses a log damaged anywhere else; a verifier passes only when
//! every check ran and passed, naming every failure with its place.
//!
//! Must never: acknowledge an entry that is not on stable storage; reuse an AES-GCM nonce
//! under a file key; report PASS on anything it could not check; panic on any input.

#![forbid(unsafe_code)]

pub mod anchor;
pub mod bundle;
pub mod entry;
pub mod export;
pub mod fuzzing;
pub mod logfile;
pub mod merkle;
pub mod note;
pub mod stats;
pub mod store;
pub mod verify;
pub mod witness;

pub use bundle::{TrustedKeys, verify_bundle};
pub use entry::{Entry, EntryKind, Severity};
pub use logfile::DataKey;
pub use merkle::Hash;
pub use store::{AuditLog, Recovery, StoreError};
pub use verify::Report;
