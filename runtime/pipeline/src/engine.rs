//! The pipeline engine: runs a validated pipeline stage by stage, each stage as a governed
//! action (role signature → policy decision → binding → permit), the WASM stages in the
//! sandbox, every artifact hashed, sealed into the [`Store`] and logged.
//!
//! A run is durable: its record is rewritten after every stage, so a run paused at promotion
//! (not enough approvals) is resumed later, after a restart too. Every refusal is audited by
//! the governance kernel before it is answered.
//!
//! Rooms: this file holds the engine's types, opening, and the dispatch of commands;
//! `engine/records.rs` what is kept on the data partition (runs, deployment, policies);
//! `engine/lifecycle.rs` a run's life (load, approvals, advance, recovery); `engine/stages.rs`
//! each stage's work in the sandbox and the compliance bundle; `engine/update.rs` update
//! bundles; `engine/licence.rs` the Bitcoin licence and its policy facts.

mod chain_anchor;
mod gpu_commands;
mod licence;
mod lifecycle;
mod records;
mod stages;
pub mod update;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sovereign_audit::anchor::{MonotonicCounter, ReplayHead};
use sovereign_audit::logfile::DataKey;
use sovereign_audit::store::AuditLog;
use sovereign_audit::{EntryKind, Severity};
use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
use sovereign_governance::canonical::canonical_json;
use sovereign_governance::governor::{GovernedRequest, Governor};
use sovereign_governance::kernel::{ExecutionRequest, Kernel};
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::replay::ReplayStore;
use sovereign_governance::signed::{
    ConfigSnapshot, InstalledRevocations, RevocationList, RoleCertificate, RoleSignature, certificate_file,
    revocations_file,
};
use sovereign_sandbox::{Capability, Limits, LoadedModule, ModuleManifest, Sandbox, Termination};

use sovereign_protocol::pipeline::{
    Command, MAX_LISTED_RUNS, Reply, RunReport, RunStatus, RunSummary, StageRecord, StartRun, bundle_attestation_nonce,
};
use sovereign_protocol::{Blob, Payloads};

use sovereign_canonical::now_ms;

use crate::anchor::{self, StateAnchor};
use crate::error::EngineError;
use crate::gpu::GpuRuntime;
use crate::spec::{Pipeline, Stage, StageKind};
use crate::store::{Store, sha256};

/// Most runs kept in memory (older ones stay in the store).
const MAX_OPEN_RUNS: usize = 64;
/// Most compiled modules kept (the cache is emptied when full; modules recompile on demand).
const MAX_COMPILED: usize = 32;

pub use sovereign_protocol::deployment::{Deployment, Promoted};

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    report: RunReport,
    pipeline: Pipeline,
    operator: [u8; 32],
    dataset: [u8; 32],
    /// Module name → (manifest, wasm artifact hash).
    modules: BTreeMap<String, (ModuleManifest, [u8; 32])>,
    /// GPU kernel image name → (manifest, image artifact hash).
    #[serde(default)]
    kernels: BTreeMap<String, (ModuleManifest, [u8; 32])>,
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

/// Produces the attestation section for a nonce (the daemon's TPM; absent in host tests): a
/// JSON object — on the appliance `{"evidence", "ak_certificate"}` — to which the bundle adds
/// the checkpoint the nonce binds.
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
    /// The monotonic counter the state on `state_dir` is anchored to (the TPM's NV counter
    /// at `STATE_ANCHOR_INDEX` on the appliance).
    pub counter: Box<dyn MonotonicCounter>,
    /// The release's signed reference values for this boot (PID 1 checked them against the
    /// manifest it verified): every compliance bundle carries them. `None`: bundles carry none
    /// (and an auditor's check of their attestation fails by name).
    pub reference_values: Option<ReleaseReference>,
    /// What pushed update bundles are checked against; `None`: the node takes none.
    pub update: Option<update::UpdateTrust>,
    /// The licence rule imported proofs are judged by; `None`: the node takes none and its
    /// decisions see no `licensed` fact.
    pub licence: Option<sovereign_ledger::rule::Rule>,
    /// The GPU limits from the signed configuration.
    pub gpu: sovereign_boot_contract::gpu::GpuSettings,
    /// Where NVML is loaded from; `None`: the system's `libnvidia-ml.so.1`.
    pub nvml_library: Option<std::path::PathBuf>,
}

