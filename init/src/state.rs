//! The state partition's key area: the sealed node keys, in two copies so that no cut while
//! writing can lose them.
//!
//! ```text
//! copy at offset 0 and copy at offset AREA, each:
//! "SVSTATE2" | u64 sequence | u8 count (1..=2) | count × (u32 len | SealedBlob) | SHA-256 of all before
//! ```
//! All big-endian. The copy with the highest sequence whose checksum holds is the key area; a
//! write goes to the *other* copy with the next sequence and is synced, so a torn write leaves
//! the previous copy whole. A copy holds one sealed object (identity seed ‖ data key, 64 bytes
//! sealed together) — or two during a PCR-policy key rotation: the object sealed to the new
//! key and the one sealed to the old key, kept until the release that rotated is good (a
//! failed trial falls back to a release that knows only the old key).
//!
//! The image builder writes the marker `"SVFRESH1"` at offset 0: only a partition that carries
//! it, and no valid copy, is provisioned (first boot; the first copy is written at offset
//! AREA, so a cut leaves the marker). Anything else that does not decode — an erased key
//! area included — is a refusal: the keys of an installed appliance are never silently
//! replaced. Pure: no IO.

use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::sealed::SealedBlob;

/// Magic of a key-area copy.
pub const MAGIC: &[u8; 8] = b"SVSTATE2";
/// The factory marker of a never-provisioned state partition.
pub const FRESH: &[u8; 8] = sovereign_boot_contract::STATE_FRESH_MARKER;
/// Bytes of one copy; PID 1 reads two from the start of the partition.
pub const AREA: usize = 64 * 1024;
/// The most sealed objects a copy holds.
pub const MAX_BLOBS: usize = 2;

/// One decoded copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCopy {
    /// Which copy (0: offset 0, 1: offset [`AREA`]).
    pub slot: usize,
    /// Its sequence number.
    pub sequence: u64,
    /// The sealed objects, the preferred one first.
    pub blobs: Vec<SealedBlob>,
}

impl KeyCopy {
    /// Where the next write goes — the other copy — and with which sequence.
    pub fn next_write(&self) -> (u64, u64) {
        let other = 1 - self.slot.min(1);
        ((other * AREA) as u64, self.sequence.saturating_add(1))
    }
}

/// What the key area holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArea {
    /// Marked fresh by the image builder: first boot. The first copy goes at offset
    /// [`AREA`] with sequence 1.
    Fresh,
    /// Sealed keys: the newest whole copy.
    Sealed(KeyCopy),
}

