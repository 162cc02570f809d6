//! A governed action from request to permit, in one place: the operator's role signature (its
//! context, expiry, certificate from the admin root, revocation, single-use nonce), M-of-N
//! approvals when the action is guarded, the policy decision (CozoDB, memoized), and the
//! binding the kernel verifies before it issues the permit. Every step that refuses is
//! audited with its reason; every decision is audited with its input, so a compliance bundle
//! can be re-evaluated offline.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sovereign_audit::{Entry, EntryKind, Severity};

use crate::approvals::{Approval, Guarded, check_approvals};
use crate::canonical::sha256;
use crate::kernel::{Batch, ExecutionContext, ExecutionRequest, Kernel, Permit, Verdict};
use crate::policy::{DecisionRecord, PolicyBundle, PolicyEngine, PolicyInput};
use crate::signed::{Refusal, RevocationList, RoleCertificate, RoleSignature};

/// The replay-store name of role-signature nonces.
const ROLE_NONCE: &str = "role-signature";

/// How long a binding stays valid after the decision.
pub const BINDING_LIFETIME_MS: u64 = 30_000;

/// Everything an operator sends to have an action governed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GovernedRequest {
    /// What to execute.
    pub execution: ExecutionRequest,
    /// The resource acted on.
    pub resource: String,
    /// The environment (must match the role signature's).
    pub environment: String,
    /// The operator's role signature for (action, environment).
    pub role_signature: RoleSignature,
    /// The operator's role certificate.
    pub certificate: RoleCertificate,
    /// Signals for the policy.
    #[serde(default)]
    pub signals: BTreeMap<String, serde_json::Value>,
    /// Approvals, when the action is guarded.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// The approvers' role certificates.
    #[serde(default)]
    pub approver_certificates: Vec<RoleCertificate>,
}

/// The audit payload of a decision: the record and the input it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvidence {
    /// The record.
    pub record: DecisionRecord,
    /// The input.
    pub input: PolicyInput,
}

/// The governance of one node. Its kernel is private: a binding is minted only by
/// [`Governor::govern`], from a decision it made and audited, and a permit is spent only by
/// [`Governor::execute`]. Neither door exists outside the crate:
///
/// ```compile_fail,E0616
/// # fn door(governor: &mut sovereign_governance::governor::Governor) {
/// // The kernel cannot be reached from outside (private field)...
/// let _ = &mut governor.kernel;
/// # }
/// ```
///
/// ```compile_fail,E0624
/// # use sovereign_governance::kernel::{ExecutionRequest, Kernel, PolicyState, Verdict};
/// # fn door(kernel: &Kernel, request: &ExecutionRequest) {
/// // ...and a kernel held elsewhere signs no binding for a caller-built decision...
/// let state = PolicyState { verdict: Verdict::Allow, record_hash: [0; 32] };
/// let _ = kernel.bind(&state, request, [0; 16], u64::MAX);
/// # }
/// ```
///
/// ```compile_fail,E0624
/// # fn door(node: &ed25519_dalek::SigningKey) {
/// // ...nor can a caller holding the node key mint one itself.
/// let _ = sovereign_governance::signed::PolicyBinding::create([0; 32], &serde_json::json!({}), [0; 16], 0, node);
/// # }
/// ```
pub struct Governor {
    kernel: Kernel,
    engine: PolicyEngine,
    policy: PolicyBundle,
    admin: VerifyingKey,
    revoked: RevocationList,
    guarded: BTreeMap<String, (String, usize)>,
    measurements: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor").field("policy", &self.policy.name).finish_non_exhaustive()
    }
}

impl Governor {
    /// The replay store's head (what the state anchor binds).
    pub fn replay_head(&self) -> sovereign_audit::anchor::ReplayHead {
        self.kernel.replay_head()
    }

    /// A governor enforcing `policy` (verified against `policy_signers`), with role
    /// certificates from `admin`, revocations `revoked`, and platform `measurements` (e.g.
    /// `{"attested": true}`) handed to every decision.
    pub fn new(
        kernel: Kernel,
        policy: PolicyBundle,
        policy_signers: &[VerifyingKey],
        admin: VerifyingKey,
        revoked: RevocationList,
        measurements: BTreeMap<String, serde_json::Value>,
    ) -> Result<Self, Refusal> {
        policy.verify(policy_signers)?;
        revoked.verify(&admin, 0)?;
        Ok(Governor {
            kernel,
            engine: PolicyEngine::new()?,
            policy,
            admin,
            revoked,
            guarded: BTreeMap::new(),
            measurements,
        })
    }

    /// Requires `threshold` approvals by holders of `role` for `action`.
    pub fn guard(&mut self, action: &str, role: &str, threshold: usize) {
        self.guarded.insert(action.into(), (role.into(), threshold));
    }