/// The release's reference values (`reference-values.json`) and their detached Ed25519
/// signature by the release key, as the bundle's `reference-values/` section carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseReference {
    /// `reference-values.json`.
    pub values: Vec<u8>,
    /// `reference-values.sig` (64 bytes).
    pub signature: Vec<u8>,
}

impl ReleaseReference {
    /// Checks the signature against the release key; one line saying why not.
    pub fn verify(&self, release: &VerifyingKey) -> Result<(), String> {
        let signature = ed25519_dalek::Signature::from_slice(&self.signature)
            .map_err(|_| format!("reference values: a {}-byte signature is not Ed25519", self.signature.len()))?;
        release
            .verify_strict(&self.values, &signature)
            .map_err(|_| "reference values: not signed by the release key".to_string())
    }
}

/// The engine of one node.
pub struct Engine {
    identity: SigningKey,
    data_key: DataKey,
    audit: Arc<AuditLog>,
    replay_path: std::path::PathBuf,
    /// The replay store's head when no governor holds it open.
    replay_head: ReplayHead,
    anchor: StateAnchor,
    /// Why the state anchor could not advance: every later command is refused with it.
    anchor_failure: Option<String>,
    /// What the state anchor found at start.
    anchor_summary: String,
    governor: Option<(Governor, [u8; 32], u64)>,
    /// The operator whose request is being served ([`Engine::handle_for`]).
    requester: Option<[u8; 32]>,
    sandbox: Sandbox,
    store: Store,
    release: VerifyingKey,
    admin: VerifyingKey,
    measurements: BTreeMap<String, serde_json::Value>,
    reference_values: Option<ReleaseReference>,
    update: Option<update::UpdateTrust>,
    licence: Option<sovereign_ledger::rule::Rule>,
    state_dir: std::path::PathBuf,
    compiled: HashMap<[u8; 32], LoadedModule>,
    runs: BTreeMap<String, Run>,
    /// Limits of every WASM stage.
    pub limits: Limits,
    /// Has a fresh checkpoint cosigned by the node's witnesses (the mesh), for exports.
    cosign: Option<Cosign>,
    /// Fetches a staged update bundle from an admitted mesh peer (`UpdatePull`).
    fetch_bundle: Option<update::BundleFetcher>,
    /// GPU governance (monitors, emergency stop, governed kernels).
    gpu: Arc<GpuRuntime>,
    /// What the metrics count that only the engine sees.
    counters: Arc<EngineCounters>,
}

/// What the engine counts for the runtime's metrics.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Sandbox terminations by kind (`fuel`, `wall_clock`, `memory`, `stack`, `trap`, `abi`,
    /// `failed`, `refused`, `import_not_granted`).
    pub sandbox_terminations: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

impl EngineCounters {
    /// The counts now.
    pub fn terminations(&self) -> BTreeMap<&'static str, u64> {
        self.sandbox_terminations.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Returns the checkpoint with the cosignatures its witnesses gave within the cosigner's own
/// time limit (the checkpoint as it was, when none did).
pub type Cosign = Box<dyn FnMut(&sovereign_audit::note::SignedNote) -> sovereign_audit::note::SignedNote + Send>;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("runs", &self.runs.len()).finish_non_exhaustive()
    }
}

