//! The pipeline file (seed 000's YAML): parsing and validation into typed stages. Pure.
//!
//! ```yaml
//! name: iron-path
//! version: "1.0.0"
//! description: "…"
//! stages:
//!   - name: prepare
//!     type: data_preparation
//!     dataset: sensors.csv
//!     dataset_sha256: "…64 hex…"
//!     module: normalize
//!   - { name: train, type: model_training, module: train }
//!   - name: review
//!     type: agent_chain
//!     consensus: unanimous            # or majority, or "2-of-3"
//!     agents:
//!       - { name: accuracy, module: agent, policy: "max_mse=0.5,min_rows=10" }
//!   - { name: promote, type: promotion, approvals: 2, role: approver }
//!   - { name: rollback, type: rollback }
//!   - { name: export, type: audit_export }
//! # A governed GPU kernel (a release-signed PTX/cubin image, sent like a module):
//! #  - { name: invert, type: gpu_kernel, kernel: invert, entry: invert,
//! #      output_bytes: 4096, threads: 256, memory_bytes: 65536, time_limit_ms: 2000 }
//! governance:
//!   enforcement_level: strict
//!   policy_binding_required: true
//!   role_signatures_required: true
//! ```
//!
//! Fail closed: an unknown key, a missing parameter, a stage out of order, or governance that
//! asks for less than strict enforcement is refused with the one thing that is wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest pipeline file accepted.
pub const MAX_PIPELINE_BYTES: usize = 64 * 1024;
/// Most stages in one pipeline.
pub const MAX_STAGES: usize = 32;
/// Most agents in one agent chain.
pub const MAX_AGENTS: usize = 16;
/// Largest output a GPU kernel stage may ask for (its artifact is stored like any stage's).
pub const MAX_KERNEL_BYTES: u64 = 64 * 1024 * 1024;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    stages: Vec<RawStage>,
    governance: Governance,
}

#[derive(Debug, Clone, Deserialize)]
struct RawStage {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    params: BTreeMap<String, serde_json::Value>,
}

/// The pipeline's `governance` block. This appliance runs only strict, fully governed
/// pipelines; the block is validated, not obeyed blindly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// Must be `strict`.
    pub enforcement_level: String,
    /// Must be true: every stage runs under a policy binding.
    pub policy_binding_required: bool,
    /// Must be true: every stage runs under an operator's role signature.
    pub role_signatures_required: bool,
}

/// How an agent chain decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consensus {
    /// Every agent approves.
    Unanimous,
    /// More than half approve.
    Majority,
    /// At least this many approve.
    AtLeast(usize),
}

impl Consensus {
    /// Whether `approvals` of `agents` satisfy the rule.
    pub fn reached(self, approvals: usize, agents: usize) -> bool {
        match self {
            Consensus::Unanimous => approvals == agents,
            Consensus::Majority => approvals * 2 > agents,
            Consensus::AtLeast(m) => approvals >= m,
        }
    }

    /// The rule as written in the pipeline.
    pub fn describe(self, agents: usize) -> String {
        match self {
            Consensus::Unanimous => format!("unanimous ({agents} of {agents})"),
            Consensus::Majority => format!("majority (> {agents}/2)"),
            Consensus::AtLeast(m) => format!("{m}-of-{agents}"),
        }
    }
}

/// One reviewing agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Its name in the report.
    pub name: String,
    /// The module it runs.
    pub module: String,
    /// The policy line handed to it after the model.
    #[serde(default)]
    pub policy: String,
}

