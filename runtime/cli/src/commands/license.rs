//! `sovereign license check|verify`: a Bitcoin licence checked online through an Electrum server
//! (the proof assembled from its answers and verified like an imported one, then written for an
//! air-gapped appliance) or a proof file verified offline. Exit 1 with the reason when there is
//! no valid licence.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use sovereign_ledger::bitcoin::consensus::Decodable as _;
use sovereign_ledger::bitcoin::{Amount, Network, ScriptBuf};
use sovereign_ledger::chain::Checkpoint;
use sovereign_ledger::licence::Terms;
use sovereign_ledger::proof::Licence;

use crate::args::{LicenseCommand, LicenseTerms};

struct Rule {
    network: Network,
    checkpoint: Checkpoint,
    terms: Terms,
    machine_id: Vec<u8>,
    depth: u32,
}

fn rule(t: &LicenseTerms) -> anyhow::Result<Rule> {
    let network = match t.network.as_str() {
        "bitcoin" => Network::Bitcoin,
        "signet" => Network::Signet,
        "regtest" => Network::Regtest,
        other => return Err(anyhow!("network {other:?} is not bitcoin, signet or regtest")),
    };
    let header = match &t.checkpoint_header {
        Some(h) => {
            let bytes = hex::decode(h).context("--checkpoint-header is not hex")?;
            sovereign_ledger::bitcoin::block::Header::consensus_decode(&mut bytes.as_slice())
                .map_err(|e| anyhow!("--checkpoint-header is not an 80-byte header: {e}"))?
        }
        None if t.checkpoint_height == 0 => sovereign_ledger::bitcoin::constants::genesis_block(network).header,
        None => return Err(anyhow!("a checkpoint above genesis needs --checkpoint-header")),
    };
    Ok(Rule {
        network,
        checkpoint: Checkpoint { height: t.checkpoint_height, header },
        terms: Terms {
            script: ScriptBuf::from_bytes(hex::decode(&t.script).context("--script is not hex")?),
            amount: Amount::from_sat(t.amount),
        },
        machine_id: hex::decode(&t.machine_id).context("--machine-id is not hex")?,
        depth: t.depth,
    })
}

fn report(outcome: Result<Licence, String>, json: bool) -> ExitCode {
    match outcome {
        Ok(l) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "licensed": true, "txid": l.txid.to_string(), "height": l.height, "confirmations": l.confirmations })
                );
            } else {
                println!("licensed: transaction {} at height {}, {} confirmations", l.txid, l.height, l.confirmations);
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            if json {
                println!("{}", serde_json::json!({ "licensed": false, "reason": why }));
            } else {
                println!("NOT licensed: {why}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn license(cmd: LicenseCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LicenseCommand::Check { electrum, terms, timeout, out, json } => {
            let r = rule(&terms)?;
            let client = sovereign_ledger::electrum::connect(&electrum, std::time::Duration::from_secs(timeout));
            let checked = client.and_then(|c| {
                sovereign_ledger::electrum::check(&c, r.network, &r.checkpoint, &r.terms, &r.machine_id, r.depth)
            });
            let outcome = match checked {
                Ok((licence, proof)) => {
                    if let Some(out) = &out {
                        std::fs::write(out, serde_json::to_vec_pretty(&proof)?)
                            .with_context(|| format!("writing {}", out.display()))?;
                    }
                    Ok(licence)
                }
                Err(e) => Err(e.to_string()),
            };
            Ok(report(outcome, json))
        }
        LicenseCommand::Verify { proof, terms, json } => {
            let r = rule(&terms)?;
            let bytes = std::fs::read(&proof).with_context(|| format!("reading {}", proof.display()))?;
            let outcome =
                sovereign_ledger::proof::verify(&bytes, r.network, &r.checkpoint, &r.terms, &r.machine_id, r.depth)
                    .map_err(|e| e.to_string());
            Ok(report(outcome, json))
        }
    }
}
