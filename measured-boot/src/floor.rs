//! The anti-rollback floor: the lowest release version whose signed PCR policy may still unseal
//! the node keys, kept in a TPM NV bit field that only ever gains bits, and checked by the TPM
//! itself at every unseal (TPM2_PolicyNV in each release's approved policy) — not by PID 1's
//! goodwill, since an old PID 1 would not check.
//!
//! Encoding: floor `f` is bits `0..f` set (`2^f − 1`), so versions 1..=64 are representable.
//! Release `v`'s policy asserts `NV ≤ 2^v − 1` (unsigned, 8 bytes at offset 0). For any bit
//! pattern that holds exactly when the highest set bit is below `v`, so [`floor_of_bits`] —
//! one more than the highest set bit — is the floor the TPM enforces, whatever bits an owner
//! set. Bits cannot be cleared (TPM2_NV_SetBits ORs), so the floor never moves down; only
//! undefining the index (owner authorization) resets it.
//!
//! The same kind of index, with the same encoding, holds the **PCR-policy key generation**
//! ([`KEY_GENERATION_INDEX`]): the node keys sealed at generation `g` carry, after their
//! PolicyAuthorize, a PolicyNV that the generation is at most `g`. Rotating the PCR-policy key
//! reseals at `g + 1` and, once the release that rotated is good, raises the generation: from
//! then on every copy of the old sealed object — and so every policy the old key signs — is
//! refused by the TPM.
//!
//! Pure: the indices' definition, their TPM names (the PolicyNV digest commits to them) and the
//! encoding. The TPM edge is `tpm::Tpm::floor_*` and `tpm::Tpm::key_generation*`.

use crate::pcr::Sha256Digest;
use crate::structures::object_name;

/// The floor's NV index (owner range; 0x01805357 is the state anchor's counter).
pub const FLOOR_INDEX: u32 = 0x0180_5356;
/// The PCR-policy key generation's NV index (a bit field like the floor; 0x01805358 is the
/// tests' counter).
pub const KEY_GENERATION_INDEX: u32 = 0x0180_5359;
/// The highest release version a floor can express (one bit per version).
pub const MAX_VERSION: u64 = 64;
/// `TPM_NT_BITS` in `TPMA_NV` bits 4..7.
const NT_BITS: u32 = 0x2 << 4;
/// `TPMA_NV_OWNERWRITE`.
const OWNERWRITE: u32 = 1 << 1;
/// `TPMA_NV_OWNERREAD`.
const OWNERREAD: u32 = 1 << 17;
/// `TPMA_NV_NO_DA`.
const NO_DA: u32 = 1 << 25;
/// `TPMA_NV_WRITTEN`: set by the TPM at the first write; part of the index's name.
const WRITTEN: u32 = 1 << 29;
/// The floor index's attributes as defined (owner reads and sets bits, no dictionary-attack
/// lockout), before its first write.
pub const ATTRIBUTES: u32 = NT_BITS | OWNERWRITE | OWNERREAD | NO_DA;
/// `TPM_CC_PolicyNV`.
pub const TPM_CC_POLICY_NV: u32 = 0x0000_0149;
/// `TPM_EO_UNSIGNED_LE`: `NV ≤ operandB`, both unsigned big-endian.
pub const TPM_EO_UNSIGNED_LE: u16 = 0x0009;

/// The bits of floor `version`: `0..version` set; `None` beyond [`MAX_VERSION`].
pub fn bits_of_floor(version: u64) -> Option<u64> {
    match version {
        0 => Some(0),
        v if v < MAX_VERSION => Some((1u64 << v) - 1),
        MAX_VERSION => Some(u64::MAX),
        _ => None,
    }
}

/// The floor the TPM enforces for these NV bits: one more than the highest set bit.
pub fn floor_of_bits(bits: u64) -> u64 {
    u64::from(64 - bits.leading_zeros())
}

/// The floor index's marshalled `TPMS_NV_PUBLIC` once written (SHA-256 name algorithm, no
/// authPolicy, 8 bytes).
pub fn written_public() -> Vec<u8> {
    written_public_of(FLOOR_INDEX)
}

