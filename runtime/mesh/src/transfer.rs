//! Update bundles between admitted nodes: one stream ([`UPDATE_PROTOCOL`]) per fetch, on which
//! the puller asks for a bundle by its SHA-256 and the holder answers with the bundle or a
//! one-line refusal. This module is the framing alone, over any `Read`/`Write` (the mesh's
//! streams, or bytes in a test): bounded before anything is allocated, the digest checked
//! before a bundle is handed on. Whether the bundle may be installed is not decided here: the
//! puller's engine verifies it completely (update root, release key, floor, platform), exactly as
//! a bundle pushed by an operator, before a byte of it is written.
//!
//! Request: `sovereign-update/1\n` then 32 bytes of SHA-256. Answer: `0` then a big-endian u64
//! length and that many bytes, or `1` then a big-endian u16 length and a UTF-8 refusal of at most
//! [`MAX_REFUSAL`] bytes.

use std::io::{self, Read, Write};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// The update distribution protocol on the mesh.
pub const UPDATE_PROTOCOL: &str = "/sovereign/update/1";

const REQUEST_TAG: &[u8] = b"sovereign-update/1\n";
const ANSWER_BUNDLE: u8 = 0;
const ANSWER_REFUSED: u8 = 1;
/// The longest refusal line read.
pub const MAX_REFUSAL: usize = 1024;
/// Bytes read at a time (the buffer grows only as bytes arrive, never to a claimed length).
const CHUNK: usize = 256 * 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// The stream failed or ended early.
    #[error("the stream failed: {0}")]
    Io(String),
    /// The other end does not speak this protocol.
    #[error("not an update request or answer: {0}")]
    Malformed(String),
    /// The holder refused, and said why.
    #[error("the holder refused: {0}")]
    Refused(String),
    /// The announced bundle is larger than the puller takes.
    #[error("the holder announced {announced} bytes; at most {limit} are taken")]
    TooLarge {
        /// What the holder announced.
        announced: u64,
        /// The puller's limit.
        limit: u64,
    },
    /// The bytes are not the bundle asked for.
    #[error("the bundle received has SHA-256 {got}, not the {wanted} asked for")]
    WrongDigest {
        /// What arrived.
        got: String,
        /// What was asked for.
        wanted: String,
    },
    /// The whole transfer took longer than its deadline.
    #[error("the transfer did not finish in time ({received} of {announced} bytes received)")]
    TooSlow {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        announced: u64,
    },
}

fn io_error(e: io::Error) -> TransferError {
    TransferError::Io(e.to_string())
}

/// Asks for the bundle with `sha256`.
pub fn write_request(out: &mut impl Write, sha256: &[u8; 32]) -> Result<(), TransferError> {
    let mut request = REQUEST_TAG.to_vec();
    request.extend_from_slice(sha256);
    out.write_all(&request).and_then(|()| out.flush()).map_err(io_error)
}

/// Reads a request: the SHA-256 of the bundle asked for.
pub fn read_request(input: &mut impl Read) -> Result<[u8; 32], TransferError> {
    let mut request = [0u8; REQUEST_TAG.len() + 32];
    input.read_exact(&mut request).map_err(io_error)?;
    if &request[..REQUEST_TAG.len()] != REQUEST_TAG {
        return Err(TransferError::Malformed("the request does not start with sovereign-update/1".into()));
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&request[REQUEST_TAG.len()..]);
    Ok(sha256)
}

/// Answers with the bundle.
pub fn write_bundle(out: &mut impl Write, bundle: &[u8]) -> Result<(), TransferError> {
    let mut head = vec![ANSWER_BUNDLE];
    head.extend_from_slice(&(bundle.len() as u64).to_be_bytes());
    out.write_all(&head).and_then(|()| out.write_all(bundle)).and_then(|()| out.flush()).map_err(io_error)
}

/// Answers with a refusal (cut to [`MAX_REFUSAL`] bytes, on a character boundary).
pub fn write_refusal(out: &mut impl Write, why: &str) -> Result<(), TransferError> {
    let mut end = why.len().min(MAX_REFUSAL);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    let line = &why.as_bytes()[..end];
    let mut answer = vec![ANSWER_REFUSED];
    answer.extend_from_slice(&(line.len() as u16).to_be_bytes());
    answer.extend_from_slice(line);
    out.write_all(&answer).and_then(|()| out.flush()).map_err(io_error)
}

