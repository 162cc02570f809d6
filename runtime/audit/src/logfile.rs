//! The encrypted log file format, encoding and strict decoding (pure: no IO).
//!
//! ```text
//! header  = "SVAUDLG1" | u16 version (1) | u16 origin length | origin (UTF-8)
//!         | log id (16 random bytes) | header tag (16)
//! record  = u32 ciphertext length | nonce (12) | AES-256-GCM ciphertext of the entry (+16-byte tag)
//! ```
//!
//! All integers big-endian. The file key is `SHA-256("sovereign-audit-log-key/v1\n" || data key
//! || log id)`, so two logs never share a key even under one data key. The header tag is the GCM
//! tag of an empty message (nonce all-zero, used once per file key) whose associated data is
//! the header, so a wrong data key or an altered header is caught at open. Each record's
//! associated data is `"SVAUDLG1 record" || index (u64) || previous record's tag` (the header
//! tag for record 0): reordering, removing or splicing in records from another log breaks the
//! chain. Nonces are `SHA-256(session seed || index)[..12]` with a fresh random 32-byte seed per
//! writer session and stored with the record, so a nonce never repeats under a file key, even
//! when a torn tail is rewritten after a crash.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::entry::{Entry, EntryError};

/// File magic.
pub const MAGIC: &[u8; 8] = b"SVAUDLG1";
/// The only format version.
pub const VERSION: u16 = 1;
/// Largest record ciphertext accepted.
pub const MAX_RECORD: usize = crate::entry::MAX_ENTRY_BYTES + 16;
const RECORD_AAD: &[u8] = b"SVAUDLG1 record";
const TAG: usize = 16;
const NONCE: usize = 12;

/// The node's AES-256 data key (zeroized on drop).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey(pub [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A per-file cipher.
pub struct FileCipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileCipher(..)")
    }
}

impl FileCipher {
    /// Derives the file key for `log_id`.
    pub fn new(data_key: &DataKey, log_id: &[u8; 16]) -> Self {
        let mut h = Sha256::new();
        h.update(b"sovereign-audit-log-key/v1\n");
        h.update(data_key.0);
        h.update(log_id);
        let mut key: [u8; 32] = h.finalize().into();
        let aead = Aes256Gcm::new(&key.into());
        key.zeroize();
        FileCipher { aead }
    }

    fn tag_of(&self, aad: &[u8]) -> [u8; TAG] {
        let out = self
            .aead
            .encrypt(&gcm_nonce([0u8; NONCE]), Payload { msg: &[], aad })
            .expect("AES-GCM encryption of an empty message cannot fail");
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&out);
        tag
    }

    /// Encrypts record `index` chained after `prev_tag`; returns the record bytes and its tag.
    pub fn seal_record(
        &self,
        index: u64,
        prev_tag: &[u8; TAG],
        nonce: &[u8; NONCE],
        plaintext: &[u8],
    ) -> (Vec<u8>, [u8; TAG]) {
        let aad = record_aad(index, prev_tag);
        let ct = self
            .aead
            .encrypt(&gcm_nonce(*nonce), Payload { msg: plaintext, aad: &aad })
            .expect("AES-GCM encryption cannot fail for records below the size limit");
        let mut out = Vec::with_capacity(4 + NONCE + ct.len());
        out.extend_from_slice(&u32::try_from(ct.len()).expect("records are far below 4 GiB").to_be_bytes());
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&ct[ct.len() - TAG..]);
        (out, tag)
    }

    fn open_record(&self, index: u64, prev_tag: &[u8; TAG], nonce: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        let aad = record_aad(index, prev_tag);
        let n: [u8; NONCE] = nonce.try_into().ok()?;
        self.aead.decrypt(&gcm_nonce(n), Payload { msg: ct, aad: &aad }).ok()
    }
}

fn gcm_nonce(bytes: [u8; NONCE]) -> Nonce<aes_gcm::aead::consts::U12> {
    Nonce::from(bytes)
}

