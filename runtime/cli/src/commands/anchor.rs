//! `sovereign anchor prepare|verify`: a compliance bundle's checkpoint anchored in Bitcoin — the
//! unfunded PSBT a wallet completes (the appliance holds no coins), and the offline check that a
//! mined transaction carries the checkpoint's commitment deep enough in a chain from the pinned
//! checkpoint. Exit 1 with the reason when the anchor does not verify.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use sovereign_audit::note::SignedNote;

use crate::args::AnchorCommand;

/// The checkpoint a compliance bundle carries (`checkpoint.txt`), its node signature not
/// checked here (`sovereign verify` checks the bundle).
fn bundle_checkpoint(path: &Path) -> anyhow::Result<SignedNote> {
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

pub(crate) fn anchor(cmd: AnchorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AnchorCommand::Prepare { bundle, out, json } => {
            let note = bundle_checkpoint(&bundle)?;
            let commitment = sovereign_ledger::anchor::commitment(&note.body);
            let psbt = sovereign_ledger::anchor::psbt(&commitment).map_err(|e| anyhow!("{e}"))?;
            std::fs::write(&out, format!("{psbt}\n")).with_context(|| format!("writing {}", out.display()))?;
            let origin_and_size: Vec<&str> = note.body.lines().take(2).collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "psbt": out, "commitment": hex::encode(commitment), "checkpoint": origin_and_size })
                );
            } else {
                println!(
                    "wrote {}: fund, sign and broadcast it with a wallet; it anchors {} at size {} (commitment {})",
                    out.display(),
                    origin_and_size.first().unwrap_or(&"?"),
                    origin_and_size.get(1).unwrap_or(&"?"),
                    hex::encode(commitment)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AnchorCommand::Verify { proof, bundle, network, depth, checkpoint_height, checkpoint_header, json } => {
            let note = bundle_checkpoint(&bundle)?;
            let commitment = sovereign_ledger::anchor::commitment(&note.body);
            let (network, pinned) =
                sovereign_ledger::rule::pinned(&network, checkpoint_height, checkpoint_header.as_deref())
                    .map_err(|e| anyhow!("{e}"))?;
            let bytes = std::fs::read(&proof).with_context(|| format!("reading {}", proof.display()))?;
            let outcome = sovereign_ledger::anchor::verify(&bytes, network, &pinned, &commitment, depth);
            match (&outcome, json) {
                (Ok(a), true) => println!(
                    "{}",
                    serde_json::json!({ "anchored": true, "txid": a.txid.to_string(), "height": a.height, "confirmations": a.confirmations })
                ),
                (Ok(a), false) => println!(
                    "anchored: the checkpoint existed by block {} (transaction {}, {} confirmations)",
                    a.height, a.txid, a.confirmations
                ),
                (Err(e), true) => println!("{}", serde_json::json!({ "anchored": false, "reason": e.to_string() })),
                (Err(e), false) => println!("NOT anchored: {e}"),
            }
            Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