    /// The digest approvers sign for a guarded request: SHA-256 of the canonical JSON of the
    /// bound execution context, the resource and the environment.
    pub fn approval_digest(request: &GovernedRequest) -> [u8; 32] {
        Self::approval_digest_of(&request.execution, &request.resource, &request.environment)
    }

    /// [`Governor::approval_digest`] from its three parts, for whoever must show approvers what
    /// to sign before the whole request exists (a pipeline paused at promotion).
    pub fn approval_digest_of(execution: &ExecutionRequest, resource: &str, environment: &str) -> [u8; 32] {
        sha256(&crate::canonical::canonical_json(&serde_json::json!({
            "execution": execution.bound_context(),
            "resource": resource,
            "environment": environment,
        })))
    }

    /// Runs `work` under `permit` (consumed) in this governor's kernel, auditing start and end.
    pub fn execute<T>(
        &mut self,
        permit: Permit,
        now_ms: u64,
        work: impl FnOnce(&ExecutionContext) -> T,
    ) -> Result<T, Refusal> {
        self.kernel.execute(permit, now_ms, work)
    }

    /// Governs one request: a permit, or a refusal that is already in the audit log.
    pub fn govern(&mut self, request: &GovernedRequest, now_ms: u64) -> Result<(Permit, DecisionRecord), Refusal> {
        let role_nonce = request.role_signature.context.nonce.to_vec();
        match self.decide(request, now_ms) {
            Err(refusal) => Err(self.kernel.refuse(&request.execution, refusal, now_ms)),
            Ok((record, entry)) if record.verdict == Verdict::Deny => {
                // The role signature is spent on a denied request too.
                let _ = self.kernel.claim_nonce(ROLE_NONCE, &role_nonce);
                if let Err(e) = self.kernel.record_entry(entry) {
                    return Err(self.kernel.refuse(&request.execution, e, now_ms));
                }
                let refusal =
                    Refusal::new("policy", format!("{} denies: {}", record.policy, record.reasons.join("; ")));
                Err(self.kernel.refuse(&request.execution, refusal, now_ms))
            }
            Ok((record, entry)) => {
                let state = record.state();
                let mut nonce = [0u8; 16];
                OsRng.fill_bytes(&mut nonce);
                let binding = self.kernel.bind(&state, &request.execution, nonce, now_ms + BINDING_LIFETIME_MS)?;
                // One durable step each: role-signature nonce, binding nonce and execution ID in
                // the replay store; the decision and the authorization in the audit log.
                let batch = Batch { nonces: vec![(ROLE_NONCE.to_string(), role_nonce)], entries: vec![entry] };
                let permit =
                    self.kernel.authorize_batched(&request.execution, &state, Some(&binding), batch, now_ms)?;
                Ok((permit, record))
            }
        }
    }

    fn decide(&mut self, request: &GovernedRequest, now_ms: u64) -> Result<(DecisionRecord, Entry), Refusal> {
        let action = &request.execution.action;
        let sig = &request.role_signature;
        sig.verify(action, &request.environment, &request.certificate, &self.admin, &self.revoked, now_ms)?;
        if self.kernel.nonce_used(ROLE_NONCE, &sig.context.nonce) {
            return Err(Refusal::new("role signature", "nonce already used (replay)"));
        }
        let mut context: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        if let serde_json::Value::Object(map) = &request.execution.context {
            for (k, v) in map {
                if !v.is_object() && !v.is_array() {
                    context.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some((role, threshold)) = self.guarded.get(action) {
            let guarded =
                Guarded { request_digest: Self::approval_digest(request), role: role.clone(), threshold: *threshold };
            let tally = check_approvals(
                &guarded,
                &request.approvals,
                &request.approver_certificates,
                &self.admin,
                &self.revoked,
                now_ms,
            )?;
            context.insert("approvals_verified".into(), serde_json::json!(tally.counted.len()));
        }
        let input = PolicyInput {
            principal: hex::encode(sig.operator),
            roles: request.certificate.roles.clone(),
            action: action.clone(),
            resource: request.resource.clone(),
            environment: request.environment.clone(),
            context,
            signals: request.signals.clone(),
            measurements: self.measurements.clone(),
        };
        let record = self.engine.decide(&self.policy, &input);
        let evidence = DecisionEvidence { record: record.clone(), input };
        let payload = serde_json::to_string(&evidence).map_err(|e| Refusal::new("decision", e.to_string()))?;
        let severity = if record.verdict == Verdict::Allow { Severity::Info } else { Severity::Notice };
        let entry = Entry::new(
            EntryKind::PolicyDecision,
            now_ms,
            severity,
            vec![record.state().record_hash, record.policy_hash, record.input_hash],
            payload.into_bytes(),
        );
        Ok((record, entry))
    }
}
