//! `sovereign-qemu`: the harness that starts the processes a Sovereign test or demo needs —
//! today a private software TPM per caller ([`swtpm`]); the QEMU + OVMF guest launcher joins it
//! with the boot-chain work.
//!
//! Invariants: every process it starts is owned by a value whose `Drop` kills it by PID and
//! reaps it; every file it writes lives in a temp dir that the same value removes. It never
//! talks to a TPM or a port it did not start (in particular never 127.0.0.1:2321/2322).
//!
//! Must never: be linked into the appliance image, or fall back to a shared/system TPM.

#![forbid(unsafe_code)]

pub mod swtpm;

pub use swtpm::{Swtpm, SwtpmError};
