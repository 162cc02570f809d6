//! Frames on the byte stream, and payloads of any size as checked chunks.
//!
//! A frame is `u32 big-endian length || postcard(Frame)`, at most [`MAX_FRAME`] bytes. A
//! payload larger than a frame travels as an [`Attachment`] of its message: the signed request
//! (or response) carries each payload's length, SHA-256 and the SHA-256 of every
//! [`CHUNK_SIZE`] chunk; the chunks follow as [`Frame::Chunk`]s tagged with the message they
//! belong to, in order. The receiver checks each chunk against the signed manifest as it
//! arrives ([`Assembly`]) and refuses the first one that differs, so an unsigned byte is never
//! kept. The byte stream itself is the back-pressure: a receiver that stops reading stops the
//! sender.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::gate::{Refusal, hex};
use crate::message::{SignedRequest, SignedResponse};

/// Largest frame accepted (a chunk and its header, or evidence with event logs).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Size of every chunk of a payload but the last.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Most bytes one message may attach, all payloads together (a 100 MiB dataset with its
/// modules, an export of a 1,000,000-entry log).
pub const MAX_MESSAGE_PAYLOAD: u64 = 192 * 1024 * 1024;
/// Most payloads one message may attach.
pub const MAX_ATTACHMENTS: usize = 64;

/// What travels on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// An operator's request; its attachments' chunks follow.
    Request(Box<SignedRequest>),
    /// A node's response; its attachments' chunks follow.
    Response(Box<SignedResponse>),
    /// One chunk of an attachment.
    Chunk(Chunk),
    /// A frame the receiver could not read as a request (over the size limit, or not
    /// decodable), refused before it could be bound to any: one line. Unsigned, so it can only
    /// ever make a client fail, never accept anything.
    Refused(String),
}

/// One chunk of a message's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The request the message is (or answers): [`SignedRequest::digest`].
    pub message: [u8; 32],
    /// Which attachment of the message.
    pub attachment: u16,
    /// Which chunk of it, from 0.
    pub index: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The signed manifest of one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the whole payload (what typed fields refer to, see [`Blob`]).
    pub sha256: [u8; 32],
    /// SHA-256 of each [`CHUNK_SIZE`] chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

/// A typed field's reference to one of its message's attachments, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// SHA-256 of the payload.
    pub sha256: [u8; 32],
    /// Its length in bytes.
    pub len: u64,
}

impl Blob {
    /// The reference to `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Blob { sha256: Sha256::digest(bytes).into(), len: bytes.len() as u64 }
    }
}

impl Attachment {
    /// The manifest of `bytes`.
    pub fn describe(bytes: &[u8]) -> Self {
        Attachment {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
            chunks: bytes.chunks(CHUNK_SIZE).map(|c| Sha256::digest(c).into()).collect(),
        }
    }

    /// The manifests of `payloads`, in order.
    pub fn describe_all(payloads: &[Vec<u8>]) -> Vec<Attachment> {
        payloads.iter().map(|p| Attachment::describe(p)).collect()
    }

    /// How many chunks a payload of `len` bytes has.
    fn chunk_count(len: u64) -> u64 {
        len.div_ceil(CHUNK_SIZE as u64)
    }

    /// Length of chunk `index`.
    fn chunk_len(&self, index: usize) -> u64 {
        let start = index as u64 * CHUNK_SIZE as u64;
        self.len.saturating_sub(start).min(CHUNK_SIZE as u64)
    }
}

/// Checks a message's attachment manifests against the limits before any chunk is read.
pub fn check_manifests(attachments: &[Attachment]) -> Result<u64, Refusal> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(Refusal::Payload(format!(
            "{} attachments; a message may carry {MAX_ATTACHMENTS}",
            attachments.len()
        )));
    }
    let mut total: u64 = 0;
    for (i, a) in attachments.iter().enumerate() {
        total = total.saturating_add(a.len);
        if total > MAX_MESSAGE_PAYLOAD {
            return Err(Refusal::Payload(format!(
                "attachments of over {total} bytes; a message may carry {MAX_MESSAGE_PAYLOAD}"
            )));
        }
        if a.chunks.len() as u64 != Attachment::chunk_count(a.len) {
            return Err(Refusal::Payload(format!(
                "attachment {i}: {} chunk digests for {} bytes (chunks are {CHUNK_SIZE} bytes)",
                a.chunks.len(),
                a.len
            )));
        }
    }
    Ok(total)
}

/// The payloads of one message, received and checked, by content hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payloads(BTreeMap<[u8; 32], Vec<u8>>);

impl Payloads {
    /// The payload `blob` refers to, or why there is none.
    pub fn get(&self, blob: &Blob, what: &str) -> Result<&[u8], Refusal> {
        match self.0.get(&blob.sha256) {
            Some(bytes) if bytes.len() as u64 == blob.len => Ok(bytes),
            Some(bytes) => Err(Refusal::Payload(format!(
                "{what}: the attachment is {} bytes, the request says {}",
                bytes.len(),
                blob.len
            ))),
            None => Err(Refusal::Payload(format!("{what}: no attachment with SHA-256 {}", hex(&blob.sha256)))),
        }
    }

