//! The execution kernel: nothing executes without a verified policy binding.
//!
//! The guarantee is in the types: [`Kernel::execute`] takes a [`Permit`], and the only way to
//! obtain one is [`Kernel::authorize`], which verifies the binding (node signature, the allowing
//! decision it binds, the exact execution context, expiry), consumes its nonce and the execution
//! ID in the persistent replay store, and audits. A `Permit` has private fields, is neither
//! `Clone` nor constructible elsewhere, and is consumed by `execute`:
//!
//! ```compile_fail,E0451
//! // Outside this module a Permit cannot be made up (its fields are private):
//! let forged = sovereign_governance::kernel::Permit {
//!     execution_id: String::new(),
//!     action: String::new(),
//!     context_hash: [0; 32],
//!     binding_digest: [0; 32],
//!     kernel: [0; 32],
//! };
//! ```
//!
//! `execute` also checks at run time that the permit was issued by this kernel and not used.
//! Every attempt — allowed or refused — is appended to the audit log; if the log cannot take
//! the entry, the attempt is refused (fail closed).

use std::collections::HashSet;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sovereign_audit::{AuditLog, Entry, EntryKind, Severity};

#[cfg(any(test, feature = "engine"))]
use crate::canonical::canonical_json;
use crate::canonical::sha256;
use crate::replay::ReplayStore;
#[cfg(any(test, feature = "engine"))]
use crate::signed::PolicyBinding;
use crate::signed::Refusal;

/// The verdict of a policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// What the kernel needs of a decision: its verdict and the hash of its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// The verdict.
    pub verdict: Verdict,
    /// SHA-256 of the decision record's canonical bytes.
    pub record_hash: [u8; 32],
}

/// One requested execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    /// Single use, chosen by the requester.
    pub execution_id: String,
    /// What to do.
    pub action: String,
    /// Everything the execution depends on (hashed canonically into the binding).
    pub context: serde_json::Value,
}

impl ExecutionRequest {
    /// The context the binding covers: `{"action", "context", "execution_id"}` as canonical JSON.
    pub fn bound_context(&self) -> serde_json::Value {
        serde_json::json!({ "execution_id": self.execution_id, "action": self.action, "context": self.context })
    }
}

/// What else to make durable together with an authorization.
#[derive(Debug, Default)]
pub struct Batch {
    /// Single-use nonces of other signed objects: (what, nonce).
    pub nonces: Vec<(String, Vec<u8>)>,
    /// Audit entries to append before the authorization's own.
    pub entries: Vec<Entry>,
}

/// Proof that authorization succeeded for one execution. Only [`Kernel::authorize`] makes one.
#[derive(Debug)]
pub struct Permit {
    execution_id: String,
    action: String,
    context_hash: [u8; 32],
    binding_digest: [u8; 32],
    kernel: [u8; 32],
}

impl Permit {
    /// The execution ID this permit is for.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }
}

/// What the work sees while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionContext {
    /// The execution ID.
    pub execution_id: String,
    /// The action.
    pub action: String,
    /// SHA-256 of the bound context.
    pub context_hash: [u8; 32],
}

/// The kernel of one node.
pub struct Kernel {
    node: SigningKey,
    replay: ReplayStore,
    audit: Arc<AuditLog>,
    issued: HashSet<[u8; 32]>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("replay_entries", &self.replay.len()).finish_non_exhaustive()
    }
}

fn id_key(domain: &str, id: &[u8]) -> [u8; 32] {
    let mut b = domain.as_bytes().to_vec();
    b.push(b'\n');
    b.extend_from_slice(id);
    sha256(&b)
}

impl Kernel {
    /// A kernel signing bindings with `node`, remembering used IDs in `replay`, auditing to
    /// `audit`.
    pub fn new(node: SigningKey, replay: ReplayStore, audit: Arc<AuditLog>) -> Self {
        Kernel { node, replay, audit, issued: HashSet::new() }
    }

    /// The replay store's head (what the state anchor binds).
    pub fn replay_head(&self) -> sovereign_audit::anchor::ReplayHead {
        self.replay.head()
    }

    /// Appends one entry to the audit log; a failure is a refusal (fail closed).
    pub fn record(
        &self,
        kind: EntryKind,
        severity: Severity,
        digests: Vec<[u8; 32]>,
        payload: String,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.audit
            .append_entry(Entry::new(kind, now_ms, severity, digests, payload.into_bytes()))
            .map(|_| ())
            .map_err(|e| Refusal::new("audit log", format!("cannot record the attempt: {e}")))
    }

    /// Appends a prepared entry; a failure is a refusal (fail closed).
    pub fn record_entry(&self, entry: Entry) -> Result<(), Refusal> {
        self.audit.append_entry(entry).map(|_| ()).map_err(|e| Refusal::new("audit log", format!("cannot record: {e}")))
    }

    /// Audits a refusal of `request` and returns it (with the audit failure added, if any).
    pub fn refuse(&self, request: &ExecutionRequest, refusal: Refusal, now_ms: u64) -> Refusal {
        let payload = format!("execution {:?} ({}) refused: {refusal}", request.execution_id, request.action);
        match self.record(EntryKind::Refusal, Severity::Warning, vec![], payload, now_ms) {
            Ok(()) => refusal,
            Err(audit) => Refusal::new(&refusal.what, format!("{}; and {audit}", refusal.why)),
        }
    }

