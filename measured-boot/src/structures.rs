//! Decoders for the TPM structures that cross a trust boundary as evidence — `TPMS_ATTEST`
//! (quote), `TPMT_SIGNATURE` (ECDSA) and `TPMT_PUBLIC` (ECC P-256 keys) — and the encoder for
//! the ECC public area of the PCR-policy key, so that its TPM name can be predicted offline.
//!
//! Pure: no IO. Decoders accept exactly the standard TPM 2.0 encodings (TCG TPM 2.0 Library
//! Part 2), refuse anything else with a [`ParseError`], and never panic.

use crate::pcr::{PcrSelection, Sha256Digest, TPM_ALG_SHA256};
use crate::wire::{ParseError, Reader, Writer};

/// `TPM_GENERATED_VALUE`: every TPM-produced attestation starts with it.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_ECDSA`.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECC`.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// `TPM_ALG_NULL`.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// `TPM_ECC_NIST_P256`.
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// `TPMA_OBJECT` bits.
pub mod object_attributes {
    /// fixedTPM
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// restricted
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its last clear.
    pub clock: u64,
    /// TPM resets (reboots) since the last clear.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernate) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known not to have gone backwards.
    pub safe: bool,
}

/// A decoded quote (`TPMS_ATTEST` whose type is `TPM_ST_ATTEST_QUOTE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Name of the key that signed it (`qualifiedSigner`).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (`extraData`): nonce and bindings.
    pub extra_data: Vec<u8>,
    /// Clock state at quote time.
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// Which PCRs are covered.
    pub pcr_selection: PcrSelection,
    /// SHA-256 over the selected PCR values.
    pub pcr_digest: Vec<u8>,
}

impl Quote {
    /// Decodes a marshalled `TPMS_ATTEST` and requires it to be a TPM-generated quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("TPMS_ATTEST", bytes);
        let at = r.offset();
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(r.invalid_at(
                at,
                "magic",
                format!("0x{magic:08x}, expected TPM_GENERATED_VALUE 0xff544347 (not produced by a TPM)"),
            ));
        }
        let at = r.offset();
        let kind = r.u16("type")?;
        if kind != TPM_ST_ATTEST_QUOTE {
            return Err(r.invalid_at(at, "type", format!("0x{kind:04x}, expected TPM_ST_ATTEST_QUOTE 0x8018")));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner", 2 + 64)?.to_vec();
        let extra_data = r.tpm2b("extraData", 64)?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let at = r.offset();
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            other => {
                return Err(r.invalid_at(at, "clockInfo.safe", format!("{other} is not a TPMI_YES_NO")));
            }
        };
        let firmware_version = r.u64("firmwareVersion")?;
        r.structure("TPMS_ATTEST.attested.quote");
        let pcr_selection = PcrSelection::unmarshal(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest", 64)?.to_vec();
        r.structure("TPMS_ATTEST");
        r.finish()?;
        Ok(Quote {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo { clock, reset_count, restart_count, safe },
            firmware_version,
            pcr_selection,
            pcr_digest,
        })
    }
}

/// A decoded ECDSA `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// Hash algorithm the signer used.
    pub hash: u16,
    /// `r`, big-endian, at most 32 bytes for P-256.
    pub r: Vec<u8>,
    /// `s`, big-endian.
    pub s: Vec<u8>,
}

impl EcdsaSignature {
    /// Decodes a marshalled `TPMT_SIGNATURE`; only ECDSA with SHA-256 is accepted.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("TPMT_SIGNATURE", bytes);
        let at = r.offset();
        let alg = r.u16("sigAlg")?;
        if alg != TPM_ALG_ECDSA {
            return Err(r.invalid_at(at, "sigAlg", format!("0x{alg:04x}; only ECDSA (0x0018) is accepted")));
        }
        let at = r.offset();
        let hash = r.u16("signature.hash")?;
        if hash != TPM_ALG_SHA256 {
            return Err(r.invalid_at(at, "signature.hash", format!("0x{hash:04x}; only SHA-256 (0x000b) is accepted")));
        }
        let sig_r = r.tpm2b("signature.signatureR", 32)?.to_vec();
        let sig_s = r.tpm2b("signature.signatureS", 32)?.to_vec();
        r.finish()?;
        Ok(EcdsaSignature { hash, r: sig_r, s: sig_s })
    }

    /// Encodes as `TPMT_SIGNATURE`.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(TPM_ALG_ECDSA).u16(self.hash).tpm2b(&self.r).tpm2b(&self.s);
        w.into_bytes()
    }

    /// The signature as a `p256` value (`r` and `s` left-padded to 32 bytes).
    pub fn to_p256(&self) -> Result<p256::ecdsa::Signature, String> {
        let mut rs = [0u8; 64];
        if self.r.len() > 32 || self.s.len() > 32 {
            return Err("r or s longer than 32 bytes".into());
        }
        rs[32 - self.r.len()..32].copy_from_slice(&self.r);
        rs[64 - self.s.len()..].copy_from_slice(&self.s);
        p256::ecdsa::Signature::from_slice(&rs).map_err(|e| format!("not a valid P-256 signature: {e}"))
    }

    /// From a `p256` signature (SHA-256 hash).
    pub fn from_p256(sig: &p256::ecdsa::Signature) -> Self {
        let bytes = sig.to_bytes();
        EcdsaSignature { hash: TPM_ALG_SHA256, r: bytes[..32].to_vec(), s: bytes[32..].to_vec() }
    }
}

