//! Big-endian TPM wire encoding: a bounds-checked reader whose errors name the structure, the
//! field and the byte offset, and a small writer for the structures we compute digests over.
//!
//! Pure: no IO. Never panics on any input.

/// Why bytes could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ended inside a field.
    #[error("{structure}.{field} at byte {offset}: truncated (needs {needed} bytes, {available} left)")]
    Truncated {
        /// Structure being decoded.
        structure: &'static str,
        /// Field being decoded.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A field held a value this decoder does not accept.
    #[error("{structure}.{field} at byte {offset}: {reason}")]
    Invalid {
        /// Structure being decoded.
        structure: &'static str,
        /// Field being decoded.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes were left over after a complete structure.
    #[error("{structure}: {count} unexpected trailing bytes at byte {offset}")]
    Trailing {
        /// Structure that was decoded.
        structure: &'static str,
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts decoding `structure` (the name used in errors) from `bytes`.
    pub fn new(structure: &'static str, bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0, structure }
    }

    /// Changes the structure name used in errors (for nested structures).
    pub fn structure(&mut self, structure: &'static str) {
        self.structure = structure;
    }

    /// Current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let available = self.remaining();
        if n > available {
            return Err(ParseError::Truncated {
                structure: self.structure,
                field,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A little-endian `u16` (TCG event logs are little-endian).
    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u32`.
    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A `TPM2B_*`: big-endian `u16` size followed by that many bytes, at most `max` bytes.
    pub fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], ParseError> {
        let offset = self.pos;
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(self.invalid_at(offset, field, format!("size {size} exceeds maximum {max}")));
        }
        self.take(size, field)
    }

    /// An error about `field` at `offset`.
    pub fn invalid_at(&self, offset: usize, field: &'static str, reason: impl Into<String>) -> ParseError {
        ParseError::Invalid { structure: self.structure, field, offset, reason: reason.into() }
    }

    /// Fails if any byte is left.
    pub fn finish(&self) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ParseError::Trailing { structure: self.structure, offset: self.pos, count }),
        }
    }
}

/// Appends big-endian TPM encodings to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// Appends a `TPM2B_*` (u16 size prefix). Buffers longer than `u16::MAX` are a caller bug.
    pub fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        let size = u16::try_from(v.len()).expect("TPM2B buffers built here are far below 64 KiB");
        self.u16(size).raw(v)
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_names_field_and_offset() {
        let mut r = Reader::new("TPMS_ATTEST", &[0xff, 0x54]);
        let err = r.u32("magic").unwrap_err();
        assert_eq!(err.to_string(), "TPMS_ATTEST.magic at byte 0: truncated (needs 4 bytes, 2 left)");
    }

    #[test]
    fn tpm2b_respects_maximum() {
        let mut r = Reader::new("X", &[0x00, 0x05, 1, 2, 3, 4, 5]);
        assert!(r.clone().tpm2b("buf", 4).is_err());
        assert_eq!(r.tpm2b("buf", 64).unwrap(), &[1, 2, 3, 4, 5]);
        r.finish().unwrap();
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut r = Reader::new("X", &[1, 2, 3]);
        r.u16("a").unwrap();
        assert_eq!(r.finish().unwrap_err(), ParseError::Trailing { structure: "X", offset: 2, count: 1 });
    }
}
