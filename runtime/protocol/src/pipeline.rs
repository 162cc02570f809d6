//! The pipeline engine's wire types: what an operator asks of it ([`Command`]) and what it
//! answers ([`Reply`]), with the records a run reports. Payloads (datasets, modules, artifacts,
//! bundles) are [`Blob`]s: references to the message's attachments, which travel as checked
//! chunks.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sovereign_governance::approvals::Approval;
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::signed::{ConfigSnapshot, RevocationList, RoleCertificate, RoleSignature};
use sovereign_sandbox::ModuleManifest;

use crate::stream::Blob;

/// The role that runs pipeline stages.
pub const OPERATOR_ROLE: &str = "pipeline-operator";

/// The attestation nonce of a compliance bundle: it binds the quote to the checkpoint the
/// bundle carries. `SHA-256("sovereign-bundle-attestation/v1\n" || checkpoint note text)`.
pub fn bundle_attestation_nonce(checkpoint_note: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sovereign-bundle-attestation/v1\n");
    h.update(checkpoint_note.as_bytes());
    h.finalize().into()
}

/// A signed module with its manifest, as the operator sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleFile {
    /// The WASM bytes (an attachment of the request).
    pub wasm: Blob,
    /// The release-signed manifest.
    pub manifest: ModuleManifest,
}

/// Starts a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRun {
    /// The pipeline file.
    pub pipeline_yaml: Vec<u8>,
    /// The dataset the data_preparation stage names (an attachment of the request).
    pub dataset: Blob,
    /// The modules the stages name.
    pub modules: Vec<ModuleFile>,
    /// The signed policy bundle in force for the run.
    pub policy: PolicyBundle,
    /// The operator's role certificate.
    pub certificate: RoleCertificate,
    /// One role signature per stage action to run now.
    pub role_signatures: Vec<RoleSignature>,
    /// The admin root's current revocation list.
    pub revocations: RevocationList,
}

