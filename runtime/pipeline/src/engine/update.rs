//! Update bundles pushed to the node, or pulled from an admitted mesh peer that has one staged
//! (`UpdatePull`, through the daemon's fetcher): verified completely (`sovereign_update::verify`) against
//! the node's update root, release key, anti-rollback floor and platform while in memory; only a
//! bundle that passed is written, durably, to the data partition (`update/staged.bundle`, then
//! `update/staged.json`), replacing any staged before. Every push and pull is audited: the staged release
//! or the refusal with its reason. Applying it (`UpdateApply`) is audited, answered, and then
//! the runtime stops: installing the bundle into the other boot slot on trial is PID 1's, which
//! verifies it again (the data partition is the runtime's to write).

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use sovereign_audit::{EntryKind, Severity};
use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
use sovereign_governance::governor::DecisionEvidence;
use sovereign_governance::kernel::Verdict;
use sovereign_governance::policy::{PolicyBundle, PolicyEngine, PolicyInput};
use sovereign_governance::signed::{RevocationList, RoleCertificate};
use sovereign_protocol::Payloads;
use sovereign_protocol::pipeline::{StagedUpdate, UPDATE_APPROVER_ROLE, UpdateState, update_apply_digest};
use sovereign_protocol::stream::Blob;

use super::Engine;
use crate::error::EngineError;

/// Reads the TPM's anti-rollback floor (on the appliance; a fixed value in host tests).
pub type FloorReader = Box<dyn FnMut() -> Result<u64, String> + Send>;

/// What the engine checks pushed update bundles against.
pub struct UpdateTrust {
    /// The update root the image carries (`RuntimeConfig.update_root`).
    pub root: VerifyingKey,
    /// The node's platform.
    pub platform: String,
    /// The release running now.
    pub running_version: u64,
    /// The anti-rollback floor.
    pub floor: FloorReader,
    /// The boot slots as PID 1 reports them now (`None`: no report).
    pub boot: BootReader,
    /// How many distinct update approvers must approve applying a bundle
    /// (`RuntimeConfig.update_approvals`).
    pub approvals: u32,
    /// The release's update policy (signed by the release key), which decides `update.apply`;
    /// why there is none, when the image carries none that verifies (every apply is refused).
    pub policy: Result<PolicyBundle, String>,
}

/// The governed action of applying a staged update.
pub const UPDATE_APPLY_ACTION: &str = "update.apply";

/// Fetches the staged update bundle with this SHA-256 (second argument) from the admitted mesh
/// peer with this node identity (first): its bytes, or why not (one line).
pub type BundleFetcher = Box<dyn FnMut(&[u8; 32], &[u8; 32]) -> Result<Vec<u8>, String> + Send>;

/// The bundle staged under `state_dir`, if it is the one with `sha256` (what a node serves to
/// an admitted peer pulling it): read whole and its digest checked against the staged record
/// and the request. Why not, in one line, otherwise.
pub fn staged_bundle(state_dir: &Path, sha256: &[u8; 32]) -> Result<Vec<u8>, String> {
    let record = match std::fs::read(state_dir.join(STAGED_RECORD)) {
        Ok(bytes) => serde_json::from_slice::<StagedUpdate>(&bytes)
            .map_err(|e| format!("the staged update record does not parse: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no update is staged here".into()),
        Err(e) => return Err(format!("reading the staged update record: {e}")),
    };
    if &record.sha256 != sha256 {
        return Err(format!(
            "the update staged here is v{} with SHA-256 {}, not {}",
            record.release_version,
            hex::encode(record.sha256),
            hex::encode(sha256)
        ));
    }
    let bytes = std::fs::read(state_dir.join(STAGED_BUNDLE)).map_err(|e| format!("reading the staged bundle: {e}"))?;
    if Blob::of(&bytes).sha256 != *sha256 {
        return Err("the staged bundle on disk does not match its record".into());
    }
    Ok(bytes)
}

/// Reads PID 1's boot-slot report (on the appliance; `None` in host tests).
pub type BootReader = Box<dyn FnMut() -> Option<sovereign_boot_contract::slots::BootSlots> + Send>;

use sovereign_boot_contract::slots::{STAGED_BUNDLE, STAGED_RECORD};

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    sovereign_audit::store::replace_durably(path, bytes).map_err(|e| e.to_string())
}