    /// Payloads built in memory (tests, host-side callers of the engine).
    pub fn from_bytes(payloads: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Payloads(payloads.into_iter().map(|p| (Sha256::digest(&p).into(), p)).collect())
    }

    /// How many payloads.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Receives one message's chunks, in order, checking each against the signed manifests.
#[derive(Debug)]
pub struct Assembly {
    message: [u8; 32],
    manifests: Vec<Attachment>,
    received: Vec<Vec<u8>>,
    /// The attachment and chunk expected next.
    next: (usize, usize),
}

impl Assembly {
    /// Starts receiving the attachments of `message` (a request digest), whose manifests are
    /// `manifests` (already signed and verified with the message).
    pub fn new(message: [u8; 32], manifests: &[Attachment]) -> Result<Self, Refusal> {
        check_manifests(manifests)?;
        let mut a = Assembly { message, manifests: manifests.to_vec(), received: Vec::new(), next: (0, 0) };
        a.skip_empty();
        Ok(a)
    }

    fn skip_empty(&mut self) {
        while self.next.0 < self.manifests.len() && self.next.1 >= self.manifests[self.next.0].chunks.len() {
            self.received.push(Vec::new());
            self.next = (self.next.0 + 1, 0);
        }
        // `received` holds one buffer per attachment started; an attachment with chunks gets
        // its buffer when its first chunk arrives.
    }

    /// Whether every chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.next.0 >= self.manifests.len()
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        let (a, c) = self.next;
        self.manifests
            .iter()
            .enumerate()
            .skip(a)
            .map(|(i, m)| if i == a { m.len.saturating_sub((c * CHUNK_SIZE) as u64) } else { m.len })
            .sum()
    }

    /// Takes the next chunk: it must be the next one of this message and match its digest.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<(), Refusal> {
        if chunk.message != self.message {
            return Err(Refusal::Payload("a chunk of another message".into()));
        }
        let (a, c) = self.next;
        let Some(manifest) = self.manifests.get(a) else {
            return Err(Refusal::Payload("a chunk after the last attachment was complete".into()));
        };
        if usize::from(chunk.attachment) != a || chunk.index as usize != c {
            return Err(Refusal::Payload(format!(
                "chunk {}/{} arrived where chunk {c} of attachment {a} was due",
                chunk.attachment, chunk.index
            )));
        }
        if chunk.bytes.len() as u64 != manifest.chunk_len(c) {
            return Err(Refusal::Payload(format!(
                "attachment {a} chunk {c} is {} bytes, the manifest says {}",
                chunk.bytes.len(),
                manifest.chunk_len(c)
            )));
        }
        let digest: [u8; 32] = Sha256::digest(&chunk.bytes).into();
        if digest != manifest.chunks[c] {
            return Err(Refusal::Payload(format!("attachment {a} chunk {c} does not match its signed digest")));
        }
        if c == 0 {
            let capacity = usize::try_from(manifest.len).unwrap_or(0);
            self.received.push(Vec::with_capacity(capacity));
        }
        if let Some(buffer) = self.received.last_mut() {
            buffer.extend_from_slice(&chunk.bytes);
        }
        self.next = (a, c + 1);
        if self.next.1 >= manifest.chunks.len() {
            let whole: [u8; 32] = Sha256::digest(self.received.last().map(Vec::as_slice).unwrap_or(&[])).into();
            if whole != manifest.sha256 {
                return Err(Refusal::Payload(format!("attachment {a} does not match its signed SHA-256")));
            }
            self.next = (a + 1, 0);
            self.skip_empty();
        }
        Ok(())
    }

    /// The checked payloads, once complete.
    pub fn finish(self) -> Result<Payloads, Refusal> {
        let hashes: Vec<[u8; 32]> = self.manifests.iter().map(|m| m.sha256).collect();
        Ok(Payloads(hashes.into_iter().zip(self.finish_in_order()?).collect()))
    }

    /// The checked payloads, once complete, in the order of their manifests.
    pub fn finish_in_order(self) -> Result<Vec<Vec<u8>>, Refusal> {
        if !self.is_complete() {
            return Err(Refusal::Payload(format!("{} bytes of attachments never arrived", self.remaining())));
        }
        Ok(self.received)
    }
}

/// The chunk frames of `payloads`, the attachments of the message `message`, in order.
pub fn chunks(message: [u8; 32], payloads: &[Vec<u8>]) -> impl Iterator<Item = Frame> + '_ {
    payloads.iter().enumerate().flat_map(move |(a, p)| {
        p.chunks(CHUNK_SIZE).enumerate().map(move |(c, bytes)| {
            Frame::Chunk(Chunk { message, attachment: a as u16, index: c as u32, bytes: bytes.to_vec() })
        })
    })
}

/// Encodes a frame: `u32 big-endian length || postcard bytes`.
pub fn frame(message: &Frame) -> Vec<u8> {
    let body = postcard::to_allocvec(message).expect("encoding in memory cannot fail");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads the length prefix of a frame; refuses frames over [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, Refusal> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(Refusal::Payload(format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode(body: &[u8]) -> Result<Frame, Refusal> {
    postcard::from_bytes(body).map_err(|e| Refusal::Malformed(e.to_string()))
}
