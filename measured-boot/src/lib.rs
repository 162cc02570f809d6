//! `sovereign-measured-boot`: everything Sovereign does with a TPM, and everything a verifier
//! does with what a TPM produced.
//!
//! - [`pcr`], [`eventlog`], [`measurement_log`], [`structures`], [`policy`], [`floor`], [`verify`] are
//!   **pure**: no IO, no clock, no randomness, no C library. They parse untrusted bytes into
//!   typed errors (never panics), predict PCR and policy digests, and verify quotes offline.
//!   Build with `default-features = false` to get only these (the operator's verifier does).
//! - [`credential`] (TPM2_MakeCredential for the verifier) and [`ekcert`] (EK certificate chain)
//!   are pure as well.
//! - [`tpm`] (feature `tpm`, on by default) is the thin edge over tss-esapi 7.7: PCR
//!   read/extend, seal/unseal to predicted PCRs and to signed PCR policies
//!   (PolicyAuthorize, ECDSA P-256), the attestation key, credential activation, the EK
//!   certificate, quotes, NV counters and the anti-rollback floor (an NV bit field checked by
//!   PolicyNV in every release's signed policy).
//!
//! Invariants: the verifier reports every check and passes only when all ran and passed; a
//! measurement is logged only after the TPM accepted the extension; every transient TPM object
//! or session this crate creates is flushed before the call returns — except the attestation key
//! and its EK parent, which [`tpm::AttestationKey`] holds until the caller releases it.
//!
//! Must never: trust a PCR value it did not see proven by a quote or replayed from a log;
//! accept evidence in a bank or algorithm it does not model (sha256 / ECDSA P-256 only); hold
//! an unsealed secret longer than the caller asks.

#![forbid(unsafe_code)]

pub mod credential;
pub mod ekcert;
pub mod eventlog;
pub mod floor;
pub mod fuzzing;
pub mod measurement_log;
pub mod pcr;
pub mod policy;
pub mod sealed;
pub mod structures;
pub mod verify;
pub mod wire;

#[cfg(feature = "tpm")]
pub mod tpm;

pub use eventlog::{EventLog, EventLogBuilder};
pub use measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
pub use pcr::{PcrSelection, PcrValues, Sha256Digest};
pub use policy::{PolicyKey, SignedPcrPolicy};
#[cfg(feature = "tpm")]
pub use sealed::SealedBlob;
#[cfg(feature = "tpm")]
pub use tpm::{AttestationKey, Tpm, TpmError};
pub use verify::{Expectations, QuoteEvidence, Report, verify_quote};
