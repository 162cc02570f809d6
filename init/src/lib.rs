//! `sovereign-init`: PID 1 of the Sovereign appliance.
//!
//! Boot order (see `main.rs`): mount the kernel filesystems → verify the signed manifest with
//! the release key compiled in → check every node of the initramfs against it, hashing on every
//! CPU, while the listed modules load in order on a thread of their own, each once its file
//! verified → measure the manifest and runtime configuration into PCR 15 (with the
//! measurement log) → read this release's signed PCR policy from the ESP and survey the boot
//! slots (is this a trial?) → unseal the node keys (first boot: generate, seal, prove they
//! unseal) → close the unseal window → lock down → start the runtime with the keys on a pipe →
//! supervise it (once it is healthy: bless a trial, then raise the anti-rollback floor; when it
//! asks, install the staged update on trial) → power off, or reboot (a failed trial, an update).
//!
//! This library holds the parts that can be tested off the appliance: the initramfs audit
//! against the manifest, the module loader's ordering, the release check before unsealing
//! (PCRs and the kernel command line), the state-partition format, the staged update's record
//! (`staged`), the boot slots on a mounted ESP (`esp`), the NVIDIA device nodes a driver image
//! needs (`devices`), and the shutdown's stop-and-reap. Pure
//! except `audit`, which reads a directory tree, `esp`, which reads and writes the ESP it is
//! given, `loader`, which runs the caller's loading on a thread, and `shutdown`, which signals
//! and reaps child processes.
//!
//! Must never: start a shell or anything but the manifest's runtime; write a key to disk;
//! install an update it has not verified itself or touch the slot it booted from;
//! continue after a failed check; depend on tokio, a wasm engine or a network stack
//! (enforced by `tests/dependency_rules.rs`).

#![forbid(unsafe_code)]

pub mod audit;
pub mod devices;
pub mod esp;
pub mod loader;
pub mod network;
pub mod release;
pub mod sealing;
pub mod shutdown;
pub mod staged;
pub mod state;