impl Engine {
    fn update_trust(&mut self) -> Result<(&mut UpdateTrust, VerifyingKey), EngineError> {
        let release = self.release;
        self.update
            .as_mut()
            .map(|u| (u, release))
            .ok_or_else(|| EngineError::invalid("this node has no update root: it takes no update bundles"))
    }

    /// The update state now.
    pub(super) fn update_state(&mut self) -> Result<UpdateState, EngineError> {
        let dir = self.state_dir.clone();
        let (trust, _) = self.update_trust()?;
        let floor =
            (trust.floor)().map_err(|e| EngineError::invalid(format!("reading the anti-rollback floor: {e}")))?;
        let staged = match std::fs::read(dir.join(STAGED_RECORD)) {
            Ok(bytes) => Some(
                serde_json::from_slice::<StagedUpdate>(&bytes)
                    .map_err(|e| EngineError::CorruptRecord { what: STAGED_RECORD.into(), why: e.to_string() })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(EngineError::invalid(format!("reading {STAGED_RECORD}: {e}"))),
        };
        let boot = (trust.boot)();
        let approvals_required = trust.approvals;
        Ok(UpdateState {
            running_version: trust.running_version,
            floor,
            staged,
            boot,
            applying: false,
            approvals_required,
        })
    }

    /// Applies the staged bundle: checks there is one, that the running release is not on
    /// trial itself (PID 1 would refuse to install over it) and that enough update approvers
    /// approved this bundle, audits the decision and answers with `applying`; the daemon then
    /// stops the runtime for PID 1 to install and reboot.
    pub(super) fn update_apply(
        &mut self,
        approvals: &[Approval],
        certificates: &[RoleCertificate],
        revocations: Option<&RevocationList>,
    ) -> Result<UpdateState, EngineError> {
        let mut state = self.update_state()?;
        let mut refusal = match (&state.staged, &state.boot) {
            (None, _) => Some("no update is staged (push a bundle first)".to_string()),
            (Some(_), None) => Some("PID 1 reported no boot slot for this boot: nothing to fall back to".to_string()),
            (Some(_), Some(boot)) if boot.trial => {
                Some(format!("the running release v{} is itself on trial, not yet blessed", boot.running_version))
            }
            _ => None,
        };
        let mut approved_by = Vec::new();
        let to_approve = if refusal.is_none() { state.staged.clone() } else { None };
        if let Some(staged) = to_approve
            && state.approvals_required > 0
        {
            let guarded = Guarded {
                request_digest: update_apply_digest(staged.release_version, &staged.sha256),
                role: UPDATE_APPROVER_ROLE.into(),
                threshold: state.approvals_required as usize,
            };
            let counted = match revocations {
                None => Err(format!(
                    "this node requires {} approvals by role {UPDATE_APPROVER_ROLE:?}; the request carries no revocation list to judge their certificates by",
                    state.approvals_required
                )),
                Some(list) => self.install_revocations(list).map_err(|e| e.to_string()).and_then(|()| {
                    check_approvals(&guarded, approvals, certificates, &self.admin, list, sovereign_canonical::now_ms())
                        .map(|tally| tally.counted)
                        .map_err(|e| e.to_string())
                }),
            };
            match counted {
                Ok(counted) => approved_by = counted,
                Err(why) => refusal = Some(why),
            }
        }
        if refusal.is_none()
            && let Some(staged) = state.staged.clone()
        {
            refusal = self.decide_update(&staged, &state, approved_by.len())?;
        }
        if let Some(why) = refusal {
            let e = EngineError::invalid(format!("update not applied: {why}"));
            return match self.log(EntryKind::Refusal, Severity::Warning, vec![], e.to_string()) {
                Ok(_) => Err(e),
                Err(audit) => Err(EngineError::invalid(format!("{e}; and {audit}"))),
            };
        }
        let Some(staged) = state.staged.clone() else { return Err(EngineError::invalid("no update is staged")) };
        let approvers: Vec<String> = approved_by.iter().map(hex::encode).collect();
        let line = format!(
            "update v{} applying: bundle {}; approved by {} of {} required update approvers{}; the runtime stops, PID 1 verifies it again, installs it on trial beside v{} and reboots",
            staged.release_version,
            hex::encode(staged.sha256),
            approvers.len(),
            state.approvals_required,
            if approvers.is_empty() { String::new() } else { format!(" ({})", approvers.join(", ")) },
            state.running_version
        );
        self.log(EntryKind::Update, Severity::Info, vec![staged.sha256], line)?;
        // A new installation: its trial and its outcome are recorded afresh (`record_boot`).
        let outcomes = self.state_dir.join("update/outcomes");
        match std::fs::remove_dir_all(&outcomes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::invalid(format!("clearing {}: {e}", outcomes.display()))),
        }
        state.applying = true;
        Ok(state)
    }

