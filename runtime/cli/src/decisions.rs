//! Offline re-evaluation of the policy decisions in a compliance bundle: every
//! `policy_decision` entry carries its decision record and input; the bundle's `policies/`
//! section carries the signed policy bundles. Each decision is recomputed with the pure
//! governance engine and compared byte for byte. Then every execution's chain of custody is
//! followed through the log (`executions.bound`): its start names a binding that was recorded
//! before it, for the same execution context, and used once; the binding names a decision that
//! was recorded before it, recomputed here and allowing; its end names a start. An entry that
//! breaks the chain is an orphan, named by its index. Plugged into `verify_bundle_with` as the
//! checker of the `policies/` and `decision-inputs/` sections.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::{Report, fail};
use sovereign_audit::{Entry, EntryKind};
use sovereign_governance::governor::DecisionEvidence;
use sovereign_governance::kernel::Verdict;
use sovereign_governance::policy::{PolicyBundle, reevaluate};

/// Every `policy_decision` entry of `entries` with its place and its decoded evidence (or why
/// it does not decode).
pub fn decision_entries(
    entries: &[(String, Entry)],
) -> impl Iterator<Item = (&str, &Entry, Result<DecisionEvidence, String>)> {
    entries.iter().filter(|(_, e)| e.kind == EntryKind::PolicyDecision).map(|(place, entry)| {
        let evidence = serde_json::from_slice(&entry.payload).map_err(|e| format!("decision payload: {e}"));
        (place.as_str(), entry, evidence)
    })
}

/// Checks decisions against the policies signed by `policy_signers`.
#[derive(Debug, Clone, Default)]
pub struct DecisionChecker {
    /// Keys trusted to sign policies (release and admin keys).
    pub policy_signers: Vec<VerifyingKey>,
}

impl SectionChecker for DecisionChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec!["policies", "decision-inputs"]
    }

    fn check(&self, report: &mut Report, entries: &[(String, Entry)], files: &BTreeMap<String, Vec<u8>>) {
        let mut policies: BTreeMap<[u8; 32], PolicyBundle> = BTreeMap::new();
        let mut policy_failures = Vec::new();
        let mut policy_count = 0u64;
        for (name, bytes) in files {
            if name.starts_with("decision-inputs/") {
                policy_failures
                    .push(fail(name.as_str(), "inputs travel in the decision entries; this section must be empty"));
                continue;
            }
            policy_count += 1;
            match PolicyBundle::from_json(bytes) {
                Err(e) => policy_failures.push(fail(name.as_str(), e.to_string())),
                Ok(bundle) => {
                    if self.policy_signers.is_empty() {
                        policy_failures.push(fail(name.as_str(), "not evaluated: no policy signing key is pinned"));
                    } else if let Err(e) = bundle.verify(&self.policy_signers) {
                        policy_failures.push(fail(name.as_str(), e.to_string()));
                    } else {
                        policies.insert(bundle.hash(), bundle);
                    }
                }
            }
        }
        report.add(
            "policies.signatures",
            policy_count,
            policy_failures,
            format!("{policy_count} signed policy bundles"),
        );

        let mut decision_failures = Vec::new();
        let mut decisions = 0u64;
        // Record hashes of decisions that were recomputed, match their entry and allow.
        let mut allowing: BTreeSet<[u8; 32]> = BTreeSet::new();
        for (place, entry, evidence) in decision_entries(entries) {
            decisions += 1;
            let evidence = match evidence {
                Ok(e) => e,
                Err(why) => {
                    decision_failures.push(fail(place, why));
                    continue;
                }
            };
            let Some(policy) = policies.get(&evidence.record.policy_hash) else {
                decision_failures.push(fail(
                    place,
                    format!(
                        "policy {} ({}) is not in the bundle's verified policies",
                        evidence.record.policy,
                        hex::encode(evidence.record.policy_hash)
                    ),
                ));
                continue;
            };
            let state = evidence.record.state();
            if entry.digests.first() != Some(&state.record_hash) {
                decision_failures
                    .push(fail(place, "the entry's first digest is not the hash of the record it carries"));
                continue;
            }
            match reevaluate(&evidence.record, policy, &evidence.input) {
                Err(e) => decision_failures.push(fail(place, e.to_string())),
                Ok(()) if state.verdict == Verdict::Allow => {
                    allowing.insert(state.record_hash);
                }
                Ok(()) => {}
            }
        }
        report.add(
            "decisions.reevaluated",
            decisions,
            decision_failures,
            format!("{decisions} decisions recomputed from their policy and input, byte for byte"),
        );
        check_custody(report, entries, &allowing);
    }
}

