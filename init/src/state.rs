//! The state partition's key area: the two sealed blobs (node identity, data key).
//!
//! ```text
//! "SVSTATE1" | u32 len | SealedBlob (identity seed ‖ data key, 64 bytes sealed together) | SHA-256 of all before
//! ```
//! All big-endian, at offset 0 of the state partition. The image builder writes the marker
//! `"SVFRESH1"` there: only a partition that carries it is provisioned (first boot). Anything
//! else that does not decode — including an erased key area — is a refusal: the keys of an
//! installed appliance are never silently replaced. Pure: no IO.

use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::sealed::SealedBlob;

/// Magic.
pub const MAGIC: &[u8; 8] = b"SVSTATE1";
/// The factory marker of a never-provisioned state partition.
pub const FRESH: &[u8; 8] = sovereign_boot_contract::STATE_FRESH_MARKER;
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
    /// Marked fresh by the image builder: first boot.
    Fresh,
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
    if &area[..8] == FRESH {
        return Ok(KeyArea::Fresh);
    }
    if area[..8].iter().all(|b| *b == 0) {
        return Err("state partition holds no sealed keys and is not marked fresh (erased or replaced); refusing to provision new keys".into());
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

/// The `authPolicy` digest of a sealed object's marshalled `TPMT_PUBLIC`
/// (`type u16 | nameAlg u16 | objectAttributes u32 | authPolicy TPM2B`).
pub fn auth_policy(tpmt_public: &[u8]) -> Result<[u8; 32], String> {
    let size = tpmt_public
        .get(8..10)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or("sealed object public area truncated")?;
    if size != 32 {
        return Err(format!("sealed object's authPolicy is {size} bytes, not a SHA-256 policy"));
    }
    tpmt_public
        .get(10..42)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| "sealed object public area truncated".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_auth_policy_of_a_public_area() {
        let mut public = vec![0x00, 0x08, 0x00, 0x0b, 0, 0, 0, 0x12, 0x00, 0x20];
        public.extend_from_slice(&[7u8; 32]);
        public.extend_from_slice(&[0x00, 0x10, 0x00, 0x00]);
        assert_eq!(auth_policy(&public).unwrap(), [7u8; 32]);
        assert!(auth_policy(&public[..20]).is_err());
        public[9] = 0x10;
        assert!(auth_policy(&public).is_err());
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let keys = SealedKeys { keys: SealedBlob { public: vec![1; 50], private: vec![2; 80] } };
        let mut area = encode(&keys);
        area.resize(AREA, 0);
        assert_eq!(decode(&area).unwrap(), KeyArea::Sealed(keys));
        let mut fresh = FRESH.to_vec();
        fresh.resize(AREA, 0);
        assert_eq!(decode(&fresh).unwrap(), KeyArea::Fresh);
        assert!(decode(&vec![0; AREA]).unwrap_err().contains("not marked fresh"));
        let mut damaged = area.clone();
        damaged[40] ^= 1;
        assert!(decode(&damaged).is_err());
        assert!(decode(b"#!/bin/sh\n").is_err());
        assert!(decode(&area[..100]).is_err());
    }
}