fn record_aad(index: u64, prev_tag: &[u8; TAG]) -> Vec<u8> {
    let mut aad = RECORD_AAD.to_vec();
    aad.extend_from_slice(&index.to_be_bytes());
    aad.extend_from_slice(prev_tag);
    aad
}

/// The per-record nonce for a writer session.
pub fn record_nonce(session_seed: &[u8; 32], index: u64) -> [u8; NONCE] {
    let d = Sha256::new().chain_update(session_seed).chain_update(index.to_be_bytes()).finalize();
    let mut n = [0u8; NONCE];
    n.copy_from_slice(&d[..NONCE]);
    n
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The log's origin (its checkpoints' first line).
    pub origin: String,
    /// Random identifier binding the file key.
    pub log_id: [u8; 16],
    /// The header tag (chain start).
    pub tag: [u8; TAG],
    /// Encoded length.
    pub len: usize,
}

/// Encodes a header for `origin` and `log_id`.
pub fn encode_header(cipher: &FileCipher, origin: &str, log_id: &[u8; 16]) -> (Vec<u8>, [u8; TAG]) {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_be_bytes());
    let len = u16::try_from(origin.len()).expect("origin length is checked by the caller");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(log_id);
    let tag = cipher.tag_of(&out);
    out.extend_from_slice(&tag);
    (out, tag)
}

/// Why a log file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogFileError {
    /// The header is damaged or not ours.
    #[error("log header: {0}")]
    Header(String),
    /// The data key does not open this log (or the header was altered).
    #[error("log header does not authenticate: wrong data key, or the header was altered")]
    WrongKey,
}

/// How the file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a valid record.
    Clean,
    /// An incomplete or unauthenticated last record (an unacknowledged write torn by a
    /// crash): everything from `offset` is dropped on recovery.
    Torn {
        /// Where the valid prefix ends.
        offset: usize,
        /// How many bytes follow it.
        bytes: usize,
        /// What was seen.
        reason: String,
    },
    /// A record in the middle does not authenticate or decode while later data does: the log
    /// was altered. Nothing is dropped; the log is refused.
    Corrupt {
        /// Index of the first bad record.
        index: u64,
        /// Its byte offset.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A decoded log file.
#[derive(Debug)]
pub struct Decoded {
    /// The header.
    pub header: Header,
    /// Canonical entry encodings, in order.
    pub entries: Vec<Vec<u8>>,
    /// The tag of the last valid record (or the header's).
    pub last_tag: [u8; TAG],
    /// Length of the valid prefix.
    pub valid_len: usize,
    /// What follows it.
    pub tail: Tail,
}

/// Decodes a header.
pub fn decode_header(bytes: &[u8], data_key: &DataKey) -> Result<(Header, FileCipher), LogFileError> {
    let h = |s: &str| LogFileError::Header(s.to_string());
    if bytes.len() < 8 + 2 + 2 {
        return Err(h("file is shorter than a header"));
    }
    if &bytes[..8] != MAGIC {
        return Err(h("not a Sovereign audit log (magic is not SVAUDLG1)"));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(LogFileError::Header(format!("version {version} is not supported (only {VERSION})")));
    }
    let origin_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    let len = 12 + origin_len + 16 + TAG;
    if bytes.len() < len {
        return Err(h("header truncated"));
    }
    let origin = std::str::from_utf8(&bytes[12..12 + origin_len]).map_err(|_| h("origin is not UTF-8"))?.to_string();
    let mut log_id = [0u8; 16];
    log_id.copy_from_slice(&bytes[12 + origin_len..12 + origin_len + 16]);
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&bytes[len - TAG..len]);
    let cipher = FileCipher::new(data_key, &log_id);
    if cipher.tag_of(&bytes[..len - TAG]) != tag {
        return Err(LogFileError::WrongKey);
    }
    Ok((Header { origin, log_id, tag, len }, cipher))
}

enum RecordResult {
    Ok { plaintext: Vec<u8>, tag: [u8; TAG], next: usize },
    Incomplete(String),
    BadLength(usize),
    BadAuth { tag: [u8; TAG], next: usize },
}