/// Encodes one copy.
pub fn encode(sequence: u64, blobs: &[SealedBlob]) -> Result<Vec<u8>, String> {
    if blobs.is_empty() || blobs.len() > MAX_BLOBS {
        return Err(format!("a key-area copy holds 1..={MAX_BLOBS} sealed objects, not {}", blobs.len()));
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&sequence.to_be_bytes());
    out.push(blobs.len() as u8);
    for blob in blobs {
        let b = blob.to_bytes();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    if out.len() > AREA {
        return Err(format!("the key-area copy is {} bytes; a copy holds {AREA}", out.len()));
    }
    Ok(out)
}

/// Decodes one copy (`slot` says which).
pub fn decode_copy(copy: &[u8], slot: usize) -> Result<KeyCopy, String> {
    if copy.get(..8) != Some(MAGIC.as_slice()) {
        return Err("does not start with SVSTATE2".into());
    }
    let sequence = copy
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or("truncated before its sequence")?;
    let count = *copy.get(16).ok_or("truncated before its count")? as usize;
    if count == 0 || count > MAX_BLOBS {
        return Err(format!("holds {count} sealed objects (1..={MAX_BLOBS} allowed)"));
    }
    let mut off = 17;
    let mut blobs = Vec::with_capacity(count);
    for _ in 0..count {
        let len = copy
            .get(off..off + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated before a sealed object")?;
        let end = off.checked_add(4 + len).filter(|e| *e <= copy.len()).ok_or("truncated inside a sealed object")?;
        blobs.push(SealedBlob::from_bytes(&copy[off + 4..end]).map_err(|e| format!("sealed object: {e}"))?);
        off = end;
    }
    let digest = copy.get(off..off + 32).ok_or("truncated before its checksum")?;
    if Sha256::digest(&copy[..off])[..] != *digest {
        return Err("checksum does not match (damaged, torn or altered)".into());
    }
    Ok(KeyCopy { slot, sequence, blobs })
}

/// Decodes the key area from the first `2 × AREA` bytes of the partition.
pub fn decode(area: &[u8]) -> Result<KeyArea, String> {
    let first = area.get(..AREA).ok_or("state partition is smaller than two key-area copies")?;
    let second = area.get(AREA..2 * AREA).ok_or("state partition is smaller than two key-area copies")?;
    let copies = [decode_copy(first, 0), decode_copy(second, 1)];
    if let Some(newest) = copies.iter().flatten().max_by_key(|c| c.sequence) {
        return Ok(KeyArea::Sealed(newest.clone()));
    }
    if &first[..8] == FRESH {
        return Ok(KeyArea::Fresh);
    }
    if first.iter().chain(second).all(|b| *b == 0) {
        return Err("state partition holds no sealed keys and is not marked fresh (erased or replaced); refusing to provision new keys".into());
    }
    let why = |r: &Result<KeyCopy, String>| r.as_ref().err().cloned().unwrap_or_default();
    Err(format!(
        "neither key-area copy is whole (first: {}; second: {}): foreign or damaged data",
        why(&copies[0]),
        why(&copies[1])
    ))
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

    fn blob(n: u8) -> SealedBlob {
        SealedBlob { public: vec![n; 50], private: vec![n + 1; 80] }
    }

    fn partition(copies: [Option<Vec<u8>>; 2]) -> Vec<u8> {
        let mut p = vec![0u8; 2 * AREA];
        for (i, c) in copies.into_iter().enumerate() {
            if let Some(c) = c {
                p[i * AREA..i * AREA + c.len()].copy_from_slice(&c);
            }
        }
        p
    }

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
    fn the_newest_whole_copy_wins_and_a_torn_one_never_loses_the_keys() {
        let one = encode(1, &[blob(1)]).unwrap();
        let two = encode(2, &[blob(2), blob(1)]).unwrap();
        // First provisioning went to the second copy; the marker is still at the first.
        let mut fresh = FRESH.to_vec();
        fresh.resize(64, 0);
        let area = partition([Some(fresh.clone()), Some(one.clone())]);
        let KeyArea::Sealed(c) = decode(&area).unwrap() else { panic!("not sealed") };
        assert_eq!((c.slot, c.sequence, c.blobs.clone()), (1, 1, vec![blob(1)]));
        assert_eq!(c.next_write(), (0, 2));
        // The next write (to the first copy) is whole: it wins.
        let KeyArea::Sealed(c) = decode(&partition([Some(two.clone()), Some(one.clone())])).unwrap() else { panic!() };
        assert_eq!((c.slot, c.sequence, c.blobs.len()), (0, 2, 2));
        assert_eq!(c.next_write(), (AREA as u64, 3));
        // Torn anywhere: the older copy is the key area.
        for cut in [9, 17, 40, 100, two.len() - 1] {
            let mut torn = two.clone();
            torn.truncate(cut);
            let KeyArea::Sealed(c) = decode(&partition([Some(torn), Some(one.clone())])).unwrap() else { panic!() };
            assert_eq!(c.sequence, 1, "cut at {cut}");
        }
        // A flipped bit in the newer copy: the older one.
        let mut flipped = two.clone();
        flipped[30] ^= 1;
        let KeyArea::Sealed(c) = decode(&partition([Some(flipped), Some(one)])).unwrap() else { panic!() };
        assert_eq!(c.sequence, 1);
    }

    #[test]
    fn fresh_erased_and_foreign_partitions_are_told_apart() {
        let mut fresh = FRESH.to_vec();
        fresh.resize(64, 0);
        assert_eq!(decode(&partition([Some(fresh), None])).unwrap(), KeyArea::Fresh);
        assert!(decode(&vec![0; 2 * AREA]).unwrap_err().contains("not marked fresh"));
        assert!(decode(&partition([Some(b"#!/bin/sh\n".to_vec()), None])).unwrap_err().contains("neither"));
        assert!(decode(&[0u8; 100]).is_err());
        assert!(encode(1, &[]).is_err());
        assert!(encode(1, &[blob(1), blob(2), blob(3)]).is_err());
        let mut three = encode(1, &[blob(1)]).unwrap();
        three[16] = 3;
        assert!(decode_copy(&three, 0).unwrap_err().contains("3 sealed objects"));
    }

    proptest::proptest! {
        /// Whatever the disk holds, decoding never panics; a whole copy with any byte changed
        /// is never taken for a different key area: the other copy, or a refusal.
        #[test]
        fn no_bytes_panic_and_no_changed_copy_is_taken(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            at in 0usize..400,
            flip in 1u8..=255,
        ) {
            let mut area = junk.clone();
            area.resize(2 * AREA, 0);
            let _ = decode(&area);
            let _ = decode(&junk);
            let _ = decode_copy(&junk, 0);
            let older = encode(1, &[blob(1)]).unwrap();
            let newer = encode(2, &[blob(2), blob(1)]).unwrap();
            let mut changed = newer.clone();
            let at = at % changed.len();
            changed[at] ^= flip;
            match decode(&partition([Some(changed), Some(older)])) {
                Ok(KeyArea::Sealed(c)) => proptest::prop_assert_eq!((c.sequence, c.blobs), (1, vec![blob(1)])),
                other => proptest::prop_assert!(false, "{other:?}"),
            }
        }
    }
}