/// What the operator asks of the pipeline engine (carried in [`crate::Request::Pipeline`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Start a run.
    Start(Box<StartRun>),
    /// Where a run stands.
    Status {
        /// The run.
        run_id: String,
    },
    /// Record one approver's approval of a run's pending promotion.
    Approve {
        /// The run.
        run_id: String,
        /// The approval (signed by the approver).
        approval: Approval,
        /// The approver's role certificate.
        certificate: RoleCertificate,
    },
    /// Continue a paused run.
    Resume {
        /// The run.
        run_id: String,
        /// The operator's role certificate.
        certificate: RoleCertificate,
        /// Role signatures for the remaining stages.
        role_signatures: Vec<RoleSignature>,
    },
    /// Fetch an artifact of a run by hash.
    Artifact {
        /// The run (the artifact must be one of its own).
        run_id: String,
        /// SHA-256 of the artifact.
        sha256: [u8; 32],
    },
    /// Export a compliance bundle of the whole audit log now, with attestation evidence.
    ExportBundle,
    /// Every run on the appliance, newest first (at most [`MAX_LISTED_RUNS`]): what an operator
    /// asks after a power cut to find the runs it interrupted.
    Runs,
    /// Stage an update bundle (the request's attachment): verified completely against the
    /// node's update root, release key, anti-rollback floor and platform before a byte of it is
    /// written; refused (and audited) with the reason otherwise.
    UpdatePush {
        /// The bundle.
        bundle: Blob,
    },
    /// Pull the update bundle with this SHA-256 from an admitted mesh peer that has it staged
    /// (one node fetched it, the others pull from it) and stage it exactly as a push: verified
    /// completely before a byte of it is written; refused (and audited) with the reason
    /// otherwise — a node not admitted, nothing with that digest there, a bundle that does not
    /// verify.
    UpdatePull {
        /// The node identity (Ed25519 public key) of the peer to pull from.
        from: [u8; 32],
        /// SHA-256 of the bundle (as the holder's `update status` shows it staged).
        sha256: [u8; 32],
    },
    /// The node's update state: running release, floor, staged bundle, boot slots.
    UpdateStatus,
    /// Apply the staged bundle: the runtime answers, then stops; PID 1 verifies the bundle
    /// again, installs it in the other boot slot on trial and reboots into it. Refused (and
    /// audited) when nothing is staged, the running release is itself still on trial, or fewer
    /// distinct [`UPDATE_APPROVER_ROLE`] holders than the node's configuration requires approved
    /// this bundle ([`update_apply_digest`]).
    UpdateApply {
        /// Approvals of [`update_apply_digest`] of the staged bundle.
        approvals: Vec<Approval>,
        /// The approvers' role certificates.
        certificates: Vec<RoleCertificate>,
        /// The admin root's current revocation list (required when approvals are).
        revocations: Option<RevocationList>,
    },
    /// Import a Bitcoin licence proof file (the request's attachment): verified offline
    /// against the node's configured rule for this node's identity (chain from the pinned
    /// checkpoint with its proof of work, depth, Merkle branch, payment and commitment) before
    /// it is kept; audited either way. Its facts (`licensed`, …) go to every later decision.
    LicenceImport {
        /// The proof file (JSON, `sovereign license check --out`).
        proof: Blob,
    },
    /// The node's licence: configured or not, and the kept proof's facts.
    LicenceStatus,
    /// Sign a fresh checkpoint of the audit log and prepare its Bitcoin anchor: the unfunded
    /// PSBT (one zero-value `OP_RETURN` committing to the checkpoint) for an external wallet to
    /// fund, sign and broadcast — the node holds no coins. Audited.
    AnchorPrepare,
    /// Import a mined anchor (the request's attachment: an anchor file, `sovereign anchor
    /// check --out`): verified offline against the Bitcoin chain the node's configuration pins
    /// (its licence rule's network, checkpoint and depth), and its checkpoint must be one of
    /// this node's log (origin, size, root); kept and carried by every later compliance bundle
    /// (`anchors/`), audited either way.
    AnchorImport {
        /// The anchor file (JSON).
        file: Blob,
    },
    /// The node's GPUs as its governance sees them: present or `no GPU: <reason>`, the last
    /// readings, the emergency stop.
    GpuStatus,
    /// Engage the GPU emergency stop: no new GPU work until it is cleared. Any operator the
    /// node admits may stop; audited.
    GpuStop {
        /// Why, one line (at most 256 bytes).
        reason: String,
    },
    /// Clear the engaged emergency stop: approvals of [`gpu_clear_digest`] for the engagement
    /// now in force by at least the configured number of distinct [`GPU_OPERATOR_ROLE`]
    /// holders; refused (and audited) otherwise.
    GpuClear {
        /// Approvals of [`gpu_clear_digest`].
        approvals: Vec<Approval>,
        /// The approvers' role certificates.
        certificates: Vec<RoleCertificate>,
        /// The admin root's current revocation list.
        revocations: RevocationList,
    },
}

/// The role whose holders clear the GPU emergency stop.
pub const GPU_OPERATOR_ROLE: &str = "gpu-operator";

/// What a [`GPU_OPERATOR_ROLE`] holder signs (as an [`Approval`]'s request digest) to clear
/// engagement `generation` of node `node`'s GPU emergency stop: a clearance of one engagement
/// never clears a later one, nor another node's.
pub fn gpu_clear_digest(node: &[u8; 32], generation: u64) -> [u8; 32] {
    sovereign_governance::canonical::Canonical::new("sovereign-gpu-clear/v1").fixed(node).u64(generation).digest()
}