fn read_record(bytes: &[u8], offset: usize, cipher: &FileCipher, index: u64, prev_tag: &[u8; TAG]) -> RecordResult {
    let rest = &bytes[offset..];
    if rest.len() < 4 {
        return RecordResult::Incomplete(format!("{} bytes where a record length belongs", rest.len()));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if !(TAG..=MAX_RECORD).contains(&len) {
        return RecordResult::BadLength(len);
    }
    let total = 4 + NONCE + len;
    if rest.len() < total {
        return RecordResult::Incomplete(format!("record of {total} bytes, only {} present", rest.len()));
    }
    let nonce = &rest[4..4 + NONCE];
    let ct = &rest[4 + NONCE..total];
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&ct[len - TAG..]);
    match cipher.open_record(index, prev_tag, nonce, ct) {
        Some(plaintext) => RecordResult::Ok { plaintext, tag, next: offset + total },
        None => RecordResult::BadAuth { tag, next: offset + total },
    }
}

/// Decodes a whole log file, classifying how it ends. Never panics.
pub fn decode(bytes: &[u8], data_key: &DataKey) -> Result<Decoded, LogFileError> {
    let (header, cipher) = decode_header(bytes, data_key)?;
    let mut offset = header.len;
    let mut prev = header.tag;
    let mut entries = Vec::new();
    let tail = loop {
        if offset == bytes.len() {
            break Tail::Clean;
        }
        let index = entries.len() as u64;
        let zeros_after = |from: usize| bytes[from..].iter().all(|b| *b == 0);
        match read_record(bytes, offset, &cipher, index, &prev) {
            RecordResult::Ok { plaintext, tag, next } => match Entry::decode(&plaintext) {
                Ok(_) => {
                    entries.push(plaintext);
                    prev = tag;
                    offset = next;
                }
                Err(e) => {
                    break Tail::Corrupt {
                        index,
                        offset,
                        reason: format!("authenticated record holds an invalid entry: {e}"),
                    };
                }
            },
            RecordResult::Incomplete(reason) => break Tail::Torn { offset, bytes: bytes.len() - offset, reason },
            RecordResult::BadLength(len) if zeros_after(offset) => {
                break Tail::Torn {
                    offset,
                    bytes: bytes.len() - offset,
                    reason: format!("zero-filled tail (length {len})"),
                };
            }
            RecordResult::BadLength(len) => {
                break Tail::Corrupt {
                    index,
                    offset,
                    reason: format!("record length {len} is outside {TAG}..={MAX_RECORD}"),
                };
            }
            RecordResult::BadAuth { tag, next } => {
                if next == bytes.len() || zeros_after(next) {
                    break Tail::Torn {
                        offset,
                        bytes: bytes.len() - offset,
                        reason: "last record does not authenticate (torn write)".into(),
                    };
                }
                let later_ok = matches!(read_record(bytes, next, &cipher, index + 1, &tag), RecordResult::Ok { .. });
                break Tail::Corrupt {
                    index,
                    offset,
                    reason: if later_ok {
                        "record does not authenticate, but the next one does: the record was altered".into()
                    } else {
                        "record does not authenticate and data follows it: the log was altered or records were removed, reordered or spliced".into()
                    },
                };
            }
        }
    };
    Ok(Decoded { header, entries, last_tag: prev, valid_len: offset, tail })
}

/// Convenience for tests and tools: decode and require a clean file.
pub fn decode_entries(bytes: &[u8], data_key: &DataKey) -> Result<Vec<Entry>, String> {
    let d = decode(bytes, data_key).map_err(|e| e.to_string())?;
    match d.tail {
        Tail::Clean => {}
        Tail::Torn { offset, reason, .. } => return Err(format!("torn tail at byte {offset}: {reason}")),
        Tail::Corrupt { index, offset, reason } => return Err(format!("record {index} at byte {offset}: {reason}")),
    }
    d.entries.iter().map(|b| Entry::decode(b).map_err(|e: EntryError| e.to_string())).collect()
}