/// What a stage does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageKind {
    /// Verifies the dataset's hash, then runs `module` on it.
    DataPreparation {
        /// The dataset's file name (the operator sends the bytes).
        dataset: String,
        /// The SHA-256 the dataset must have.
        dataset_sha256: [u8; 32],
        /// The preparing module.
        module: String,
    },
    /// Runs `module` on the prepared data; records provenance (input, module, parameters).
    ModelTraining {
        /// The training module.
        module: String,
        /// Parameters recorded in the provenance (hashed canonically).
        parameters: serde_json::Value,
    },
    /// Every agent reviews the model; the consensus rule decides.
    AgentChain {
        /// The agents.
        agents: Vec<Agent>,
        /// The rule.
        consensus: Consensus,
    },
    /// M-of-N approvals promote the model.
    Promotion {
        /// How many distinct approvers.
        approvals: usize,
        /// The role approvers must hold.
        role: String,
    },
    /// Restores the previously promoted model and proves it.
    Rollback,
    /// Exports the compliance bundle, with attestation evidence.
    AuditExport,
    /// Runs a governed GPU kernel (a release-signed PTX or cubin image, hash-pinned like a
    /// module) on the previous stage's output (the dataset, when it is the first stage), with
    /// its device memory and wall-clock time bounded. Refused by name without a GPU.
    GpuKernel {
        /// The kernel image's name (its signed manifest's).
        kernel: String,
        /// The entry point.
        entry: String,
        /// Output buffer size, bytes.
        output_bytes: u64,
        /// Threads per block.
        threads: u32,
        /// Device memory the launch may use (input + output), bytes.
        memory_bytes: u64,
        /// Wall-clock limit, milliseconds.
        time_limit_ms: u64,
    },
}

impl StageKind {
    /// The stage type as written in the pipeline.
    pub fn type_name(&self) -> &'static str {
        match self {
            StageKind::DataPreparation { .. } => "data_preparation",
            StageKind::ModelTraining { .. } => "model_training",
            StageKind::AgentChain { .. } => "agent_chain",
            StageKind::Promotion { .. } => "promotion",
            StageKind::Rollback => "rollback",
            StageKind::AuditExport => "audit_export",
            StageKind::GpuKernel { .. } => "gpu_kernel",
        }
    }

    /// The governed action of a stage of this type.
    pub fn action(&self) -> String {
        format!("pipeline.{}", self.type_name())
    }

    /// Module names the stage runs.
    pub fn modules(&self) -> Vec<&str> {
        match self {
            StageKind::DataPreparation { module, .. } | StageKind::ModelTraining { module, .. } => vec![module],
            StageKind::AgentChain { agents, .. } => agents.iter().map(|a| a.module.as_str()).collect(),
            _ => vec![],
        }
    }

    /// GPU kernel images the stage launches (signed like modules, never run as WASM).
    pub fn kernels(&self) -> Vec<&str> {
        match self {
            StageKind::GpuKernel { kernel, .. } => vec![kernel],
            _ => vec![],
        }
    }
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Its name (unique in the pipeline).
    pub name: String,
    /// What it does.
    pub kind: StageKind,
}

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Name (also the environment role signatures name).
    pub name: String,
    /// Version string.
    pub version: String,
    /// Description.
    pub description: String,
    /// Stages, in order.
    pub stages: Vec<Stage>,
    /// The governance block.
    pub governance: Governance,
}

/// Why a pipeline file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipeline: {0}")]
pub struct SpecError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(why.into()))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

struct Params<'a> {
    stage: &'a str,
    map: BTreeMap<String, serde_json::Value>,
}

impl Params<'_> {
    fn take(&mut self, key: &str) -> Result<serde_json::Value, SpecError> {
        self.map.remove(key).map_or_else(|| err(format!("stage {}: missing parameter `{key}`", self.stage)), Ok)
    }

    fn text(&mut self, key: &str) -> Result<String, SpecError> {
        match self.take(key)? {
            serde_json::Value::String(s) if valid_name(&s) => Ok(s),
            other => err(format!("stage {}: `{key}` must be a name ([A-Za-z0-9._-], 1-64), not {other}", self.stage)),
        }
    }

    fn finish(self) -> Result<(), SpecError> {
        match self.map.keys().next() {
            Some(k) => err(format!("stage {}: unknown parameter `{k}`", self.stage)),
            None => Ok(()),
        }
    }
}

