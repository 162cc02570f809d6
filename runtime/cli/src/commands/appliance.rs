//! The commands that talk to an appliance over the signed control API: `status`, `attest`,
//! `run`, `approve`, `runs`.

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sovereign_canonical::now_ms;
use sovereign_protocol::pipeline::{Command as PipelineCommand, Reply};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn runs(appliance: ApplianceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let runs = match sovereign_cli::pipeline::command(
        &appliance.port.endpoint()?,
        &operator,
        node.as_ref(),
        &PipelineCommand::Runs,
        &[],
    )?
    .0
    {
        Reply::Runs(runs) => runs,
        Reply::Refused(why) => bail!("the appliance refused: {why}"),
        other => bail!("unexpected reply {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{}", sovereign_cli::pipeline::render_runs(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // one per command-line option
/// The operator's attestation trust roots, as given on the command line.
pub(crate) struct AttestRoots {
    pub(crate) release_key: String,
    pub(crate) reference: PathBuf,
    pub(crate) platform: PathBuf,
    pub(crate) ek_ca: PathBuf,
    pub(crate) node_key: Option<String>,
}

pub(crate) fn attest(
    port: ControlPort,
    key: PathBuf,
    roots: AttestRoots,
    save: Option<PathBuf>,
    certify: Option<(PathBuf, u64)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let operator = SigningKey::from_bytes(&read_hex32(&key, "operator key")?);
    let ca = certify
        .map(|(file, days)| {
            Ok::<_, anyhow::Error>((SigningKey::from_bytes(&read_hex32(&file, "attestation CA key")?), days))
        })
        .transpose()?;
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let trust = sovereign_cli::attest::Trust {
        release_key: public_key(&roots.release_key)?,
        reference_values: read(&roots.reference)?,
        reference_signature: read(&roots.reference.with_extension("sig"))?,
        platform_profile: read(&roots.platform)?,
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(&read(&roots.ek_ca)?)
            .map_err(|e| anyhow!("{}: {e}", roots.ek_ca.display()))?,
        node_identity: roots.node_key.as_deref().map(public_key).transpose()?,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let timeout = std::time::Duration::from_secs(60);
    let socket = port.endpoint()?;
    let (exchange, report) = sovereign_cli::attest::attest(&socket, &operator, &trust, now, timeout)?;
    if let (Some(dir), Some(exchange)) = (&save, &exchange) {
        sovereign_cli::attest::save(dir, exchange, &report)?;
    }
    // Only a complete PASS — credential activation included — earns the AK a certificate.
    let certificate = match (&ca, &exchange) {
        (Some((ca, days)), Some(exchange)) if report.passed() => Some(
            sovereign_cli::attest::certify(&socket, &operator, exchange, ca, now, days.saturating_mul(86_400), timeout)
                .context("certifying the attestation key")?,
        ),
        _ => None,
    };
    if json {
        let value = serde_json::json!({
            "verdict": if report.passed() { "PASS" } else { "FAIL" },
            "identity": exchange.as_ref().map(|e| hex::encode(e.identity)),
            "nonce": exchange.as_ref().map(|e| hex::encode(e.nonce)),
            "report": report,
            "saved_to": save,
            "ak_certificate": certificate,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render());
        if let Some(dir) = &save {
            println!("  evidence saved to {}", dir.display());
        }
        if let Some(cert) = &certificate {
            println!(
                "  attestation key certified (serial {}, valid until Unix time {}); the appliance stored the certificate",
                cert.serial, cert.not_after
            );
        } else if ca.is_some() {
            println!("  attestation key NOT certified: the attestation did not pass");
        }
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) fn status(ApplianceArgs { port, key, node_key }: ApplianceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let endpoint = port.endpoint()?;
    let operator = SigningKey::from_bytes(&read_hex32(&key, "operator key")?);
    let pinned = node_key.as_deref().map(public_key).transpose()?;
    // Without a pinned identity the status is addressed to any node, which answers it
    // signed by the identity it names (trust on first use).
    let addressed = pinned.map(|k| k.to_bytes()).unwrap_or(sovereign_protocol::ANY_NODE);
    let mut attempt = 0;
    let (request, response, identity) = loop {
        attempt += 1;
        let request =
            sovereign_cli::client::sign_addressed(sovereign_protocol::Request::Status, addressed, &[], &operator);
        let response = sovereign_cli::send(&endpoint, &request, std::time::Duration::from_secs(30))?;
        let identity = match pinned {
            Some(k) => k,
            None => VerifyingKey::from_bytes(&response.identity)
                .map_err(|e| anyhow!("node identity is not a valid key: {e}"))?,
        };
        match response.verify(&request, &identity) {
            Ok(sovereign_protocol::Response::Refused(why)) if sovereign_cli::client::sign_again(why, attempt) => {
                continue;
            }
            _ => break (request, response, identity),
        }
    };
    let verified = response.verify(&request, &identity).map_err(|e| anyhow!("response: {e}"))?;
    match verified {
        sovereign_protocol::Response::Status(st) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"version": st.version, "manifest_sha256": hex::encode(st.manifest_sha256), "uptime_s": st.uptime_s, "identity": hex::encode(st.identity), "confinement": st.confinement, "confinement_shortfalls": st.confinement.shortfalls(), "refused": st.refused, "gpu": st.gpu, "response_signature": "verified"})
                );
            } else {
                println!("appliance status (response signed by the node identity, verified)");
                println!("  image version:   {}", st.version);
                println!("  manifest sha256: {}", hex::encode(st.manifest_sha256));
                println!("  uptime:          {} s", st.uptime_s);
                println!("  node identity:   {}", hex::encode(st.identity));
                let c = &st.confinement;
                println!(
                    "  runtime:         uid {} gid {}, capabilities eff {:#x} prm {:#x} bnd {:#x} amb {:#x}, no_new_privs {}, seccomp mode {} ({} filters), lockdown {}",
                    c.uids[0],
                    c.gids[0],
                    c.cap_eff,
                    c.cap_prm,
                    c.cap_bnd,
                    c.cap_amb,
                    c.no_new_privs,
                    c.seccomp_mode,
                    c.seccomp_filters,
                    c.lockdown
                );
                for shortfall in c.shortfalls() {
                    println!("  NOT CONFINED:    {shortfall}");
                }
                println!("  gpu:             {}", st.gpu);
                match &st.refused {
                    Some(why) => println!("  REFUSING:        every governed action: {why}"),
                    None => println!("  governed:        yes (state anchored, engine up)"),
                }
            }
            // A runtime that is not confined, or refuses to govern, is a failed check.
            Ok(if st.confinement.shortfalls().is_empty() && st.refused.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        sovereign_protocol::Response::Refused(reason) => {
            eprintln!("sovereign: the appliance refused the request: {reason}");
            Ok(ExitCode::from(1))
        }
        other => bail!("unexpected response {other:?}"),
    }
}

pub(crate) fn run_pipeline(
    files: &sovereign_cli::pipeline::RunFiles,
    appliance: &ApplianceArgs,
    resume: Option<&str>,
    out: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sovereign_cli::pipeline as p;
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let (command, payloads) = match resume {
        None => {
            let (start, payloads) = p::start_request(files, &operator)?;
            (PipelineCommand::Start(Box::new(start)), payloads)
        }
        Some(run_id) => {
            let yaml = fs::read(&files.pipeline).with_context(|| format!("reading {}", files.pipeline.display()))?;
            let pipeline = sovereign_pipeline::Pipeline::parse(&yaml).map_err(|e| anyhow!("{e}"))?;
            let certificate = serde_json::from_slice(&fs::read(&files.certificate)?)
                .with_context(|| format!("{} is not a role certificate", files.certificate.display()))?;
            (p::resume_request(run_id, &pipeline, certificate, &operator), vec![])
        }
    };
    let report = match p::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &command, &payloads)?.0 {
        Reply::Run(r) => *r,
        Reply::Refused(why) => {
            eprintln!("sovereign: the appliance refused the run: {why}");
            return Ok(ExitCode::from(1));
        }
        other => bail!("unexpected reply {other:?}"),
    };
    let mut bundle_path = None;
    if let Some(dir) = out {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join(format!("run-{}.json", report.run_id)), serde_json::to_vec_pretty(&report)?)?;
        if let Some(hash) = report.bundle {
            let fetch = PipelineCommand::Artifact { run_id: report.run_id.clone(), sha256: hash };
            let (reply, payloads) = p::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &fetch, &[])?;
            if !matches!(&reply, Reply::Blob(b) if b.sha256 == hash) {
                bail!("fetching the bundle: the appliance answered {reply:?}, not the bundle the run recorded");
            }
            let bytes = p::blob_payload(&reply, payloads).context("fetching the bundle")?;
            let path = dir.join("compliance-bundle.tar");
            fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            bundle_path = Some(path);
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "report": report, "bundle_path": bundle_path }))?
        );
    } else {
        print!("{}", p::render(&report));
        if let Some(path) = &bundle_path {
            println!("compliance bundle written to {}", path.display());
        }
    }
    Ok(ExitCode::from(p::exit_code(&report)))
}

