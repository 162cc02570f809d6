//! `sovereign update push|pull|status|apply`: update bundles streamed to the appliance over the
//! signed control API (with progress on a terminal) or pulled by it from a mesh peer that has
//! one staged, its update state, and applying the staged bundle (the appliance reboots into the
//! new release on trial).

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use sovereign_protocol::pipeline::{Command as PipelineCommand, Reply, UpdateState};
use sovereign_protocol::stream::Blob;
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn update(cmd: UpdateCommand) -> anyhow::Result<ExitCode> {
    let (appliance, json, push, other) = match cmd {
        UpdateCommand::Push { bundle, appliance, json } => (appliance, json, Some(bundle), None),
        UpdateCommand::Pull { from, sha256, appliance, json } => {
            let from = public_key(&from)?.to_bytes();
            let sha256 = sovereign_canonical::hex32(&sha256).map_err(|e| anyhow::anyhow!("--sha256 is {e}"))?;
            (appliance, json, None, Some(PipelineCommand::UpdatePull { from, sha256 }))
        }
        UpdateCommand::Status { appliance, json } => (appliance, json, None, None),
        UpdateCommand::Apply { approvals, certificates, revocations, appliance, json } => {
            (appliance, json, None, Some(apply_command(&approvals, &certificates, revocations.as_deref())?))
        }
        UpdateCommand::Approve { bundle, update_root, release_key, platform, approver_key, valid_hours, out } => {
            let trust = sovereign_update::Trust {
                root: public_key(&update_root)?,
                root_serial: 0,
                keyset_serial: 0,
                floor: 0,
                platform,
                release_key: public_key(&release_key)?,
            };
            return approve(&bundle, &trust, &approver_key, valid_hours, &out);
        }
    };
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let pulled = matches!(other, Some(PipelineCommand::UpdatePull { .. }));
    let (command, payloads) = match (&push, other) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (PipelineCommand::UpdatePush { bundle: Blob::of(&bytes) }, vec![bytes])
        }
        (None, Some(other)) => (other, vec![]),
        (None, None) => (PipelineCommand::UpdateStatus, vec![]),
    };
    let (reply, _) =
        sovereign_cli::pipeline::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &command, &payloads)?;
    let state = match reply {
        Reply::Update(state) => state,
        Reply::Refused(why) => return Ok(super::print_refusal(&why, json)),
        other => bail!("unexpected reply {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", render(&state, push.is_some() || pulled));
    }
    Ok(ExitCode::SUCCESS)
}

/// `update apply`'s request: the approvals, certificates and revocation list given.
fn apply_command(
    approvals: &[std::path::PathBuf],
    certificates: &[std::path::PathBuf],
    revocations: Option<&std::path::Path>,
) -> anyhow::Result<PipelineCommand> {
    use sovereign_cli::pipeline::read_json;
    let approvals = approvals.iter().map(|p| read_json(p, "update approval")).collect::<anyhow::Result<Vec<_>>>()?;
    let certificates =
        certificates.iter().map(|p| read_json(p, "role certificate")).collect::<anyhow::Result<Vec<_>>>()?;
    let revocations = revocations.map(|p| read_json(p, "revocation list")).transpose()?;
    Ok(PipelineCommand::UpdateApply { approvals, certificates, revocations })
}

/// `update approve`: one approver's approval of applying this bundle, written as JSON.
fn approve(
    bundle: &std::path::Path,
    trust: &sovereign_update::Trust,
    key: &std::path::Path,
    valid_hours: u64,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let summary = match sovereign_update::verify(&bytes, trust) {
        Ok(verified) => verified,
        Err(why) => {
            eprintln!("sovereign: not approved: the bundle does not verify: {why}");
            return Ok(ExitCode::from(1));
        }
    };
    if valid_hours == 0 || valid_hours > 7 * 24 {
        bail!("--valid-hours must be 1..=168: a node takes no approval valid for longer than 7 days");
    }
    let approver = SigningKey::from_bytes(&read_hex32(key, "approver key")?);
    let sha256 = Blob::of(&bytes).sha256;
    let digest = sovereign_protocol::pipeline::update_apply_digest(summary.release_version, &sha256);
    let expiry_ms = sovereign_canonical::now_ms().saturating_add(valid_hours.saturating_mul(3_600_000));
    let approval = sovereign_governance::approvals::Approval::sign(digest, expiry_ms, &approver);
    std::fs::write(out, serde_json::to_vec_pretty(&approval)?).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "approved applying update v{} (bundle sha256 {}) as {} until {expiry_ms} ms: {}",
        summary.release_version,
        hex::encode(sha256),
        hex::encode(approver.verifying_key().as_bytes()),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The update state, one fact per line.
fn render(state: &UpdateState, pushed: bool) -> String {
    use sovereign_boot_contract::slots::SlotState;
    let mut out = String::new();
    if state.applying
        && let Some(s) = &state.staged
    {
        out.push_str(&format!(
            "applying: update v{} — the appliance reboots into it on trial; see `sovereign update status` once it is back\n",
            s.release_version
        ));
    }
    if pushed && let Some(s) = &state.staged {
        out.push_str(&format!("staged: update v{} verified and written (nothing installed yet)\n", s.release_version));
    }
    out.push_str(&format!("running release  v{}\n", state.running_version));
    out.push_str(&format!("anti-rollback floor  v{}\n", state.floor));
    out.push_str(&format!("update approvals required  {}\n", state.approvals_required));
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
    match &state.boot {
        None => out.push_str("boot slots  not reported (booted from no slot)\n"),
        Some(boot) => {
            let this = if boot.trial { "on trial (not yet blessed)" } else { "good" };
            out.push_str(&format!("this boot  v{} {this}\n", boot.running_version));
            for slot in &boot.slots {
                let state = match slot.state {
                    SlotState::Good => "good".to_string(),
                    SlotState::Trial { tries_left, tries_done } => {
                        format!("on trial ({tries_left} tries left, {tries_done} done)")
                    }
                    SlotState::Failed { tries_done } => format!("FAILED its trial ({tries_done} tries)"),
                };
                out.push_str(&format!("slot  v{}  {state}  {}\n", slot.version, slot.file));
            }
            if let Some(failed) = boot.failed_update {
                out.push_str(&format!(
                    "last update  v{failed} FAILED its trial boot; the node fell back to v{}\n",
                    boot.running_version
                ));
            }
        }
    }
    out
}
