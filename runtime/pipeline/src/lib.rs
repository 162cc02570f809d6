//! `sovereign-pipeline`: the Iron Path (seed 000) on the appliance — pipeline files parsed and
//! validated ([`spec`]), an encrypted artifact store on the data partition ([`store`]), and the
//! engine that runs each stage as a governed action: the operator's role signature, a policy
//! decision, a binding and a permit from the governance kernel, WASM stages in the sandbox,
//! every artifact hashed, sealed and logged ([`engine`]).
//!
//! Must never: run a stage without a permit, run a module whose release-signed manifest does
//! not pin its bytes, promote with fewer approvals than the pipeline and the policy require,
//! or report a rollback it did not prove.

#![forbid(unsafe_code)]

pub mod engine;
pub mod spec;
pub mod store;

pub use engine::{Command, Engine, EngineConfig, Reply, RunReport, RunStatus, StartRun};
pub use spec::Pipeline;
