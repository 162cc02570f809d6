//! The on-disk encoding of a TPM-sealed secret (what PID 1 stores on the state partition).
//!
//! Pure: no IO, no TPM. Decoding never panics; the TPM itself rejects a blob whose contents were
//! altered (its private area is integrity-protected by the storage root key).

use crate::wire::{ParseError, Reader, Writer};

/// Magic of the [`SealedBlob`] encoding.
pub const SEALED_MAGIC: &[u8; 8] = b"SVSEAL01";
/// Largest secret a sealed object may hold (TPM2B_SENSITIVE_DATA).
pub const MAX_SEALED_SECRET: usize = 128;

/// A secret sealed by the TPM: the object's public and (TPM-encrypted) private areas.
/// Only the TPM that created it can load it, and only under its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// Marshalled `TPMT_PUBLIC` of the sealed object (holds its `authPolicy`).
    pub public: Vec<u8>,
    /// The `TPM2B_PRIVATE` contents, encrypted by the storage root key.
    pub private: Vec<u8>,
}

impl SealedBlob {
    /// Encoding: `"SVSEAL01" || u16 len || public || u16 len || private` (big-endian lengths).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(SEALED_MAGIC).tpm2b(&self.public).tpm2b(&self.private);
        w.into_bytes()
    }

    /// Decodes [`SealedBlob::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("SealedBlob", bytes);
        let magic = r.take(8, "magic")?;
        if magic != SEALED_MAGIC {
            return Err(r.invalid_at(0, "magic", "not a Sovereign sealed blob (expected SVSEAL01)"));
        }
        let public = r.tpm2b("public", 1024)?.to_vec();
        let private = r.tpm2b("private", 1024)?.to_vec();
        r.finish()?;
        Ok(SealedBlob { public, private })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let blob = SealedBlob { public: vec![1, 2, 3], private: vec![4; 40] };
        assert_eq!(SealedBlob::from_bytes(&blob.to_bytes()).unwrap(), blob);
        let bytes = blob.to_bytes();
        assert!(SealedBlob::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(SealedBlob::from_bytes(&other).unwrap_err().to_string().contains("SVSEAL01"));
        let mut longer = bytes;
        longer.push(0);
        assert!(SealedBlob::from_bytes(&longer).is_err());
    }
}