/// Reads the answer to a request for `sha256`: the bundle, at most `limit` bytes, all of it
/// received before `deadline` and with that digest; `progress(received, total)` after each
/// chunk.
pub fn read_bundle(
    input: &mut impl Read,
    sha256: &[u8; 32],
    limit: u64,
    deadline: Instant,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u8>, TransferError> {
    let mut tag = [0u8; 1];
    input.read_exact(&mut tag).map_err(io_error)?;
    match tag[0] {
        ANSWER_BUNDLE => {}
        ANSWER_REFUSED => {
            let mut len = [0u8; 2];
            input.read_exact(&mut len).map_err(io_error)?;
            let len = usize::from(u16::from_be_bytes(len));
            if len > MAX_REFUSAL {
                return Err(TransferError::Malformed(format!("a refusal of {len} bytes (at most {MAX_REFUSAL})")));
            }
            let mut line = vec![0u8; len];
            input.read_exact(&mut line).map_err(io_error)?;
            let line =
                String::from_utf8(line).map_err(|_| TransferError::Malformed("a refusal not in UTF-8".into()))?;
            return Err(TransferError::Refused(line.chars().filter(|c| !c.is_control()).collect()));
        }
        other => return Err(TransferError::Malformed(format!("answer tag {other}"))),
    }
    let mut len = [0u8; 8];
    input.read_exact(&mut len).map_err(io_error)?;
    let announced = u64::from_be_bytes(len);
    if announced > limit {
        return Err(TransferError::TooLarge { announced, limit });
    }
    let first = usize::try_from(announced).unwrap_or(usize::MAX).min(CHUNK);
    let mut bundle = Vec::with_capacity(first);
    let mut chunk = vec![0u8; first];
    let mut hasher = Sha256::new();
    while (bundle.len() as u64) < announced {
        if Instant::now() > deadline {
            return Err(TransferError::TooSlow { received: bundle.len() as u64, announced });
        }
        let want = usize::try_from(announced - bundle.len() as u64).unwrap_or(CHUNK).min(chunk.len());
        let got = input.read(&mut chunk[..want]).map_err(io_error)?;
        if got == 0 {
            return Err(TransferError::Io(format!("the stream ended after {} of {announced} bytes", bundle.len())));
        }
        hasher.update(&chunk[..got]);
        bundle.extend_from_slice(&chunk[..got]);
        progress(bundle.len() as u64, announced);
    }
    let got: [u8; 32] = hasher.finalize().into();
    if &got != sha256 {
        return Err(TransferError::WrongDigest { got: hex::encode(got), wanted: hex::encode(sha256) });
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn a_bundle_travels_whole_with_its_digest_checked() {
        let bundle: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        write_request(&mut wire, &digest(&bundle)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_request(&mut wire.as_slice()), Ok(digest(&bundle)));
        let mut answer = Vec::new();
        write_bundle(&mut answer, &bundle).unwrap_or_else(|e| panic!("{e}"));
        let mut seen = Vec::new();
        let got =
            read_bundle(&mut answer.as_slice(), &digest(&bundle), 1 << 20, later(), &mut |r, t| seen.push((r, t)));
        assert_eq!(got.as_deref(), Ok(bundle.as_slice()));
        assert_eq!(seen.last(), Some(&(1_000_000, 1_000_000)));
        assert!(seen.len() >= 4, "progress after each chunk: {seen:?}");
    }

    #[test]
    fn what_is_not_the_bundle_asked_for_is_refused_by_name() {
        let bundle = b"a bundle".to_vec();
        let mut answer = Vec::new();
        write_bundle(&mut answer, &bundle).unwrap_or_else(|e| panic!("{e}"));
        let read =
            |bytes: &[u8], sha: &[u8; 32], limit: u64| read_bundle(&mut &*bytes, sha, limit, later(), &mut |_, _| {});
        // Another digest asked for.
        assert!(matches!(read(&answer, &[7; 32], 100), Err(TransferError::WrongDigest { .. })));
        // Over the puller's limit: refused before anything is read or allocated.
        let mut huge = vec![ANSWER_BUNDLE];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            read(&huge, &digest(&bundle), 100),
            Err(TransferError::TooLarge { announced: u64::MAX, limit: 100 })
        );
        // Cut short.
        let cut = &answer[..answer.len() - 2];
        assert!(matches!(read(cut, &digest(&bundle), 100), Err(TransferError::Io(why)) if why.contains("6 of 8")));
        // A refusal, said; an unknown tag; an empty stream.
        let mut refused = Vec::new();
        write_refusal(&mut refused, "no update is staged here\u{7}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read(&refused, &digest(&bundle), 100),
            Err(TransferError::Refused("no update is staged here".into()))
        );
        assert!(matches!(read(&[9], &digest(&bundle), 100), Err(TransferError::Malformed(_))));
        assert!(matches!(read(&[], &digest(&bundle), 100), Err(TransferError::Io(_))));
        // A refusal longer than any writer sends.
        let mut long = vec![ANSWER_REFUSED];
        long.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(read(&long, &digest(&bundle), 100), Err(TransferError::Malformed(_))));
        // Past the deadline.
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
        let slow = read_bundle(&mut answer.as_slice(), &digest(&bundle), 100, past, &mut |_, _| {});
        assert_eq!(slow, Err(TransferError::TooSlow { received: 0, announced: 8 }));
        // Not a request.
        assert!(matches!(read_request(&mut [0u8; 51].as_slice()), Err(TransferError::Malformed(_))));
    }

    #[test]
    fn a_long_refusal_is_cut_on_a_character_boundary() {
        let why = "é".repeat(MAX_REFUSAL);
        let mut refused = Vec::new();
        write_refusal(&mut refused, &why).unwrap_or_else(|e| panic!("{e}"));
        match read_bundle(&mut refused.as_slice(), &[0; 32], 1, later(), &mut |_, _| {}) {
            Err(TransferError::Refused(line)) => assert_eq!(line.len(), MAX_REFUSAL),
            other => panic!("{other:?}"),
        }
    }
}
