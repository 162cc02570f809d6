//! `sovereign-governance`: the decision-making heart of the runtime (SPEC §6).
//!
//! - [`canonical`] — the byte encoding of everything signed (crate `sovereign-canonical`,
//!   `docs/governance-formats.md`).
//! - [`signed`] — config snapshots, role certificates and revocation lists (admin root key),
//!   role signatures bound to a context, policy-state bindings.
//! - [`approvals`] — M-of-N approvals for guarded actions.
//! - [`replay`] — the persistent, crash-safe store of single-use identifiers.
//! - [`policy`] — Datalog policies (CozoDB) from signed bundles, deterministic decision records,
//!   memoized, re-evaluable offline.
//! - [`governor`] — a governed action end to end: role signature, approvals, decision, binding,
//!   permit; every refusal and decision audited.
//! - [`kernel`] — the execution kernel: only a verified binding yields the [`kernel::Permit`]
//!   that execution takes; every attempt is audited.
//!
//! Without the default feature `engine` the crate is the signed formats only (no CozoDB, no
//! governor): what the control protocol and the operator CLI need.
//!
//! Pure except [`replay`] and the kernel's audit appends. Must never: execute without a
//! verified binding, accept an identifier twice, or count one approver twice.

#![forbid(unsafe_code)]

pub mod approvals;
/// The signing encoding (crate `sovereign-canonical`, shared with the sandbox).
pub mod canonical {
    pub use sovereign_canonical::*;
}
#[cfg(feature = "engine")]
pub mod fuzzing;
#[cfg(feature = "engine")]
pub mod governor;
pub mod kernel;
pub mod policy;
pub mod replay;
pub mod signed;