    /// Signs a binding of an allowing decision to `request` (the node's side of the binding).
    /// Crate-private: only [`crate::governor::Governor::govern`] mints bindings, from a decision
    /// it just made and audited.
    #[cfg(any(test, feature = "engine"))]
    pub(crate) fn bind(
        &self,
        state: &PolicyState,
        request: &ExecutionRequest,
        nonce: [u8; 16],
        expiry_ms: u64,
    ) -> Result<PolicyBinding, Refusal> {
        if state.verdict != Verdict::Allow {
            return Err(Refusal::new("policy binding", "the decision denies this action; nothing to bind"));
        }
        Ok(PolicyBinding::create(state.record_hash, &request.bound_context(), nonce, expiry_ms, &self.node))
    }

    /// Verifies everything and issues the permit; every outcome is audited. Crate-private (only
    /// the governed path authorizes); the unit tests below drive it directly.
    #[cfg(test)]
    pub(crate) fn authorize(
        &mut self,
        request: &ExecutionRequest,
        state: &PolicyState,
        binding: Option<&PolicyBinding>,
        now_ms: u64,
    ) -> Result<Permit, Refusal> {
        self.authorize_batched(request, state, binding, Batch::default(), now_ms)
    }

    /// [`Kernel::authorize`], with other single-use nonces claimed and other audit entries
    /// written in the same durable step (one `fdatasync` for the replay store, one for the log).
    #[cfg(any(test, feature = "engine"))]
    pub(crate) fn authorize_batched(
        &mut self,
        request: &ExecutionRequest,
        state: &PolicyState,
        binding: Option<&PolicyBinding>,
        batch: Batch,
        now_ms: u64,
    ) -> Result<Permit, Refusal> {
        let result = self.check(request, state, binding, &batch.nonces, now_ms);
        match result {
            Err(refusal) => Err(self.refuse(request, refusal, now_ms)),
            Ok(binding_digest) => {
                let context_hash = sha256(&canonical_json(&request.bound_context()));
                let mut entries = batch.entries;
                entries.push(Entry::new(
                    EntryKind::PolicyBinding,
                    now_ms,
                    Severity::Info,
                    vec![binding_digest, state.record_hash, context_hash],
                    format!("execution {:?} ({}) authorized", request.execution_id, request.action).into_bytes(),
                ));
                self.audit
                    .append_batch(entries)
                    .map_err(|e| Refusal::new("audit log", format!("cannot record the authorization: {e}")))?;
                self.issued.insert(binding_digest);
                Ok(Permit {
                    execution_id: request.execution_id.clone(),
                    action: request.action.clone(),
                    context_hash,
                    binding_digest,
                    kernel: self.node.verifying_key().to_bytes(),
                })
            }
        }
    }

    #[cfg(any(test, feature = "engine"))]
    fn check(
        &mut self,
        request: &ExecutionRequest,
        state: &PolicyState,
        binding: Option<&PolicyBinding>,
        nonces: &[(String, Vec<u8>)],
        now_ms: u64,
    ) -> Result<[u8; 32], Refusal> {
        let binding = binding.ok_or_else(|| Refusal::new("execution", "blocked: no policy binding provided"))?;
        if state.verdict != Verdict::Allow {
            return Err(Refusal::new("policy decision", "denies this action"));
        }
        if request.execution_id.is_empty() || request.execution_id.len() > 256 {
            return Err(Refusal::new("execution id", "must be 1–256 bytes"));
        }
        binding.verify(&state.record_hash, &request.bound_context(), &self.node.verifying_key(), now_ms)?;
        let execution = id_key("sovereign-execution-id/v1", request.execution_id.as_bytes());
        if self.replay.contains(&execution) {
            return Err(Refusal::new("execution id", format!("{:?} already used (replay)", request.execution_id)));
        }
        let mut claims: Vec<(&str, [u8; 32])> =
            nonces.iter().map(|(what, n)| (what.as_str(), id_key(&format!("sovereign-nonce/{what}"), n))).collect();
        claims.push(("policy binding nonce", id_key("sovereign-binding-nonce/v1", &binding.nonce)));
        claims.push(("execution id", execution));
        self.replay.claim_all(&claims)?;
        Ok(binding.digest())
    }

    /// Claims a single-use nonce of another signed object (e.g. a role signature).
    pub fn claim_nonce(&mut self, what: &str, nonce: &[u8]) -> Result<(), Refusal> {
        self.replay.claim(what, id_key(&format!("sovereign-nonce/{what}"), nonce))
    }

    /// Whether a nonce of another signed object was already claimed.
    pub fn nonce_used(&self, what: &str, nonce: &[u8]) -> bool {
        self.replay.contains(&id_key(&format!("sovereign-nonce/{what}"), nonce))
    }

    /// Runs `work` under `permit` (consumed), auditing start and end.
    pub fn execute<T>(
        &mut self,
        permit: Permit,
        now_ms: u64,
        work: impl FnOnce(&ExecutionContext) -> T,
    ) -> Result<T, Refusal> {
        if permit.kernel != self.node.verifying_key().to_bytes() || !self.issued.remove(&permit.binding_digest) {
            return Err(Refusal::new("permit", "not issued by this kernel, or already used"));
        }
        let ctx = ExecutionContext {
            execution_id: permit.execution_id.clone(),
            action: permit.action.clone(),
            context_hash: permit.context_hash,
        };
        self.record(
            EntryKind::ExecutionStart,
            Severity::Info,
            vec![permit.binding_digest, permit.context_hash],
            format!("execution {:?} ({}) started", ctx.execution_id, ctx.action),
            now_ms,
        )?;
        let out = work(&ctx);
        self.record(
            EntryKind::ExecutionEnd,
            Severity::Info,
            vec![permit.binding_digest],
            format!("execution {:?} ({}) ended", ctx.execution_id, ctx.action),
            now_ms,
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
