//! Evaluation of policy programs by CozoDB (feature `engine`): the memoizing [`PolicyEngine`]
//! and the offline [`reevaluate`].

use std::collections::{BTreeMap, HashMap};

use cozo::{DataValue, DbInstance, ScriptMutability};

use super::{DecisionRecord, MAX_FACTS, MAX_PROGRAM, MAX_ROWS, MAX_VALUE, MEMO_CAPACITY, PolicyBundle, PolicyInput};
use crate::kernel::Verdict;
use crate::signed::Refusal;

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
