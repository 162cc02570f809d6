//! The policy engine: Datalog programs (CozoScript) from signed policy bundles, evaluated by
//! CozoDB in memory into a deterministic decision record.
//!
//! A policy program defines `allow[reason]` and/or `deny[reason]` rules over the input
//! relations the engine provides:
//!
//! | relation | rows |
//! | --- | --- |
//! | `input_principal[key]` | the operator's public key (hex) |
//! | `input_role[role]` | each role from the operator's verified role certificates |
//! | `input_action[action]`, `input_resource[resource]`, `input_environment[environment]` | one row each |
//! | `input_context[key, value]` | the request context (scalars) |
//! | `input_signal[name, value]` | signals (numbers, booleans, strings) |
//! | `input_measurement[name, value]` | platform measurements (e.g. `attested`, PCR digests) |
//!
//! The verdict: **deny overrides allow** — any `deny` row denies with its reasons; otherwise any
//! `allow` row allows with its reasons; otherwise deny ("no rule allowed this request"). Any
//! error (parse, evaluation, time-out, size) is a deny that names the error. The record lists
//! reasons sorted and de-duplicated, so the same policy and input give byte-identical records.
//!
//! Bounded: program ≤ 64 KiB, input ≤ 256 facts of ≤ 1 KiB each, evaluation ≤ 1 s (CozoDB
//! `:timeout`), ≤ 1,000 result rows. Decisions are memoized on (policy hash, input hash): sound
//! because evaluation is deterministic, and what keeps a governed action under CozoDB's
//! per-query cost.
//!
//! Must never: allow on an error, or produce two different records for one (policy, input).

use std::collections::{BTreeMap, HashMap};

use cozo::{DataValue, DbInstance, ScriptMutability};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, canonical_json, sha256};
use crate::kernel::{PolicyState, Verdict};
use crate::signed::Refusal;

/// Largest policy program.
pub const MAX_PROGRAM: usize = 64 * 1024;
/// Most input facts.
pub const MAX_FACTS: usize = 256;
/// Largest single input value or key.
pub const MAX_VALUE: usize = 1024;
/// Most result rows.
pub const MAX_ROWS: usize = 1000;
/// Memoized decisions kept.
pub const MEMO_CAPACITY: usize = 4096;

/// A signed policy bundle: a named, versioned Datalog program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    /// Name (e.g. `claims-approval`).
    pub name: String,
    /// Version (monotonic per name).
    pub version: u64,
    /// The CozoScript program.
    pub program: String,
    /// The signer (the release key or an admin key).
    pub signer: [u8; 32],
    /// Ed25519 over [`PolicyBundle::signing_bytes`].
    pub signature: Vec<u8>,
}

impl PolicyBundle {
    /// `Canonical("sovereign-policy-bundle/v1") ‖ name ‖ version ‖ program ‖ signer`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        Canonical::new("sovereign-policy-bundle/v1")
            .text(&self.name)
            .u64(self.version)
            .text(&self.program)
            .fixed(&self.signer)
            .into_bytes()
    }

    /// The policy hash: SHA-256 of the signing bytes.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.signing_bytes())
    }

    /// Signs a program.
    pub fn sign(name: &str, version: u64, program: &str, key: &SigningKey) -> Self {
        let mut b = PolicyBundle {
            name: name.into(),
            version,
            program: program.into(),
            signer: key.verifying_key().to_bytes(),
            signature: vec![],
        };
        b.signature = key.sign(&b.signing_bytes()).to_bytes().to_vec();
        b
    }

    /// Checks the signer is trusted, the signature, and the bounds.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), Refusal> {
        const WHAT: &str = "policy bundle";
        if !trusted.iter().any(|k| k.as_bytes() == &self.signer) {
            return Err(Refusal::new(WHAT, "signed by a key that may not sign policies"));
        }
        let key = VerifyingKey::from_bytes(&self.signer).map_err(|_| Refusal::new(WHAT, "signer is not a key"))?;
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| Refusal::new(WHAT, "signature is not 64 bytes"))?;
        key.verify_strict(&self.signing_bytes(), &sig).map_err(|_| Refusal::new(WHAT, "signature does not verify"))?;
        if self.program.len() > MAX_PROGRAM {
            return Err(Refusal::new(WHAT, format!("program is {} bytes; limit {MAX_PROGRAM}", self.program.len())));
        }
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(Refusal::new(WHAT, "name must be 1–128 bytes"));
        }
        Ok(())
    }

    /// Parses a bundle from its JSON form, refusing anything malformed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Refusal> {
        serde_json::from_slice(bytes).map_err(|e| Refusal::new("policy bundle", format!("malformed: {e}")))
    }
}

/// A request to decide.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// The operator's public key (hex).
    pub principal: String,
    /// Roles from the operator's verified certificates.
    pub roles: Vec<String>,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The environment.
    pub environment: String,
    /// Context scalars.
    #[serde(default)]
    pub context: BTreeMap<String, serde_json::Value>,
    /// Signals (AI recommendations, scores, flags).
    #[serde(default)]
    pub signals: BTreeMap<String, serde_json::Value>,
    /// Platform measurements.
    #[serde(default)]
    pub measurements: BTreeMap<String, serde_json::Value>,
}