    /// The update policy's decision on applying `staged`, audited with its input (a compliance
    /// bundle re-evaluates it offline; the policy is kept for the bundles). `Some(why)`: denied,
    /// or no policy to decide with.
    fn decide_update(
        &mut self,
        staged: &StagedUpdate,
        state: &UpdateState,
        approvals_verified: usize,
    ) -> Result<Option<String>, EngineError> {
        let policy = match self.update.as_ref().map(|t| t.policy.clone()) {
            Some(Ok(policy)) => policy,
            Some(Err(why)) => return Ok(Some(format!("no update policy to decide with ({why})"))),
            None => return Ok(Some("this node takes no updates".into())),
        };
        let context = [
            ("running_version", serde_json::json!(state.running_version)),
            ("release_version", serde_json::json!(staged.release_version)),
            ("floor", serde_json::json!(state.floor)),
            ("approvals_required", serde_json::json!(state.approvals_required)),
            ("approvals_verified", serde_json::json!(approvals_verified)),
        ];
        let input = PolicyInput {
            principal: self.requester.map(hex::encode).unwrap_or_default(),
            // The control API served the request: its signer is one of the configured admins.
            roles: vec!["admin".into()],
            action: UPDATE_APPLY_ACTION.into(),
            resource: format!("release/v{}/{}", staged.release_version, hex::encode(staged.sha256)),
            environment: "appliance".into(),
            context: context.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            signals: Default::default(),
            measurements: self.measurements.clone(),
        };
        let record =
            PolicyEngine::new().map_err(|e| EngineError::Governance(e.to_string()))?.evaluate_uncached(&policy, &input);
        let policy_json = serde_json::to_vec(&policy).map_err(EngineError::encode("the update policy"))?;
        self.store.put_record(&format!("policy-{}", hex::encode(policy.hash())), &policy_json)?;
        let digests = vec![record.state().record_hash, record.policy_hash, record.input_hash];
        let allowed = record.verdict == Verdict::Allow;
        let reasons = record.reasons.join("; ");
        let evidence = DecisionEvidence { record, input };
        let payload = serde_json::to_string(&evidence).map_err(EngineError::encode("the update decision"))?;
        let severity = if allowed { Severity::Info } else { Severity::Notice };
        self.log(EntryKind::PolicyDecision, severity, digests, payload)?;
        Ok((!allowed).then(|| format!("the update policy denies it: {reasons}")))
    }

    /// Records what PID 1 reports about this boot's slot, once per event, in the audit log (so
    /// that compliance bundles carry every update's outcome): a release booted on trial, and a
    /// newer release whose trial failed (the boot loader fell back to this one). Called once at
    /// start; anchored like a command. Returns the lines it logged.
    pub fn record_boot(&mut self) -> Result<Vec<String>, EngineError> {
        let Some(trust) = self.update.as_mut() else { return Ok(vec![]) };
        let Some(boot) = (trust.boot)() else { return Ok(vec![]) };
        let mut lines = Vec::new();
        let recorded = self.state_dir.join("update/outcomes");
        std::fs::create_dir_all(&recorded)
            .map_err(|source| EngineError::StateDir { path: recorded.clone(), source })?;
        let mut events = Vec::new();
        if boot.trial {
            let line = format!(
                "update v{} on its trial boot: PID 1 blesses it (and raises the floor) once this runtime is healthy",
                boot.running_version
            );
            events.push((format!("trial-v{}", boot.running_version), Severity::Info, line));
        }
        if let Some(failed) = boot.failed_update {
            let line = format!(
                "update v{failed} FAILED its trial boot: the boot loader fell back to v{}; the floor did not move",
                boot.running_version
            );
            events.push((format!("failed-v{failed}"), Severity::Warning, line));
        }
        for (name, severity, line) in events {
            let marker = recorded.join(&name);
            if marker.exists() {
                continue;
            }
            self.log(EntryKind::Update, severity, vec![], line.clone())?;
            write_durably(&marker, line.as_bytes()).map_err(EngineError::invalid)?;
            lines.push(line);
        }
        if !lines.is_empty() {
            self.anchor_now().map_err(EngineError::invalid)?;
        }
        Ok(lines)
    }

