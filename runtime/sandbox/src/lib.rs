//! `sovereign-sandbox`: runs WASM stage modules on wasmtime with no ambient authority.
//!
//! - A module runs only with a **manifest signed by the release key** naming its SHA-256, name,
//!   version and the capabilities it may ask for; unsigned or hash-mismatched modules are
//!   refused before compilation.
//! - **Capabilities** are host functions in the `sovereign` import module, linked only when the
//!   stage grants them (and the manifest declares them): `input_len`/`input_read` (read the
//!   input artifact), `output_write` (write the output artifact), `log`, `random`, `clock_ms`. An
//!   import of anything else, or of a capability not granted, refuses the module with its name.
//!   There is no WASI: no filesystem, no network, no environment.
//! - **Limits**: fuel (instructions), linear memory (pooling allocator + store limiter), wall
//!   clock (epoch interruption), stack depth, output size. Each ends the run as a
//!   [`Termination`] with its reason; the host keeps running.
//! - **Deterministic**: NaN canonicalization, no threads, deterministic relaxed SIMD; a stage
//!   replayed on the same input (without `random`/`clock_ms`) produces the same output hash.
//!
//! Without the default feature `runtime` the crate is the signed [`ModuleManifest`] alone (no
//! wasmtime): what the control protocol and the operator CLI need.
//!
//! Must never: run a module whose bytes were not signed for, give a module a capability the
//! stage did not grant, or let a module's failure take the host down.

#![forbid(unsafe_code)]

pub mod manifest;
#[cfg(feature = "runtime")]
pub mod sandbox;

pub use manifest::{Capability, ModuleManifest};
#[cfg(feature = "runtime")]
pub use sandbox::{Limits, LoadedModule, Outcome, Sandbox, Termination};