impl PolicyInput {
    /// SHA-256 of the canonical JSON of the input.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&canonical_json(&serde_json::to_value(self).unwrap_or(serde_json::Value::Null)))
    }
}

/// The decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The policy's name and version.
    pub policy: String,
    /// [`PolicyBundle::hash`].
    pub policy_hash: [u8; 32],
    /// [`PolicyInput::hash`].
    pub input_hash: [u8; 32],
    /// The reasons (fired rules' reasons, or the error), sorted, unique.
    pub reasons: Vec<String>,
}

impl DecisionRecord {
    /// `Canonical("sovereign-decision/v1") ‖ verdict ‖ policy ‖ policy_hash ‖ input_hash ‖ reasons`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let verdict = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        Canonical::new("sovereign-decision/v1")
            .text(verdict)
            .text(&self.policy)
            .fixed(&self.policy_hash)
            .fixed(&self.input_hash)
            .texts(&self.reasons)
            .into_bytes()
    }

    /// What the kernel binds: the verdict and the record's hash.
    pub fn state(&self) -> PolicyState {
        PolicyState { verdict: self.verdict, record_hash: sha256(&self.canonical_bytes()) }
    }
}

fn scalar(what: &str, v: &serde_json::Value) -> Result<DataValue, String> {
    match v {
        serde_json::Value::String(s) if s.len() <= MAX_VALUE => Ok(DataValue::from(s.as_str())),
        serde_json::Value::String(_) => Err(format!("{what}: string longer than {MAX_VALUE} bytes")),
        serde_json::Value::Bool(b) => Ok(DataValue::from(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(DataValue::from(i))
            } else {
                n.as_f64().map(DataValue::from).ok_or_else(|| format!("{what}: number out of range"))
            }
        }
        serde_json::Value::Null => Ok(DataValue::Null),
        _ => Err(format!("{what}: only scalars are allowed (no arrays or objects)")),
    }
}

fn rows(items: Vec<Vec<DataValue>>) -> DataValue {
    DataValue::List(items.into_iter().map(DataValue::List).collect())
}

fn input_params(input: &PolicyInput) -> Result<BTreeMap<String, DataValue>, String> {
    let facts = 4 + input.roles.len() + input.context.len() + input.signals.len() + input.measurements.len();
    if facts > MAX_FACTS {
        return Err(format!("input has {facts} facts; limit {MAX_FACTS}"));
    }
    let text = |what: &str, s: &str| {
        if s.len() > MAX_VALUE { Err(format!("{what}: longer than {MAX_VALUE} bytes")) } else { Ok(DataValue::from(s)) }
    };
    let pairs = |what: &str, m: &BTreeMap<String, serde_json::Value>| -> Result<DataValue, String> {
        Ok(rows(m.iter().map(|(k, v)| Ok(vec![text(what, k)?, scalar(what, v)?])).collect::<Result<_, String>>()?))
    };
    let mut p = BTreeMap::new();
    p.insert("principal".into(), rows(vec![vec![text("principal", &input.principal)?]]));
    p.insert(
        "roles".into(),
        rows(input.roles.iter().map(|r| Ok(vec![text("role", r)?])).collect::<Result<_, String>>()?),
    );
    p.insert("action".into(), rows(vec![vec![text("action", &input.action)?]]));
    p.insert("resource".into(), rows(vec![vec![text("resource", &input.resource)?]]));
    p.insert("environment".into(), rows(vec![vec![text("environment", &input.environment)?]]));
    p.insert("context".into(), pairs("context", &input.context)?);
    p.insert("signals".into(), pairs("signal", &input.signals)?);
    p.insert("measurements".into(), pairs("measurement", &input.measurements)?);
    Ok(p)
}

const PRELUDE: &str = "input_principal[key] <- $principal
input_role[role] <- $roles
input_action[action] <- $action
input_resource[resource] <- $resource
input_environment[environment] <- $environment
input_context[key, value] <- $context
input_signal[name, value] <- $signals
input_measurement[name, value] <- $measurements
";

/// The query over the rules the program defines (a rule head starts a line).
fn query(program: &str) -> Option<String> {
    let defines = |head: &str| program.lines().any(|l| l.trim_start().starts_with(head));
    let mut q = String::from("\n");
    if defines("allow[") {
        q.push_str("?[verdict, reason] := allow[reason], verdict = 'allow'\n");
    }
    if defines("deny[") {
        q.push_str("?[verdict, reason] := deny[reason], verdict = 'deny'\n");
    }
    if q.len() == 1 {
        return None;
    }
    q.push_str(":timeout 1\n");
    Some(q)
}