    /// Verifies the pushed bundle and stages it; audits either way.
    pub(super) fn update_push(&mut self, bundle: &Blob, payloads: &Payloads) -> Result<UpdateState, EngineError> {
        let bytes = payloads.get(bundle, "update bundle").map_err(|e| EngineError::invalid(e.to_string()))?;
        self.stage_bundle(bytes, bundle.sha256, "")
    }

    /// Pulls the bundle with `sha256` from the admitted mesh peer `from` and stages it as a
    /// push would (verified before a byte is written); audits either way.
    pub(super) fn update_pull(&mut self, from: &[u8; 32], sha256: &[u8; 32]) -> Result<UpdateState, EngineError> {
        let node = &hex::encode(from)[..16];
        let fetched = match self.fetch_bundle.as_mut() {
            None => Err("this node has no mesh to pull an update from".to_string()),
            Some(fetch) => fetch(from, sha256),
        };
        let fetched = fetched.and_then(|bytes| {
            let got = Blob::of(&bytes).sha256;
            if &got == sha256 {
                Ok(bytes)
            } else {
                Err(format!(
                    "the bundle received has SHA-256 {}, not the {} asked for",
                    hex::encode(got),
                    hex::encode(sha256)
                ))
            }
        });
        match fetched {
            Ok(bytes) => self.stage_bundle(&bytes, *sha256, &format!(", pulled from node {node}")),
            Err(why) => {
                let e = EngineError::invalid(format!("update not pulled from node {node}: {why}"));
                match self.log(EntryKind::Refusal, Severity::Warning, vec![*sha256], e.to_string()) {
                    Ok(_) => Err(e),
                    Err(audit) => Err(EngineError::invalid(format!("{e}; and {audit}"))),
                }
            }
        }
    }

    /// Verifies `bytes` (SHA-256 `sha256`) as an update for this node and stages them; audits
    /// either way (`source`: where they came from, for the audit line).
    fn stage_bundle(&mut self, bytes: &[u8], sha256: [u8; 32], source: &str) -> Result<UpdateState, EngineError> {
        let verified = (|| {
            let (trust, release_key) = self.update_trust()?;
            let floor =
                (trust.floor)().map_err(|e| EngineError::invalid(format!("reading the anti-rollback floor: {e}")))?;
            let check = sovereign_update::Trust {
                root: trust.root,
                root_serial: 0,
                keyset_serial: 0,
                // A release at or below the running one is no update either.
                floor: floor.max(trust.running_version),
                platform: trust.platform.clone(),
                release_key,
            };
            sovereign_update::verify(bytes, &check).map_err(|e| EngineError::invalid(format!("update refused: {e}")))
        })();
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                let line = e.to_string();
                return match self.log(EntryKind::Refusal, Severity::Warning, vec![sha256], line) {
                    Ok(_) => Err(e),
                    Err(audit) => Err(EngineError::invalid(format!("{e}; and {audit}"))),
                };
            }
        };
        let staged = StagedUpdate {
            release_version: verified.release_version,
            sha256,
            size: bytes.len() as u64,
            signers: verified.signers.clone(),
            keyset_serial: verified.keyset.serial,
            staged_ms: sovereign_canonical::now_ms(),
        };
        let dir = self.state_dir.join("update");
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::StateDir { path: dir.clone(), source })?;
        let record = serde_json::to_vec_pretty(&staged).map_err(EngineError::encode("the staged update record"))?;
        // The bundle first, then the record naming it: a cut between them leaves the old record
        // (or none) and a bundle it does not name, which the installer refuses by digest.
        write_durably(&self.state_dir.join(STAGED_BUNDLE), bytes).map_err(EngineError::invalid)?;
        write_durably(&self.state_dir.join(STAGED_RECORD), &record).map_err(EngineError::invalid)?;
        let line = format!(
            "update v{} staged: bundle {} ({} bytes), signed by {} release keys of key set {}{source}",
            staged.release_version,
            hex::encode(staged.sha256),
            staged.size,
            staged.signers.len(),
            staged.keyset_serial
        );
        self.log(EntryKind::Update, Severity::Info, vec![sha256], line)?;
        self.update_state()
    }
}
