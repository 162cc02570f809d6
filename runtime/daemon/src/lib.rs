//! `sovereign-runtime` as a library: the control API server ([`control`]) that the daemon
//! binary runs on the appliance and that the benchmarks and host tests drive against a software
//! TPM, its TPM side ([`attestor`]), the fair queue in front of the pipeline engine
//! ([`scheduler`]), and the check of the boot facts PID 1 hands over ([`boot`]).
//!
//! Must never: answer a request the gate refused, or put anything secret in a response.

#![forbid(unsafe_code)]

pub mod attestor;
pub mod boot;
pub mod control;
pub mod mesh;
pub mod scheduler;
