//! The licence a node's decisions saw, as `sovereign verify` checks it (the `licences` check):
//! a licensed node's compliance bundle carries the licence proof it kept (`licences/`), so that
//! decisions that saw `licensed = true` can be re-checked offline down to the Bitcoin chain.
//! Each carried proof must be one the node imported (an audited import names its SHA-256) and
//! must pass the licence rule the auditor gives (the `LICENCE.json` the image was built with)
//! for the node identity the auditor pins; a bundle whose decisions saw `licensed = true` must
//! carry one that does.
//!
//! Must never: pass a decision that saw a licence the bundle cannot back, or pass a bundle
//! carrying a licence proof it was not asked to check.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::{Report, fail};
use sovereign_audit::{Entry, EntryKind};

/// Checks carried licence proofs against `rule` for `node`.
pub struct LicenceChecker {
    /// The node's licence rule (the image's `LICENCE.json`); `None`: not evaluated.
    pub rule: Option<sovereign_ledger::rule::Rule>,
    /// The node identity (the licence's machine ID); `None`: not evaluated.
    pub node: Option<VerifyingKey>,
}

/// The SHA-256 (hex) of every licence proof the log says the node imported.
fn imported(entries: &[(String, Entry)]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Attestation)
        .filter_map(|(_, e)| serde_json::from_slice::<serde_json::Value>(&e.payload).ok())
        .filter(|v| v["licence"] == "imported")
        .filter_map(|v| v["proof_sha256"].as_str().map(str::to_string))
        .collect()
}

impl SectionChecker for LicenceChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec!["licences"]
    }

    fn check(&self, report: &mut Report, entries: &[(String, Entry)], files: &BTreeMap<String, Vec<u8>>) {
        let licensed_decisions = crate::decisions::decision_entries(entries)
            .filter(|(_, _, evidence)| {
                evidence.as_ref().is_ok_and(|e| e.input.measurements.get("licensed") == Some(&serde_json::json!(true)))
            })
            .count();
        if files.is_empty() && licensed_decisions == 0 {
            return;
        }
        let (Some(rule), Some(node)) = (&self.rule, &self.node) else {
            report.not_evaluated(
                "licences",
                "licences/",
                "the bundle carries a licence proof or decisions that saw one: give --licence-rule and --node-key",
            );
            return;
        };
        let imported = imported(entries);
        let (mut failures, mut backed) = (Vec::new(), None);
        for (name, bytes) in files {
            if !imported.contains(&hex::encode(sovereign_protocol::Blob::of(bytes).sha256)) {
                failures.push(fail(name.as_str(), "no audited import of this proof (its SHA-256) in the log"));
                continue;
            }
            match rule.verify(bytes, node.as_bytes()) {
                Ok(licence) => backed = Some(licence),
                Err(e) => failures.push(fail(name.as_str(), format!("does not pass the licence rule: {e}"))),
            }
        }
        if licensed_decisions > 0 && backed.is_none() {
            failures.push(fail(
                "licences/",
                format!(
                    "{licensed_decisions} decisions saw licensed = true; no licence proof in the bundle backs them"
                ),
            ));
        }
        let detail = match (&backed, failures.is_empty()) {
            (Some(l), true) => format!(
                "licence {} at height {} ({} confirmations) backs {licensed_decisions} decisions",
                l.txid, l.height, l.confirmations
            ),
            _ => "licence not backed".into(),
        };
        report.add("licences", (files.len() + licensed_decisions) as u64, failures, detail);
    }
}