/// A bit-field index's marshalled `TPMS_NV_PUBLIC` once written ([`ATTRIBUTES`], SHA-256 name
/// algorithm, no authPolicy, 8 bytes).
pub fn written_public_of(index: u32) -> Vec<u8> {
    let mut public = index.to_be_bytes().to_vec();
    public.extend_from_slice(&crate::pcr::TPM_ALG_SHA256.to_be_bytes());
    public.extend_from_slice(&(ATTRIBUTES | WRITTEN).to_be_bytes());
    public.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
    public.extend_from_slice(&8u16.to_be_bytes()); // dataSize
    public
}

/// The written floor index's TPM name, which PolicyNV commits to.
pub fn index_name() -> Vec<u8> {
    object_name(&written_public())
}

/// The written key-generation index's TPM name.
pub fn key_generation_index_name() -> Vec<u8> {
    object_name(&written_public_of(KEY_GENERATION_INDEX))
}

/// The key-generation assertion of generation `generation` after `previous`: the policy holds
/// only while the TPM's key generation is at most `generation`.
pub fn key_generation_assertion(previous: &Sha256Digest, generation: u64) -> Option<Sha256Digest> {
    let operand = operand_for_release(generation)?;
    Some(policy_nv(previous, &operand, 0, TPM_EO_UNSIGNED_LE, &key_generation_index_name()))
}

/// The PolicyNV operand of release `version`: `NV ≤ bits_of_floor(version)`; `None` beyond
/// [`MAX_VERSION`].
pub fn operand_for_release(version: u64) -> Option<[u8; 8]> {
    bits_of_floor(version).map(u64::to_be_bytes)
}

/// `policyDigest' = H(policyDigest || TPM_CC_PolicyNV || H(operandB || offset || operation) || nvIndexName)`.
pub fn policy_nv(previous: &Sha256Digest, operand_b: &[u8], offset: u16, operation: u16, name: &[u8]) -> Sha256Digest {
    let args = Sha256Digest::of_parts(&[operand_b, &offset.to_be_bytes(), &operation.to_be_bytes()]);
    Sha256Digest::of_parts(&[&previous.0, &TPM_CC_POLICY_NV.to_be_bytes(), &args.0, name])
}

/// The floor assertion of release `version` after `previous`: the policy holds only while the
/// floor is at most `version`.
pub fn release_assertion(previous: &Sha256Digest, version: u64) -> Option<Sha256Digest> {
    let operand = operand_for_release(version)?;
    Some(policy_nv(previous, &operand, 0, TPM_EO_UNSIGNED_LE, &index_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_orders_releases_against_any_bits() {
        assert_eq!(bits_of_floor(0), Some(0));
        assert_eq!(bits_of_floor(1), Some(1));
        assert_eq!(bits_of_floor(3), Some(0b111));
        assert_eq!(bits_of_floor(64), Some(u64::MAX));
        assert_eq!(bits_of_floor(65), None);
        for floor in 0..=MAX_VERSION {
            let bits = bits_of_floor(floor).unwrap();
            assert_eq!(floor_of_bits(bits), floor);
            // What the TPM checks (NV ≤ operand, unsigned) agrees with floor ≤ version for
            // every release, and for stray bits below the highest one.
            for version in 0..=MAX_VERSION {
                let operand = bits_of_floor(version).unwrap();
                assert_eq!(bits <= operand, floor <= version, "floor {floor} release {version}");
                let stray = bits & !1;
                assert_eq!(stray <= operand, floor_of_bits(stray) <= version);
            }
        }
    }

    #[test]
    fn the_index_public_area_is_the_tpm_encoding() {
        // TPMS_NV_PUBLIC: index, nameAlg sha256, TPMA_NV (bits | ownerwrite | ownerread |
        // no_da | written), empty authPolicy, dataSize 8.
        assert_eq!(hex::encode(written_public()), "01805356000b2202002200000008");
        assert_eq!(index_name().len(), 34);
        assert_eq!(hex::encode(written_public_of(KEY_GENERATION_INDEX)), "01805359000b2202002200000008");
        assert_ne!(key_generation_index_name(), index_name());
    }
}
