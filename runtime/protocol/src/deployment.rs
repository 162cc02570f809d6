//! What is deployed, and how an auditor recomputes it from the audit log alone.
//!
//! The engine keeps the deployment as a stack of promotions (the last one is live). Each
//! promotion and each rollback is logged as an `artifact` entry whose payload carries the
//! stage's whole output ([`PromotionOutput`], [`RollbackOutput`]); the entry's first digest is
//! the SHA-256 of that output's canonical JSON. A rollback names the audit entry of the
//! promotion it undoes. [`DeploymentReplay`] walks those entries in log order from an empty
//! deployment and checks every claim against the state it recomputed: a rollback whose
//! restored or recorded state, undone model or undone entry is not what the log holds fails,
//! by entry. Pure: no IO.

use serde::{Deserialize, Serialize};
use sovereign_governance::canonical::{canonical_json, sha256};

/// One promotion, as the deployment state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The model.
    pub model: [u8; 32],
    /// The run that promoted it.
    pub run_id: String,
    /// SHA-256 of the deployment state just before this promotion.
    pub state_before: [u8; 32],
}

/// What is deployed: the stack of promotions (the last one is live).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Promotions in order; the last is the live model.
    pub promotions: Vec<Promoted>,
}

impl Deployment {
    /// SHA-256 of the canonical JSON of the state.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&canonical_json(&serde_json::to_value(self).unwrap_or_default()))
    }

    /// The live model.
    pub fn live(&self) -> Option<[u8; 32]> {
        self.promotions.last().map(|p| p.model)
    }
}

/// A promotion stage's output (hex digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionOutput {
    /// The promoted model.
    pub model: String,
    /// The operators whose approvals counted.
    pub approvers: Vec<String>,
    /// The deployment state's hash before.
    pub state_before: String,
    /// The deployment state's hash after.
    pub state_after: String,
}

/// A rollback stage's output (hex digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackOutput {
    /// The model taken down.
    pub rolled_back: String,
    /// The audit entry (index) that recorded the promotion undone.
    pub undoes_entry: u64,
    /// The model live again, if any.
    pub restored_model: Option<String>,
    /// The deployment state's hash after the rollback.
    pub restored_state: String,
    /// The state hash the undone promotion recorded before itself (equal to `restored_state`).
    pub recorded_state: String,
}

/// A stage output as canonical JSON bytes (what the artifact digest covers).
pub fn output_bytes<T: Serialize>(output: &T) -> Vec<u8> {
    canonical_json(&serde_json::to_value(output).unwrap_or_default())
}

/// A deployment recomputed from the log, checking every claim on the way.
#[derive(Debug, Default)]
pub struct DeploymentReplay {
    /// The recomputed state, with the entry that recorded each promotion.
    state: Deployment,
    entries: Vec<u64>,
    /// Rollbacks checked.
    pub rollbacks: u64,
    /// Promotions seen.
    pub promotions: u64,
}

impl DeploymentReplay {
    /// The state recomputed so far.
    pub fn state(&self) -> &Deployment {
        &self.state
    }

    /// A promotion logged at `entry` by `run`, whose artifact digest is `artifact`.
    pub fn promotion(
        &mut self,
        entry: u64,
        run: &str,
        artifact: &[u8; 32],
        output: &PromotionOutput,
    ) -> Result<(), String> {
        check_digest(artifact, output)?;
        let model = unhex("model", &output.model)?;
        let before = self.state.hash();
        if unhex("state_before", &output.state_before)? != before {
            return Err(format!(
                "promotion claims state {} before it; the log's promotions give {}",
                output.state_before,
                hex(&before)
            ));
        }
        self.state.promotions.push(Promoted { model, run_id: run.into(), state_before: before });
        self.entries.push(entry);
        self.promotions += 1;
        let after = self.state.hash();
        if unhex("state_after", &output.state_after)? != after {
            return Err(format!("promotion claims state {} after it; recomputed {}", output.state_after, hex(&after)));
        }
        Ok(())
    }

    /// A rollback whose artifact digest is `artifact`.
    pub fn rollback(&mut self, artifact: &[u8; 32], output: &RollbackOutput) -> Result<(), String> {
        check_digest(artifact, output)?;
        self.rollbacks += 1;
        let (Some(top), Some(top_entry)) = (self.state.promotions.pop(), self.entries.pop()) else {
            return Err("rollback with no promotion in the log to undo".into());
        };
        if output.undoes_entry != top_entry {
            return Err(format!(
                "rollback claims to undo the promotion at entry {}; the live promotion was recorded at entry {top_entry}",
                output.undoes_entry
            ));
        }
        if unhex("rolled_back", &output.rolled_back)? != top.model {
            return Err(format!(
                "rollback claims to take down {}; the live model was {}",
                output.rolled_back,
                hex(&top.model)
            ));
        }
        if unhex("recorded_state", &output.recorded_state)? != top.state_before {
            return Err(format!(
                "rollback claims the undone promotion recorded state {}; the log's promotion recorded {}",
                output.recorded_state,
                hex(&top.state_before)
            ));
        }
        let restored = self.state.hash();
        if unhex("restored_state", &output.restored_state)? != restored {
            return Err(format!(
                "rollback claims restored state {}; the state before the undone promotion is {}",
                output.restored_state,
                hex(&restored)
            ));
        }
        let live = self.state.live().map(|m| hex(&m));
        if output.restored_model != live {
            return Err(format!(
                "rollback claims restored model {:?}; the log's deployment has {:?} live",
                output.restored_model, live
            ));
        }
        Ok(())
    }
}