fn refusal(why: impl std::fmt::Display) -> Reply {
    Reply::Refused(why.to_string())
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
    pub fn open(config: EngineConfig<'_>) -> Result<Self, EngineError> {
        let dir = config.state_dir;
        if let Some(reference) = &config.reference_values {
            reference.verify(&config.release).map_err(EngineError::Unverified)?;
        }
        std::fs::create_dir_all(dir).map_err(|source| EngineError::StateDir { path: dir.into(), source })?;
        let (anchor, opened) =
            StateAnchor::open(dir, &config.data_key, &config.origin, config.counter).map_err(EngineError::Anchor)?;
        let audit = opened.audit;
        let store = Store::open(&dir.join("store"), &config.data_key)?;
        let sandbox = Sandbox::new(Limits::default().memory_bytes).map_err(|e| EngineError::Sandbox(e.to_string()))?;
        let audit = Arc::new(audit);
        let gpu = GpuRuntime::open(
            config.gpu,
            config.nvml_library.as_deref().map(std::path::Path::as_os_str),
            Store::open(&GpuRuntime::store_dir(dir), &config.data_key)?,
            audit.clone(),
        )
        .map_err(|e| EngineError::invalid(format!("GPU governance: {e}")))?;
        let mut engine = Engine {
            identity: config.identity,
            data_key: config.data_key,
            audit,
            replay_path: dir.join("replay.store"),
            replay_head: opened.replay,
            anchor,
            anchor_failure: None,
            anchor_summary: opened.summary,
            governor: None,
            requester: None,
            sandbox,
            store,
            release: config.release,
            admin: config.admin,
            measurements: config.measurements,
            reference_values: config.reference_values,
            update: config.update,
            licence: config.licence,
            state_dir: dir.to_path_buf(),
            compiled: HashMap::new(),
            runs: BTreeMap::new(),
            limits: Limits { wall_ms: 20_000, ..Limits::default() },
            cosign: None,
            fetch_bundle: None,
            gpu: Arc::new(gpu),
            counters: Arc::default(),
        };
        // The kept licence proof, judged by this release's rule, gives every decision its facts.
        engine.refresh_licence_facts()?;
        Ok(engine)
    }

    /// Has every exported bundle's checkpoint cosigned through `cosign` (the mesh's witnesses)
    /// before it is attested and written.
    pub fn set_cosigner(&mut self, cosign: Cosign) {
        self.cosign = Some(cosign);
    }

    /// Pulls update bundles from mesh peers through `fetch` (`UpdatePull`); without it a pull
    /// is refused (no mesh).
    pub fn set_bundle_fetcher(&mut self, fetch: update::BundleFetcher) {
        self.fetch_bundle = Some(fetch);
    }

    /// GPU governance: the daemon runs its monitor and reports its state.
    pub fn gpu(&self) -> &Arc<GpuRuntime> {
        &self.gpu
    }

    /// What the engine counts for the metrics.
    pub fn counters(&self) -> &Arc<EngineCounters> {
        &self.counters
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// What the state anchor found and did at start (one line).
    pub fn anchor_summary(&self) -> &str {
        &self.anchor_summary
    }

    /// The state anchor's record now.
    pub fn anchored(&self) -> &sovereign_audit::anchor::Record {
        self.anchor.current()
    }

    /// Anchors the state as it is now (after a command): the audit log's head, the stored
    /// checkpoint and the replay store's head, bound to the counter. A failure is kept and
    /// refuses every later command (fail closed); what was done stays durable in the log.
    fn anchor_now(&mut self) -> Result<(), String> {
        if let Some((governor, _, _)) = &self.governor {
            self.replay_head = governor.replay_head();
        }
        let advanced = anchor::head_of(&self.audit, self.replay_head).and_then(|head| self.anchor.advance(head));
        advanced.map(drop).map_err(|why| {
            let why = format!("the state anchor could not advance ({why}); refusing every command until restart");
            self.anchor_failure = Some(why.clone());
            why
        })
    }

    pub(super) fn log(
        &self,
        kind: EntryKind,
        severity: Severity,
        digests: Vec<[u8; 32]>,
        payload: String,
    ) -> Result<u64, EngineError> {
        let entry = sovereign_audit::Entry::new(kind, now_ms(), severity, digests, payload.into_bytes());
        self.audit.append_entry(entry).map(|(index, _)| index).map_err(|e| EngineError::Audit(e.to_string()))
    }

    /// Verifies `revocations` (the admin root's, not older than the one installed), keeps it for
    /// the bundles and installs it: the installed list never goes back to an older version.
    pub(super) fn install_revocations(&mut self, revocations: &RevocationList) -> Result<(), EngineError> {
        let installed: u64 = self
            .store
            .get_record("revocation-version")?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        revocations.verify(&self.admin, installed).map_err(|e| EngineError::Unverified(e.to_string()))?;
        self.keep_revocations(revocations)?;
        if revocations.version > installed {
            self.store.put_record("revocation-version", revocations.version.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The governor for (`policy`, `revocations`): kept while both stay the same. The
    /// revocation list never goes back to an older version.
    pub(super) fn governor(
        &mut self,
        policy: &PolicyBundle,
        revocations: &RevocationList,
    ) -> Result<&mut Governor, EngineError> {
        let hash = policy.hash();
        self.install_revocations(revocations)?;
        let current = self.governor.as_ref().map(|(_, h, v)| (*h, *v));
        if current != Some((hash, revocations.version)) {
            // Close the replay store before reopening it for the new governor (its head kept
            // for the state anchor, which must never bind fewer records than it did).
            if let Some((governor, _, _)) = self.governor.take() {
                self.replay_head = governor.replay_head();
            }
            let (replay, _) =
                ReplayStore::open_existing(&self.replay_path).map_err(|e| EngineError::Replay(e.to_string()))?;
            let kernel = Kernel::new(self.identity.clone(), replay, Arc::clone(&self.audit));
            let governor = Governor::new(
                kernel,
                policy.clone(),
                &[self.release],
                self.admin,
                revocations.clone(),
                self.measurements.clone(),
            )
            .map_err(|e| EngineError::Governance(e.to_string()))?;
            self.governor = Some((governor, hash, revocations.version));
        }
        self.governor.as_mut().map(|(g, _, _)| g).ok_or_else(|| EngineError::Governance("governor unavailable".into()))
    }

    /// Answers one command; `payloads` are the request's checked attachments.
    /// [`Engine::handle`] for a request signed by `operator` (what the update policy sees as
    /// the principal).
    pub fn handle_for(
        &mut self,
        operator: [u8; 32],
        command: Command,
        payloads: &Payloads,
        attest: Attest<'_>,
    ) -> Answer {
        self.requester = Some(operator);
        let answer = self.handle(command, payloads, attest);
        self.requester = None;
        answer
    }

    /// Serves one command.
    pub fn handle(&mut self, command: Command, payloads: &Payloads, attest: Attest<'_>) -> Answer {
        if let Some(why) = &self.anchor_failure {
            return Answer { reply: refusal(why), payloads: vec![] };
        }
        let mut out = Vec::new();
        let reply = self.dispatch(command, payloads, attest, &mut out);
        // The command's work is durable whatever the anchor does; a failure to anchor it is
        // said here and refuses the next command.
        if let Err(why) = self.anchor_now() {
            println!("sovereign-runtime: {why}");
        }
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
                        Ok(_) => refusal(e),
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
            Command::UpdatePush { bundle } => match self.update_push(&bundle, payloads) {
                Ok(state) => Reply::Update(state),
                Err(e) => refusal(e),
            },
            Command::UpdatePull { from, sha256 } => match self.update_pull(&from, &sha256) {
                Ok(state) => Reply::Update(state),
                Err(e) => refusal(e),
            },
            Command::UpdateStatus => match self.update_state() {
                Ok(state) => Reply::Update(state),
                Err(e) => refusal(e),
            },
            Command::UpdateApply { approvals, certificates, revocations } => {
                match self.update_apply(&approvals, &certificates, revocations.as_ref()) {
                    Ok(state) => Reply::Update(state),
                    Err(e) => refusal(e),
                }
            }
            Command::LicenceImport { proof } => match self.licence_import(&proof, payloads) {
                Ok(state) => Reply::Licence(state),
                Err(e) => refusal(e),
            },
            Command::LicenceStatus => match self.licence_state() {
                Ok(state) => Reply::Licence(state),
                Err(e) => refusal(e),
            },
            Command::AnchorPrepare => match self.anchor_prepare() {
                Ok(state) => Reply::Anchor(state),
                Err(e) => refusal(e),
            },
            Command::AnchorImport { file } => match self.anchor_import(&file, payloads) {
                Ok(state) => Reply::Anchor(state),
                Err(e) => refusal(e),
            },
            Command::GpuStatus => Reply::Gpu(self.gpu.state()),
            Command::GpuStop { reason } => match self.gpu_stop(&reason) {
                Ok(state) => Reply::Gpu(state),
                Err(e) => refusal(e),
            },
            Command::GpuClear { approvals, certificates, revocations } => {
                match self.gpu_clear(&approvals, &certificates, &revocations) {
                    Ok(state) => Reply::Gpu(state),
                    Err(e) => refusal(e),
                }
            }
        }
    }
}
