//! A run's life: loading it (pipeline, signatures, modules, dataset), approvals of its
//! promotion, advancing it stage by stage under governance, and recovering one a restart
//! interrupted.

use super::*; // the engine's types, helpers and imports: one engine, several rooms

impl Engine {
    /// Loads a run: pipeline validated, config snapshot signed and logged, modules verified
    /// against their release-signed manifests and stored, dataset stored.
    pub(super) fn start(&mut self, start: StartRun, payloads: &Payloads) -> Result<String, EngineError> {
        let pipeline = Pipeline::parse(&start.pipeline_yaml).map_err(|e| EngineError::invalid(e.to_string()))?;
        let unverified = |e: &dyn std::fmt::Display| EngineError::Unverified(e.to_string());
        start.policy.verify(&[self.release]).map_err(|e| unverified(&e))?;
        start.revocations.verify(&self.admin, 0).map_err(|e| unverified(&e))?;
        start.certificate.verify(&self.admin, &start.revocations, now_ms()).map_err(|e| unverified(&e))?;
        let mut modules = BTreeMap::new();
        for stage in &pipeline.stages {
            for name in stage.kind.modules() {
                if modules.contains_key(name) {
                    continue;
                }
                let file =
                    start.modules.iter().find(|m| m.manifest.name == name).ok_or_else(|| {
                        EngineError::invalid(format!("stage {}: module {name} was not sent", stage.name))
                    })?;
                let wasm = payloads
                    .get(&file.wasm, &format!("module {name}"))
                    .map_err(|e| EngineError::invalid(e.to_string()))?;
                // Verify (signature, hash) and compile before anything runs; a module already
                // compiled under the same signed manifest is reused.
                file.manifest
                    .verify(wasm, &self.release)
                    .map_err(|e| EngineError::Unverified(format!("stage {}: refused: {e}", stage.name)))?;
                let key = compiled_key(&file.manifest);
                if self.compiled.len() >= MAX_COMPILED {
                    self.compiled.clear();
                }
                if !self.compiled.contains_key(&key) {
                    let loaded = self
                        .sandbox
                        .load(wasm, &file.manifest, &self.release)
                        .map_err(|e| EngineError::Sandbox(format!("stage {}: {e}", stage.name)))?;
                    self.compiled.insert(key, loaded);
                }
                let hash = self.store.put(wasm)?;
                modules.insert(name.to_string(), (file.manifest.clone(), hash));
            }
        }
        // GPU kernel images: signed by the release key for this purpose (the `gpu_kernel`
        // capability), pinned by hash, stored; never compiled as WASM.
        let mut kernels = BTreeMap::new();
        for stage in &pipeline.stages {
            for name in stage.kind.kernels() {
                if kernels.contains_key(name) {
                    continue;
                }
                let file = start.modules.iter().find(|m| m.manifest.name == name).ok_or_else(|| {
                    EngineError::invalid(format!("stage {}: kernel image {name} was not sent", stage.name))
                })?;
                let image = payloads
                    .get(&file.wasm, &format!("kernel image {name}"))
                    .map_err(|e| EngineError::invalid(e.to_string()))?;
                file.manifest
                    .verify(image, &self.release)
                    .map_err(|e| EngineError::Unverified(format!("stage {}: kernel image refused: {e}", stage.name)))?;
                if !file.manifest.capabilities.contains(&Capability::GpuKernel) {
                    return Err(EngineError::Unverified(format!(
                        "stage {}: kernel image refused: {name}'s manifest does not sign it as a GPU kernel (capability gpu_kernel)",
                        stage.name
                    )));
                }
                sovereign_gpu::kernel::image_kind(image)
                    .map_err(|e| EngineError::Unverified(format!("stage {}: kernel image {name}: {e}", stage.name)))?;
                let hash = self.store.put(image)?;
                kernels.insert(name.to_string(), (file.manifest.clone(), hash));
            }
        }
        let dataset = self
            .store
            .put(payloads.get(&start.dataset, "dataset").map_err(|e| EngineError::invalid(e.to_string()))?)?;
        let policy_json = serde_json::to_vec(&start.policy).map_err(EngineError::encode("the policy bundle"))?;
        self.store.put_record(&format!("policy-{}", hex::encode(start.policy.hash())), &policy_json)?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let run_id = hex::encode(id);
        let snapshot_value = pipeline.snapshot_value().map_err(|e| EngineError::invalid(e.to_string()))?;
        let snapshot = ConfigSnapshot::create(&snapshot_value, &self.identity, now_ms());
        let payload = serde_json::json!({
            "run": run_id, "pipeline": pipeline.name, "version": pipeline.version,
            "config_hash": hex::encode(snapshot.config_hash), "snapshot": snapshot,
            "policy": hex::encode(start.policy.hash()),
            "modules": modules.iter().map(|(n, (m, h))| (n.clone(), serde_json::json!({"sha256": hex::encode(h), "version": m.version}))).collect::<BTreeMap<_, _>>(),
            "kernels": kernels.iter().map(|(n, (m, h))| (n.clone(), serde_json::json!({"sha256": hex::encode(h), "version": m.version}))).collect::<BTreeMap<_, _>>(),
            "dataset": hex::encode(dataset),
        });
        self.log(EntryKind::ConfigSnapshot, Severity::Info, vec![snapshot.config_hash], payload.to_string())?;
        let report = RunReport {
            run_id: run_id.clone(),
            pipeline: pipeline.name.clone(),
            version: pipeline.version.clone(),
            config_hash: snapshot.config_hash,
            snapshot,
            policy_hash: start.policy.hash(),
            stages: vec![],
            total_stages: pipeline.stages.len(),
            status: RunStatus::Running,
            bundle: None,
            audit_size: self.audit.size(),
        };
        let run = Run {
            report,
            pipeline,
            operator: start.certificate.operator,
            dataset,
            modules,
            kernels,
            policy: start.policy,
            outputs: BTreeMap::new(),
            approvals: vec![],
            revocations: start.revocations,
            next: 0,
            attempt: 0,
            in_flight: None,
            pending: Some((start.certificate, start.role_signatures)),
        };
        self.save_run(&run)?;
        self.runs.insert(run_id.clone(), run);
        Ok(run_id)
    }

