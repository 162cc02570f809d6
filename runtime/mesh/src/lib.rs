//! `sovereign-mesh`: the private mesh's pure core — the swarm key in the IPFS `swarm.key` format
//! that libp2p's pnet layer uses ([`swarm_key`]), and attestation-gated admission
//! ([`admission`]): what a peer's TPM quote must bind (a fresh nonce, its libp2p identity and its
//! node identity) and the admission table that gives a peer governance traffic only while a
//! verified attestation is fresh. The libp2p transport (TCP → pnet → Noise → Yamux), the
//! evidence exchange and the witnesses on the wire come next (issue 16).
//!
//! Must never: print or log the swarm key (only its fingerprint), admit a peer without a
//! verified attestation, or keep one admitted past its expiry or across its reboot.

#![forbid(unsafe_code)]

pub mod admission;
pub mod swarm_key;
