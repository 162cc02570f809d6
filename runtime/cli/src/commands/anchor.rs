//! `sovereign anchor prepare|check|verify`: a compliance bundle's checkpoint anchored in Bitcoin
//! — the unfunded PSBT a wallet completes (the appliance holds no coins), the mined anchor found
//! through an Electrum server and kept as an anchor file, and the offline check that a mined
//! transaction carries the checkpoint's commitment deep enough in a chain from the pinned
//! checkpoint. Exit 1 with the reason when the anchor does not verify. `sovereign verify
//! --anchor` ([`check_consistent`]) accepts an anchor of an earlier checkpoint of the bundle's log.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use sovereign_audit::note::SignedNote;

use crate::args::{AnchorChain, AnchorCommand, VerifyAnchorArgs};

fn pinned(
    chain: &AnchorChain,
) -> anyhow::Result<(sovereign_ledger::bitcoin::Network, sovereign_ledger::chain::Checkpoint)> {
    sovereign_ledger::rule::pinned(&chain.network, chain.checkpoint_height, chain.checkpoint_header.as_deref())
        .map_err(|e| anyhow!("{e}"))
}

fn say(outcome: &Result<sovereign_ledger::anchor::Anchored, String>, json: bool) {
    match (outcome, json) {
        (Ok(a), true) => println!(
            "{}",
            serde_json::json!({ "anchored": true, "txid": a.txid.to_string(), "height": a.height, "confirmations": a.confirmations })
        ),
        (Ok(a), false) => println!(
            "anchored: the checkpoint existed by block {} (transaction {}, {} confirmations)",
            a.height, a.txid, a.confirmations
        ),
        (Err(e), true) => println!("{}", serde_json::json!({ "anchored": false, "reason": e })),
        (Err(e), false) => println!("NOT anchored: {e}"),
    }
}

/// `sovereign verify --anchor`: the anchor file's checkpoint is of this log — the bundle's own
/// checkpoint's origin, a size within the bundle's entries, and the root of its first that
/// many entries — and its anchor verifies. Records the check `anchor` in `report`.
pub(crate) fn check_consistent(
    report: &mut sovereign_audit::verify::Report,
    bundle: &Path,
    args: &VerifyAnchorArgs,
) -> anyhow::Result<()> {
    let Some(file) = &args.anchor else { return Ok(()) };
    let chain = AnchorChain {
        network: args.anchor_network.clone(),
        depth: args.anchor_depth,
        checkpoint_height: args.anchor_checkpoint_height,
        checkpoint_header: args.anchor_checkpoint_header.clone(),
    };
    let (network, pinned) = pinned(&chain)?;
    let place = file.display().to_string();
    let bytes = std::fs::read(file).with_context(|| format!("reading {place}"))?;
    let judged = (|| -> Result<String, String> {
        let (anchored, body) =
            sovereign_ledger::anchor::verify_file(&bytes, network, &pinned, chain.depth).map_err(|e| e.to_string())?;
        let cp = sovereign_audit::note::Checkpoint::parse_body(&body)
            .map_err(|e| format!("the anchored checkpoint does not parse: {e}"))?;
        let own = bundle_checkpoint(bundle).map_err(|e| e.to_string())?;
        let own = sovereign_audit::note::Checkpoint::parse_body(&own.body)
            .map_err(|e| format!("the bundle's checkpoint does not parse: {e}"))?;
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
    })();
    match judged {
        Ok(detail) => report.add("anchor", 1, vec![], detail),
        Err(why) => report.add("anchor", 1, vec![sovereign_audit::verify::fail(place, why)], "not anchored"),
    }
    Ok(())
}

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
        AnchorCommand::Check { bundle, txid, electrum, height, chain, timeout, out, json } => {
            let note = bundle_checkpoint(&bundle)?;
            let (network, pinned) = pinned(&chain)?;
            let txid: sovereign_ledger::bitcoin::Txid = txid.parse().map_err(|e| anyhow!("--txid: {e}"))?;
            let client = sovereign_ledger::electrum::connect(&electrum, std::time::Duration::from_secs(timeout));
            let checked = client.and_then(|c| {
                sovereign_ledger::electrum::check_anchor(&c, network, &pinned, &note.body, &txid, height, chain.depth)
            });
            let outcome = match checked {
                Ok((anchored, file)) => {
                    std::fs::write(&out, serde_json::to_vec_pretty(&file)?)
                        .with_context(|| format!("writing {}", out.display()))?;
                    Ok(anchored)
                }
                Err(e) => Err(e.to_string()),
            };
            say(&outcome, json);
            Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AnchorCommand::Verify { anchor, bundle, chain, json } => {
            let note = bundle_checkpoint(&bundle)?;
            let (network, pinned) = pinned(&chain)?;
            let bytes = std::fs::read(&anchor).with_context(|| format!("reading {}", anchor.display()))?;
            let outcome = sovereign_ledger::anchor::verify_file(&bytes, network, &pinned, chain.depth)
                .map_err(|e| e.to_string())
                .and_then(|(anchored, body)| {
                    if body == note.body {
                        Ok(anchored)
                    } else {
                        Err(format!(
                            "it anchors another checkpoint ({}); `sovereign verify {} --anchor {}` checks an earlier one of this log",
                            body.lines().take(2).collect::<Vec<_>>().join(" size "),
                            bundle.display(),
                            anchor.display()
                        ))
                    }
                });
            say(&outcome, json);
            Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
