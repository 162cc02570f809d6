//! `sovereign-runtime` as a library: the control API server ([`control`]) that the daemon
//! binary runs on the appliance and that the benchmarks and host tests drive against a software
//! TPM, its TPM side ([`attestor`]), the fair queue in front of the pipeline engine
//! ([`scheduler`]), the check of the boot facts PID 1 hands over ([`boot`]), the metrics in the
//! Prometheus text format ([`metrics`]) and the GPU monitor's thread ([`gpu`]).
//!
//! Must never: answer a request the gate refused, or put anything secret in a response.

#![forbid(unsafe_code)]

pub mod attestor;
pub mod boot;
pub mod control;
pub mod gpu;
pub mod mesh;
pub mod metrics;
pub mod scheduler;
