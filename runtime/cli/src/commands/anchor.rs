//! `sovereign anchor prepare|request|check|import|verify`: audit checkpoints anchored in Bitcoin
//! — the unfunded PSBT a wallet completes for a bundle's checkpoint (`prepare`) or for a fresh
//! one the appliance signs (`request`; the appliance holds no coins), the mined anchor found
//! through an Electrum server and kept as an anchor file (`check`), imported into the appliance
//! so that its bundles carry it (`import`), and the offline check that a mined
//! transaction carries the checkpoint's commitment deep enough in a chain from the pinned
//! checkpoint. Exit 1 with the reason when the anchor does not verify. `sovereign verify
//! --anchor` (`sovereign_cli::anchors`) accepts an anchor of an earlier checkpoint of the bundle's
//! log.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use sovereign_audit::note::SignedNote;

use ed25519_dalek::SigningKey;
use sovereign_protocol::pipeline::{AnchorState, Command as PipelineCommand, Reply};

use crate::args::{AnchorChain, AnchorCommand, ApplianceArgs, VerifyAnchorArgs};
use crate::{public_key, read_hex32};
use sovereign_cli::anchors::AnchorChecker;

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

/// The `anchors` checker for `sovereign verify BUNDLE` with these options.
pub(crate) fn checker(bundle: &Path, args: &VerifyAnchorArgs) -> anyhow::Result<AnchorChecker> {
    let chain = match &args.anchor_network {
        None => None,
        Some(network) => {
            let chain = AnchorChain {
                network: network.clone(),
                depth: args.anchor_depth,
                checkpoint_height: args.anchor_checkpoint_height,
                checkpoint_header: args.anchor_checkpoint_header.clone(),
            };
            let (network, pinned) = pinned(&chain)?;
            Some((network, pinned, chain.depth))
        }
    };
    let given = match &args.anchor {
        None => None,
        Some(file) => Some((
            file.display().to_string(),
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        )),
    };
    Ok(AnchorChecker::new(chain, given, sovereign_cli::anchors::bundle_checkpoint(bundle).map_err(|e| e.to_string())))
}

/// Sends `command` to the appliance: its anchor state, or the exit code after printing its
/// refusal.
fn on_appliance(
    appliance: &ApplianceArgs,
    command: &PipelineCommand,
    payloads: Vec<Vec<u8>>,
    json: bool,
) -> anyhow::Result<Result<AnchorState, ExitCode>> {
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let (reply, _) =
        sovereign_cli::pipeline::command(&appliance.port.endpoint()?, &operator, node.as_ref(), command, &payloads)?;
    match reply {
        Reply::Anchor(state) => Ok(Ok(state)),
        Reply::Refused(why) => Ok(Err(super::print_refusal(&why, json))),
        other => Err(anyhow!("unexpected reply {other:?}")),
    }
}

pub(crate) fn anchor(cmd: AnchorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AnchorCommand::Prepare { bundle, out, json } => {
            let note = sovereign_cli::anchors::bundle_checkpoint(&bundle)?;
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
        AnchorCommand::Check { bundle, checkpoint, txid, electrum, height, chain, timeout, out, json } => {
            let note = match (&bundle, &checkpoint) {
                (Some(bundle), _) => sovereign_cli::anchors::bundle_checkpoint(bundle)?,
                (None, Some(file)) => {
                    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
                    SignedNote::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?
                }
                (None, None) => return Err(anyhow!("give --bundle or --checkpoint")),
            };
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
        AnchorCommand::Request { out, checkpoint_out, appliance, json } => {
            let state = match on_appliance(&appliance, &PipelineCommand::AnchorPrepare, vec![], json)? {
                Ok(state) => state,
                Err(code) => return Ok(code),
            };
            let psbt = state.psbt.clone().ok_or_else(|| anyhow!("the appliance answered without a PSBT"))?;
            std::fs::write(&out, format!("{psbt}\n")).with_context(|| format!("writing {}", out.display()))?;
            std::fs::write(&checkpoint_out, &state.checkpoint)
                .with_context(|| format!("writing {}", checkpoint_out.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "psbt": out, "checkpoint": checkpoint_out, "size": state.size, "commitment": hex::encode(state.commitment) })
                );
            } else {
                println!(
                    "wrote {} (fund, sign and broadcast it with a wallet) and {}: the appliance's checkpoint of size {} (commitment {})",
                    out.display(),
                    checkpoint_out.display(),
                    state.size,
                    hex::encode(state.commitment)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AnchorCommand::Import { anchor, appliance, json } => {
            let bytes = std::fs::read(&anchor).with_context(|| format!("reading {}", anchor.display()))?;
            let command = PipelineCommand::AnchorImport { file: sovereign_protocol::Blob::of(&bytes) };
            let state = match on_appliance(&appliance, &command, vec![bytes], json)? {
                Ok(state) => state,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                println!(
                    "imported: the appliance's checkpoint of size {} anchored by block {} (transaction {}); its compliance bundles now carry it",
                    state.size,
                    state.height.map(|h| h.to_string()).unwrap_or_default(),
                    state.txid.clone().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AnchorCommand::Verify { anchor, bundle, chain, json } => {
            let note = sovereign_cli::anchors::bundle_checkpoint(&bundle)?;
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
