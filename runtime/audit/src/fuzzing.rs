//! Entry points for the fuzz targets in `fuzz/`: the log file, signed-note and bundle
//! parsers. The property is the crate-wide one: no input panics, and garbage never verifies.

use crate::bundle::{TrustedKeys, verify_bundle};
use crate::logfile::{self, DataKey};
use crate::note::{Checkpoint, SignedNote};

/// The encrypted log file format (with a fixed key).
pub fn log_file(data: &[u8]) {
    let _ = logfile::decode(data, &DataKey([7; 32]));
}

/// Signed notes and checkpoint bodies.
pub fn signed_note(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(note) = SignedNote::parse(text)
    {
        let _ = Checkpoint::parse_body(&note.body);
        let _ = note.to_text();
    }
}

/// Whole bundles, verified against a fixed pinned key that arbitrary bytes cannot satisfy.
pub fn bundle(data: &[u8]) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    let report = verify_bundle(data, &TrustedKeys { node: Some(key), witnesses: vec![] });
    assert!(!report.passed(), "arbitrary bytes verified as a bundle");
}