fn check_digest<T: Serialize>(artifact: &[u8; 32], output: &T) -> Result<(), String> {
    if &sha256(&output_bytes(output)) != artifact {
        return Err("the output in the entry does not hash to the entry's artifact digest".into());
    }
    Ok(())
}

fn hex(b: &[u8; 32]) -> String {
    hex::encode(b)
}

fn unhex(field: &str, s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("{field}: not a 32-byte hex digest ({e})"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promote(replay: &mut DeploymentReplay, entry: u64, model: u8) -> Result<(), String> {
        let mut next = replay.state.clone();
        let before = next.hash();
        next.promotions.push(Promoted { model: [model; 32], run_id: format!("run-{model}"), state_before: before });
        let out = PromotionOutput {
            model: hex(&[model; 32]),
            approvers: vec![],
            state_before: hex(&before),
            state_after: hex(&next.hash()),
        };
        replay.promotion(entry, &format!("run-{model}"), &sha256(&output_bytes(&out)), &out)
    }

    fn honest_rollback(replay: &DeploymentReplay) -> RollbackOutput {
        let mut after = replay.state.clone();
        let top = after.promotions.pop().unwrap_or_else(|| Promoted {
            model: [0; 32],
            run_id: String::new(),
            state_before: [0; 32],
        });
        RollbackOutput {
            rolled_back: hex(&top.model),
            undoes_entry: replay.entries.last().copied().unwrap_or(0),
            restored_model: after.live().map(|m| hex(&m)),
            restored_state: hex(&after.hash()),
            recorded_state: hex(&top.state_before),
        }
    }

    fn rollback(replay: &mut DeploymentReplay, out: &RollbackOutput) -> Result<(), String> {
        replay.rollback(&sha256(&output_bytes(out)), out)
    }

    #[test]
    fn an_honest_history_replays_and_every_tampered_claim_fails_by_name() {
        let mut base = DeploymentReplay::default();
        promote(&mut base, 10, 1).unwrap();
        promote(&mut base, 20, 2).unwrap();
        let honest = honest_rollback(&base);
        let mut replay =
            DeploymentReplay { state: base.state.clone(), entries: base.entries.clone(), ..Default::default() };
        rollback(&mut replay, &honest).unwrap();
        assert_eq!(replay.state.live(), Some([1; 32]));

        let tampered = |f: &dyn Fn(&mut RollbackOutput)| {
            let mut out = honest.clone();
            f(&mut out);
            let mut r =
                DeploymentReplay { state: base.state.clone(), entries: base.entries.clone(), ..Default::default() };
            rollback(&mut r, &out).unwrap_err()
        };
        assert!(tampered(&|o| o.restored_state = hex(&[9; 32])).contains("claims restored state"));
        assert!(tampered(&|o| o.recorded_state = hex(&[9; 32])).contains("recorded state"));
        assert!(tampered(&|o| o.undoes_entry = 10).contains("recorded at entry 20"));
        assert!(tampered(&|o| o.rolled_back = hex(&[1; 32])).contains("take down"));
        assert!(tampered(&|o| o.restored_model = None).contains("restored model"));
        // A claim changed after hashing: the entry's digest no longer covers it.
        let mut r = DeploymentReplay { state: base.state.clone(), entries: base.entries.clone(), ..Default::default() };
        let mut changed = honest.clone();
        changed.restored_state = hex(&[9; 32]);
        assert!(r.rollback(&sha256(&output_bytes(&honest)), &changed).unwrap_err().contains("does not hash"));
        // Nothing to undo.
        let mut empty = DeploymentReplay::default();
        assert!(rollback(&mut empty, &honest).unwrap_err().contains("no promotion"));
        // A promotion that claims another starting state.
        let mut r = DeploymentReplay::default();
        let out = PromotionOutput {
            model: hex(&[3; 32]),
            approvers: vec![],
            state_before: hex(&[9; 32]),
            state_after: hex(&[9; 32]),
        };
        assert!(r.promotion(1, "x", &sha256(&output_bytes(&out)), &out).unwrap_err().contains("before it"));
    }
}
