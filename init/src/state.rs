//! The state partition's key area: the two sealed blobs (node identity, data key).
//!
//! ```text
//! "SVSTATE1" | u32 len | SealedBlob (identity seed ‖ data key, 64 bytes sealed together) | SHA-256 of all before
//! ```
//! All big-endian, at offset 0 of the state partition. A partition that starts with zeros is
//! empty (first boot); anything else that does not decode is a refusal. Pure: no IO.

use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::sealed::SealedBlob;

/// Magic.
pub const MAGIC: &[u8; 8] = b"SVSTATE1";
/// Bytes PID 1 reads from the start of the partition.
pub const AREA: usize = 64 * 1024;

/// The sealed node keys: one sealed object holding the 32-byte Ed25519 identity seed followed
/// by the 32-byte AES-256 data key (one unseal per boot instead of two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKeys {
    /// The sealed 64 bytes.
    pub keys: SealedBlob,
}

/// What the key area holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArea {
    /// Never written (all zeros): first boot.
    Empty,
    /// Sealed keys.
    Sealed(SealedKeys),
}

/// Encodes the key area.
pub fn encode(keys: &SealedKeys) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let b = keys.keys.to_bytes();
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(&b);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Decodes the key area from the first bytes of the partition.
pub fn decode(area: &[u8]) -> Result<KeyArea, String> {
    if area.len() < 8 {
        return Err("state partition is smaller than a key area".into());
    }
    if area[..8].iter().all(|b| *b == 0) {
        return Ok(KeyArea::Empty);
    }
    if &area[..8] != MAGIC {
        return Err("state partition does not start with SVSTATE1 (foreign or damaged data)".into());
    }
    let len = area
        .get(8..12)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("state key area truncated before the sealed keys")?;
    let bytes = area.get(12..12 + len).ok_or("state key area truncated inside the sealed keys")?;
    let keys = SealedBlob::from_bytes(bytes).map_err(|e| format!("sealed keys: {e}"))?;
    let off = 12 + len;
    let digest = area.get(off..off + 32).ok_or("state key area truncated before its checksum")?;
    if Sha256::digest(&area[..off])[..] != *digest {
        return Err("state key area checksum does not match (damaged or altered)".into());
    }
    Ok(KeyArea::Sealed(SealedKeys { keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let keys = SealedKeys { keys: SealedBlob { public: vec![1; 50], private: vec![2; 80] } };
        let mut area = encode(&keys);
        area.resize(AREA, 0);
        assert_eq!(decode(&area).unwrap(), KeyArea::Sealed(keys));
        assert_eq!(decode(&vec![0; AREA]).unwrap(), KeyArea::Empty);
        let mut damaged = area.clone();
        damaged[40] ^= 1;
        assert!(decode(&damaged).is_err());
        assert!(decode(b"#!/bin/sh\n").is_err());
        assert!(decode(&area[..100]).is_err());
    }
}