/// One GPU as the last sample read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// NVML index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Device memory in use, bytes.
    pub memory_used: Option<u64>,
    /// Device memory installed, bytes.
    pub memory_total: Option<u64>,
    /// Utilisation, percent.
    pub utilization_pct: Option<u32>,
    /// Temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power draw, milliwatts.
    pub power_mw: Option<u32>,
    /// Enforced power limit, milliwatts.
    pub power_limit_mw: Option<u32>,
}

/// The node's GPU governance state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuState {
    /// Whether there is a GPU to govern.
    pub available: bool,
    /// One line: `no GPU: <reason>`, or the devices and the driver.
    pub status: String,
    /// The devices as last sampled.
    pub devices: Vec<GpuDevice>,
    /// The emergency stop, when engaged: why, one line.
    pub emergency_stop: Option<String>,
    /// The engagement a clearance must name ([`gpu_clear_digest`]).
    pub generation: u64,
    /// Distinct [`GPU_OPERATOR_ROLE`] approvals a clearance needs.
    pub clear_approvals: u32,
    /// The last sample's violations, one line each.
    pub violations: Vec<String>,
}

/// A checkpoint anchored, or being anchored, in Bitcoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorState {
    /// The checkpoint (a signed note, after `AnchorPrepare`; its body, after `AnchorImport`).
    pub checkpoint: String,
    /// Its size.
    pub size: u64,
    /// SHA-256 of `"sovereign-anchor/v1\n"` ‖ the checkpoint's body: what the `OP_RETURN`
    /// carries.
    pub commitment: [u8; 32],
    /// The unfunded PSBT, base64 (after `AnchorPrepare`).
    pub psbt: Option<String>,
    /// The anchoring transaction (after `AnchorImport`).
    pub txid: Option<String>,
    /// The height of its block (after `AnchorImport`).
    pub height: Option<u32>,
    /// Its confirmations in the file (after `AnchorImport`).
    pub confirmations: Option<u32>,
}

/// The node's licence as its policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceState {
    /// Whether the node's configuration has a licence rule.
    pub configured: bool,
    /// Whether a kept proof passes that rule.
    pub licensed: bool,
    /// The licence transaction (txid, display order hex).
    pub txid: Option<String>,
    /// The height it was mined at.
    pub height: Option<u32>,
    /// Its confirmations in the proof (an air-gapped node cannot count more).
    pub confirmations: Option<u32>,
    /// Why the node is not licensed, when it is not.
    pub reason: Option<String>,
}

/// The role whose holders approve applying an update (distinct from a pipeline's approvers).
pub const UPDATE_APPROVER_ROLE: &str = "update-approver";

/// What an update approver signs (as an [`Approval`]'s request digest): this bundle, by its
/// release version and SHA-256, to be applied.
pub fn update_apply_digest(release_version: u64, bundle_sha256: &[u8; 32]) -> [u8; 32] {
    sovereign_governance::canonical::Canonical::new("sovereign-update-apply/v1")
        .u64(release_version)
        .fixed(bundle_sha256)
        .digest()
}

/// A staged update bundle, as the node verified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpdate {
    /// The release version.
    pub release_version: u64,
    /// SHA-256 of the bundle.
    pub sha256: [u8; 32],
    /// Its size.
    pub size: u64,
    /// The release keys whose signatures counted (hex).
    pub signers: Vec<String>,
    /// The key set that signed it.
    pub keyset_serial: u64,
    /// When it was staged, ms since the Unix epoch.
    pub staged_ms: u64,
}

/// The node's update state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// The release running now.
    pub running_version: u64,
    /// The TPM's anti-rollback floor.
    pub floor: u64,
    /// The bundle staged for the next update, if any.
    pub staged: Option<StagedUpdate>,
    /// The boot slots as PID 1 found (and, after a blessing, left) them; `None` when PID 1
    /// reported none (booted from no slot, or off the appliance).
    pub boot: Option<sovereign_boot_contract::slots::BootSlots>,
    /// The runtime stops after this answer so that PID 1 installs the staged bundle and
    /// reboots into its trial ([`Command::UpdateApply`]).
    pub applying: bool,
    /// How many [`UPDATE_APPROVER_ROLE`] approvals applying an update needs on this node.
    pub approvals_required: u32,
}

