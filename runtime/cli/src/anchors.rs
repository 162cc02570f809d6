//! Audit checkpoints anchored in Bitcoin, as `sovereign verify` checks them (the `anchors`
//! check): an anchor file (`sovereign_ledger::anchor::AnchorFile`: a checkpoint's body and the
//! proof of the transaction carrying its commitment) counts for a bundle only if its checkpoint
//! is of the bundle's log — the same origin, a size within the bundle's entries, and the root
//! of that many of them — and its proof verifies in the chain pinned, deep enough.
//!
//! Must never: pass an anchor of another log or of a second history of this one, or pass a
//! bundle carrying anchors it was not asked to check.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use sovereign_audit::note::SignedNote;
use sovereign_ledger::bitcoin::Network;
use sovereign_ledger::chain::Checkpoint;

/// The checkpoint a compliance bundle carries (`checkpoint.txt`), its node signature not
/// checked here (`sovereign verify` checks the bundle).
pub fn bundle_checkpoint(path: &Path) -> anyhow::Result<SignedNote> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let members = sovereign_audit::bundle::read_tar(&bytes)
        .map_err(|e| anyhow!("{}: {}: {}", path.display(), e.place, e.reason))?;
    let (_, text) = members
        .iter()
        .find(|(name, _)| name == "checkpoint.txt" || name.ends_with("/checkpoint.txt"))
        .ok_or_else(|| anyhow!("{}: no checkpoint.txt", path.display()))?;
    let text = std::str::from_utf8(text).map_err(|_| anyhow!("{}: checkpoint.txt is not UTF-8", path.display()))?;
    SignedNote::parse(text).map_err(|e| anyhow!("{}: checkpoint.txt: {e}", path.display()))
}

/// The `anchors` check of `sovereign verify`: every anchor the bundle carries (`anchors/`,
/// imported by the appliance) and the one given with `--anchor` must be of this log — the
/// bundle's checkpoint's origin, a size within the bundle's entries, the root of that many of
/// them (the bundle's own checkpoint or an earlier one) — and anchored at least the depth asked
/// in the chain pinned. Anchors without `--anchor-network` are not evaluated (a failure).
pub struct AnchorChecker {
    chain: Option<(Network, Checkpoint, u32)>,
    given: Option<(String, Vec<u8>)>,
    bundle_checkpoint: Result<sovereign_audit::note::Checkpoint, String>,
}

impl AnchorChecker {
    /// Checks anchors in `chain` (network, pinned checkpoint, depth; `None`: anchors are not
    /// evaluated), the bundle's own and `given` (place, bytes), against the checkpoint of the
    /// bundle (or why it has none).
    pub fn new(
        chain: Option<(Network, Checkpoint, u32)>,
        given: Option<(String, Vec<u8>)>,
        bundle_checkpoint: Result<SignedNote, String>,
    ) -> Self {
        let bundle_checkpoint = bundle_checkpoint.and_then(|note| {
            sovereign_audit::note::Checkpoint::parse_body(&note.body)
                .map_err(|e| format!("the bundle's checkpoint does not parse: {e}"))
        });
        AnchorChecker { chain, given, bundle_checkpoint }
    }

    fn judge(&self, report: &sovereign_audit::verify::Report, bytes: &[u8]) -> Result<String, String> {
        let (network, pinned, depth) = self.chain.as_ref().ok_or("no --anchor-network to check it against")?;
        let (anchored, body) =
            sovereign_ledger::anchor::verify_file(bytes, *network, pinned, *depth).map_err(|e| e.to_string())?;
        let cp = sovereign_audit::note::Checkpoint::parse_body(&body)
            .map_err(|e| format!("the anchored checkpoint does not parse: {e}"))?;
        let own = self.bundle_checkpoint.as_ref().map_err(Clone::clone)?;
        if cp.origin != own.origin {
            return Err(format!("the anchored checkpoint is of log {:?}, the bundle's of {:?}", cp.origin, own.origin));
        }
        match report.root_at(cp.size) {
            Some(root) if cp.size <= own.size && root == cp.root => Ok(format!(
                "checkpoint of size {} ({}) anchored by block {} (transaction {}, {} confirmations)",
                cp.size,
                if cp.size == own.size { "the bundle's own" } else { "consistent with the bundle's entries" },
                anchored.height,
                anchored.txid,
                anchored.confirmations
            )),
            Some(_) => Err(format!("the anchored checkpoint of size {} is not this log's: its root differs", cp.size)),
            None => Err(format!(
                "the anchored checkpoint has size {}; the bundle carries {} entries",
                cp.size, report.entries
            )),
        }
    }
}

impl sovereign_audit::bundle::SectionChecker for AnchorChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec!["anchors"]
    }

    fn check(
        &self,
        report: &mut sovereign_audit::verify::Report,
        _entries: &[(String, sovereign_audit::Entry)],
        files: &std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        let anchors: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|(n, _)| n.starts_with("anchors/"))
            .map(|(n, b)| (n.clone(), b.clone()))
            .chain(self.given.clone())
            .collect();
        if anchors.is_empty() {
            return;
        }
        if self.chain.is_none() {
            report.not_evaluated(
                "anchors",
                "anchors/",
                "the bundle carries Bitcoin anchors: give --anchor-network to check them",
            );
            return;
        }
        let (mut details, mut failures) = (Vec::new(), Vec::new());
        for (place, bytes) in &anchors {
            match self.judge(report, bytes) {
                Ok(detail) => details.push(detail),
                Err(why) => failures.push(sovereign_audit::verify::fail(place.as_str(), why)),
            }
        }
        let detail = if failures.is_empty() { details.join("; ") } else { "not anchored".into() };
        report.add("anchors", anchors.len() as u64, failures, detail);
    }
}
