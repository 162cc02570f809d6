//! Checkpoints in the C2SP formats: `tlog-checkpoint` bodies, `signed-note` Ed25519
//! signatures (by the node identity) and `tlog-cosignature` v1 Ed25519 cosignatures (by
//! witnesses).
//!
//! Note layout: `<body>\n<signature lines>`, where the body is `origin\nsize\nbase64(root)\n`
//! (plus optional extension lines) and each signature line is
//! `— <key name> base64(key ID (4) || signature)\n`. Pure: no IO, no clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::merkle::Hash;

/// Largest accepted note.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 100;
const EM_DASH_PREFIX: &str = "\u{2014} ";

/// Why a note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Structure is wrong.
    #[error("signed note: {0}")]
    Malformed(String),
    /// The checkpoint body is wrong.
    #[error("checkpoint body line {line}: {reason}")]
    BadBody {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No valid signature by the expected key.
    #[error("no valid signature by {name} (key ID {key_id})")]
    NotSigned {
        /// Key name.
        name: String,
        /// Hex key ID.
        key_id: String,
    },
    /// A signature line by the expected key does not verify.
    #[error("signature by {name} does not verify")]
    BadSignature {
        /// Key name.
        name: String,
    },
}

/// The body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin (unique name).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Tree head.
    pub root: Hash,
    /// Extension lines (without newlines).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note body text.
    pub fn body(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a note body.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let Some(text) = body.strip_suffix('\n') else {
            return Err(NoteError::BadBody { line: 0, reason: "body does not end with a newline".into() });
        };
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < 3 {
            return Err(NoteError::BadBody {
                line: lines.len() + 1,
                reason: "a checkpoint has at least 3 lines".into(),
            });
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(NoteError::BadBody { line: 1, reason: "empty origin".into() });
        }
        let size_text = lines[1];
        if size_text.is_empty()
            || (size_text.len() > 1 && size_text.starts_with('0'))
            || !size_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NoteError::BadBody {
                line: 2,
                reason: format!("tree size {size_text:?} is not a decimal without leading zeros"),
            });
        }
        let size = size_text
            .parse::<u64>()
            .map_err(|e| NoteError::BadBody { line: 2, reason: format!("tree size {size_text:?}: {e}") })?;
        let root_bytes = B64
            .decode(lines[2])
            .map_err(|e| NoteError::BadBody { line: 3, reason: format!("root hash is not base64: {e}") })?;
        let root: Hash = root_bytes.as_slice().try_into().map_err(|_| NoteError::BadBody {
            line: 3,
            reason: format!("root hash is {} bytes, not 32", root_bytes.len()),
        })?;
        if B64.encode(root) != lines[2] {
            return Err(NoteError::BadBody { line: 3, reason: "root hash is not canonical base64".into() });
        }
        let extensions: Vec<String> = lines[3..].iter().map(|s| s.to_string()).collect();
        if let Some(i) = extensions.iter().position(|e| e.is_empty()) {
            return Err(NoteError::BadBody { line: 4 + i, reason: "empty extension line".into() });
        }
        Ok(Checkpoint { origin: origin.to_string(), size, root, extensions })
    }
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (first 4 bytes of the key hash).
    pub key_id: [u8; 4],
    /// The rest of the decoded signature blob.
    pub signature: Vec<u8>,
}

/// A note: body plus signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The body text, ending in a newline.
    pub body: String,
    /// Signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

impl SignedNote {
    /// A note with no signatures yet.
    pub fn new(body: String) -> Self {
        SignedNote { body, signatures: Vec::new() }
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut s = self.body.clone();
        s.push('\n');
        for sig in &self.signatures {
            let mut blob = sig.key_id.to_vec();
            blob.extend_from_slice(&sig.signature);
            s.push_str(&format!("{EM_DASH_PREFIX}{} {}\n", sig.name, B64.encode(blob)));
        }
        s
    }

