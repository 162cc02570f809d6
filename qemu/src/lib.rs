//! `sovereign-qemu`: the harness that starts the processes a Sovereign test or demo needs — a
//! private software TPM per caller ([`swtpm`]) and QEMU + OVMF guests booting an appliance disk
//! with that TPM ([`guest`]).
//!
//! Invariants: every process it starts is owned by a value whose `Drop` kills it by PID and
//! reaps it; every file it writes lives in a temp dir that the same value removes. It never
//! talks to a TPM or a port it did not start (in particular never 127.0.0.1:2321/2322).
//!
//! Must never: be linked into the appliance image, or fall back to a shared/system TPM.

#![forbid(unsafe_code)]

pub mod guest;
pub mod hub;
pub mod swtpm;

pub use guest::{Appliance, Firmware, Guest, GuestError};
pub use swtpm::{Swtpm, SwtpmError};