/// A binding recorded in the log: where, the decision it binds, the context it covers, and
/// whether an execution already used it.
struct RecordedBinding<'a> {
    place: &'a str,
    record_hash: [u8; 32],
    context_hash: [u8; 32],
    used: bool,
}

/// `executions.bound`: decision → binding → start → end, by digest and in log order; every
/// orphan named. `allowing` holds the record hashes of the decisions that verified and allow.
fn check_custody(report: &mut Report, entries: &[(String, Entry)], allowing: &BTreeSet<[u8; 32]>) {
    let mut failures = Vec::new();
    let mut bindings: BTreeMap<[u8; 32], RecordedBinding<'_>> = BTreeMap::new();
    let mut running: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut executions = 0u64;
    let mut seen_decisions: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (place, entry) in entries {
        let place = place.as_str();
        match (entry.kind, entry.digests.as_slice()) {
            (EntryKind::PolicyDecision, [record, ..]) => {
                seen_decisions.insert(*record);
            }
            (EntryKind::PolicyBinding, [binding, record, context]) => {
                if !seen_decisions.contains(record) {
                    failures.push(fail(place, "orphan binding: no decision with its record hash precedes it"));
                } else if !allowing.contains(record) {
                    failures.push(fail(place, "orphan binding: the decision it binds does not verify as allowing"));
                }
                if bindings.contains_key(binding) {
                    failures.push(fail(place, "binding recorded twice"));
                }
                bindings.insert(
                    *binding,
                    RecordedBinding { place, record_hash: *record, context_hash: *context, used: false },
                );
            }
            (EntryKind::ExecutionStart, [binding, context]) => {
                executions += 1;
                match bindings.get_mut(binding) {
                    None => failures.push(fail(place, "orphan execution: no binding with its digest precedes it")),
                    Some(b) if b.context_hash != *context => failures.push(fail(
                        place,
                        format!("orphan execution: its context is not the one the binding at {} covers", b.place),
                    )),
                    Some(b) if b.used => failures.push(fail(
                        place,
                        format!("orphan execution: the binding at {} was already used by another execution", b.place),
                    )),
                    Some(b) if !allowing.contains(&b.record_hash) => failures.push(fail(
                        place,
                        format!("orphan execution: the binding at {} binds no allowing decision", b.place),
                    )),
                    Some(b) => {
                        b.used = true;
                        running.insert(*binding);
                    }
                }
            }
            (EntryKind::ExecutionEnd, [binding]) if !running.remove(binding) => {
                failures.push(fail(place, "orphan execution end: no execution start with its binding precedes it"));
            }
            (EntryKind::ExecutionEnd, [_]) => {}
            (EntryKind::PolicyBinding | EntryKind::ExecutionStart | EntryKind::ExecutionEnd, digests) => failures.push(
                fail(place, format!("{} entry with {} digests: not a kernel entry", entry.kind.name(), digests.len())),
            ),
            _ => {}
        }
    }
    report.add(
        "executions.bound",
        executions,
        failures,
        format!(
            "{executions} executions each follow a binding of an allowing decision recorded before them, one execution per binding"
        ),
    );
}