/// A decoded ECC P-256 `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    /// Name algorithm.
    pub name_alg: u16,
    /// `TPMA_OBJECT` bits.
    pub attributes: u32,
    /// The object's authorization policy digest.
    pub auth_policy: Vec<u8>,
    /// The signing scheme (`TPM_ALG_ECDSA` or `TPM_ALG_NULL`).
    pub scheme: u16,
    /// The scheme's hash (when `scheme` is not NULL).
    pub scheme_hash: Option<u16>,
    /// X coordinate.
    pub x: Vec<u8>,
    /// Y coordinate.
    pub y: Vec<u8>,
    /// The exact bytes this was decoded from (the name is computed over them).
    pub marshalled: Vec<u8>,
}

impl EccPublic {
    /// Decodes a marshalled `TPMT_PUBLIC` and requires an unencrypted ECC NIST P-256 key.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("TPMT_PUBLIC", bytes);
        let at = r.offset();
        let kind = r.u16("type")?;
        if kind != TPM_ALG_ECC {
            return Err(r.invalid_at(at, "type", format!("0x{kind:04x}; only ECC (0x0023) keys are accepted")));
        }
        let at = r.offset();
        let name_alg = r.u16("nameAlg")?;
        if name_alg != TPM_ALG_SHA256 {
            return Err(r.invalid_at(at, "nameAlg", format!("0x{name_alg:04x}; only SHA-256 is accepted")));
        }
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy", 64)?.to_vec();
        let at = r.offset();
        let sym = r.u16("parameters.symmetric.algorithm")?;
        if sym != TPM_ALG_NULL {
            return Err(r.invalid_at(
                at,
                "parameters.symmetric",
                "a signing key must have a NULL symmetric definition",
            ));
        }
        let at = r.offset();
        let scheme = r.u16("parameters.scheme.scheme")?;
        let scheme_hash = match scheme {
            TPM_ALG_NULL => None,
            TPM_ALG_ECDSA => Some(r.u16("parameters.scheme.hashAlg")?),
            other => {
                return Err(r.invalid_at(
                    at,
                    "parameters.scheme",
                    format!("0x{other:04x}; only ECDSA or NULL is accepted"),
                ));
            }
        };
        let at = r.offset();
        let curve = r.u16("parameters.curveID")?;
        if curve != TPM_ECC_NIST_P256 {
            return Err(r.invalid_at(
                at,
                "parameters.curveID",
                format!("0x{curve:04x}; only NIST P-256 (0x0003) is accepted"),
            ));
        }
        let at = r.offset();
        let kdf = r.u16("parameters.kdf.scheme")?;
        if kdf != TPM_ALG_NULL {
            return Err(r.invalid_at(at, "parameters.kdf", "only a NULL KDF is accepted"));
        }
        let x = r.tpm2b("unique.x", 32)?.to_vec();
        let y = r.tpm2b("unique.y", 32)?.to_vec();
        r.finish()?;
        Ok(EccPublic { name_alg, attributes, auth_policy, scheme, scheme_hash, x, y, marshalled: bytes.to_vec() })
    }

    /// The TPM name: `nameAlg || SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        object_name(&self.marshalled)
    }

    /// The key as a `p256` verifying key.
    pub fn verifying_key(&self) -> Result<p256::ecdsa::VerifyingKey, String> {
        if self.x.len() > 32 || self.y.len() > 32 {
            return Err("coordinate longer than 32 bytes".into());
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[33 - self.x.len()..33].copy_from_slice(&self.x);
        sec1[65 - self.y.len()..].copy_from_slice(&self.y);
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| format!("not a point on P-256: {e}"))
    }
}

