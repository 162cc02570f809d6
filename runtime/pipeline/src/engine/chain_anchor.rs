//! Audit checkpoints anchored in Bitcoin (issue 17), on the node's side. `AnchorPrepare` signs
//! a fresh checkpoint of the audit log and answers with the unfunded PSBT committing to it
//! (`sovereign_ledger::anchor`): the node holds no coins, an external wallet funds and
//! broadcasts it. `AnchorImport` takes the mined anchor back (an anchor file: the checkpoint's
//! body and the proof), verifies it offline against the chain the node's configuration pins —
//! the licence rule's network, checkpoint and depth — and checks that its checkpoint is one of
//! this log's (origin, a size the log has reached, the log's root at that size); only then is it
//! kept (a sealed record, `anchor-<size>`) and carried by every later compliance bundle
//! (`anchors/<size>.json`, checked by `sovereign verify --anchor-network`). Both are audited.

use serde_json::json;
use sovereign_audit::{EntryKind, Severity};
use sovereign_protocol::Payloads;
use sovereign_protocol::pipeline::AnchorState;
use sovereign_protocol::stream::Blob;

use super::Engine;
use crate::error::EngineError;

/// Kept anchors' record names start with this.
const RECORD_PREFIX: &str = "anchor-";

impl Engine {
    /// Signs a fresh checkpoint and prepares its anchoring PSBT; audited.
    pub(super) fn anchor_prepare(&mut self) -> Result<AnchorState, EngineError> {
        let note = self.audit.checkpoint(&self.identity).map_err(|e| EngineError::Audit(e.to_string()))?;
        let cp = sovereign_audit::note::Checkpoint::parse_body(&note.body)
            .map_err(|e| EngineError::Audit(format!("the checkpoint just signed: {e}")))?;
        let commitment = sovereign_ledger::anchor::commitment(&note.body);
        let psbt = sovereign_ledger::anchor::psbt(&commitment).map_err(EngineError::invalid)?;
        let line = json!({ "anchor": "prepared", "size": cp.size, "commitment": hex::encode(commitment) });
        self.log(EntryKind::Attestation, Severity::Info, vec![commitment], line.to_string())?;
        Ok(AnchorState {
            checkpoint: note.to_text(),
            size: cp.size,
            commitment,
            psbt: Some(psbt),
            txid: None,
            height: None,
            confirmations: None,
        })
    }

    /// Verifies the anchor file `file` names and keeps it; audited either way.
    pub(super) fn anchor_import(&mut self, file: &Blob, payloads: &Payloads) -> Result<AnchorState, EngineError> {
        let bytes = payloads.get(file, "anchor file").map_err(|e| EngineError::invalid(e.to_string()))?;
        match self.judge_anchor(bytes) {
            Ok(state) => {
                self.store.put_record(&format!("{RECORD_PREFIX}{}", state.size), bytes)?;
                let line = json!({
                    "anchor": "imported",
                    "size": state.size,
                    "txid": state.txid,
                    "height": state.height,
                    "confirmations": state.confirmations,
                    "file_sha256": hex::encode(file.sha256),
                });
                self.log(EntryKind::Attestation, Severity::Info, vec![file.sha256], line.to_string())?;
                Ok(state)
            }
            Err(why) => {
                let line =
                    json!({ "anchor": "import refused", "file_sha256": hex::encode(file.sha256), "reason": why });
                let refused = EngineError::invalid(format!("anchor refused: {why}"));
                match self.log(EntryKind::Refusal, Severity::Warning, vec![file.sha256], line.to_string()) {
                    Ok(_) => Err(refused),
                    Err(audit) => Err(EngineError::invalid(format!("{refused}; and {audit}"))),
                }
            }
        }
    }

    /// The anchor an anchor file establishes for this node's log, or why not.
    fn judge_anchor(&self, bytes: &[u8]) -> Result<AnchorState, String> {
        let rule =
            self.licence.as_ref().ok_or("this node's configuration pins no Bitcoin chain (it has no licence rule)")?;
        let (anchored, body) = sovereign_ledger::anchor::verify_file(bytes, rule.network, &rule.checkpoint, rule.depth)
            .map_err(|e| e.to_string())?;
        let cp = sovereign_audit::note::Checkpoint::parse_body(&body)
            .map_err(|e| format!("the anchored checkpoint does not parse: {e}"))?;
        if cp.origin != self.audit.origin() {
            return Err(format!("the anchored checkpoint is of log {:?}, not this node's", cp.origin));
        }
        let root =
            self.audit.root_at(cp.size).map_err(|e| format!("the anchored checkpoint has size {}: {e}", cp.size))?;
        if root != cp.root {
            return Err(format!("the anchored checkpoint of size {} is not this log's: its root differs", cp.size));
        }
        Ok(AnchorState {
            commitment: sovereign_ledger::anchor::commitment(&body),
            checkpoint: body,
            size: cp.size,
            psbt: None,
            txid: Some(anchored.txid.to_string()),
            height: Some(anchored.height),
            confirmations: Some(anchored.confirmations),
        })
    }

    /// The kept anchor files, as a bundle's `anchors/` section: (file name, bytes).
    pub(super) fn anchor_files(&self) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let mut files = Vec::new();
        for name in self.store.record_names().into_iter().filter(|n| n.starts_with(RECORD_PREFIX)) {
            if let Some(bytes) = self.store.get_record(&name)? {
                files.push((format!("{}.json", &name[RECORD_PREFIX.len()..]), bytes));
            }
        }
        Ok(files)
    }
}