    /// The promotion's execution request: deterministic, so approvers can sign its digest.
    pub(super) fn promotion_request(run: &Run, stage: &Stage, candidate: &[u8; 32]) -> ExecutionRequest {
        ExecutionRequest {
            execution_id: execution_id(run, &stage.name),
            action: stage.kind.action(),
            context: serde_json::json!({
                "pipeline": run.pipeline.name,
                "config_hash": hex::encode(run.report.config_hash),
                "stage": stage.name,
                "candidate": hex::encode(candidate),
            }),
        }
    }

    pub(super) fn approval_digest(run: &Run, stage: &Stage, candidate: &[u8; 32]) -> [u8; 32] {
        let execution = Self::promotion_request(run, stage, candidate);
        Governor::approval_digest_of(&execution, &format!("pipeline:{}", run.pipeline.name), &run.pipeline.name)
    }

    pub(super) fn candidate(run: &Run) -> Option<[u8; 32]> {
        run.pipeline
            .stages
            .iter()
            .find(|s| matches!(s.kind, StageKind::ModelTraining { .. }))
            .and_then(|s| run.outputs.get(&s.name).copied())
    }

    pub(super) fn approve(
        &mut self,
        run_id: &str,
        approval: Approval,
        certificate: RoleCertificate,
    ) -> Result<(usize, usize), EngineError> {
        let (admin, now) = (self.admin, now_ms());
        let run = self.load_run(run_id)?;
        let RunStatus::AwaitingApprovals { digest, need, role, candidate, .. } = run.report.status.clone() else {
            return Err(EngineError::invalid(format!("run {run_id} has no promotion waiting for approvals")));
        };
        let guarded = Guarded { request_digest: digest, role: role.clone(), threshold: 1 };
        check_approvals(
            &guarded,
            std::slice::from_ref(&approval),
            std::slice::from_ref(&certificate),
            &admin,
            &run.revocations,
            now,
        )
        .map_err(|e| EngineError::Unverified(e.to_string()))?;
        if run.approvals.iter().any(|(a, _)| a.operator == approval.operator) {
            return Err(EngineError::Governance(format!(
                "approver {} already approved this promotion",
                hex::encode(approval.operator)
            )));
        }
        run.approvals.push((approval.clone(), certificate));
        let have = run.approvals.len();
        run.report.status = RunStatus::AwaitingApprovals { digest, candidate, have, need, role };
        let run = run.clone();
        self.save_run(&run)?;
        let payload = serde_json::json!({
            "run": run_id, "approver": hex::encode(approval.operator), "digest": hex::encode(digest),
            "candidate": hex::encode(candidate), "have": have, "need": need,
        });
        self.log(EntryKind::Approval, Severity::Notice, vec![digest, candidate], payload.to_string())?;
        Ok((have, need))
    }

    /// Runs stages from where the run stands until it completes, fails, or pauses.
    pub(super) fn advance(&mut self, run_id: &str, attest: Attest<'_>) -> Reply {
        let result = self.advance_inner(run_id, attest);
        let audit_size = self.audit.size();
        let Ok(run) = self.load_run(run_id) else {
            return refusal(format!("run {run_id} vanished"));
        };
        run.pending = None;
        if let Err(e) = result {
            // The refusal is already in the audit log (or is the audit log's own failure).
            let stage = run.pipeline.stages.get(run.next).map(|s| s.name.clone()).unwrap_or_default();
            run.report.status = RunStatus::Failed { stage, reason: e.to_string() };
            run.in_flight = None;
        }
        run.report.audit_size = audit_size;
        let run = run.clone();
        if let Err(e) = self.save_run(&run) {
            return refusal(format!("run {run_id}: saving its record: {e}"));
        }
        Reply::Run(Box::new(run.report))
    }

