//! `sovereign update push` and `sovereign update status`: update bundles streamed to the
//! appliance over the signed control API (with progress on a terminal), and its update state.

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use sovereign_protocol::pipeline::{Command as PipelineCommand, Reply, UpdateState};
use sovereign_protocol::stream::Blob;
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn update(cmd: UpdateCommand) -> anyhow::Result<ExitCode> {
    let (appliance, json, push) = match cmd {
        UpdateCommand::Push { bundle, appliance, json } => (appliance, json, Some(bundle)),
        UpdateCommand::Status { appliance, json } => (appliance, json, None),
    };
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let (command, payloads) = match &push {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (PipelineCommand::UpdatePush { bundle: Blob::of(&bytes) }, vec![bytes])
        }
        None => (PipelineCommand::UpdateStatus, vec![]),
    };
    let (reply, _) =
        sovereign_cli::pipeline::command(&appliance.socket, &operator, node.as_ref(), &command, &payloads)?;
    let state = match reply {
        Reply::Update(state) => state,
        Reply::Refused(why) => {
            if json {
                println!("{}", serde_json::json!({ "refused": why }));
            } else {
                println!("REFUSED: {why}");
            }
            return Ok(ExitCode::from(1));
        }
        other => bail!("unexpected reply {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", render(&state, push.is_some()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The update state, one fact per line.
fn render(state: &UpdateState, pushed: bool) -> String {
    let mut out = String::new();
    if pushed && let Some(s) = &state.staged {
        out.push_str(&format!("staged: update v{} verified and written (nothing installed yet)\n", s.release_version));
    }
    out.push_str(&format!("running release  v{}\n", state.running_version));
    out.push_str(&format!("anti-rollback floor  v{}\n", state.floor));
    match &state.staged {
        Some(s) => out.push_str(&format!(
            "staged bundle  v{} sha256 {} ({} bytes, {} release signatures, key set {})\n",
            s.release_version,
            hex::encode(s.sha256),
            s.size,
            s.signers.len(),
            s.keyset_serial
        )),
        None => out.push_str("staged bundle  none\n"),
    }
    out
}
