//! The swarm key: the 32-byte pre-shared key of a private libp2p network, in the IPFS
//! `swarm.key` format that go-libp2p, rust-libp2p's `pnet` and IPFS share:
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```
//!
//! (a trailing newline allowed). Only `/base16/` is accepted — the encoding every
//! implementation reads. The key is zeroed when dropped and never printed: logs and `status`
//! show its fingerprint.

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The header line.
pub const HEADER: &str = "/key/swarm/psk/1.0.0/";
/// The only encoding accepted.
pub const ENCODING: &str = "/base16/";

/// Why a swarm key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmKeyError {
    /// The first line is not the pnet header.
    #[error("swarm key: the first line must be {HEADER:?}")]
    Header,
    /// Another encoding than base16.
    #[error("swarm key: encoding {0:?} is not supported (only /base16/)")]
    Encoding(String),
    /// The key line is not 64 hex digits.
    #[error("swarm key: the key must be 64 hex digits (32 bytes)")]
    Key,
    /// Lines after the key.
    #[error("swarm key: unexpected content after the key")]
    Trailing,
}

/// A swarm key.
pub struct SwarmKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

impl SwarmKey {
    /// Parses a `swarm.key` file.
    pub fn parse(text: &[u8]) -> Result<Self, SwarmKeyError> {
        let text = std::str::from_utf8(text).map_err(|_| SwarmKeyError::Header)?;
        let mut lines = text.split('\n');
        if lines.next().map(|l| l.trim_end_matches('\r')) != Some(HEADER) {
            return Err(SwarmKeyError::Header);
        }
        match lines.next().map(|l| l.trim_end_matches('\r')) {
            Some(ENCODING) => {}
            Some(other) => return Err(SwarmKeyError::Encoding(other.chars().take(32).collect())),
            None => return Err(SwarmKeyError::Encoding(String::new())),
        }
        let line = lines.next().map(|l| l.trim_end_matches('\r')).ok_or(SwarmKeyError::Key)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if line.len() != 64 || hex::decode_to_slice(line, key.as_mut()).is_err() {
            return Err(SwarmKeyError::Key);
        }
        if lines.any(|l| !l.trim_end_matches('\r').is_empty()) {
            return Err(SwarmKeyError::Trailing);
        }
        Ok(SwarmKey(key))
    }

    /// A key from its 32 bytes (e.g. freshly generated).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SwarmKey(Zeroizing::new(bytes))
    }

    /// The file text.
    pub fn to_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{HEADER}\n{ENCODING}\n{}\n", hex::encode(self.0.as_ref())))
    }

    /// The key bytes (for the pnet layer only).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// What logs and `status` show instead of the key: the first 8 bytes of
    /// `SHA-256("sovereign-swarm-key-fingerprint/v1\n" ‖ key)`, hex.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"sovereign-swarm-key-fingerprint/v1\n");
        h.update(self.0.as_ref());
        hex::encode(&h.finalize()[..8])
    }
}