pub(crate) fn approve(
    run: &str,
    appliance: &ApplianceArgs,
    approver_key: &Path,
    certificate: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sovereign_cli::pipeline as p;
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let approver = SigningKey::from_bytes(&read_hex32(approver_key, "approver key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let certificate: sovereign_governance::signed::RoleCertificate =
        serde_json::from_slice(&fs::read(certificate).with_context(|| format!("reading {}", certificate.display()))?)
            .with_context(|| format!("{} is not a role certificate", certificate.display()))?;
    let status = PipelineCommand::Status { run_id: run.into() };
    let report = match p::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &status, &[])?.0 {
        Reply::Run(r) => *r,
        Reply::Refused(why) => bail!("the appliance refused: {why}"),
        other => bail!("unexpected reply {other:?}"),
    };
    let sovereign_protocol::pipeline::RunStatus::AwaitingApprovals { digest, candidate, .. } = report.status else {
        bail!("run {run} has no promotion waiting for approvals ({:?})", report.status)
    };
    let approval = sovereign_governance::approvals::Approval::sign(digest, now_ms() + 24 * 3_600_000, &approver);
    let cmd = PipelineCommand::Approve { run_id: run.into(), approval, certificate };
    match p::command(&appliance.port.endpoint()?, &operator, node.as_ref(), &cmd, &[])?.0 {
        Reply::Approved { have, need } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"run": run, "model": hex::encode(candidate), "have": have, "need": need})
                );
            } else {
                println!(
                    "approved promotion of model {} in run {run}: {have} of {need} approvals",
                    hex::encode(candidate)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Reply::Refused(why) => {
            eprintln!("sovereign: the appliance refused the approval: {why}");
            Ok(ExitCode::from(1))
        }
        other => bail!("unexpected reply {other:?}"),
    }
}
