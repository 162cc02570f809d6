//! Offline re-evaluation of the policy decisions in a compliance bundle: every
//! `policy_decision` entry carries its decision record and input; the bundle's `policies/`
//! section carries the signed policy bundles. Each decision is recomputed with the pure
//! governance engine and compared byte for byte. Plugged into `verify_bundle_with` as the
//! checker of the `policies/` and `decision-inputs/` sections.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::{Report, fail};
use sovereign_audit::{Entry, EntryKind};
use sovereign_governance::governor::DecisionEvidence;
use sovereign_governance::policy::{PolicyBundle, reevaluate};

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
        for (place, entry) in entries.iter().filter(|(_, e)| e.kind == EntryKind::PolicyDecision) {
            decisions += 1;
            let evidence: DecisionEvidence = match serde_json::from_slice(&entry.payload) {
                Ok(e) => e,
                Err(e) => {
                    decision_failures.push(fail(place.as_str(), format!("decision payload: {e}")));
                    continue;
                }
            };
            let Some(policy) = policies.get(&evidence.record.policy_hash) else {
                decision_failures.push(fail(
                    place.as_str(),
                    format!(
                        "policy {} ({}) is not in the bundle's verified policies",
                        evidence.record.policy,
                        hex::encode(evidence.record.policy_hash)
                    ),
                ));
                continue;
            };
            if let Err(e) = reevaluate(&evidence.record, policy, &evidence.input) {
                decision_failures.push(fail(place.as_str(), e.to_string()));
            }
        }
        report.add(
            "decisions.reevaluated",
            decisions,
            decision_failures,
            format!("{decisions} decisions recomputed from their policy and input, byte for byte"),
        );
    }
}