/// Evaluates CozoDB policies; memoizes decisions.
pub struct PolicyEngine {
    db: DbInstance,
    memo: HashMap<([u8; 32], [u8; 32]), DecisionRecord>,
    /// Evaluations answered from the memo.
    pub memo_hits: u64,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("memoized", &self.memo.len()).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// An engine with an in-memory CozoDB.
    pub fn new() -> Result<Self, Refusal> {
        let db = DbInstance::new("mem", "", "").map_err(|e| Refusal::new("policy engine", e.to_string()))?;
        Ok(PolicyEngine { db, memo: HashMap::new(), memo_hits: 0 })
    }

    /// Decides `input` under `bundle` (whose signature the caller verified). Never errors: a
    /// failure is a deny naming it.
    pub fn decide(&mut self, bundle: &PolicyBundle, input: &PolicyInput) -> DecisionRecord {
        let key = (bundle.hash(), input.hash());
        if let Some(hit) = self.memo.get(&key) {
            self.memo_hits += 1;
            return hit.clone();
        }
        let record = self.evaluate(bundle, input, key);
        if self.memo.len() >= MEMO_CAPACITY {
            self.memo.clear();
        }
        self.memo.insert(key, record.clone());
        record
    }

    /// Evaluates without the memo (what offline re-evaluation and the baseline use).
    pub fn evaluate_uncached(&self, bundle: &PolicyBundle, input: &PolicyInput) -> DecisionRecord {
        self.evaluate(bundle, input, (bundle.hash(), input.hash()))
    }

    fn evaluate(
        &self,
        bundle: &PolicyBundle,
        input: &PolicyInput,
        (policy_hash, input_hash): ([u8; 32], [u8; 32]),
    ) -> DecisionRecord {
        let policy = format!("{}@{}", bundle.name, bundle.version);
        let deny = |why: String| DecisionRecord {
            verdict: Verdict::Deny,
            policy: policy.clone(),
            policy_hash,
            input_hash,
            reasons: vec![why],
        };
        if bundle.program.len() > MAX_PROGRAM {
            return deny(format!("policy error: program is {} bytes; limit {MAX_PROGRAM}", bundle.program.len()));
        }
        // The program may define rules only: no query of its own (`?`), no options, stored-
        // relation operations or system commands (`:`/`::`), no imperative script (`%`).
        if bundle.program.contains("?[") {
            return deny("policy error: the program may not define a query (?[...])".into());
        }
        if let Some((n, line)) = bundle.program.lines().enumerate().find(|(_, l)| {
            let l = l.trim_start();
            l.starts_with(':') || l.starts_with('%') || l.starts_with('?') || l.starts_with('{')
        }) {
            return deny(format!("policy error: line {}: only rules are allowed, not {:?}", n + 1, line.trim()));
        }
        let params = match input_params(input) {
            Ok(p) => p,
            Err(e) => return deny(format!("input error: {e}")),
        };
        let Some(query) = query(&bundle.program) else {
            return deny("policy error: the program defines neither allow[reason] nor deny[reason] rules".into());
        };
        let script = format!("{PRELUDE}{}\n{query}", bundle.program);
        let result = match self.db.run_script(&script, params, ScriptMutability::Immutable) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let line = msg.lines().next().unwrap_or("evaluation failed").to_string();
                return deny(format!("policy error: {line}"));
            }
        };
        if result.rows.len() > MAX_ROWS {
            return deny(format!("policy error: {} result rows; limit {MAX_ROWS}", result.rows.len()));
        }
        let (mut allows, mut denies) = (Vec::new(), Vec::new());
        for row in &result.rows {
            let (Some(verdict), Some(reason)) = (row.first().and_then(DataValue::get_str), row.get(1)) else {
                return deny("policy error: malformed result row".into());
            };
            let reason = reason.get_str().map(str::to_string).unwrap_or_else(|| format!("{reason:?}"));
            if verdict == "deny" { denies.push(reason) } else { allows.push(reason) }
        }
        let (verdict, mut reasons) = if !denies.is_empty() {
            (Verdict::Deny, denies)
        } else if !allows.is_empty() {
            (Verdict::Allow, allows)
        } else {
            (Verdict::Deny, vec!["no rule allowed this request".to_string()])
        };
        reasons.sort();
        reasons.dedup();
        DecisionRecord { verdict, policy, policy_hash, input_hash, reasons }
    }
}

/// Offline re-evaluation: recomputes the decision for `input` under `bundle` and compares it
/// byte for byte with `record`.
pub fn reevaluate(record: &DecisionRecord, bundle: &PolicyBundle, input: &PolicyInput) -> Result<(), Refusal> {
    const WHAT: &str = "decision re-evaluation";
    if record.policy_hash != bundle.hash() {
        return Err(Refusal::new(WHAT, "the record names another policy"));
    }
    if record.input_hash != input.hash() {
        return Err(Refusal::new(WHAT, "the record names another input"));
    }
    let engine = PolicyEngine::new()?;
    let again = engine.evaluate_uncached(bundle, input);
    if again.canonical_bytes() != record.canonical_bytes() {
        return Err(Refusal::new(
            WHAT,
            format!(
                "recomputed {:?} {:?}, the record says {:?} {:?}",
                again.verdict, again.reasons, record.verdict, record.reasons
            ),
        ));
    }
    Ok(())
}
