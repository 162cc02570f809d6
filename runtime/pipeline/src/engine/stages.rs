//! Each stage's work: the context its policy sees, its WASM modules in the sandbox, and what
//! every stage kind produces (the compliance bundle included).

use super::*; // the engine's types, helpers and imports: one engine, several rooms
use sovereign_protocol::deployment::{PromotionOutput, RollbackOutput, output_bytes};

impl Engine {
    /// The hashes a stage depends on (bound into its execution context).
    pub(super) fn stage_context(&mut self, run_id: &str, stage: &Stage) -> Result<serde_json::Value, EngineError> {
        let run = self.load_run(run_id)?;
        let modules: BTreeMap<&str, String> = stage
            .kind
            .modules()
            .into_iter()
            .filter_map(|m| run.modules.get(m).map(|(_, h)| (m, hex::encode(h))))
            .collect();
        let inputs: BTreeMap<&String, String> = run.outputs.iter().map(|(k, v)| (k, hex::encode(v))).collect();
        Ok(serde_json::json!({
            "pipeline": run.pipeline.name,
            "config_hash": hex::encode(run.report.config_hash),
            "stage": stage.name,
            "dataset": hex::encode(run.dataset),
            "modules": modules,
            "inputs": inputs,
        }))
    }

    pub(super) fn module(&mut self, run_id: &str, name: &str) -> Result<LoadedModule, EngineError> {
        let run = self.load_run(run_id)?;
        let (manifest, hash) = run
            .modules
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::invalid(format!("module {name} is not part of the run")))?;
        let key = compiled_key(&manifest);
        if let Some(m) = self.compiled.get(&key) {
            return Ok(m.clone());
        }
        let wasm = self.store.get(&hash)?;
        let loaded =
            self.sandbox.load(&wasm, &manifest, &self.release).map_err(|e| EngineError::Sandbox(e.to_string()))?;
        self.compiled.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Runs a module in the sandbox; a termination is audited with its reason and fails the
    /// stage (never the runtime).
    pub(super) fn sandboxed(
        &mut self,
        run_id: &str,
        stage: &str,
        module: &str,
        input: &[u8],
    ) -> Result<(Vec<u8>, u64), EngineError> {
        let loaded = self.module(run_id, module)?;
        let grants = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];
        match self.sandbox.run(&loaded, &grants, input, self.limits) {
            Ok(outcome) => Ok((outcome.output, outcome.fuel_used)),
            Err(t) => {
                let kind = match &t {
                    Termination::Refused(_) => "refused",
                    Termination::ImportNotGranted(_) => "import_not_granted",
                    Termination::FuelExhausted(_) => "fuel",
                    Termination::WallClock(_) => "wall_clock",
                    Termination::Memory(_) => "memory",
                    Termination::StackOverflow => "stack",
                    Termination::Trap(_) => "trap",
                    Termination::Failed(_) => "failed",
                    Termination::Abi(_) => "abi",
                };
                *self
                    .counters
                    .sandbox_terminations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(kind)
                    .or_default() += 1;
                let line = format!("run {run_id}: stage {stage}: module {module} terminated: {t}");
                let severity = if matches!(t, Termination::Failed(_)) { Severity::Warning } else { Severity::Critical };
                self.log(EntryKind::Refusal, severity, vec![loaded.manifest.module_sha256], line.clone())?;
                Err(EngineError::Sandbox(format!("module {module} terminated: {t}")))
            }
        }
    }

    pub(super) fn stage_work(&mut self, run_id: &str, stage: &Stage, attest: Attest<'_>) -> Result<Work, EngineError> {
        let run = self.load_run(run_id)?;
        let previous = run.report.stages.last().map(|s| s.artifact);
        match &stage.kind {
            StageKind::GpuKernel { .. } => {
                let dataset = run.dataset;
                let input = match previous {
                    Some(artifact) => self.store.get(&artifact)?,
                    None => {
                        self.store.get(&dataset).map_err(|source| EngineError::Artifact { what: "dataset", source })?
                    }
                };
                self.gpu_kernel_work(run_id, stage, &input)
            }
            StageKind::DataPreparation { dataset_sha256, module, .. } => {
                let data = self
                    .store
                    .get(dataset_sha256)
                    .map_err(|source| EngineError::Artifact { what: "dataset", source })?;
                let (output, fuel) = self.sandboxed(run_id, &stage.name, module, &data)?;
                let summary = format!(
                    "dataset {} verified ({} bytes); {module} wrote {} bytes ({fuel} fuel)",
                    &hex::encode(dataset_sha256)[..16],
                    data.len(),
                    output.len()
                );
                Ok(Work { output, summary, extra_artifacts: vec![] })
            }
            StageKind::ModelTraining { module, parameters } => {
                let prepared = run
                    .pipeline
                    .stages
                    .iter()
                    .find(|s| matches!(s.kind, StageKind::DataPreparation { .. }))
                    .and_then(|s| run.outputs.get(&s.name).copied())
                    .ok_or_else(|| EngineError::invalid("model_training: no prepared data"))?;
                let module_hash = run.modules.get(module).map(|(_, h)| *h).unwrap_or_default();
                // The parameters reach the module as its input's first line (`docs/sandbox.md`).
                let mut input =
                    format!("#parameters {}\n", String::from_utf8_lossy(&canonical_json(parameters))).into_bytes();
                input.extend_from_slice(&self.store.get(&prepared)?);
                let (output, fuel) = self.sandboxed(run_id, &stage.name, module, &input)?;
                let provenance = serde_json::json!({
                    "model": hex::encode(sha256(&output)),
                    "input": hex::encode(prepared),
                    "module": hex::encode(module_hash),
                    "parameters": hex::encode(sha256(&canonical_json(parameters))),
                    "fuel": fuel,
                });
                let summary = format!("model {} ({fuel} fuel)", String::from_utf8_lossy(&output));
                Ok(Work { output, summary, extra_artifacts: vec![canonical_json(&provenance)] })
            }
            StageKind::AgentChain { agents, consensus } => {
                let model = previous.ok_or_else(|| EngineError::invalid("agent_chain: nothing to review"))?;
                let model = self.store.get(&model)?;
                let mut votes = Vec::new();
                for agent in agents {
                    let mut input = model.clone();
                    input.push(b'\n');
                    input.extend_from_slice(agent.policy.as_bytes());
                    let verdict = match self.sandboxed(run_id, &stage.name, &agent.module, &input) {
                        Ok((out, _)) => String::from_utf8_lossy(&out).into_owned(),
                        Err(e) => format!("reject: {e}"),
                    };
                    votes.push(serde_json::json!({"agent": agent.name, "approve": verdict.starts_with("approve"), "verdict": verdict}));
                }
                let approving = votes.iter().filter(|v| v["approve"] == true).count();
                let reached = consensus.reached(approving, agents.len());
                let output = canonical_json(&serde_json::json!({
                    "votes": votes, "rule": consensus.describe(agents.len()), "approving": approving, "reached": reached,
                }));
                if !reached {
                    return Err(EngineError::Governance(format!(
                        "agent_chain: consensus {} not reached ({approving} of {} approve)",
                        consensus.describe(agents.len()),
                        agents.len()
                    )));
                }
                Ok(Work {
                    output,
                    summary: format!(
                        "{approving} of {} agents approve ({})",
                        agents.len(),
                        consensus.describe(agents.len())
                    ),
                    extra_artifacts: vec![],
                })
            }
            StageKind::Promotion { .. } => {
                let candidate =
                    Self::candidate(run).ok_or_else(|| EngineError::invalid("promotion: no trained model"))?;
                let approvers: Vec<String> = run.approvals.iter().map(|(a, _)| hex::encode(a.operator)).collect();
                let mut deployment = self.deployment()?;
                let state_before = deployment.hash();
                // The model must read back from the encrypted store to its recorded hash.
                self.store.get(&candidate)?;
                deployment.promotions.push(Promoted { model: candidate, run_id: run_id.into(), state_before });
                self.save_deployment(&deployment)?;
                let output = output_bytes(&PromotionOutput {
                    model: hex::encode(candidate),
                    approvers: approvers.clone(),
                    state_before: hex::encode(state_before),
                    state_after: hex::encode(deployment.hash()),
                });
                Ok(Work {
                    output,
                    summary: format!(
                        "model {} promoted with {} approvals",
                        &hex::encode(candidate)[..16],
                        approvers.len()
                    ),
                    extra_artifacts: vec![],
                })
            }
            StageKind::Rollback => {
                let mut deployment = self.deployment()?;
                let undone = deployment
                    .promotions
                    .pop()
                    .ok_or_else(|| EngineError::invalid("rollback: nothing was ever promoted"))?;
                // The audit entry that recorded the promotion undone: an auditor checks this
                // rollback against the state the log holds before it.
                let undoes_entry = self.promotion_entry(&undone.run_id)?;
                // Prove the restored state: its hash must equal the one recorded before the
                // promotion being undone, and the restored model must read back to its hash.
                let restored_state = deployment.hash();
                if restored_state != undone.state_before {
                    return Err(EngineError::CorruptRecord {
                        what: "deployment record".into(),
                        why: format!(
                            "rollback: restored state hashes to {}, the promotion recorded {}",
                            hex::encode(restored_state),
                            hex::encode(undone.state_before)
                        ),
                    });
                }
                let restored_model = deployment.live();
                if let Some(m) = restored_model {
                    let bytes = self
                        .store
                        .get(&m)
                        .map_err(|source| EngineError::Artifact { what: "rollback: restored model", source })?;
                    if sha256(&bytes) != m {
                        return Err(EngineError::CorruptRecord {
                            what: "deployment record".into(),
                            why: "rollback: restored model does not hash to its record".into(),
                        });
                    }
                }
                self.save_deployment(&deployment)?;
                let output = output_bytes(&RollbackOutput {
                    rolled_back: hex::encode(undone.model),
                    undoes_entry,
                    restored_model: restored_model.map(hex::encode),
                    restored_state: hex::encode(restored_state),
                    recorded_state: hex::encode(undone.state_before),
                });
                let summary = match restored_model {
                    Some(m) => format!(
                        "restored model {} (state {} proven; undoes the promotion at audit entry {undoes_entry})",
                        &hex::encode(m)[..16],
                        &hex::encode(restored_state)[..16]
                    ),
                    None => format!(
                        "restored the empty deployment (state {} proven; undoes the promotion at audit entry {undoes_entry})",
                        &hex::encode(restored_state)[..16]
                    ),
                };
                Ok(Work { output, summary, extra_artifacts: vec![] })
            }
            StageKind::AuditExport => {
                let bundle = self.export_bundle(attest)?;
                let summary = format!("compliance bundle of {} entries ({} bytes)", self.audit.size(), bundle.len());
                Ok(Work { output: bundle, summary, extra_artifacts: vec![] })
            }
        }
    }

    /// The audit entry that recorded `run_id`'s promotion (its run record keeps it).
    fn promotion_entry(&mut self, run_id: &str) -> Result<u64, EngineError> {
        let run = self.load_run(run_id)?;
        run.report.stages.iter().find(|s| s.kind == "promotion").and_then(|s| s.entry).ok_or_else(|| {
            EngineError::CorruptRecord {
                what: format!("run {run_id}"),
                why: "rollback: the run that promoted the live model records no audit entry for its promotion".into(),
            }
        })
    }

    /// A compliance bundle of the whole log: a fresh checkpoint, TPM evidence whose nonce
    /// binds that checkpoint, the release's signed reference values the evidence is judged
    /// against, every policy bundle runs were started under (for offline re-evaluation of each
    /// decision) and the role certificates and revocation lists the decisions depended on.
    pub fn export_bundle(&mut self, attest: Attest<'_>) -> Result<Vec<u8>, EngineError> {
        let policies = self.policies()?;
        let mut note = self.audit.checkpoint(&self.identity).map_err(|e| EngineError::Audit(e.to_string()))?;
        if let Some(cosign) = self.cosign.as_mut() {
            let cosigned = cosign(&note);
            // Only cosignatures of this very checkpoint are kept.
            if cosigned.body == note.body && cosigned.signatures.first() == note.signatures.first() {
                note = cosigned;
            }
        }
        self.audit.store_checkpoint(&note).map_err(|e| EngineError::Audit(e.to_string()))?;
        let nonce = bundle_attestation_nonce(&note.to_text());
        let attestation = attest(&nonce).map_err(EngineError::Attestation)?;
        let mut bundled: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&attestation).map_err(|e| EngineError::Attestation(e.to_string()))?;
        bundled.insert("checkpoint".into(), note.to_text().into());
        let bundled = serde_json::to_vec(&bundled).map_err(EngineError::encode("the attestation section"))?;
        let mut section_files = vec![("attestation".to_string(), "evidence.json".to_string(), bundled)];
        for p in &policies {
            let bytes = serde_json::to_vec_pretty(p).map_err(EngineError::encode("a policy bundle"))?;
            section_files.push(("policies".into(), format!("{}.json", hex::encode(p.hash())), bytes));
        }
        if let Some(reference) = &self.reference_values {
            section_files.push(("reference-values".into(), "reference-values.json".into(), reference.values.clone()));
            section_files.push(("reference-values".into(), "reference-values.sig".into(), reference.signature.clone()));
        }
        for (name, bytes) in self.role_evidence()? {
            section_files.push(("role-certificates".into(), name, bytes));
        }
        for (name, bytes) in self.anchor_files()? {
            section_files.push(("anchors".into(), name, bytes));
        }
        // The kept licence proof: decisions that saw `licensed` are backed by it offline.
        if let Some(proof) = self.licence_proof()? {
            section_files.push(("licences".into(), "licence-proof.json".into(), proof));
        }
        // The newest checkpoint the mesh's witnesses cosigned, if any (unreadable: said in the
        // refusal, never silently left out).
        let witnessed = sovereign_audit::store::read_witnessed(self.audit.path())
            .map_err(|e| EngineError::Audit(format!("the witnessed checkpoint: {e}")))?;
        let options =
            sovereign_audit::export::ExportOptions { range: None, witnesses: vec![], section_files, witnessed };
        sovereign_audit::export::export_bundle(&self.audit, &self.data_key, &self.identity, &options)
            .map_err(|e| EngineError::Audit(format!("export: {e}")))
    }
}
