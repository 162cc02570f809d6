//! `sovereign-gpu`: GPU governance (seed 004, SPEC "GPU governance"). NVML monitors sample every
//! device into typed readings ([`reading`], [`nvml`]); validators judge them against the node's
//! signed limits into violations with a severity ([`validate`], pure); enforcers decide what to
//! do — lower a power limit, stop a workload, engage the emergency stop ([`enforce`], pure) —
//! and the emergency stop is a state machine cleared only by M distinct `gpu-operator` holders
//! ([`estop`], pure). Governed kernels ([`kernel`]) are launched through cudarc with their
//! memory budget checked before allocation and a wall-clock limit.
//!
//! Where there is no GPU (no driver, no device) every entry point says so — `no GPU: <reason>`
//! — and nothing panics: NVML's absence is an error value, and the CUDA driver library is
//! checked for before cudarc is asked for a context (it panics otherwise).
//!
//! Must never: launch a kernel the caller did not verify; allocate device memory before the
//! budget is checked; treat an unreadable value as a good one; panic on any reading.

pub mod enforce;
pub mod estop;
pub mod kernel;
mod launch;
pub mod nvml;
pub mod reading;
pub mod validate;

pub use enforce::{Action, decide};
pub use estop::{EmergencyStop, GPU_OPERATOR_ROLE};
pub use kernel::{KernelError, KernelLimits, Launcher};
pub use nvml::{NvmlMonitor, Presence};
pub use reading::{DeviceReading, Sample};
pub use validate::{History, Severity, Violation, validate};
