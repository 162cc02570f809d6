//! The deployment a compliance bundle's log holds, recomputed offline (`deployment.rollbacks`):
//! every promotion and rollback `artifact` entry carries its stage's output, and
//! [`sovereign_protocol::deployment::DeploymentReplay`] checks each rollback's claims — the
//! promotion it undoes (by audit entry), the model taken down, the state restored — against the
//! state the log's own earlier entries give. A claim the log does not hold fails by entry.

use std::collections::BTreeMap;

use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::{Report, fail};
use sovereign_audit::{Entry, EntryKind};
use sovereign_protocol::deployment::{DeploymentReplay, PromotionOutput, RollbackOutput};

/// Recomputes the deployment from the bundle's entries. Owns no section.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeploymentChecker;

#[derive(serde::Deserialize)]
struct StagePayload {
    run: String,
    #[serde(rename = "type")]
    kind: String,
    output: Option<serde_json::Value>,
}

impl SectionChecker for DeploymentChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec![]
    }

    fn check(&self, report: &mut Report, entries: &[(String, Entry)], _files: &BTreeMap<String, Vec<u8>>) {
        let mut replay = DeploymentReplay::default();
        let mut failures = Vec::new();
        let starts_at_zero = entries.first().is_none_or(|(place, _)| place == "entry 0");
        for (place, entry) in entries.iter().filter(|(_, e)| e.kind == EntryKind::Artifact) {
            let Ok(payload) = serde_json::from_slice::<StagePayload>(&entry.payload) else { continue };
            if payload.kind != "promotion" && payload.kind != "rollback" {
                continue;
            }
            let result = (|| -> Result<(), String> {
                if !starts_at_zero {
                    return Err(
                        "not evaluated: the bundle does not start at entry 0, so the deployment before it is unknown"
                            .into(),
                    );
                }
                let output = payload.output.ok_or("the entry carries no stage output")?;
                let artifact = entry.digests.first().ok_or("the entry has no artifact digest")?;
                if payload.kind == "promotion" {
                    let index = place
                        .strip_prefix("entry ")
                        .and_then(|n| n.parse::<u64>().ok())
                        .ok_or_else(|| format!("{place} is not an entry index"))?;
                    let output: PromotionOutput =
                        serde_json::from_value(output).map_err(|e| format!("promotion output: {e}"))?;
                    replay.promotion(index, &payload.run, artifact, &output)
                } else {
                    let output: RollbackOutput =
                        serde_json::from_value(output).map_err(|e| format!("rollback output: {e}"))?;
                    replay.rollback(artifact, &output)
                }
            })();
            if let Err(why) = result {
                failures.push(fail(place.as_str(), why));
            }
        }
        report.add(
            "deployment.rollbacks",
            replay.rollbacks,
            failures,
            format!(
                "{} promotions replayed from an empty deployment; {} rollbacks each restore the state the log holds before the promotion they undo",
                replay.promotions, replay.rollbacks
            ),
        );
    }
}
