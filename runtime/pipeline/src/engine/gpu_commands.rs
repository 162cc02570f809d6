//! The GPU governance commands: status, emergency stop, clearance (M distinct `gpu-operator`
//! approvals of this engagement), and the `gpu_kernel` stage's launch of a verified image.

use super::*; // the engine's types, helpers and imports: one engine, several rooms
use sovereign_gpu::kernel::KernelLimits;
use sovereign_protocol::pipeline::{GPU_OPERATOR_ROLE, GpuState, gpu_clear_digest};

/// Longest stop reason kept.
const MAX_STOP_REASON: usize = 256;

impl Engine {
    pub(super) fn gpu_stop(&mut self, reason: &str) -> Result<GpuState, EngineError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_STOP_REASON {
            return Err(EngineError::invalid(format!("a GPU stop needs a reason of 1 to {MAX_STOP_REASON} bytes")));
        }
        let by = self.requester.map(hex::encode).unwrap_or_else(|| "the node".into());
        self.gpu.engage(&format!("operator {by}: {reason}")).map_err(EngineError::invalid)
    }

    pub(super) fn gpu_clear(
        &mut self,
        approvals: &[Approval],
        certificates: &[RoleCertificate],
        revocations: &RevocationList,
    ) -> Result<GpuState, EngineError> {
        let state = self.gpu.state();
        let refused = |engine: &Engine, why: String| {
            let e = EngineError::invalid(format!("GPU emergency stop not cleared: {why}"));
            match engine.log(EntryKind::Refusal, Severity::Warning, vec![], e.to_string()) {
                Ok(_) => e,
                Err(audit) => EngineError::invalid(format!("{e}; and {audit}")),
            }
        };
        if state.emergency_stop.is_none() {
            return Err(refused(self, "it is not engaged".into()));
        }
        let guarded = Guarded {
            request_digest: gpu_clear_digest(&self.identity.verifying_key().to_bytes(), state.generation),
            role: GPU_OPERATOR_ROLE.into(),
            threshold: state.clear_approvals.max(1) as usize,
        };
        let counted = self.install_revocations(revocations).map_err(|e| e.to_string()).and_then(|()| {
            check_approvals(&guarded, approvals, certificates, &self.admin, revocations, now_ms())
                .map(|tally| tally.counted)
                .map_err(|e| e.to_string())
        });
        match counted {
            Ok(operators) => self.gpu.clear(&operators, state.generation).map_err(|why| refused(self, why)),
            Err(why) => Err(refused(self, why)),
        }
    }

    /// A `gpu_kernel` stage's work: the verified image, launched on `input` under the node's
    /// limits (refused by name without a GPU or with the stop engaged).
    pub(super) fn gpu_kernel_work(&mut self, run_id: &str, stage: &Stage, input: &[u8]) -> Result<Work, EngineError> {
        let StageKind::GpuKernel { kernel, entry, output_bytes, threads, memory_bytes, time_limit_ms } = &stage.kind
        else {
            return Err(EngineError::invalid("not a gpu_kernel stage"));
        };
        let what = format!("run {run_id}: stage {} (gpu_kernel {kernel})", stage.name);
        if let Err(why) = self.gpu.permits_work() {
            let line = format!("{what}: refused: {why}");
            self.log(EntryKind::Refusal, Severity::Warning, vec![], line)?;
            return Err(EngineError::Governance(format!("stage {} (gpu_kernel): {why}", stage.name)));
        }
        let run = self.load_run(run_id)?;
        let (manifest, hash) = run
            .kernels
            .get(kernel)
            .cloned()
            .ok_or_else(|| EngineError::invalid(format!("kernel {kernel} is not part of the run")))?;
        let image = self.store.get(&hash)?;
        // Read back from the encrypted store: it must still be what the release signed.
        manifest
            .verify(&image, &self.release)
            .map_err(|e| EngineError::Unverified(format!("stage {}: kernel {kernel}: {e}", stage.name)))?;
        let limits = KernelLimits {
            entry: entry.clone(),
            output_bytes: *output_bytes,
            threads: *threads,
            memory_bytes: *memory_bytes,
            time_limit_ms: *time_limit_ms,
        };
        let launched = self
            .gpu
            .launch(&what, &image, &limits, input)
            .map_err(|why| EngineError::Sandbox(format!("stage {} (gpu_kernel): {why}", stage.name)))?;
        let provenance = serde_json::json!({
            "kernel": hex::encode(hash),
            "entry": entry,
            "input": hex::encode(sha256(input)),
            "output": hex::encode(sha256(&launched.output)),
            "micros": launched.micros,
        });
        Ok(Work {
            summary: format!(
                "kernel {kernel} ({}) wrote {} bytes in {} µs",
                &hex::encode(hash)[..16],
                launched.output.len(),
                launched.micros
            ),
            output: launched.output,
            extra_artifacts: vec![canonical_json(&provenance)],
        })
    }
}