    /// Parses the text form strictly.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |s: String| NoteError::Malformed(s);
        if text.len() > MAX_NOTE_BYTES {
            return Err(bad(format!("{} bytes exceeds the {MAX_NOTE_BYTES}-byte limit", text.len())));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("contains a control character other than newline".into()));
        }
        let Some(split) = text.rfind("\n\n") else {
            return Err(bad("no blank line between body and signatures".into()));
        };
        let body = &text[..split + 1];
        let sigs = &text[split + 2..];
        if body.contains("\n\n") {
            return Err(bad("body contains a blank line".into()));
        }
        let Some(sig_text) = sigs.strip_suffix('\n') else {
            return Err(bad("signature block does not end with a newline".into()));
        };
        let mut signatures = Vec::new();
        for (i, line) in sig_text.split('\n').enumerate() {
            let Some(rest) = line.strip_prefix(EM_DASH_PREFIX) else {
                return Err(bad(format!("signature line {}: does not start with \"— \"", i + 1)));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(bad(format!("signature line {}: missing signature", i + 1)));
            };
            if !valid_key_name(name) {
                return Err(bad(format!("signature line {}: invalid key name {name:?}", i + 1)));
            }
            let blob = B64.decode(blob).map_err(|e| bad(format!("signature line {}: not base64: {e}", i + 1)))?;
            if blob.len() < 5 {
                return Err(bad(format!(
                    "signature line {}: signature blob of {} bytes is too short",
                    i + 1,
                    blob.len()
                )));
            }
            let mut key_id = [0u8; 4];
            key_id.copy_from_slice(&blob[..4]);
            signatures.push(NoteSignature { name: name.to_string(), key_id, signature: blob[4..].to_vec() });
        }
        if signatures.is_empty() {
            return Err(bad("no signature lines".into()));
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(bad(format!("{} signature lines exceeds {MAX_SIGNATURES}", signatures.len())));
        }
        Ok(SignedNote { body: body.to_string(), signatures })
    }
}