/// The most runs [`Command::Runs`] lists.
pub const MAX_LISTED_RUNS: usize = 256;

/// One line of [`Command::Runs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run ID.
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// When the run was loaded (its config snapshot's time), ms since the Unix epoch.
    pub started_ms: u64,
    /// Stages done.
    pub stages_done: usize,
    /// Stages in the pipeline.
    pub total_stages: usize,
    /// Status.
    pub status: RunStatus,
}

/// What the engine answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A run's report.
    Run(Box<RunReport>),
    /// Approvals counted for a pending promotion.
    Approved {
        /// Valid approvals now recorded.
        have: usize,
        /// Approvals needed.
        need: usize,
    },
    /// An artifact or bundle: the response's attachment.
    Blob(Blob),
    /// The runs, newest first.
    Runs(Vec<RunSummary>),
    /// The update state (after a push: with the bundle just staged).
    Update(UpdateState),
    /// Refused; one line.
    Refused(String),
    /// The licence state (after an import: with the proof just kept).
    Licence(LicenceState),
    /// An anchor prepared or imported.
    Anchor(AnchorState),
    /// The GPU governance state (after a stop or clear: as it left it).
    Gpu(GpuState),
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Between stages.
    Running,
    /// Paused before promotion.
    AwaitingApprovals {
        /// What approvers sign (`Governor::approval_digest` of the promotion).
        digest: [u8; 32],
        /// The model to promote.
        candidate: [u8; 32],
        /// Valid approvals recorded.
        have: usize,
        /// Approvals needed.
        need: usize,
        /// The role approvers must hold.
        role: String,
    },
    /// Every stage passed.
    Completed,
    /// The runtime stopped (crash, power loss) while the run was between stages or inside one;
    /// `Resume` picks it up again (a pure stage is re-run under a new execution ID, an
    /// interrupted promotion asks for new approvals, and a promotion or rollback that had
    /// already changed the deployment fails the run instead of being applied twice).
    Interrupted {
        /// The stage that was next or in flight.
        stage: String,
        /// Whether the stage had started (its marker was durable) when the runtime stopped.
        in_flight: bool,
    },
    /// A stage failed or was refused; the run is over.
    Failed {
        /// The stage.
        stage: String,
        /// Why, one line.
        reason: String,
    },
}

/// One stage's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub name: String,
    /// Stage type.
    pub kind: String,
    /// The execution ID it ran under.
    pub execution_id: String,
    /// SHA-256 of the policy decision record it ran under.
    pub decision: [u8; 32],
    /// The output artifact.
    pub artifact: [u8; 32],
    /// What happened, one line.
    pub summary: String,
    /// Wall-clock time of the stage (governance and work), microseconds.
    pub micros: u64,
    /// Time of the governance steps alone (decision, binding, permit), microseconds.
    pub governance_micros: u64,
    /// The audit entry (index) that recorded this stage's artifact.
    #[serde(default)]
    pub entry: Option<u64>,
}

/// A run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run ID.
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline version.
    pub version: String,
    /// SHA-256 of the signed config snapshot's canonical pipeline JSON.
    pub config_hash: [u8; 32],
    /// The snapshot, signed by the node identity at load.
    pub snapshot: ConfigSnapshot,
    /// SHA-256 of the policy bundle in force.
    pub policy_hash: [u8; 32],
    /// Stages done.
    pub stages: Vec<StageRecord>,
    /// Stages in the pipeline.
    pub total_stages: usize,
    /// Status.
    pub status: RunStatus,
    /// The compliance bundle's artifact hash, once exported.
    pub bundle: Option<[u8; 32]>,
    /// Audit log size after the last stage.
    pub audit_size: u64,
}
