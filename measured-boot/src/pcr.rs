//! The PCR model: SHA-256 digests, PCR selections (marshalled exactly as the TPM does), PCR
//! value sets and the extend operation.
//!
//! Pure: no IO. Only the sha256 bank is modelled; Sovereign never trusts another bank.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::wire::{ParseError, Reader, Writer};

/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_SHA1`.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// Number of PCRs on a PC Client TPM.
pub const PCR_COUNT: u8 = 24;

/// A SHA-256 digest; shown and serialized as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// The SHA-256 of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update(part);
        }
        Sha256Digest(h.finalize().into())
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("not a 32-byte hex digest ({e}): {s:?}"))?;
        Ok(Sha256Digest(out))
    }

    /// Takes exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Sha256Digest)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// `new = SHA-256(old || measurement)`: the TPM's extend.
pub fn extend(old: &Sha256Digest, measurement: &Sha256Digest) -> Sha256Digest {
    Sha256Digest::of_parts(&[&old.0, &measurement.0])
}

/// The value a PCR holds after TPM2_Startup(CLEAR) at locality 0: zero for PCRs 0–16 and 23,
/// all ones for the dynamic-launch PCRs 17–22 (PC Client Platform TPM Profile).
pub fn reset_value(pcr: u8) -> Sha256Digest {
    if (17..=22).contains(&pcr) { Sha256Digest([0xff; 32]) } else { Sha256Digest([0; 32]) }
}

/// A set of sha256-bank PCR indices, in the TPM's `TPML_PCR_SELECTION` encoding.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PcrSelection {
    indices: Vec<u8>,
}

impl fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{:?}", self.indices)
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.indices.iter().map(u8::to_string).collect();
        write!(f, "sha256:{}", list.join(","))
    }
}

impl PcrSelection {
    /// A selection of the given PCRs (sorted, deduplicated). Fails on an index ≥ 24.
    pub fn new(indices: impl IntoIterator<Item = u8>) -> Result<Self, String> {
        let mut v: Vec<u8> = indices.into_iter().collect();
        if let Some(bad) = v.iter().find(|&&i| i >= PCR_COUNT) {
            return Err(format!("PCR index {bad} is out of range (0..{PCR_COUNT})"));
        }
        v.sort_unstable();
        v.dedup();
        Ok(PcrSelection { indices: v })
    }

    /// The selected PCR indices, ascending (the order the TPM digests them in).
    pub fn indices(&self) -> &[u8] {
        &self.indices
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The 3-byte `pcrSelect` bitmap.
    pub fn bitmap(&self) -> [u8; 3] {
        let mut map = [0u8; 3];
        for &i in &self.indices {
            map[usize::from(i / 8)] |= 1 << (i % 8);
        }
        map
    }

    /// `TPML_PCR_SELECTION` with one sha256 entry (or zero entries when empty).
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        if self.indices.is_empty() {
            w.u32(0);
        } else {
            w.u32(1).u16(TPM_ALG_SHA256).u8(3).raw(&self.bitmap());
        }
        w.into_bytes()
    }

    /// Decodes a `TPML_PCR_SELECTION`. Only sha256 selections are accepted; anything else (a
    /// second bank, an empty-but-present bank, a bitmap larger than 24 PCRs) is an error, so a
    /// quote can never silently cover PCRs the verifier does not model.
    pub fn unmarshal(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let at = r.offset();
        let count = r.u32("pcrSelections.count")?;
        if count > 1 {
            return Err(r.invalid_at(
                at,
                "pcrSelections.count",
                format!("{count} banks selected; only sha256 is accepted"),
            ));
        }
        let mut indices = Vec::new();
        for _ in 0..count {
            let at = r.offset();
            let alg = r.u16("pcrSelections.hash")?;
            if alg != TPM_ALG_SHA256 {
                return Err(r.invalid_at(
                    at,
                    "pcrSelections.hash",
                    format!("bank 0x{alg:04x} selected; only sha256 (0x000b) is accepted"),
                ));
            }
            let at = r.offset();
            let size = r.u8("pcrSelections.sizeofSelect")?;
            if !(1..=3).contains(&size) {
                return Err(r.invalid_at(at, "pcrSelections.sizeofSelect", format!("{size} bytes; expected 1..=3")));
            }
            let map = r.take(usize::from(size), "pcrSelections.pcrSelect")?;
            for (byte_index, byte) in map.iter().enumerate() {
                for bit in 0..8u8 {
                    if byte & (1 << bit) != 0 {
                        let index = u8::try_from(byte_index).unwrap_or(u8::MAX).saturating_mul(8).saturating_add(bit);
                        indices.push(index);
                    }
                }
            }
        }
        Ok(PcrSelection { indices })
    }
}

/// Values of sha256-bank PCRs, by index.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PcrValues(pub BTreeMap<u8, Sha256Digest>);

impl fmt::Debug for PcrValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl PcrValues {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `pcr`, if present.
    pub fn get(&self, pcr: u8) -> Option<&Sha256Digest> {
        self.0.get(&pcr)
    }

    /// Sets `pcr`.
    pub fn set(&mut self, pcr: u8, value: Sha256Digest) {
        self.0.insert(pcr, value);
    }

    /// Extends `pcr` (starting from its reset value when absent).
    pub fn extend(&mut self, pcr: u8, measurement: &Sha256Digest) {
        let old = self.0.get(&pcr).copied().unwrap_or_else(|| reset_value(pcr));
        self.0.insert(pcr, extend(&old, measurement));
    }

    /// The selection covering exactly these PCRs.
    pub fn selection(&self) -> PcrSelection {
        PcrSelection { indices: self.0.keys().copied().collect() }
    }

    /// SHA-256 over the values of `selection` in order, as in `TPMS_QUOTE_INFO.pcrDigest` and
    /// `TPM2_PolicyPCR`'s `pcrDigest`. `None` when a selected PCR has no value here.
    pub fn composite_digest(&self, selection: &PcrSelection) -> Option<Sha256Digest> {
        let mut h = Sha256::new();
        for i in selection.indices() {
            h.update(self.0.get(i)?.0);
        }
        Some(Sha256Digest(h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_marshals_like_the_tpm() {
        let sel = PcrSelection::new([0, 7, 11, 15]).unwrap();
        assert_eq!(sel.marshal(), vec![0, 0, 0, 1, 0x00, 0x0b, 3, 0x81, 0x88, 0x00]);
        let bytes = sel.marshal();
        let mut r = Reader::new("TPML_PCR_SELECTION", &bytes);
        assert_eq!(PcrSelection::unmarshal(&mut r).unwrap(), sel);
        r.finish().unwrap();
    }

    #[test]
    fn selection_rejects_other_banks_and_bad_indices() {
        assert!(PcrSelection::new([24]).is_err());
        let sha1 = [0, 0, 0, 1, 0x00, 0x04, 3, 1, 0, 0];
        assert!(PcrSelection::unmarshal(&mut Reader::new("T", &sha1)).is_err());
        let two = [0, 0, 0, 2, 0x00, 0x0b, 3, 1, 0, 0, 0x00, 0x0b, 3, 2, 0, 0];
        assert!(PcrSelection::unmarshal(&mut Reader::new("T", &two)).is_err());
    }

    #[test]
    fn extend_matches_definition() {
        // Extending zero with SHA-256("abc") — computed independently with sha256sum:
        // printf '\0...\0' (32 zero bytes) followed by the digest, hashed.
        let m = Sha256Digest::of(b"abc");
        assert_eq!(m.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut v = PcrValues::new();
        v.extend(15, &m);
        let mut concat = vec![0u8; 32];
        concat.extend_from_slice(&m.0);
        assert_eq!(v.get(15).unwrap(), &Sha256Digest::of(&concat));
        v.extend(17, &m);
        let mut ones = vec![0xffu8; 32];
        ones.extend_from_slice(&m.0);
        assert_eq!(v.get(17).unwrap(), &Sha256Digest::of(&ones));
    }
}