fn consensus(value: serde_json::Value, agents: usize, stage: &str) -> Result<Consensus, SpecError> {
    let text = value.as_str().unwrap_or_default();
    let rule = match text {
        "unanimous" => Consensus::Unanimous,
        "majority" => Consensus::Majority,
        _ => match text.split_once("-of-").map(|(m, n)| (m.parse::<usize>(), n.parse::<usize>())) {
            Some((Ok(m), Ok(n))) if n == agents && m >= 1 && m <= n => Consensus::AtLeast(m),
            Some((Ok(_), Ok(n))) if n != agents => {
                return err(format!("stage {stage}: consensus {text:?} names {n} agents but the chain has {agents}"));
            }
            _ => {
                return err(format!(
                    "stage {stage}: consensus must be unanimous, majority or M-of-N (M ≥ 1), not {value}"
                ));
            }
        },
    };
    Ok(rule)
}

impl Pipeline {
    /// Parses and validates a pipeline file.
    pub fn parse(yaml: &[u8]) -> Result<Self, SpecError> {
        if yaml.len() > MAX_PIPELINE_BYTES {
            return err(format!("{} bytes, more than the {MAX_PIPELINE_BYTES}-byte limit", yaml.len()));
        }
        let raw: RawPipeline = serde_norway::from_slice(yaml).map_err(|e| SpecError(format!("not valid: {e}")))?;
        if !valid_name(&raw.name) {
            return err("name must be 1-64 characters of [A-Za-z0-9._-]");
        }
        if raw.version.is_empty() || raw.version.len() > 64 {
            return err("version must be 1-64 characters");
        }
        let g = &raw.governance;
        if g.enforcement_level != "strict" {
            return err(format!(
                "governance.enforcement_level {:?} is refused: this appliance enforces only \"strict\"",
                g.enforcement_level
            ));
        }
        if !g.policy_binding_required {
            return err(
                "governance.policy_binding_required: false is refused: every stage runs under a policy binding",
            );
        }
        if !g.role_signatures_required {
            return err(
                "governance.role_signatures_required: false is refused: every stage runs under a role signature",
            );
        }
        if raw.stages.is_empty() || raw.stages.len() > MAX_STAGES {
            return err(format!("needs 1 to {MAX_STAGES} stages, has {}", raw.stages.len()));
        }
        let mut stages: Vec<Stage> = Vec::new();
        for s in raw.stages {
            if !valid_name(&s.name) {
                return err(format!("stage name {:?} must be 1-64 characters of [A-Za-z0-9._-]", s.name));
            }
            if stages.iter().any(|t| t.name == s.name) {
                return err(format!("stage name {} is used twice", s.name));
            }
            let mut p = Params { stage: &s.name, map: s.params };
            let kind = match s.kind.as_str() {
                "data_preparation" => {
                    let dataset = p.text("dataset")?;
                    let hash = p.take("dataset_sha256")?;
                    let mut dataset_sha256 = [0u8; 32];
                    hex::decode_to_slice(hash.as_str().unwrap_or_default(), &mut dataset_sha256).map_err(|_| {
                        SpecError(format!("stage {}: dataset_sha256 must be 64 hex characters", s.name))
                    })?;
                    StageKind::DataPreparation { dataset, dataset_sha256, module: p.text("module")? }
                }
                "model_training" => StageKind::ModelTraining {
                    module: p.text("module")?,
                    parameters: p.map.remove("parameters").unwrap_or(serde_json::json!({})),
                },
                "agent_chain" => {
                    let agents: Vec<Agent> = serde_json::from_value(p.take("agents")?)
                        .map_err(|e| SpecError(format!("stage {}: agents: {e}", s.name)))?;
                    if agents.is_empty() || agents.len() > MAX_AGENTS {
                        return err(format!("stage {}: needs 1 to {MAX_AGENTS} agents", s.name));
                    }
                    for a in &agents {
                        if !valid_name(&a.name) || !valid_name(&a.module) || a.policy.len() > 1024 {
                            return err(format!(
                                "stage {}: agent {:?} has an invalid name, module or policy",
                                s.name, a.name
                            ));
                        }
                    }
                    let rule = consensus(p.take("consensus")?, agents.len(), &s.name)?;
                    StageKind::AgentChain { agents, consensus: rule }
                }
                "promotion" => {
                    let approvals = p.take("approvals")?.as_u64().filter(|n| (1..=16).contains(n)).ok_or_else(|| {
                        SpecError(format!("stage {}: approvals must be a number from 1 to 16", s.name))
                    })? as usize;
                    StageKind::Promotion { approvals, role: p.text("role")? }
                }
                "rollback" => StageKind::Rollback,
                "audit_export" => {
                    // seed 000 writes `format: json`; the bundle has one format.
                    if let Some(f) = p.map.remove("format")
                        && f != serde_json::json!("json")
                        && f != serde_json::json!("bundle")
                    {
                        return err(format!("stage {}: format {f} is not supported (the compliance bundle)", s.name));
                    }
                    StageKind::AuditExport
                }
                "gpu_kernel" => {
                    let mut number = |key: &str, default: Option<u64>, range: std::ops::RangeInclusive<u64>| {
                        let value = match p.map.remove(key) {
                            Some(v) => v.as_u64(),
                            None => default,
                        };
                        match value {
                            Some(n) if range.contains(&n) => Ok(n),
                            _ => err(format!(
                                "stage {}: `{key}` must be a number from {} to {}",
                                s.name,
                                range.start(),
                                range.end()
                            )),
                        }
                    };
                    let output_bytes = number("output_bytes", None, 1..=MAX_KERNEL_BYTES)?;
                    let threads = number("threads", Some(256), 1..=1024)? as u32;
                    let memory_bytes = number("memory_bytes", None, 1..=MAX_KERNEL_BYTES * 2)?;
                    let time_limit_ms = number("time_limit_ms", None, 1..=600_000)?;
                    let entry = p.text("entry")?;
                    if !entry.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return err(format!("stage {}: entry {entry:?} must be [A-Za-z0-9_]", s.name));
                    }
                    StageKind::GpuKernel {
                        kernel: p.text("kernel")?,
                        entry,
                        output_bytes,
                        threads,
                        memory_bytes,
                        time_limit_ms,
                    }
                }
                other => {
                    return err(format!(
                        "stage {}: unknown type {other:?} (data_preparation, model_training, agent_chain, promotion, rollback, audit_export, gpu_kernel)",
                        s.name
                    ));
                }
            };
            p.finish()?;
            stages.push(Stage { name: s.name, kind });
        }
        let position = |t: &str| stages.iter().position(|s| s.kind.type_name() == t);
        let needs_before = |later: &str, earlier: &str| -> Result<(), SpecError> {
            if let Some(l) = position(later) {
                match position(earlier) {
                    Some(e) if e < l => {}
                    _ => return err(format!("a {later} stage needs a {earlier} stage before it")),
                }
            }
            Ok(())
        };
        for t in ["data_preparation", "model_training", "agent_chain", "promotion", "rollback", "audit_export"] {
            if stages.iter().filter(|s| s.kind.type_name() == t).count() > 1 {
                return err(format!("more than one {t} stage (one pipeline, one of each)"));
            }
        }
        needs_before("model_training", "data_preparation")?;
        needs_before("agent_chain", "model_training")?;
        needs_before("promotion", "model_training")?;
        if let (Some(a), Some(p)) = (position("agent_chain"), position("promotion"))
            && a > p
        {
            return err("the agent_chain stage must come before the promotion it reviews");
        }
        if let Some(e) = position("audit_export")
            && e != stages.len() - 1
        {
            return err("the audit_export stage must be the last stage");
        }
        Ok(Pipeline {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            stages,
            governance: raw.governance,
        })
    }

    /// The canonical JSON of the validated pipeline: what the config snapshot signs.
    pub fn snapshot_value(&self) -> Result<serde_json::Value, SpecError> {
        serde_json::to_value(self).map_err(|e| SpecError(format!("cannot snapshot the configuration: {e}")))
    }
}

