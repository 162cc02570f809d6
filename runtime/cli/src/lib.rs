//! Library side of the `sovereign` CLI: the control-API client ([`client`], used by the CLI and
//! by the end-to-end tests), attestation ([`attest`]), the attestation a compliance bundle carries
//! ([`bundle_attestation`]), pipelines ([`pipeline`]) and the offline
//! re-evaluation of decisions ([`decisions`]). The transport is a byte stream to the
//! appliance's control API ([`Endpoint`]): the unix socket QEMU exposes for its virtio-serial
//! port, or (feature `net`) a control stream over the private mesh with the swarm key.
//!
//! Must never: accept a response it has not verified against the node identity and its own
//! request, send an unsigned request, or treat a check it could not complete as passed.

#![forbid(unsafe_code)]

pub mod anchors;
pub mod attest;
pub mod bundle_attestation;
pub mod client;
pub mod decisions;
pub mod deployment;
pub mod licences;
pub mod metrics;
pub mod pipeline;
pub mod roles;

pub use client::{Answer, Endpoint, Transfer, discover, exchange, node_identity, send, sign};
