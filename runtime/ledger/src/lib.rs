//! `sovereign-ledger`: Bitcoin SPV for licences and audit anchors. This crate is the **pure
//! verification core** (no IO, no clock, no network): header chains from a pinned checkpoint
//! with their proof of work, the difficulty rules of the chosen network and cumulative work
//! ([`chain`]); Merkle branches from a transaction to a header ([`merkle`]); and the licence
//! rule ([`licence`]); licence proof files for appliances with no network ([`proof`]). The network
//! edge (feature `electrum`): [`electrum`] fetches a licence proof from an Electrum server and
//! verifies it like an imported one. [`rule`] parses a node's licence rule (network, pinned
//! checkpoint, developer script, amount, depth) for the CLI and the appliance alike; [`regtest`]
//! mines proofs on a regtest chain in memory for host tests and the benchmark (nothing in the
//! appliance calls it).
//!
//! Must never: accept a header whose hash is above its target, a target above the network's
//! limit or other than the difficulty rules demand, a header that does not link to the one
//! before, a branch that does not lead to the header's Merkle root, or a transaction that does
//! not satisfy the licence rule; panic on any input.

#![forbid(unsafe_code)]

pub mod anchor;
pub mod chain;
#[cfg(feature = "electrum")]
pub mod electrum;
pub mod fuzzing;
pub mod licence;
pub mod merkle;
pub mod proof;
pub mod regtest;
pub mod rule;

pub use bitcoin;