/// Parses arbitrary bytes as a pipeline (the fuzz target): never panics.
pub fn fuzz_pipeline(data: &[u8]) {
    if let Ok(p) = Pipeline::parse(data) {
        assert!(p.snapshot_value().is_ok());
        assert!(!p.stages.is_empty() && p.stages.len() <= MAX_STAGES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const IRON_PATH: &str = include_str!("../../../examples/iron-path.yaml");

    #[test]
    fn parses_the_demo_pipeline() {
        let p = Pipeline::parse(IRON_PATH.as_bytes()).unwrap();
        let types: Vec<_> = p.stages.iter().map(|s| s.kind.type_name()).collect();
        assert_eq!(
            types,
            ["data_preparation", "model_training", "agent_chain", "promotion", "rollback", "audit_export"]
        );
        assert_eq!(p.name, "iron-path");
        let StageKind::AgentChain { agents, consensus } = &p.stages[2].kind else { panic!() };
        assert_eq!(agents.len(), 3);
        assert!(consensus.reached(3, 3) && !consensus.reached(2, 3));
    }

    fn mutate(from: &str, to: &str) -> Result<Pipeline, SpecError> {
        assert!(IRON_PATH.contains(from), "{from}");
        Pipeline::parse(IRON_PATH.replacen(from, to, 1).as_bytes())
    }

    #[test]
    fn refuses_weakened_governance_and_malformed_stages() {
        let cases = [
            ("enforcement_level: strict", "enforcement_level: advisory", "enforces only"),
            ("policy_binding_required: true", "policy_binding_required: false", "policy binding"),
            ("role_signatures_required: true", "role_signatures_required: false", "role signature"),
            ("type: rollback", "type: teleport", "unknown type"),
            ("approvals: 2", "approvals: 0", "approvals must be"),
            ("consensus: unanimous", "consensus: 2-of-4", "names 4 agents"),
            ("consensus: unanimous", "consensus: 5-of-3", "M-of-N"),
            ("consensus: unanimous", "consensus: most", "consensus must be"),
            ("module: train", "module: train\n    gpu: true", "unknown parameter `gpu`"),
            ("module: train", "module: \"../../bin/sh\"", "must be a name"),
            ("name: train", "name: prepare", "used twice"),
            ("governance:", "extra: 1\ngovernance:", "unknown field"),
        ];
        for (from, to, expect) in cases {
            let e = mutate(from, to).unwrap_err().to_string();
            assert!(e.contains(expect), "{to}: {e}");
        }
        let e = Pipeline::parse(b"name: [unclosed").unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
        assert!(Pipeline::parse(&vec![b'#'; MAX_PIPELINE_BYTES + 1]).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn refuses_stages_out_of_order() {
        let only_training = "name: p\nversion: '1'\nstages:\n  - {name: t, type: model_training, module: train}\ngovernance: {enforcement_level: strict, policy_binding_required: true, role_signatures_required: true}\n";
        assert!(
            Pipeline::parse(only_training.as_bytes()).unwrap_err().to_string().contains("needs a data_preparation")
        );
        let export_first = "name: p\nversion: '1'\nstages:\n  - {name: e, type: audit_export}\n  - {name: r, type: rollback}\ngovernance: {enforcement_level: strict, policy_binding_required: true, role_signatures_required: true}\n";
        assert!(Pipeline::parse(export_first.as_bytes()).unwrap_err().to_string().contains("last stage"));
    }

    #[test]
    fn consensus_rules() {
        assert!(Consensus::Majority.reached(2, 3) && !Consensus::Majority.reached(1, 2));
        assert!(Consensus::AtLeast(2).reached(2, 5) && !Consensus::AtLeast(2).reached(1, 5));
    }
}
