//! The canonical byte encoding of everything the governance kernel signs
//! (`docs/governance-formats.md`): a domain string ending in `\n`, then the fields in order —
//! byte strings and text as `u32 big-endian length ‖ bytes`, integers as `u64 big-endian`,
//! keys and digests as their raw 32 bytes, nonces as their raw 16 bytes, lists as
//! `u32 big-endian count ‖ items`.
//!
//! Beside it, the one copy of the primitives every signed record shares: [`sha256`], the clock
//! timestamps come from ([`now_ms`]) and keys and digests given as hex ([`hex32`],
//! [`ed25519_public_key`]).
//!
//! Pure except [`now_ms`]. Must never: produce two encodings for one value or one encoding for
//! two values.

#![forbid(unsafe_code)]

use sha2::{Digest as _, Sha256};

/// Builds the signing bytes of one object.
#[derive(Debug, Clone)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    /// Starts with the object's domain (e.g. `"sovereign-role-signature/v1"`; `\n` is added).
    pub fn new(domain: &str) -> Self {
        let mut out = domain.as_bytes().to_vec();
        out.push(b'\n');
        Canonical(out)
    }

    /// A length-prefixed byte string.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    /// A length-prefixed UTF-8 string.
    pub fn text(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// A fixed-size field (key, digest, nonce), raw.
    pub fn fixed(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A `u64`, big-endian.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A list of strings.
    pub fn texts(mut self, items: &[String]) -> Self {
        self.0.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for i in items {
            self = self.text(i);
        }
        self
    }

    /// A list of fixed-size fields.
    pub fn fixed_list(mut self, items: &[[u8; 32]]) -> Self {
        self.0.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for i in items {
            self.0.extend_from_slice(i);
        }
        self
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// SHA-256 of the bytes.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.0).into()
    }
}

/// Canonical JSON: objects with keys sorted by their UTF-8 bytes, no insignificant whitespace,
/// strings and numbers as `serde_json` writes them. The hash input of config snapshots and of
/// policy inputs.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sort(v))).collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(value)).expect("a JSON value always serializes")
}

/// SHA-256.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Milliseconds since the Unix epoch on this machine's clock; 0 if the clock reads before 1970
/// (which every freshness and expiry check then refuses).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// 32 bytes from 64 hex characters (surrounding whitespace ignored), or why not.
pub fn hex32(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|e| format!("not 64 hex characters ({e})"))?;
    Ok(out)
}

/// An Ed25519 public key from 64 hex characters, or why not.
pub fn ed25519_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    ed25519_dalek::VerifyingKey::from_bytes(&hex32(text)?).map_err(|e| format!("not a valid Ed25519 key ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_parse_or_say_why_not() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let text = format!(" {}\n", hex::encode(key.as_bytes()));
        assert_eq!(ed25519_public_key(&text).unwrap(), key);
        assert!(hex32("abc").unwrap_err().starts_with("not 64 hex characters"));
        assert!(hex32(&"zz".repeat(32)).unwrap_err().starts_with("not 64 hex characters"));
        // 32 bytes that are not a point on the curve.
        let not_a_point = (0u8..=255)
            .map(|b| [b; 32])
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .expect("some constant byte string is not a point");
        let refused = ed25519_public_key(&hex::encode(not_a_point)).unwrap_err();
        assert!(refused.starts_with("not a valid Ed25519 key"), "{refused}");
        assert!(now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn fields_are_unambiguous() {
        // "ab" + "c" and "a" + "bc" differ once length-prefixed.
        let one = Canonical::new("d").text("ab").text("c").into_bytes();
        let two = Canonical::new("d").text("a").text("bc").into_bytes();
        assert_ne!(one, two);
        assert_eq!(one, b"d\n\0\0\0\x02ab\0\0\0\x01c".to_vec());
        assert_eq!(Canonical::new("x").u64(258).into_bytes(), b"x\n\0\0\0\0\0\0\x01\x02".to_vec());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":2,"x":1}],"c":"é"}}"#).unwrap();
        assert_eq!(canonical_json(&a), b"{\"a\":{\"c\":\"\xc3\xa9\",\"z\":[{\"x\":1,\"y\":2}]},\"b\":1}".to_vec());
    }
}