/// `SHA-256(name || "\n" || type || public key)[:4]`.
fn key_id(name: &str, algorithm: u8, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([algorithm]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

const ALG_ED25519: u8 = 0x01;
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// A named Ed25519 note key (the log's own key, or a witness's).
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    /// Key name.
    pub name: String,
    /// Public key.
    pub key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for `name` with `key`.
    pub fn new(name: impl Into<String>, key: VerifyingKey) -> Self {
        NoteVerifier { name: name.into(), key }
    }

    /// Checks the note carries a valid signed-note Ed25519 signature by this key.
    pub fn verify_signature(&self, note: &SignedNote) -> Result<(), NoteError> {
        let id = key_id(&self.name, ALG_ED25519, &self.key);
        self.find(note, id, |sig| {
            let sig = Signature::from_slice(sig).ok()?;
            self.key.verify(note.body.as_bytes(), &sig).ok()
        })
        .map(|_| ())
    }

    /// Checks the note carries a valid `cosignature/v1` by this key; returns its timestamp.
    pub fn verify_cosignature(&self, note: &SignedNote) -> Result<u64, NoteError> {
        let id = key_id(&self.name, ALG_COSIGNATURE_V1, &self.key);
        self.find(note, id, |blob| {
            if blob.len() != 8 + 64 {
                return None;
            }
            let timestamp = u64::from_be_bytes(blob[..8].try_into().ok()?);
            if timestamp > i64::MAX as u64 {
                return None;
            }
            let sig = Signature::from_slice(&blob[8..]).ok()?;
            self.key.verify(&cosigned_message(timestamp, &note.body), &sig).ok()?;
            Some(timestamp)
        })
    }

    fn find<T>(&self, note: &SignedNote, id: [u8; 4], check: impl Fn(&[u8]) -> Option<T>) -> Result<T, NoteError> {
        let mut seen = false;
        for s in note.signatures.iter().filter(|s| s.name == self.name && s.key_id == id) {
            seen = true;
            if let Some(v) = check(&s.signature) {
                return Ok(v);
            }
        }
        if seen {
            Err(NoteError::BadSignature { name: self.name.clone() })
        } else {
            Err(NoteError::NotSigned { name: self.name.clone(), key_id: hex::encode(id) })
        }
    }
}

fn cosigned_message(timestamp: u64, body: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{body}").into_bytes()
}

/// Adds a signed-note Ed25519 signature by `(name, key)`.
pub fn sign_note(note: &mut SignedNote, name: &str, key: &SigningKey) {
    let sig = key.sign(note.body.as_bytes()).to_bytes().to_vec();
    note.signatures.push(NoteSignature {
        name: name.into(),
        key_id: key_id(name, ALG_ED25519, &key.verifying_key()),
        signature: sig,
    });
}

/// Adds a `cosignature/v1` by witness `(name, key)` at POSIX `timestamp`.
pub fn cosign_note(note: &mut SignedNote, name: &str, key: &SigningKey, timestamp: u64) {
    let sig = key.sign(&cosigned_message(timestamp, &note.body)).to_bytes();
    let mut blob = timestamp.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig);
    note.signatures.push(NoteSignature {
        name: name.into(),
        key_id: key_id(name, ALG_COSIGNATURE_V1, &key.verifying_key()),
        signature: blob,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint { origin: "sovereign.example/node-1".into(), size: 20852163, root: [9; 32], extensions: vec![] }
    }

    #[test]
    fn body_round_trips_and_refuses_bad_bodies() {
        let c = checkpoint();
        assert_eq!(Checkpoint::parse_body(&c.body()).unwrap(), c);
        for bad in [
            "a\n01\nAAAA\n",
            "a\n1\n",
            "a\nx\nAAAA\n",
            "\n1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "a\n1\nAAAA\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signatures_and_cosignatures_verify_and_fail_when_changed() {
        let node = SigningKey::from_bytes(&[1; 32]);
        let witness = SigningKey::from_bytes(&[2; 32]);
        let mut note = SignedNote::new(checkpoint().body());
        sign_note(&mut note, "sovereign.example/node-1", &node);
        cosign_note(&mut note, "witness.example/w1", &witness, 1_679_315_147);
        let text = note.to_text();
        let parsed = SignedNote::parse(&text).unwrap();
        assert_eq!(parsed, note);
        let node_v = NoteVerifier::new("sovereign.example/node-1", node.verifying_key());
        let witness_v = NoteVerifier::new("witness.example/w1", witness.verifying_key());
        node_v.verify_signature(&parsed).unwrap();
        assert_eq!(witness_v.verify_cosignature(&parsed).unwrap(), 1_679_315_147);
        // A cosignature is not a note signature and vice versa (different key IDs).
        assert!(witness_v.verify_signature(&parsed).is_err());
        assert!(node_v.verify_cosignature(&parsed).is_err());

        let tampered = SignedNote::parse(&text.replace("20852163", "20852164")).unwrap();
        assert!(matches!(node_v.verify_signature(&tampered), Err(NoteError::BadSignature { .. })));
        assert!(witness_v.verify_cosignature(&tampered).is_err());
    }

    #[test]
    fn parser_refuses_malformed_notes() {
        for bad in [
            "",
            "a\n1\nAAAA\n",
            "a\n1\nAAAA\n\n",
            "a\n1\nAAAA\n\n- name AAAAAAA=\n",
            "a\n\n\u{2014} n AAAAAAA=",
            "a\n\n\u{2014} n !!!\n",
        ] {
            assert!(SignedNote::parse(bad).is_err(), "{bad:?}");
        }
    }

    // The example in C2SP tlog-cosignature: its note signature line has the documented shape
    // (4-byte key ID + 64-byte Ed25519 signature) and the cosignature line carries a 4-byte key
    // ID, an 8-byte big-endian timestamp and a 64-byte signature.
    #[test]
    fn parses_the_c2sp_example() {
        let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let note = SignedNote::parse(text).unwrap();
        let cp = Checkpoint::parse_body(&note.body).unwrap();
        assert_eq!(cp.size, 20852163);
        assert_eq!(note.signatures[0].signature.len(), 64);
        assert_eq!(note.signatures[1].signature.len(), 72);
        assert_eq!(u64::from_be_bytes(note.signatures[1].signature[..8].try_into().unwrap()), 1679315147);
    }
}