    pub(super) fn advance_inner(&mut self, run_id: &str, attest: Attest<'_>) -> Result<(), EngineError> {
        loop {
            let run = self.load_run(run_id)?;
            let Some(stage) = run.pipeline.stages.get(run.next).cloned() else {
                run.report.status = RunStatus::Completed;
                return Ok(());
            };
            let (certificate, signatures) =
                run.pending.clone().ok_or_else(|| EngineError::invalid("no operator credentials for this call"))?;
            let action = stage.kind.action();
            let role_signature = signatures.iter().find(|s| s.context.action == action).cloned().ok_or_else(|| {
                EngineError::Unverified(format!("stage {}: no role signature for action {action}", stage.name))
            })?;
            let started = Instant::now();
            // Promotion: pause until enough approvals are recorded.
            let mut approvals = vec![];
            let mut execution = ExecutionRequest {
                execution_id: execution_id(run, &stage.name),
                action: action.clone(),
                context: serde_json::Value::Null,
            };
            let mut signals = BTreeMap::new();
            if let StageKind::Promotion { approvals: need, role } = &stage.kind {
                let candidate = Self::candidate(run)
                    .ok_or_else(|| EngineError::invalid("promotion: no trained model in this run"))?;
                let digest = Self::approval_digest(run, &stage, &candidate);
                let have = run.approvals.len();
                if have < *need {
                    run.report.status =
                        RunStatus::AwaitingApprovals { digest, candidate, have, need: *need, role: role.clone() };
                    let payload = format!(
                        "run {run_id}: promotion of model {} waits for approvals ({have} of {need} by role {role}); approval digest {}",
                        hex::encode(candidate),
                        hex::encode(digest)
                    );
                    return self
                        .log(EntryKind::Approval, Severity::Notice, vec![digest, candidate], payload)
                        .map(|_| ());
                }
                approvals = run.approvals.clone();
                execution = Self::promotion_request(run, &stage, &candidate);
                let consensus = run.report.stages.iter().any(|s| s.kind == "agent_chain");
                signals.insert("consensus_reached".to_string(), serde_json::json!(consensus));
            } else {
                execution.context = self.stage_context(run_id, &stage)?;
            }
            if let StageKind::GpuKernel { .. } = &stage.kind {
                // What a GPU-requiring policy judges: is there a GPU, why not, is it stopped.
                signals.extend(self.gpu.signals());
            }
            if let StageKind::DataPreparation { dataset_sha256, .. } = &stage.kind {
                let run = self.load_run(run_id)?;
                signals.insert("dataset_verified".to_string(), serde_json::json!(run.dataset == *dataset_sha256));
            }
            // From here the stage has effects (a spent execution ID, audit entries, perhaps the
            // deployment): mark it in flight, durably, so a restart knows what to recover.
            let deployment_before = self.deployment()?.hash();
            let run = self.load_run(run_id)?;
            run.in_flight = Some(InFlight { stage: run.next, deployment_before });
            run.report.status = RunStatus::Running;
            let marked = run.clone();
            self.save_run(&marked)?;
            let (pipeline_name, policy, revocations) =
                (marked.pipeline.name.clone(), marked.policy.clone(), marked.revocations.clone());
            let request = GovernedRequest {
                execution,
                resource: format!("pipeline:{pipeline_name}"),
                environment: pipeline_name.clone(),
                role_signature,
                certificate,
                signals,
                approver_certificates: approvals.iter().map(|(_, c)| c.clone()).collect(),
                approvals: approvals.into_iter().map(|(a, _)| a).collect(),
            };
            let presented: Vec<&RoleCertificate> =
                std::iter::once(&request.certificate).chain(&request.approver_certificates).collect();
            self.keep_certificates(&presented)?;
            let governor = self.governor(&policy, &revocations)?;
            if let StageKind::Promotion { approvals: need, role } = &stage.kind {
                governor.guard(&action, role, *need);
            }
            let (permit, record) =
                governor.govern(&request, now_ms()).map_err(|e| EngineError::Governance(e.to_string()))?;
            let governance_micros = micros(started);
            let decision = record.state().record_hash;
            // The work, under the permit (the kernel audits its start and end around it).
            let (mut governor, policy_hash, version) =
                self.governor.take().ok_or_else(|| EngineError::Governance("governor unavailable".into()))?;
            let work = governor.execute(permit, now_ms(), |_| self.stage_work(run_id, &stage, &mut *attest));
            self.governor = Some((governor, policy_hash, version));
            let work = work.map_err(|e| EngineError::Governance(e.to_string()))??;
            let artifact = self.store.put(&work.output)?;
            let mut digests = vec![artifact];
            for extra in &work.extra_artifacts {
                digests.push(self.store.put(extra)?);
            }
            let mut payload = serde_json::json!({
                "run": run_id, "stage": stage.name, "type": stage.kind.type_name(),
                "artifact": hex::encode(artifact), "bytes": work.output.len(),
                "decision": hex::encode(decision), "summary": work.summary,
            });
            // A promotion's or rollback's whole output goes into the log: an auditor recomputes
            // the deployment from it (`sovereign_protocol::deployment`).
            if matches!(stage.kind, StageKind::Promotion { .. } | StageKind::Rollback) {
                payload["output"] =
                    serde_json::from_slice(&work.output).map_err(EngineError::encode("a stage output"))?;
            }
            let entry = self.log(EntryKind::Artifact, Severity::Info, digests, payload.to_string())?;
            let run = self.load_run(run_id)?;
            run.outputs.insert(stage.name.clone(), artifact);
            if matches!(stage.kind, StageKind::AuditExport) {
                run.report.bundle = Some(artifact);
            }
            let execution_id = execution_id(run, &stage.name);
            run.report.stages.push(StageRecord {
                name: stage.name.clone(),
                kind: stage.kind.type_name().into(),
                execution_id,
                decision,
                artifact,
                summary: work.summary,
                micros: micros(started),
                governance_micros,
                entry: Some(entry),
            });
            run.report.status = RunStatus::Running;
            run.next += 1;
            run.in_flight = None;
            let run = run.clone();
            self.save_run(&run)?;
        }
    }

