//! `sovereign-runtime` as a library: the control API server ([`control`]) that the daemon
//! binary runs on the appliance and that the benchmarks drive against a software TPM.
//!
//! Must never: answer a request the gate refused, or put anything secret in a response.

#![forbid(unsafe_code)]

pub mod control;
