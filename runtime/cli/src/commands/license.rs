//! `sovereign license check|verify|import|status`: a Bitcoin licence checked online through an
//! Electrum server (the proof assembled from its answers and verified like an imported one, then
//! written for an air-gapped appliance), a proof file verified offline, imported into an
//! appliance (which verifies it against its own rule), or the appliance's licence state. Exit 1
//! with the reason when there is no valid licence.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use ed25519_dalek::SigningKey;
use sovereign_ledger::proof::Licence;
use sovereign_protocol::pipeline::{Command as PipelineCommand, LicenceState, Reply};

use crate::args::{ApplianceArgs, LicenseCommand, LicenseTerms};
use crate::{public_key, read_hex32};

struct Rule {
    rule: sovereign_ledger::rule::Rule,
    machine_id: Vec<u8>,
}

fn rule(t: &LicenseTerms) -> anyhow::Result<Rule> {
    let header = t.checkpoint_header.as_deref();
    Ok(Rule {
        rule: sovereign_ledger::rule::parse(&t.network, t.checkpoint_height, header, &t.script, t.amount, t.depth)
            .map_err(|e| anyhow!("{e}"))?,
        machine_id: hex::decode(&t.machine_id).context("--machine-id is not hex")?,
    })
}

/// The licence rule of a `LICENCE.json` (what `sovereign-image build --licence` takes).
pub(crate) fn rule_file(path: &std::path::Path) -> anyhow::Result<sovereign_ledger::rule::Rule> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let s: sovereign_boot_contract::LicenceSettings =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a licence rule", path.display()))?;
    sovereign_ledger::rule::parse(
        &s.network,
        s.checkpoint_height,
        s.checkpoint_header.as_deref(),
        &s.script,
        s.amount_sat,
        s.depth,
    )
    .map_err(|e| anyhow!("{}: {e}", path.display()))
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
                let rule = &r.rule;
                sovereign_ledger::electrum::check(
                    &c,
                    rule.network,
                    &rule.checkpoint,
                    &rule.terms,
                    &r.machine_id,
                    rule.depth,
                )
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
            let outcome = r.rule.verify(&bytes, &r.machine_id).map_err(|e| e.to_string());
            Ok(report(outcome, json))
        }
        LicenseCommand::Import { proof, appliance, json } => {
            let bytes = std::fs::read(&proof).with_context(|| format!("reading {}", proof.display()))?;
            let command = PipelineCommand::LicenceImport { proof: sovereign_protocol::Blob::of(&bytes) };
            appliance_licence(&appliance, &command, &[bytes], json)
        }
        LicenseCommand::Status { appliance, json } => {
            appliance_licence(&appliance, &PipelineCommand::LicenceStatus, &[], json)
        }
    }
}

/// Sends a licence command to the appliance and reports the state it answers.
fn appliance_licence(
    appliance: &ApplianceArgs,
    command: &PipelineCommand,
    payloads: &[Vec<u8>],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let endpoint = appliance.port.endpoint()?;
    let state = match sovereign_cli::pipeline::command(&endpoint, &operator, node.as_ref(), command, payloads)?.0 {
        Reply::Licence(state) => state,
        Reply::Refused(why) => {
            if json {
                println!("{}", serde_json::json!({ "licensed": false, "refused": why }));
            } else {
                eprintln!("sovereign: the appliance refused: {why}");
            }
            return Ok(ExitCode::FAILURE);
        }
        other => anyhow::bail!("unexpected reply {other:?}"),
    };
    print_state(&state, json);
    Ok(if state.licensed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_state(state: &LicenceState, json: bool) {
    if json {
        println!("{}", serde_json::json!(state));
    } else if state.licensed {
        println!(
            "licensed: transaction {} at height {}, {} confirmations in the proof",
            state.txid.as_deref().unwrap_or("?"),
            state.height.unwrap_or(0),
            state.confirmations.unwrap_or(0)
        );
    } else {
        println!("NOT licensed: {}", state.reason.as_deref().unwrap_or("no reason given"));
    }
}
