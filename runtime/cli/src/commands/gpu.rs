//! `sovereign gpu status|stop|approve|clear` and `sovereign metrics`: GPU governance on the
//! appliance, and its metrics in the Prometheus text format — both over the signed control API.

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use sovereign_protocol::pipeline::{Command as PipelineCommand, GpuState, Reply};
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn gpu(cmd: GpuCommand) -> anyhow::Result<ExitCode> {
    use sovereign_cli::pipeline::read_json;
    let (appliance, json, command) = match cmd {
        GpuCommand::Status { appliance, json } => (appliance, json, PipelineCommand::GpuStatus),
        GpuCommand::Stop { reason, appliance, json } => (appliance, json, PipelineCommand::GpuStop { reason }),
        GpuCommand::Clear { approvals, certificates, revocations, appliance, json } => {
            let approvals =
                approvals.iter().map(|p| read_json(p, "GPU clearance")).collect::<anyhow::Result<Vec<_>>>()?;
            let certificates =
                certificates.iter().map(|p| read_json(p, "role certificate")).collect::<anyhow::Result<Vec<_>>>()?;
            let revocations = read_json(&revocations, "revocation list")?;
            (appliance, json, PipelineCommand::GpuClear { approvals, certificates, revocations })
        }
        GpuCommand::Approve { node, generation, approver_key, valid_hours, out } => {
            if valid_hours == 0 || valid_hours > 7 * 24 {
                bail!("--valid-hours must be 1..=168: a node takes no approval valid for longer than 7 days");
            }
            let node = public_key(&node)?.to_bytes();
            let approver = SigningKey::from_bytes(&read_hex32(&approver_key, "approver key")?);
            let digest = sovereign_protocol::pipeline::gpu_clear_digest(&node, generation);
            let expiry_ms = sovereign_canonical::now_ms().saturating_add(valid_hours.saturating_mul(3_600_000));
            let approval = sovereign_governance::approvals::Approval::sign(digest, expiry_ms, &approver);
            std::fs::write(&out, serde_json::to_vec_pretty(&approval)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "approved clearing GPU emergency stop {generation} of node {} as {} until {expiry_ms} ms: {}",
                hex::encode(node),
                hex::encode(approver.verifying_key().as_bytes()),
                out.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let (reply, _) =
        sovereign_cli::pipeline::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &command, &[])?;
    let state = match reply {
        Reply::Gpu(state) => state,
        Reply::Refused(why) => return Ok(super::print_refusal(&why, json)),
        other => bail!("unexpected reply {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", render(&state));
    }
    Ok(if state.emergency_stop.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The GPU state, one fact per line.
fn render(state: &GpuState) -> String {
    let mut out = format!("gpu  {}\n", state.status);
    for d in &state.devices {
        let show = |v: Option<String>| v.unwrap_or_else(|| "unreadable".into());
        out.push_str(&format!(
            "  GPU {} {} ({}): memory {} of {} bytes, utilisation {}, {} , power {} of {}\n",
            d.index,
            d.name,
            d.uuid,
            show(d.memory_used.map(|v| v.to_string())),
            show(d.memory_total.map(|v| v.to_string())),
            show(d.utilization_pct.map(|v| format!("{v}%"))),
            show(d.temperature_c.map(|v| format!("{v} °C"))),
            show(d.power_mw.map(|v| format!("{:.1} W", f64::from(v) / 1000.0))),
            show(d.power_limit_mw.map(|v| format!("{:.1} W", f64::from(v) / 1000.0))),
        ));
    }
    match &state.emergency_stop {
        Some(why) => out.push_str(&format!(
            "emergency stop  ENGAGED (engagement {}; clearing needs {} gpu-operator approval(s)): {why}\n",
            state.generation, state.clear_approvals
        )),
        None => out.push_str("emergency stop  clear\n"),
    }
    for v in &state.violations {
        out.push_str(&format!("violation  {v}\n"));
    }
    out
}

pub(crate) fn metrics(appliance: ApplianceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let response = sovereign_cli::pipeline::ask(
        &appliance.port.endpoint()?,
        &operator,
        node.as_ref(),
        &sovereign_protocol::Request::Metrics,
    )?;
    let text = match response {
        sovereign_protocol::Response::Metrics(text) => text,
        sovereign_protocol::Response::Refused(why) => {
            eprintln!("sovereign: the appliance refused the request: {why}");
            return Ok(ExitCode::from(1));
        }
        other => bail!("unexpected response {other:?}"),
    };
    if json {
        let samples =
            sovereign_cli::metrics::samples(&text).map_err(|e| anyhow::anyhow!("the appliance's metrics: {e}"))?;
        println!("{}", serde_json::to_string_pretty(&samples)?);
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
