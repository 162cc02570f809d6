//! The emergency stop: a state machine, pure. Engaged by a critical violation or an operator;
//! while engaged, no new GPU work starts (a governed kernel is refused by name, a
//! GPU-requiring policy sees `gpu_emergency_stop`); cleared only by `required` distinct holders
//! of the clearing role, each counted once, and a clearance of an earlier stop never counts
//! for a later one.
//!
//! Must never: clear on fewer distinct approvers than required, count one approver twice, or
//! forget it is engaged (the runtime keeps it durably: a restart does not clear it).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The role whose holders engage and clear the emergency stop.
pub const GPU_OPERATOR_ROLE: &str = "gpu-operator";

/// Where the stop stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopState {
    /// GPU work may start.
    Clear,
    /// No new GPU work.
    Engaged {
        /// Every reason it was engaged for, in order.
        reasons: Vec<String>,
        /// When it was first engaged, ms since the Unix epoch.
        since_ms: u64,
        /// A number that changes with every engagement: what a clearance approves.
        generation: u64,
        /// Operators (Ed25519 public keys) whose clearance is counted.
        cleared_by: BTreeSet<[u8; 32]>,
    },
}

/// The stop, with its generation counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyStop {
    /// The state.
    pub state: StopState,
    /// Engagements so far.
    pub generation: u64,
}

impl Default for EmergencyStop {
    fn default() -> Self {
        EmergencyStop { state: StopState::Clear, generation: 0 }
    }
}

/// What a clearance did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Clearance {
    /// Counted; more are needed.
    Counted {
        /// Distinct clearances now.
        have: usize,
        /// Needed.
        need: usize,
    },
    /// The stop is cleared.
    Cleared,
}

/// Why a clearance was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClearRefused {
    /// There is nothing to clear.
    #[error("the GPU emergency stop is not engaged")]
    NotEngaged,
    /// The clearance names another engagement.
    #[error("the clearance is for engagement {given}, the stop engaged now is {current}")]
    WrongGeneration {
        /// In the clearance.
        given: u64,
        /// Now.
        current: u64,
    },
}

impl EmergencyStop {
    /// Engages the stop (or adds a reason to the engaged one). Returns whether it was clear.
    pub fn engage(&mut self, reason: &str, now_ms: u64) -> bool {
        match &mut self.state {
            StopState::Engaged { reasons, .. } => {
                if reasons.len() < 32 && !reasons.iter().any(|r| r == reason) {
                    reasons.push(reason.into());
                }
                false
            }
            StopState::Clear => {
                self.generation += 1;
                self.state = StopState::Engaged {
                    reasons: vec![reason.into()],
                    since_ms: now_ms,
                    generation: self.generation,
                    cleared_by: BTreeSet::new(),
                };
                true
            }
        }
    }

    /// Counts `operator`'s clearance of engagement `generation` (the caller has verified the
    /// operator's signature and role); clears when `required` distinct operators have.
    pub fn clear(&mut self, operator: [u8; 32], generation: u64, required: usize) -> Result<Clearance, ClearRefused> {
        let StopState::Engaged { cleared_by, generation: current, .. } = &mut self.state else {
            return Err(ClearRefused::NotEngaged);
        };
        if generation != *current {
            return Err(ClearRefused::WrongGeneration { given: generation, current: *current });
        }
        cleared_by.insert(operator);
        let have = cleared_by.len();
        let need = required.max(1);
        if have >= need {
            self.state = StopState::Clear;
            Ok(Clearance::Cleared)
        } else {
            Ok(Clearance::Counted { have, need })
        }
    }

    /// `Ok` when GPU work may start; otherwise the one line that says why not.
    pub fn permits_work(&self) -> Result<(), String> {
        match &self.state {
            StopState::Clear => Ok(()),
            StopState::Engaged { reasons, generation, .. } => Err(format!(
                "GPU emergency stop {generation} engaged: {} (cleared only by the {GPU_OPERATOR_ROLE} role)",
                reasons.join("; ")
            )),
        }
    }

    /// Whether it is engaged.
    pub fn engaged(&self) -> bool {
        matches!(self.state, StopState::Engaged { .. })
    }
}

/// What a `gpu-operator` signs (as an approval's request digest) to clear engagement
/// `generation` of node `node`'s emergency stop.
pub fn clear_digest(node: &[u8; 32], generation: u64) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"sovereign-gpu-clear/v1\n");
    h.update(node);
    h.update(generation.to_be_bytes());
    h.finalize().into()
}
