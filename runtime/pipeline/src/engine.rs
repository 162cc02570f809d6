//! The pipeline engine: runs a validated pipeline stage by stage, each stage as a governed
//! action (role signature → policy decision → binding → permit), the WASM stages in the
//! sandbox, every artifact hashed, sealed into the [`Store`] and logged.
//!
//! A run is durable: its record is rewritten after every stage, so a run paused at promotion
//! (not enough approvals) is resumed later, after a restart too. Every refusal is audited by
//! the governance kernel before it is answered.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sovereign_audit::logfile::DataKey;
use sovereign_audit::store::AuditLog;
use sovereign_audit::{EntryKind, Severity};
use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
use sovereign_governance::canonical::canonical_json;
use sovereign_governance::governor::{GovernedRequest, Governor};
use sovereign_governance::kernel::{ExecutionRequest, Kernel};
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{ConfigSnapshot, RevocationList, RoleCertificate, RoleSignature};
use sovereign_sandbox::{Capability, Limits, LoadedModule, ModuleManifest, Sandbox, Termination};

use sovereign_protocol::pipeline::{
    Command, MAX_LISTED_RUNS, Reply, RunReport, RunStatus, RunSummary, StageRecord, StartRun, bundle_attestation_nonce,
};
use sovereign_protocol::{Blob, Payloads};

use crate::spec::{Pipeline, Stage, StageKind};
use crate::store::{Store, sha256};

/// Most runs kept in memory (older ones stay in the store).
const MAX_OPEN_RUNS: usize = 64;
/// Most compiled modules kept (the cache is emptied when full; modules recompile on demand).
const MAX_COMPILED: usize = 32;

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

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    report: RunReport,
    pipeline: Pipeline,
    operator: [u8; 32],
    dataset: [u8; 32],
    /// Module name → (manifest, wasm artifact hash).
    modules: BTreeMap<String, (ModuleManifest, [u8; 32])>,
    policy: PolicyBundle,
    /// The output of each stage by name.
    outputs: BTreeMap<String, [u8; 32]>,
    approvals: Vec<(Approval, RoleCertificate)>,
    revocations: RevocationList,
    next: usize,
    /// How many times the run was resumed after an interruption; part of every later stage's
    /// execution ID, so a re-run stage is a new execution (the interrupted one's ID stays spent).
    #[serde(default)]
    attempt: u32,
    /// Written durably before a stage's governance starts, cleared with the stage's record.
    #[serde(default)]
    in_flight: Option<InFlight>,
    /// The caller's credentials for this call only (never stored).
    #[serde(skip)]
    pending: Option<(RoleCertificate, Vec<RoleSignature>)>,
}

/// A stage that has started: what recovery needs to know if the runtime stops inside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InFlight {
    /// Index of the stage.
    stage: usize,
    /// SHA-256 of the deployment state when it started (promotion and rollback change it).
    deployment_before: [u8; 32],
}

/// The execution ID of `stage` in `run` at its current attempt.
fn execution_id(run: &Run, stage: &str) -> String {
    match run.attempt {
        0 => format!("{}:{stage}", run.report.run_id),
        n => format!("{}:{stage}#{n}", run.report.run_id),
    }
}

/// Produces TPM attestation evidence for a nonce (the daemon's TPM; absent in host tests).
pub type Attest<'a> = &'a mut dyn FnMut(&[u8; 32]) -> Result<Vec<u8>, String>;

/// What the engine answers a command with: the reply, and the payloads its [`Blob`]s refer to
/// (they travel as the response's attachments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The reply.
    pub reply: Reply,
    /// The payloads the reply refers to, in order.
    pub payloads: Vec<Vec<u8>>,
}

/// Everything the engine is built from.
pub struct EngineConfig<'a> {
    /// The node identity (signs snapshots, bindings, checkpoints, bundles).
    pub identity: SigningKey,
    /// The data key (audit log, store).
    pub data_key: DataKey,
    /// Where the audit log, replay store and encrypted store live.
    pub state_dir: &'a Path,
    /// The audit log's origin line.
    pub origin: String,
    /// The release key (module manifests and policy bundles).
    pub release: VerifyingKey,
    /// The admin root (role certificates).
    pub admin: VerifyingKey,
    /// Platform facts every decision sees.
    pub measurements: BTreeMap<String, serde_json::Value>,
}

