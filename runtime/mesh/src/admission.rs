//! Attestation-gated admission. A peer that completed the pnet + Noise handshake is only
//! *connected*; it gets governance traffic once it is *admitted*: its TPM quote over a fresh
//! nonce, bound to its libp2p identity and its node identity ([`quote_binding`]), verified with
//! the same verifier as `sovereign attest`. Admission lasts [`Policy::ttl_ms`] and is renewed by
//! a fresh attestation; a peer whose boot changed (another boot ID in its evidence) or that
//! disconnected must attest again. Refusals are kept with their reason, for the audit log.
//!
//! Pure: the table and the binding; the exchange and the verifier run elsewhere.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// What a peer's quote must carry as qualifying data for an admission challenge `nonce`:
/// `SHA-256("sovereign-mesh-admission/v1\n" ‖ nonce ‖ u64 len ‖ libp2p peer ID ‖ node identity)`
/// (the whole peer ID, length-prefixed: no two peer IDs bind alike).
/// Binding the libp2p identity stops a relay: a quote made for one connection is worthless on
/// another.
pub fn quote_binding(nonce: &[u8; 32], peer_id: &[u8], node_identity: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sovereign-mesh-admission/v1\n");
    h.update(nonce);
    h.update((peer_id.len() as u64).to_be_bytes());
    h.update(peer_id);
    h.update(node_identity);
    h.finalize().into()
}

/// How long admissions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// An admission expires this long after the attestation that granted it.
    pub ttl_ms: u64,
    /// A challenge not answered within this is void.
    pub challenge_ms: u64,
}

/// Where a peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Connected (handshake done), not admitted.
    Connected,
    /// Admitted until `until_ms`, for the boot `boot_id` its evidence showed.
    Admitted {
        /// Expiry.
        until_ms: u64,
        /// The boot the attestation covered.
        boot_id: [u8; 32],
        /// Its node identity.
        node_identity: [u8; 32],
    },
    /// Refused; the reason, one line (audited by the caller).
    Refused {
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
}

/// What a verified attestation of a peer established (the verifier's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The nonce the quote bound.
    pub nonce: [u8; 32],
    /// The node identity the quote bound.
    pub node_identity: [u8; 32],
    /// The boot the evidence covers (e.g. a digest of its boot-unique measurements).
    pub boot_id: [u8; 32],
}

/// The admission table, by libp2p peer ID, with the challenges outstanding. A renewal
/// challenge leaves an admitted peer admitted until its answer (or its expiry).
#[derive(Debug, Default)]
pub struct Admissions {
    peers: BTreeMap<Vec<u8>, Standing>,
    challenges: BTreeMap<Vec<u8>, ([u8; 32], u64)>,
}

impl Admissions {
    /// Challenge `peer` with `nonce` (at connection, or to renew).
    pub fn challenge(&mut self, peer: &[u8], nonce: [u8; 32], now_ms: u64) {
        self.peers.entry(peer.to_vec()).or_insert(Standing::Connected);
        self.challenges.insert(peer.to_vec(), (nonce, now_ms));
    }

    /// The verifier's verdict on the peer's answer: admitted if it verified for the
    /// outstanding challenge in time; refused (with the reason) otherwise — a failed renewal
    /// ends an admission too.
    pub fn answer(
        &mut self,
        peer: &[u8],
        verdict: Result<Attested, String>,
        policy: &Policy,
        now_ms: u64,
    ) -> &Standing {
        let outcome = match (self.challenges.remove(peer), verdict) {
            (Some((nonce, since_ms)), Ok(a)) => {
                if a.nonce != nonce {
                    Standing::Refused { reason: "the quote binds another challenge".into(), at_ms: now_ms }
                } else if now_ms.saturating_sub(since_ms) > policy.challenge_ms {
                    Standing::Refused { reason: "the challenge was answered too late".into(), at_ms: now_ms }
                } else {
                    Standing::Admitted {
                        until_ms: now_ms.saturating_add(policy.ttl_ms),
                        boot_id: a.boot_id,
                        node_identity: a.node_identity,
                    }
                }
            }
            (Some(_), Err(why)) => Standing::Refused { reason: why, at_ms: now_ms },
            (None, _) => Standing::Refused { reason: "an answer to no outstanding challenge".into(), at_ms: now_ms },
        };
        let entry = self.peers.entry(peer.to_vec()).or_insert(Standing::Connected);
        *entry = outcome;
        entry
    }

    /// Whether `peer` may have governance traffic now.
    pub fn admitted(&self, peer: &[u8], now_ms: u64) -> bool {
        matches!(self.peers.get(peer), Some(Standing::Admitted { until_ms, .. }) if now_ms < *until_ms)
    }

    /// The peer disconnected: it attests again when it comes back.
    pub fn disconnected(&mut self, peer: &[u8]) {
        self.peers.remove(peer);
        self.challenges.remove(peer);
    }

    /// The peer showed evidence of another boot (it rebooted): its admission ends now.
    pub fn rebooted(&mut self, peer: &[u8], boot_id: [u8; 32], now_ms: u64) {
        if let Some(Standing::Admitted { boot_id: admitted, .. }) = self.peers.get(peer)
            && *admitted != boot_id
        {
            self.peers.insert(
                peer.to_vec(),
                Standing::Refused { reason: "rebooted since its attestation: must attest again".into(), at_ms: now_ms },
            );
        }
    }

    /// Admitted peers whose admission runs out within `margin_ms` and that have no challenge
    /// outstanding (to renew).
    pub fn due_for_renewal(&self, now_ms: u64, margin_ms: u64) -> Vec<Vec<u8>> {
        self.peers
            .iter()
            .filter(|(p, s)| {
                !self.challenges.contains_key(*p)
                    && matches!(s, Standing::Admitted { until_ms, .. } if until_ms.saturating_sub(now_ms) <= margin_ms)
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The nonce of the challenge outstanding for `peer`, if any.
    pub fn outstanding(&self, peer: &[u8]) -> Option<[u8; 32]> {
        self.challenges.get(peer).map(|(nonce, _)| *nonce)
    }

    /// Where `peer` stands.
    pub fn standing(&self, peer: &[u8]) -> Option<&Standing> {
        self.peers.get(peer)
    }
}
