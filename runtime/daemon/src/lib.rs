//! `sovereign-runtime` as a library: the control API server ([`control`]) that the daemon
//! binary runs on the appliance and that the benchmarks drive against a software TPM, and the
//! check of the boot facts PID 1 hands over ([`boot`]).
//!
//! Must never: answer a request the gate refused, or put anything secret in a response.

#![forbid(unsafe_code)]

pub mod boot;
pub mod control;