/// The engine of one node.
pub struct Engine {
    identity: SigningKey,
    data_key: DataKey,
    audit: Arc<AuditLog>,
    replay_path: std::path::PathBuf,
    governor: Option<(Governor, [u8; 32], u64)>,
    sandbox: Sandbox,
    store: Store,
    release: VerifyingKey,
    admin: VerifyingKey,
    measurements: BTreeMap<String, serde_json::Value>,
    compiled: HashMap<[u8; 32], LoadedModule>,
    runs: BTreeMap<String, Run>,
    /// Limits of every WASM stage.
    pub limits: Limits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("runs", &self.runs.len()).finish_non_exhaustive()
    }
}

fn refusal(why: impl std::fmt::Display) -> Reply {
    Reply::Refused(why.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// The compiled-module cache key: the signed manifest (which pins the module's hash and its
/// capabilities), so the same bytes under another manifest are compiled and checked again.
fn compiled_key(manifest: &ModuleManifest) -> [u8; 32] {
    sha256(&serde_json::to_vec(manifest).unwrap_or_default())
}

/// What a stage's work produced.
struct Work {
    output: Vec<u8>,
    summary: String,
    extra_artifacts: Vec<Vec<u8>>,
}

impl Engine {
    /// Opens (or creates) the audit log, the replay store and the encrypted store under
    /// `state_dir`.
    pub fn open(config: EngineConfig<'_>) -> Result<Self, String> {
        let dir = config.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log_path = dir.join("audit.log");
        let audit = if log_path.exists() {
            AuditLog::open(&log_path, &config.data_key).map(|(l, _)| l)
        } else {
            AuditLog::create(&log_path, &config.origin, &config.data_key)
        }
        .map_err(|e| format!("audit log {}: {e}", log_path.display()))?;
        let store = Store::open(&dir.join("store"), &config.data_key)?;
        let sandbox = Sandbox::new(Limits::default().memory_bytes).map_err(|e| e.to_string())?;
        Ok(Engine {
            identity: config.identity,
            data_key: config.data_key,
            audit: Arc::new(audit),
            replay_path: dir.join("replay.store"),
            governor: None,
            sandbox,
            store,
            release: config.release,
            admin: config.admin,
            measurements: config.measurements,
            compiled: HashMap::new(),
            runs: BTreeMap::new(),
            limits: Limits { wall_ms: 20_000, ..Limits::default() },
        })
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The deployment state.
    pub fn deployment(&self) -> Result<Deployment, String> {
        match self.store.get_record("deployment")? {
            None => Ok(Deployment::default()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| format!("deployment record: {e}")),
        }
    }

    fn save_deployment(&self, d: &Deployment) -> Result<(), String> {
        self.store.put_record("deployment", &serde_json::to_vec(d).map_err(|e| e.to_string())?)
    }

    fn log(&self, kind: EntryKind, severity: Severity, digests: Vec<[u8; 32]>, payload: String) -> Result<(), String> {
        let entry = sovereign_audit::Entry::new(kind, now_ms(), severity, digests, payload.into_bytes());
        self.audit.append_entry(entry).map(|_| ()).map_err(|e| format!("audit log: {e}"))
    }

    /// The governor for (`policy`, `revocations`): kept while both stay the same. The
    /// revocation list never goes back to an older version.
    fn governor(&mut self, policy: &PolicyBundle, revocations: &RevocationList) -> Result<&mut Governor, String> {
        let hash = policy.hash();
        let installed: u64 = self
            .store
            .get_record("revocation-version")?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        revocations.verify(&self.admin, installed).map_err(|e| e.to_string())?;
        if revocations.version > installed {
            self.store.put_record("revocation-version", revocations.version.to_string().as_bytes())?;
        }
        let current = self.governor.as_ref().map(|(_, h, v)| (*h, *v));
        if current != Some((hash, revocations.version)) {
            // Close the replay store before reopening it for the new governor.
            self.governor = None;
            let (replay, _) = ReplayStore::open(&self.replay_path).map_err(|e| format!("replay store: {e}"))?;
            let kernel = Kernel::new(self.identity.clone(), replay, Arc::clone(&self.audit));
            let governor = Governor::new(
                kernel,
                policy.clone(),
                &[self.release],
                self.admin,
                revocations.clone(),
                self.measurements.clone(),
            )
            .map_err(|e| e.to_string())?;
            self.governor = Some((governor, hash, revocations.version));
        }
        self.governor.as_mut().map(|(g, _, _)| g).ok_or_else(|| "governor unavailable".to_string())
    }

    /// Answers one command; `payloads` are the request's checked attachments.
    pub fn handle(&mut self, command: Command, payloads: &Payloads, attest: Attest<'_>) -> Answer {
        let mut out = Vec::new();
        let reply = self.dispatch(command, payloads, attest, &mut out);
        Answer { reply, payloads: out }
    }

    fn dispatch(&mut self, command: Command, payloads: &Payloads, attest: Attest<'_>, out: &mut Vec<Vec<u8>>) -> Reply {
        match command {
            Command::Start(start) => match self.start(*start, payloads) {
                Ok(run_id) => self.advance(&run_id, attest),
                Err(e) => {
                    // A refused run is audited too (a tampered module, a bad pipeline file).
                    let line = format!("pipeline run refused at load: {e}");
                    match self.log(EntryKind::Refusal, Severity::Warning, vec![], line) {
                        Ok(()) => refusal(e),
                        Err(audit) => refusal(format!("{e}; and {audit}")),
                    }
                }
            },
            Command::Status { run_id } => match self.load_run(&run_id) {
                Ok(run) => Reply::Run(Box::new(run.report.clone())),
                Err(e) => refusal(e),
            },
            Command::Approve { run_id, approval, certificate } => match self.approve(&run_id, approval, certificate) {
                Ok((have, need)) => Reply::Approved { have, need },
                Err(e) => refusal(e),
            },
            Command::Resume { run_id, certificate, role_signatures } => {
                let interrupted = match self.load_run(&run_id) {
                    Err(e) => return refusal(e),
                    Ok(run) => {
                        let interrupted = match run.report.status {
                            RunStatus::AwaitingApprovals { .. } => false,
                            RunStatus::Interrupted { .. } => true,
                            _ => return refusal(format!("run {run_id} is not waiting to be resumed")),
                        };
                        if certificate.operator != run.operator {
                            return refusal(format!("run {run_id} was started by another operator"));
                        }
                        run.pending = Some((certificate, role_signatures));
                        interrupted
                    }
                };
                if interrupted {
                    match self.recover(&run_id) {
                        Err(e) => return refusal(format!("run {run_id}: recovering from the interruption: {e}")),
                        Ok(false) => {
                            return match self.load_run(&run_id) {
                                Ok(run) => Reply::Run(Box::new(run.report.clone())),
                                Err(e) => refusal(e),
                            };
                        }
                        Ok(true) => {}
                    }
                }
                self.advance(&run_id, attest)
            }
            Command::Artifact { run_id, sha256 } => match self.load_run(&run_id) {
                Err(e) => refusal(e),
                Ok(run) => {
                    let owned = run.outputs.values().any(|h| *h == sha256)
                        || run.report.bundle == Some(sha256)
                        || run.dataset == sha256;
                    if !owned {
                        return refusal(format!("artifact {} is not one of run {run_id}'s", hex::encode(sha256)));
                    }
                    match self.store.get(&sha256) {
                        Ok(b) => {
                            let blob = Blob::of(&b);
                            out.push(b);
                            Reply::Blob(blob)
                        }
                        Err(e) => refusal(e),
                    }
                }
            },
            Command::ExportBundle => match self.export_bundle(attest) {
                Ok(bytes) => {
                    let blob = Blob::of(&bytes);
                    out.push(bytes);
                    Reply::Blob(blob)
                }
                Err(e) => refusal(format!("audit export: {e}")),
            },
            Command::Runs => match self.runs() {
                Ok(runs) => Reply::Runs(runs),
                Err(e) => refusal(format!("listing runs: {e}")),
            },
        }
    }

    /// Every stored run, newest first, at most [`MAX_LISTED_RUNS`]. A record that does not
    /// open fails the listing (it names the record) rather than being left out. Runs open in
    /// memory are read from there; the others from the store, without entering the cache.
    fn runs(&self) -> Result<Vec<RunSummary>, String> {
        let ids: Vec<String> =
            self.store.record_names().into_iter().filter_map(|n| n.strip_prefix("run-").map(str::to_string)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let stored;
            let run = match self.runs.get(&id) {
                Some(open) => open,
                None => {
                    stored = self.read_run(&id)?;
                    &stored
                }
            };
            let r = &run.report;
            out.push(RunSummary {
                run_id: r.run_id.clone(),
                pipeline: r.pipeline.clone(),
                started_ms: r.snapshot.timestamp_ms,
                stages_done: r.stages.len(),
                total_stages: r.total_stages,
                status: r.status.clone(),
            });
        }
        out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| a.run_id.cmp(&b.run_id)));
        out.truncate(MAX_LISTED_RUNS);
        Ok(out)
    }

    /// Every policy bundle a run was ever started under (kept so that a bundle exported after a
    /// restart still carries the policies its decisions were made under).
    fn policies(&self) -> Result<Vec<PolicyBundle>, String> {
        let mut out = Vec::new();
        for name in self.store.record_names().into_iter().filter(|n| n.starts_with("policy-")) {
            let bytes = self.store.get_record(&name)?.ok_or(format!("record {name} vanished"))?;
            out.push(PolicyBundle::from_json(&bytes).map_err(|e| format!("record {name}: {e}"))?);
        }
        Ok(out)
    }

    fn load_run(&mut self, run_id: &str) -> Result<&mut Run, String> {
        if !run_id.bytes().all(|b| b.is_ascii_hexdigit()) || run_id.len() != 32 {
            return Err(format!("{run_id:?} is not a run ID (32 hex characters)"));
        }
        if !self.runs.contains_key(run_id) {
            let run = self.read_run(run_id)?;
            if self.runs.len() >= MAX_OPEN_RUNS
                && let Some(oldest) = self.runs.keys().next().cloned()
            {
                self.runs.remove(&oldest);
            }
            self.runs.insert(run_id.into(), run);
        }
        self.runs.get_mut(run_id).ok_or_else(|| format!("no run {run_id}"))
    }

    /// A run as stored (not cached). The engine advances a run to completion, failure or a pause
    /// within one call, and keeps it in memory meanwhile: a run stored as running belongs to a
    /// runtime that stopped while it ran, and reads back as interrupted.
    fn read_run(&self, run_id: &str) -> Result<Run, String> {
        let bytes = self.store.get_record(&format!("run-{run_id}"))?.ok_or(format!("no run {run_id}"))?;
        let mut run: Run = serde_json::from_slice(&bytes).map_err(|e| format!("run {run_id}: stored record: {e}"))?;
        if run.report.status == RunStatus::Running {
            let stage = run.pipeline.stages.get(run.next).map(|s| s.name.clone()).unwrap_or_default();
            run.report.status = RunStatus::Interrupted { stage, in_flight: run.in_flight.is_some() };
        }
        Ok(run)
    }

    fn save_run(&self, run: &Run) -> Result<(), String> {
        let bytes = serde_json::to_vec(run).map_err(|e| e.to_string())?;
        self.store.put_record(&format!("run-{}", run.report.run_id), &bytes)
    }

    /// Loads a run: pipeline validated, config snapshot signed and logged, modules verified
    /// against their release-signed manifests and stored, dataset stored.
    fn start(&mut self, start: StartRun, payloads: &Payloads) -> Result<String, String> {
        let pipeline = Pipeline::parse(&start.pipeline_yaml).map_err(|e| e.to_string())?;
        start.policy.verify(&[self.release]).map_err(|e| e.to_string())?;
        start.revocations.verify(&self.admin, 0).map_err(|e| e.to_string())?;
        start.certificate.verify(&self.admin, &start.revocations, now_ms()).map_err(|e| e.to_string())?;
        let mut modules = BTreeMap::new();
        for stage in &pipeline.stages {
            for name in stage.kind.modules() {
                if modules.contains_key(name) {
                    continue;
                }
                let file = start
                    .modules
                    .iter()
                    .find(|m| m.manifest.name == name)
                    .ok_or(format!("stage {}: module {name} was not sent", stage.name))?;
                let wasm = payloads.get(&file.wasm, &format!("module {name}")).map_err(|e| e.to_string())?;
                // Verify (signature, hash) and compile before anything runs; a module already
                // compiled under the same signed manifest is reused.
                file.manifest.verify(wasm, &self.release).map_err(|e| format!("stage {}: refused: {e}", stage.name))?;
                let key = compiled_key(&file.manifest);
                if self.compiled.len() >= MAX_COMPILED {
                    self.compiled.clear();
                }
                if !self.compiled.contains_key(&key) {
                    let loaded = self
                        .sandbox
                        .load(wasm, &file.manifest, &self.release)
                        .map_err(|e| format!("stage {}: {e}", stage.name))?;
                    self.compiled.insert(key, loaded);
                }
                let hash = self.store.put(wasm)?;
                modules.insert(name.to_string(), (file.manifest.clone(), hash));
            }
        }
        let dataset = self.store.put(payloads.get(&start.dataset, "dataset").map_err(|e| e.to_string())?)?;
        let policy_json = serde_json::to_vec(&start.policy).map_err(|e| e.to_string())?;
        self.store.put_record(&format!("policy-{}", hex::encode(start.policy.hash())), &policy_json)?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let run_id = hex::encode(id);
        let snapshot_value = pipeline.snapshot_value().map_err(|e| e.to_string())?;
        let snapshot = ConfigSnapshot::create(&snapshot_value, &self.identity, now_ms());
        let payload = serde_json::json!({
            "run": run_id, "pipeline": pipeline.name, "version": pipeline.version,
            "config_hash": hex::encode(snapshot.config_hash), "snapshot": snapshot,
            "policy": hex::encode(start.policy.hash()),
            "modules": modules.iter().map(|(n, (m, h))| (n.clone(), serde_json::json!({"sha256": hex::encode(h), "version": m.version}))).collect::<BTreeMap<_, _>>(),
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
    fn promotion_request(run: &Run, stage: &Stage, candidate: &[u8; 32]) -> ExecutionRequest {
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

    fn approval_digest(run: &Run, stage: &Stage, candidate: &[u8; 32]) -> [u8; 32] {
        let execution = Self::promotion_request(run, stage, candidate);
        Governor::approval_digest_of(&execution, &format!("pipeline:{}", run.pipeline.name), &run.pipeline.name)
    }

    fn candidate(run: &Run) -> Option<[u8; 32]> {
        run.pipeline
            .stages
            .iter()
            .find(|s| matches!(s.kind, StageKind::ModelTraining { .. }))
            .and_then(|s| run.outputs.get(&s.name).copied())
    }

    fn approve(
        &mut self,
        run_id: &str,
        approval: Approval,
        certificate: RoleCertificate,
    ) -> Result<(usize, usize), String> {
        let (admin, now) = (self.admin, now_ms());
        let run = self.load_run(run_id)?;
        let RunStatus::AwaitingApprovals { digest, need, role, candidate, .. } = run.report.status.clone() else {
            return Err(format!("run {run_id} has no promotion waiting for approvals"));
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
        .map_err(|e| e.to_string())?;
        if run.approvals.iter().any(|(a, _)| a.operator == approval.operator) {
            return Err(format!("approver {} already approved this promotion", hex::encode(approval.operator)));
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
    fn advance(&mut self, run_id: &str, attest: Attest<'_>) -> Reply {
        let result = self.advance_inner(run_id, attest);
        let audit_size = self.audit.size();
        let Ok(run) = self.load_run(run_id) else {
            return refusal(format!("run {run_id} vanished"));
        };
        run.pending = None;
        if let Err(e) = result {
            // The refusal is already in the audit log (or is the audit log's own failure).
            let stage = run.pipeline.stages.get(run.next).map(|s| s.name.clone()).unwrap_or_default();
            run.report.status = RunStatus::Failed { stage, reason: e };
            run.in_flight = None;
        }
        run.report.audit_size = audit_size;
        let run = run.clone();
        if let Err(e) = self.save_run(&run) {
            return refusal(format!("run {run_id}: saving its record: {e}"));
        }
        Reply::Run(Box::new(run.report))
    }

    fn advance_inner(&mut self, run_id: &str, attest: Attest<'_>) -> Result<(), String> {
        loop {
            let run = self.load_run(run_id)?;
            let Some(stage) = run.pipeline.stages.get(run.next).cloned() else {
                run.report.status = RunStatus::Completed;
                return Ok(());
            };
            let (certificate, signatures) = run.pending.clone().ok_or("no operator credentials for this call")?;
            let action = stage.kind.action();
            let role_signature = signatures
                .iter()
                .find(|s| s.context.action == action)
                .cloned()
                .ok_or(format!("stage {}: no role signature for action {action}", stage.name))?;
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
                let candidate = Self::candidate(run).ok_or("promotion: no trained model in this run")?;
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
                    return self.log(EntryKind::Approval, Severity::Notice, vec![digest, candidate], payload);
                }
                approvals = run.approvals.clone();
                execution = Self::promotion_request(run, &stage, &candidate);
                let consensus = run.report.stages.iter().any(|s| s.kind == "agent_chain");
                signals.insert("consensus_reached".to_string(), serde_json::json!(consensus));
            } else {
                execution.context = self.stage_context(run_id, &stage)?;
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
            let governor = self.governor(&policy, &revocations)?;
            if let StageKind::Promotion { approvals: need, role } = &stage.kind {
                governor.guard(&action, role, *need);
            }
            let (permit, record) = governor.govern(&request, now_ms()).map_err(|e| e.to_string())?;
            let governance_micros = micros(started);
            let decision = record.state().record_hash;
            // The work, under the permit (the kernel audits its start and end around it).
            let (mut governor, policy_hash, version) = self.governor.take().ok_or("governor unavailable")?;
            let work = governor.kernel.execute(permit, now_ms(), |_| self.stage_work(run_id, &stage, &mut *attest));
            self.governor = Some((governor, policy_hash, version));
            let work = work.map_err(|e| e.to_string())??;
            let artifact = self.store.put(&work.output)?;
            let mut digests = vec![artifact];
            for extra in &work.extra_artifacts {
                digests.push(self.store.put(extra)?);
            }
            let payload = serde_json::json!({
                "run": run_id, "stage": stage.name, "type": stage.kind.type_name(),
                "artifact": hex::encode(artifact), "bytes": work.output.len(),
                "decision": hex::encode(decision), "summary": work.summary,
            });
            self.log(EntryKind::Artifact, Severity::Info, digests, payload.to_string())?;
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
    fn recover(&mut self, run_id: &str) -> Result<bool, String> {
        let deployment_now = self.deployment()?.hash();
        let run = self.load_run(run_id)?;
        if let Some(f) = &run.in_flight
            && f.stage != run.next
        {
            return Err(format!("the record marks stage #{} in flight but stage #{} next", f.stage, run.next));
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
                (EntryKind::ExecutionEnd, payload)
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

    /// The hashes a stage depends on (bound into its execution context).
    fn stage_context(&mut self, run_id: &str, stage: &Stage) -> Result<serde_json::Value, String> {
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

    fn module(&mut self, run_id: &str, name: &str) -> Result<LoadedModule, String> {
        let run = self.load_run(run_id)?;
        let (manifest, hash) = run.modules.get(name).cloned().ok_or(format!("module {name} is not part of the run"))?;
        let key = compiled_key(&manifest);
        if let Some(m) = self.compiled.get(&key) {
            return Ok(m.clone());
        }
        let wasm = self.store.get(&hash)?;
        let loaded = self.sandbox.load(&wasm, &manifest, &self.release).map_err(|e| e.to_string())?;
        self.compiled.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Runs a module in the sandbox; a termination is audited with its reason and fails the
    /// stage (never the runtime).
    fn sandboxed(&mut self, run_id: &str, stage: &str, module: &str, input: &[u8]) -> Result<(Vec<u8>, u64), String> {
        let loaded = self.module(run_id, module)?;
        let grants = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];
        match self.sandbox.run(&loaded, &grants, input, self.limits) {
            Ok(outcome) => Ok((outcome.output, outcome.fuel_used)),
            Err(t) => {
                let line = format!("run {run_id}: stage {stage}: module {module} terminated: {t}");
                let severity = if matches!(t, Termination::Failed(_)) { Severity::Warning } else { Severity::Critical };
                self.log(EntryKind::Refusal, severity, vec![loaded.manifest.module_sha256], line.clone())?;
                Err(format!("module {module} terminated: {t}"))
            }
        }
    }

    fn stage_work(&mut self, run_id: &str, stage: &Stage, attest: Attest<'_>) -> Result<Work, String> {
        let run = self.load_run(run_id)?;
        let previous = run.report.stages.last().map(|s| s.artifact);
        match &stage.kind {
            StageKind::DataPreparation { dataset_sha256, module, .. } => {
                let data = self.store.get(dataset_sha256).map_err(|e| format!("dataset: {e}"))?;
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
                    .ok_or("model_training: no prepared data")?;
                let module_hash = run.modules.get(module).map(|(_, h)| *h).unwrap_or_default();
                let input = self.store.get(&prepared)?;
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
                let model = previous.ok_or("agent_chain: nothing to review")?;
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
                    return Err(format!(
                        "agent_chain: consensus {} not reached ({approving} of {} approve)",
                        consensus.describe(agents.len()),
                        agents.len()
                    ));
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
                let candidate = Self::candidate(run).ok_or("promotion: no trained model")?;
                let approvers: Vec<String> = run.approvals.iter().map(|(a, _)| hex::encode(a.operator)).collect();
                let mut deployment = self.deployment()?;
                let state_before = deployment.hash();
                // The model must read back from the encrypted store to its recorded hash.
                self.store.get(&candidate)?;
                deployment.promotions.push(Promoted { model: candidate, run_id: run_id.into(), state_before });
                self.save_deployment(&deployment)?;
                let output = canonical_json(&serde_json::json!({
                    "model": hex::encode(candidate), "approvers": approvers,
                    "state_before": hex::encode(state_before), "state_after": hex::encode(deployment.hash()),
                }));
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
                let undone = deployment.promotions.pop().ok_or("rollback: nothing was ever promoted")?;
                // Prove the restored state: its hash must equal the one recorded before the
                // promotion being undone, and the restored model must read back to its hash.
                let restored_state = deployment.hash();
                if restored_state != undone.state_before {
                    return Err(format!(
                        "rollback: restored state hashes to {}, the promotion recorded {}",
                        hex::encode(restored_state),
                        hex::encode(undone.state_before)
                    ));
                }
                let restored_model = deployment.live();
                if let Some(m) = restored_model {
                    let bytes = self.store.get(&m).map_err(|e| format!("rollback: restored model: {e}"))?;
                    if sha256(&bytes) != m {
                        return Err("rollback: restored model does not hash to its record".into());
                    }
                }
                self.save_deployment(&deployment)?;
                let output = canonical_json(&serde_json::json!({
                    "rolled_back": hex::encode(undone.model),
                    "restored_model": restored_model.map(hex::encode),
                    "restored_state": hex::encode(restored_state),
                    "recorded_state": hex::encode(undone.state_before),
                    "proof": "restored state hash equals the hash recorded before the undone promotion; restored model re-read and re-hashed from the encrypted store",
                }));
                let summary = match restored_model {
                    Some(m) => format!(
                        "restored model {} (state {} proven)",
                        &hex::encode(m)[..16],
                        &hex::encode(restored_state)[..16]
                    ),
                    None => {
                        format!("restored the empty deployment (state {} proven)", &hex::encode(restored_state)[..16])
                    }
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

    /// A compliance bundle of the whole log: a fresh checkpoint, TPM evidence whose nonce
    /// binds that checkpoint, and every policy bundle runs were started under (for offline
    /// re-evaluation of each decision).
    pub fn export_bundle(&mut self, attest: Attest<'_>) -> Result<Vec<u8>, String> {
        let policies = self.policies()?;
        let note = self.audit.checkpoint(&self.identity).map_err(|e| e.to_string())?;
        self.audit.store_checkpoint(&note).map_err(|e| e.to_string())?;
        let nonce = bundle_attestation_nonce(&note.to_text());
        let evidence = attest(&nonce).map_err(|e| format!("attestation evidence: {e}"))?;
        let evidence: serde_json::Value =
            serde_json::from_slice(&evidence).map_err(|e| format!("attestation evidence: {e}"))?;
        let bundled = serde_json::json!({ "checkpoint": note.to_text(), "evidence": evidence });
        let bundled = serde_json::to_vec(&bundled).map_err(|e| e.to_string())?;
        let mut section_files = vec![("attestation".to_string(), "evidence.json".to_string(), bundled)];
        for p in &policies {
            let bytes = serde_json::to_vec_pretty(p).map_err(|e| e.to_string())?;
            section_files.push(("policies".into(), format!("{}.json", hex::encode(p.hash())), bytes));
        }
        let options = sovereign_audit::export::ExportOptions { range: None, witnesses: vec![], section_files };
        sovereign_audit::export::export_bundle(&self.audit, &self.data_key, &self.identity, &options)
            .map_err(|e| e.to_string())
    }
}