    /// Makes an interrupted run resumable, or fails it when resuming would apply an effect twice.
    /// A stage that was in flight runs again under a new execution ID (the interrupted attempt's
    /// ID, role signature and approvals stay spent); a promotion or rollback that already changed the
    /// deployment is not re-run: the run fails naming both states. An interrupted execution is
    /// closed in the audit log (its start has no end otherwise); a failure is audited as one.
    /// Returns whether the run may go on.
    pub(super) fn recover(&mut self, run_id: &str) -> Result<bool, EngineError> {
        let deployment_now = self.deployment()?.hash();
        let run = self.load_run(run_id)?;
        if let Some(f) = &run.in_flight
            && f.stage != run.next
        {
            return Err(EngineError::CorruptRecord {
                what: format!("run {run_id}"),
                why: format!("the record marks stage #{} in flight but stage #{} next", f.stage, run.next),
            });
        }
        let stage = run.pipeline.stages.get(run.next).cloned();
        let stage_name = stage.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let changes_deployment =
            stage.as_ref().is_some_and(|s| matches!(s.kind, StageKind::Promotion { .. } | StageKind::Rollback));
        let applied = match &run.in_flight {
            Some(f) if changes_deployment && f.deployment_before != deployment_now => Some(f.deployment_before),
            _ => None,
        };
        let interrupted_execution = run.in_flight.is_some().then(|| execution_id(run, &stage_name));
        run.in_flight = None;
        let entry = if let Some(before) = applied {
            let reason = format!(
                "interrupted after it changed the deployment (state {} before, {} now); not re-run, so it is not applied twice",
                hex::encode(before),
                hex::encode(deployment_now)
            );
            run.report.status = RunStatus::Failed { stage: stage_name.clone(), reason: reason.clone() };
            Some((EntryKind::Refusal, format!("run {run_id}: stage {stage_name} {reason}")))
        } else {
            if interrupted_execution.is_some() {
                // Its execution ID may be spent: the stage runs again as a new execution, and
                // approvals bound to the interrupted one are asked for again.
                run.attempt += 1;
                if stage.as_ref().is_some_and(|s| matches!(s.kind, StageKind::Promotion { .. })) {
                    run.approvals.clear();
                }
            }
            run.report.status = RunStatus::Running;
            interrupted_execution.map(|id| {
                let payload = format!(
                    "execution {id:?} ended by an interruption of the runtime; run {run_id} resumed: stage {stage_name} runs again under {:?}",
                    execution_id(run, &stage_name)
                );
                // Not an `execution_end`: those are the kernel's, naming the binding they close
                // (`sovereign verify` follows them); this execution is refused a continuation.
                (EntryKind::Refusal, payload)
            })
        };
        let may_go_on = applied.is_none();
        let run = run.clone();
        self.save_run(&run)?;
        if let Some((kind, payload)) = entry {
            self.log(kind, Severity::Warning, vec![deployment_now], payload)?;
        }
        Ok(may_go_on)
    }
}