/// `TPM_ALG_RSA`.
pub const TPM_ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_AES`.
pub const TPM_ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub const TPM_ALG_CFB: u16 = 0x0043;

/// A decoded RSA storage key `TPMT_PUBLIC` — the shape of the TCG default endorsement key
/// (restricted decryption key, AES-128-CFB symmetric, RSA-2048, SHA-256 name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaStoragePublic {
    /// `TPMA_OBJECT` bits.
    pub attributes: u32,
    /// AES key size of the symmetric definition, in bits.
    pub symmetric_bits: u16,
    /// RSA key size in bits.
    pub key_bits: u16,
    /// Public exponent (65537 when the structure says 0).
    pub exponent: u32,
    /// Big-endian modulus.
    pub modulus: Vec<u8>,
    /// The exact bytes this was decoded from.
    pub marshalled: Vec<u8>,
}

impl RsaStoragePublic {
    /// Decodes a marshalled `TPMT_PUBLIC` and requires an RSA restricted decryption key with an
    /// AES-CFB symmetric definition and SHA-256 name.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("TPMT_PUBLIC", bytes);
        let at = r.offset();
        let kind = r.u16("type")?;
        if kind != TPM_ALG_RSA {
            return Err(r.invalid_at(at, "type", format!("0x{kind:04x}; the endorsement key must be RSA (0x0001)")));
        }
        let at = r.offset();
        let name_alg = r.u16("nameAlg")?;
        if name_alg != TPM_ALG_SHA256 {
            return Err(r.invalid_at(at, "nameAlg", format!("0x{name_alg:04x}; only SHA-256 is accepted")));
        }
        let attributes = r.u32("objectAttributes")?;
        r.tpm2b("authPolicy", 64)?;
        let at = r.offset();
        let sym = r.u16("parameters.symmetric.algorithm")?;
        if sym != TPM_ALG_AES {
            return Err(r.invalid_at(at, "parameters.symmetric", format!("0x{sym:04x}; a storage key needs AES")));
        }
        let symmetric_bits = r.u16("parameters.symmetric.keyBits")?;
        let at = r.offset();
        let mode = r.u16("parameters.symmetric.mode")?;
        if mode != TPM_ALG_CFB {
            return Err(r.invalid_at(at, "parameters.symmetric.mode", format!("0x{mode:04x}; only CFB is accepted")));
        }
        let at = r.offset();
        let scheme = r.u16("parameters.scheme.scheme")?;
        if scheme != TPM_ALG_NULL {
            return Err(r.invalid_at(at, "parameters.scheme", "a restricted decryption key has a NULL scheme"));
        }
        let key_bits = r.u16("parameters.keyBits")?;
        let exponent = match r.u32("parameters.exponent")? {
            0 => 65537,
            e => e,
        };
        let modulus = r.tpm2b("unique.rsa", 512)?.to_vec();
        r.finish()?;
        Ok(RsaStoragePublic { attributes, symmetric_bits, key_bits, exponent, modulus, marshalled: bytes.to_vec() })
    }

    /// The TPM name: `nameAlg || SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        object_name(&self.marshalled)
    }
}

/// The TPM name of an object whose `TPMT_PUBLIC` (name algorithm SHA-256) is `marshalled`.
pub fn object_name(marshalled: &[u8]) -> Vec<u8> {
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256Digest::of(marshalled).0);
    name
}

/// The `TPMT_PUBLIC` Sovereign loads (public part only) for an ECDSA P-256 verification key,
/// such as the PCR-policy key: SHA-256 name, `sign` + `userWithAuth`, ECDSA-SHA256 scheme.
/// Its [`object_name`] is what the sealed objects' PolicyAuthorize commits to.
pub fn ecc_p256_verification_public(key: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
    let point = key.to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        unreachable!("an uncompressed P-256 point always has both coordinates");
    };
    let mut w = Writer::new();
    w.u16(TPM_ALG_ECC)
        .u16(TPM_ALG_SHA256)
        .u32(object_attributes::SIGN_ENCRYPT | object_attributes::USER_WITH_AUTH)
        .tpm2b(&[])
        .u16(TPM_ALG_NULL)
        .u16(TPM_ALG_ECDSA)
        .u16(TPM_ALG_SHA256)
        .u16(TPM_ECC_NIST_P256)
        .u16(TPM_ALG_NULL)
        .tpm2b(x)
        .tpm2b(y);
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_public_round_trips_through_the_decoder() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let bytes = ecc_p256_verification_public(sk.verifying_key());
        let parsed = EccPublic::parse(&bytes).unwrap();
        assert_eq!(parsed.verifying_key().unwrap(), *sk.verifying_key());
        assert_eq!(parsed.name().len(), 34);
        assert_eq!(&parsed.name()[..2], &[0x00, 0x0b]);
    }

    #[test]
    fn quote_decoder_refuses_non_tpm_data() {
        let mut fake = Writer::new();
        fake.u32(0xdead_beef).u16(TPM_ST_ATTEST_QUOTE);
        let err = Quote::parse(&fake.into_bytes()).unwrap_err().to_string();
        assert!(err.contains("TPMS_ATTEST.magic at byte 0"), "{err}");
    }

    #[test]
    fn signature_round_trips() {
        let sig = EcdsaSignature { hash: TPM_ALG_SHA256, r: vec![1; 32], s: vec![2; 31] };
        assert_eq!(EcdsaSignature::parse(&sig.marshal()).unwrap(), sig);
        let mut rsa = sig.marshal();
        rsa[1] = 0x14;
        assert!(EcdsaSignature::parse(&rsa).is_err());
    }
}
