//! The mesh protocol's messages (`/sovereign/mesh/1`, one request and one response per
//! stream): postcard, at most [`MAX_MESSAGE`] bytes, decoded whole or refused — a peer's bytes
//! never panic the node, never allocate more than the limit, and never leave trailing data
//! unread.
//!
//! Pure: no IO. The libp2p codec (`node`) frames them with a u32 length prefix.

use serde::{Deserialize, Serialize};

/// The protocol name negotiated on each stream.
pub const PROTOCOL: &str = "/sovereign/mesh/1";
/// The largest message either way (evidence with its logs fits; a checkpoint with a
/// consistency proof of 64 hashes is a few KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// The most hashes a consistency proof may carry (a log of 2^64 entries needs fewer).
pub const MAX_PROOF: usize = 128;

/// What a peer asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "Attest to me": TPM evidence whose quote binds `admission::quote_binding(nonce, your
    /// peer ID, your node identity)`.
    Challenge {
        /// Fresh from the asker.
        nonce: [u8; 32],
    },
    /// "Witness my log": a checkpoint signed by the asker's log key, with a consistency proof
    /// from the size this witness last cosigned for its origin.
    Witness {
        /// The signed note (C2SP checkpoint).
        checkpoint: String,
        /// The size the proof starts from.
        old_size: u64,
        /// The consistency proof.
        proof: Vec<[u8; 32]>,
    },
}

/// What a peer answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to a challenge: the node identity the quote binds and the evidence (the
    /// attestor's encoding, verified by the asker's verifier).
    Evidence {
        /// The answering node's identity (Ed25519 public key).
        node_identity: [u8; 32],
        /// The evidence bytes.
        evidence: Vec<u8>,
    },
    /// The checkpoint with this witness's cosignature added.
    Cosigned {
        /// The signed note with the cosignature line.
        note: String,
    },
    /// Refused, with the reason in one line.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Why bytes were not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Over [`MAX_MESSAGE`].
    #[error("mesh message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// Not a message.
    #[error("mesh message does not decode: {0}")]
    Malformed(String),
    /// A proof longer than [`MAX_PROOF`].
    #[error("consistency proof of {0} hashes is over the {MAX_PROOF}-hash limit")]
    ProofTooLong(usize),
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(WireError::Malformed(format!("{} bytes after the message", rest.len()))),
        Err(e) => Err(WireError::Malformed(e.to_string())),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_allocvec(value).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

impl Request {
    /// Decodes a request (bounded, whole).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let request: Request = decode(bytes)?;
        if let Request::Witness { proof, .. } = &request
            && proof.len() > MAX_PROOF
        {
            return Err(WireError::ProofTooLong(proof.len()));
        }
        Ok(request)
    }

    /// Encodes a request; refused over the limit.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(self)
    }
}

impl Response {
    /// Decodes a response (bounded, whole).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }

    /// Encodes a response; refused over the limit.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused_by_name() {
        let requests = [
            Request::Challenge { nonce: [7; 32] },
            Request::Witness {
                checkpoint: "origin\n1\nroot\n\n— key sig\n".into(), old_size: 0, proof: vec![[1; 32]]
            },
        ];
        // `SOVEREIGN_FUZZ_SEEDS=$PWD/fuzz/seeds cargo test` writes these as the fuzz seeds.
        let seeds = std::env::var_os("SOVEREIGN_FUZZ_SEEDS").map(|d| std::path::PathBuf::from(d).join("mesh_message"));
        let mut n = 0;
        let mut seed = |bytes: &[u8]| {
            if let Some(dir) = &seeds {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join(format!("message-{n}")), bytes).unwrap();
                n += 1;
            }
        };
        for r in requests {
            seed(&r.encode().unwrap());
            assert_eq!(Request::decode(&r.encode().unwrap()).unwrap(), r);
        }
        let responses = [
            Response::Evidence { node_identity: [3; 32], evidence: vec![1, 2, 3] },
            Response::Cosigned { note: "note".into() },
            Response::Refused { reason: "not admitted".into() },
        ];
        for r in responses {
            seed(&r.encode().unwrap());
            assert_eq!(Response::decode(&r.encode().unwrap()).unwrap(), r);
        }
        let mut trailing = Request::Challenge { nonce: [0; 32] }.encode().unwrap();
        trailing.push(0);
        assert!(matches!(Request::decode(&trailing), Err(WireError::Malformed(m)) if m.contains("1 bytes after")));
        assert!(matches!(Request::decode(&[9, 9, 9]), Err(WireError::Malformed(_))));
        assert!(matches!(Request::decode(&vec![0; MAX_MESSAGE + 1]), Err(WireError::TooLarge(_))));
        let long = Request::Witness { checkpoint: String::new(), old_size: 0, proof: vec![[0; 32]; MAX_PROOF + 1] };
        assert_eq!(Request::decode(&long.encode().unwrap()), Err(WireError::ProofTooLong(MAX_PROOF + 1)));
        let huge = Response::Evidence { node_identity: [0; 32], evidence: vec![0; MAX_MESSAGE] };
        assert!(matches!(huge.encode(), Err(WireError::TooLarge(_))));
        // A length prefix that claims more than the bytes hold allocates nothing and fails.
        assert!(Response::decode(&[0, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
