//! The gate every request passes before anything acts on it, and the refusals it (and the
//! rest of the protocol) answers with.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::message::{ANY_NODE, Request, SignedRequest};

/// Why a request or response was refused (each is one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not decodable.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Signature missing or wrong.
    #[error("signature does not verify")]
    BadSignature,
    /// Signed by a key that holds no role here.
    #[error("operator key {0} is not authorized")]
    NotAuthorized(String),
    /// Timestamp outside the freshness window.
    #[error("request timestamp is {skew_ms} ms away from the node's clock (window ±{window_ms} ms)")]
    Stale {
        /// Signed difference, ms.
        skew_ms: i128,
        /// Allowed window, ms.
        window_ms: u64,
    },
    /// The same request was seen before.
    #[error("request nonce already used (replay)")]
    Replayed,
    /// Signed before this runtime started: the nonces it saw before are gone, so nothing signed
    /// before it is admitted (a restart never re-opens a replay).
    #[error(
        "request signed at {signed_ms} ms, before this runtime started at {started_ms} ms: requests from before a restart are never admitted; sign it again"
    )]
    BeforeStart {
        /// The request's timestamp.
        signed_ms: u64,
        /// When the gate started admitting.
        started_ms: u64,
    },
    /// A response answers another request.
    #[error("response is bound to another request")]
    WrongRequest,
    /// The request was signed for another node.
    #[error("request is addressed to node {meant_for}, not to this node {this}")]
    WrongNode {
        /// The identity the request names (hex).
        meant_for: String,
        /// This node's identity (hex).
        this: String,
    },
    /// A payload (or a frame) over a limit, or chunks that do not match their manifest.
    #[error("payload refused: {0}")]
    Payload(String),
}

/// Admits requests: addressed to this node, authorized operator, valid signature, fresh, not
/// replayed.
#[derive(Debug, Clone)]
pub struct Gate {
    node: [u8; 32],
    operators: Vec<VerifyingKey>,
    window_ms: u64,
    seen: BTreeMap<[u8; 16], u64>,
    max_seen: usize,
    /// Nothing signed before this is admitted (the start of this runtime).
    not_before_ms: u64,
}

impl Gate {
    /// A gate of the node whose identity is `node`, admitting `operators` with a freshness
    /// window of ±`window_ms`.
    pub fn new(node: [u8; 32], operators: Vec<VerifyingKey>, window_ms: u64) -> Self {
        Gate { node, operators, window_ms, seen: BTreeMap::new(), max_seen: 100_000, not_before_ms: 0 }
    }

    /// Admits only requests signed at or after `start_ms`, the moment this runtime started:
    /// the nonces seen live only in memory, so a request captured before a restart (still within
    /// the freshness window) is refused by its timestamp instead.
    pub fn admitting_from(mut self, start_ms: u64) -> Self {
        self.not_before_ms = start_ms;
        self
    }

    /// Checks a request at `now_ms`; on success records its nonce until it expires.
    pub fn admit(&mut self, request: &SignedRequest, now_ms: u64) -> Result<(), Refusal> {
        let key = VerifyingKey::from_bytes(&request.operator).map_err(|_| Refusal::BadSignature)?;
        let sig = Signature::from_slice(&request.signature).map_err(|_| Refusal::BadSignature)?;
        key.verify_strict(&request.signing_bytes(), &sig).map_err(|_| Refusal::BadSignature)?;
        if !self.operators.contains(&key) {
            return Err(Refusal::NotAuthorized(hex(&request.operator)));
        }
        let discovery = request.node == ANY_NODE && request.request == Request::Status;
        if request.node != self.node && !discovery {
            return Err(Refusal::WrongNode { meant_for: hex(&request.node), this: hex(&self.node) });
        }
        let skew = i128::from(request.timestamp_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.window_ms) {
            return Err(Refusal::Stale { skew_ms: skew, window_ms: self.window_ms });
        }
        if request.timestamp_ms < self.not_before_ms {
            return Err(Refusal::BeforeStart { signed_ms: request.timestamp_ms, started_ms: self.not_before_ms });
        }
        self.seen.retain(|_, expiry| *expiry >= now_ms);
        if self.seen.contains_key(&request.nonce) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.max_seen {
            // Fail closed: refuse rather than forget a nonce that is still fresh.
            return Err(Refusal::Replayed);
        }
        self.seen.insert(request.nonce, request.timestamp_ms.saturating_add(self.window_ms));
        Ok(())
    }
}

/// Lower-case hex, for refusals that name a key or digest.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
