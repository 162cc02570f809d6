//! The staged update on the data partition, as PID 1 takes it: the runtime writes the bundle,
//! then the record naming it (`update/staged.json`: release version and SHA-256, what the
//! operator was told and what update approvers approved). PID 1 installs the bundle only when
//! it is the one the record names — a cut between the two writes, or bytes swapped under the
//! record, is refused by digest — and only after verifying the bundle itself.
//!
//! Pure: bytes in, a decision out.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The fields of the runtime's staged record PID 1 needs (the rest is ignored).
#[derive(Debug, Deserialize)]
struct StagedRecord {
    release_version: u64,
    sha256: [u8; 32],
}

/// The release version the record names for `bundle`, or why the bundle is not the one staged.
pub fn named_release(record: &[u8], bundle: &[u8]) -> Result<u64, String> {
    let record: StagedRecord =
        serde_json::from_slice(record).map_err(|e| format!("the staged record does not parse: {e}"))?;
    let digest: [u8; 32] = Sha256::digest(bundle).into();
    if digest != record.sha256 {
        return Err(format!(
            "the staged bundle is not the one its record names (SHA-256 {}, the record says {})",
            hex::encode(digest),
            hex::encode(record.sha256)
        ));
    }
    Ok(record.release_version)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(version: u64, bundle: &[u8]) -> Vec<u8> {
        let sha: [u8; 32] = Sha256::digest(bundle).into();
        serde_json::to_vec(&serde_json::json!({
            "release_version": version, "sha256": sha, "size": bundle.len(), "signers": [],
            "keyset_serial": 1, "staged_ms": 0
        }))
        .unwrap()
    }

    #[test]
    fn only_the_bundle_the_record_names_is_taken() {
        assert_eq!(named_release(&record(2, b"bundle v2"), b"bundle v2"), Ok(2));
        // A cut between the bundle and its record: the old record names other bytes.
        let why = named_release(&record(2, b"bundle v2"), b"bundle v3").unwrap_err();
        assert!(why.starts_with("the staged bundle is not the one its record names"), "{why}");
        assert!(named_release(b"{", b"bundle v2").unwrap_err().starts_with("the staged record does not parse"));
        assert!(named_release(b"{\"release_version\": 2}", b"x").is_err());
    }
}
