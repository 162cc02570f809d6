//! `sovereign-mesh`: the private mesh. Its pure core: the swarm key in the IPFS `swarm.key`
//! format that libp2p's pnet layer uses ([`swarm_key`]), the wire messages ([`wire`]: bounded,
//! decoded whole or refused), and attestation-gated admission ([`admission`]): what a peer's
//! TPM quote must bind (a fresh nonce, its libp2p identity and its node identity) and the
//! admission table that gives a peer governance traffic only while a verified attestation is
//! fresh. Its network edge (feature `net`): [`node`], a libp2p 0.57 node — TCP → pnet → Noise →
//! Yamux with a transport timeout — that challenges every peer that connects, admits it only on
//! the caller's verifier's word, and witnesses (cosigns) admitted peers' checkpoints; and
//! [`control`], the control API's byte streams over the same transport (served to any peer
//! that holds the swarm key; the API's signed-request gate decides the rest) and streams
//! between nodes. [`transfer`] frames update bundles pulled from one node by another (asked
//! for by digest, bounded, the digest checked; served to admitted peers only).
//!
//! Must never: print or log the swarm key (only its fingerprint), admit a peer without a
//! verified attestation, serve governance traffic (witnessing) to a peer not admitted, keep one
//! admitted past its expiry or across its reboot, or let a peer's bytes allocate past the
//! message limit.

#![forbid(unsafe_code)]

pub mod admission;
#[cfg(feature = "net")]
pub mod control;
/// The libp2p this crate is built on (its identity types appear in [`node`]'s API).
#[cfg(feature = "net")]
pub use libp2p;
#[cfg(feature = "net")]
pub mod node;
pub mod swarm_key;
pub mod transfer;
pub mod wire;
