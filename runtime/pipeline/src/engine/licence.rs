//! The node's Bitcoin licence (seed 001, issue 17): a proof file imported over the control API
//! (`LicenceImport`) is verified offline — no network — against the rule the node's signed
//! configuration states (`sovereign_ledger::rule`), for this node's identity as the machine ID;
//! only a proof that passes is kept (a sealed record on the data partition, replacing the one
//! before), and every import is audited: the licence's facts, or the refusal with its reason.
//!
//! The kept proof is checked again whenever the engine opens (a signed update may change the
//! rule), and its facts are platform measurements every later decision sees:
//! `input_measurement['licensed', true|false]`, and with a licence `licence_height` and
//! `licence_confirmations` — so a policy can deny a governed action without a licence, and an
//! auditor re-evaluating the decision offline finds those facts in its record, the import (with
//! the proof's digest) in the log, and the proof itself in the bundle (`licences/`).

use serde_json::json;
use sovereign_audit::{EntryKind, Severity};
use sovereign_protocol::Payloads;
use sovereign_protocol::pipeline::LicenceState;
use sovereign_protocol::stream::Blob;

use super::Engine;
use crate::error::EngineError;

/// The sealed record that keeps the imported proof.
const PROOF_RECORD: &str = "licence-proof";
/// The measurements the licence sets.
const FACTS: [&str; 3] = ["licensed", "licence_height", "licence_confirmations"];

impl Engine {
    /// This node's machine ID for licences: its identity's public key.
    fn machine_id(&self) -> [u8; 32] {
        self.identity.verifying_key().to_bytes()
    }

    /// The licence state from the kept proof, judged by the configured rule now.
    pub(super) fn licence_state(&self) -> Result<LicenceState, EngineError> {
        let mut state = LicenceState {
            configured: self.licence.is_some(),
            licensed: false,
            txid: None,
            height: None,
            confirmations: None,
            reason: None,
        };
        let Some(rule) = &self.licence else {
            state.reason = Some("this node's configuration has no licence rule".into());
            return Ok(state);
        };
        let Some(proof) = self.store.get_record(PROOF_RECORD)? else {
            state.reason = Some("no licence proof imported".into());
            return Ok(state);
        };
        match rule.verify(&proof, &self.machine_id()) {
            Ok(licence) => {
                state.licensed = true;
                state.txid = Some(licence.txid.to_string());
                state.height = Some(licence.height);
                state.confirmations = Some(licence.confirmations);
            }
            Err(e) => state.reason = Some(format!("the kept proof no longer passes this node's rule: {e}")),
        }
        Ok(state)
    }

    /// Sets the licence's facts in the measurements every later decision sees (none without a
    /// rule), and has the next governed action build its governor with them.
    pub(super) fn refresh_licence_facts(&mut self) -> Result<LicenceState, EngineError> {
        let state = self.licence_state()?;
        for fact in FACTS {
            self.measurements.remove(fact);
        }
        if state.configured {
            self.measurements.insert("licensed".into(), json!(state.licensed));
            if let (Some(height), Some(confirmations)) = (state.height, state.confirmations) {
                self.measurements.insert("licence_height".into(), json!(height));
                self.measurements.insert("licence_confirmations".into(), json!(confirmations));
            }
        }
        if let Some((governor, _, _)) = self.governor.take() {
            self.replay_head = governor.replay_head();
        }
        Ok(state)
    }

    /// The kept licence proof, for the compliance bundles (`licences/`).
    pub(super) fn licence_proof(&self) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.store.get_record(PROOF_RECORD)?)
    }

    /// Imports the proof `proof` names from `payloads`: verified, then kept and audited; or
    /// refused and audited.
    pub(super) fn licence_import(&mut self, proof: &Blob, payloads: &Payloads) -> Result<LicenceState, EngineError> {
        let bytes = payloads.get(proof, "licence proof").map_err(|e| EngineError::invalid(e.to_string()))?;
        let verified = match &self.licence {
            None => Err("this node's configuration has no licence rule".to_string()),
            Some(rule) => rule.verify(bytes, &self.machine_id()).map_err(|e| e.to_string()),
        };
        let licence = match verified {
            Ok(l) => l,
            Err(why) => {
                let line =
                    json!({ "licence": "import refused", "proof_sha256": hex::encode(proof.sha256), "reason": why });
                let refused = EngineError::invalid(format!("licence proof refused: {why}"));
                return match self.log(EntryKind::Refusal, Severity::Warning, vec![proof.sha256], line.to_string()) {
                    Ok(_) => Err(refused),
                    Err(audit) => Err(EngineError::invalid(format!("{refused}; and {audit}"))),
                };
            }
        };
        self.store.put_record(PROOF_RECORD, bytes)?;
        let line = json!({
            "licence": "imported",
            "txid": licence.txid.to_string(),
            "height": licence.height,
            "confirmations": licence.confirmations,
            "proof_sha256": hex::encode(proof.sha256),
        });
        self.log(EntryKind::Attestation, Severity::Info, vec![proof.sha256], line.to_string())?;
        self.refresh_licence_facts()
    }
}
