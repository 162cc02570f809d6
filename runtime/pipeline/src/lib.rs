//! `sovereign-pipeline`: the Iron Path (seed 000) on the appliance — pipeline files parsed and
//! validated ([`spec`]), an encrypted artifact store on the data partition ([`store`]), and the
//! engine that runs each stage as a governed action: the operator's role signature, a policy
//! decision, a binding and a permit from the governance kernel, WASM stages in the sandbox,
//! every artifact hashed, sealed and logged ([`engine`]); the state on the data partition
//! bound to the TPM's NV counter so it cannot be rolled back ([`anchor`]); what can go wrong in either, by kind
//! ([`error`]).
//!
//! Without the default feature `engine` the crate is the pipeline file's parser alone (no
//! wasmtime, no CozoDB): what the operator CLI needs.
//!
//! Must never: run a stage without a permit, run a module whose release-signed manifest does
//! not pin its bytes, promote with fewer approvals than the pipeline and the policy require,
//! or report a rollback it did not prove.

#![forbid(unsafe_code)]

#[cfg(feature = "engine")]
pub mod anchor;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod error;
#[cfg(feature = "engine")]
pub mod gpu;
pub mod spec;
#[cfg(feature = "engine")]
pub mod store;

#[cfg(feature = "engine")]
pub use engine::{Answer, Engine, EngineConfig, ReleaseReference};
#[cfg(feature = "engine")]
pub use error::{EngineError, StoreError};
#[cfg(feature = "engine")]
pub use sovereign_protocol::pipeline::{Command, Reply, RunReport, RunStatus, StartRun};
pub use spec::Pipeline;
