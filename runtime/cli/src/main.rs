//! `sovereign` — the operator CLI.
//!
//! The appliance commands `status`, `attest`, `run` and `approve` (signed control API;
//! attestation is verified offline against the operator's trust roots), `audit export
//! --socket` (a compliance bundle from the appliance), offline verification of compliance
//! bundles (`verify`, attestation included) and raw audit logs (`verify-log`), key and
//! certificate tooling (`keygen`, `cert`, `module sign`, `policy sign`) and audit-log tooling
//! for development and auditors' own tests. `update` arrives with its issue.
//!
//! Exit codes: 0 PASS / success, 1 a check failed, 2 usage or environment error.
//! Must never: report PASS for anything it could not check; read a secret key from anywhere
//! but a file the user named.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::Parser;
use ed25519_dalek::VerifyingKey;
use sovereign_audit::verify::Report;

mod args;
mod commands;

use args::*;
use commands::{appliance, offline};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sovereign: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn read_hex32(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {what} from {}", path.display()))?;
    sovereign_canonical::hex32(&text).map_err(|e| anyhow!("{} does not hold a {what}: {e}", path.display()))
}

pub(crate) fn public_key(arg: &str) -> anyhow::Result<VerifyingKey> {
    let text = if Path::new(arg).is_file() {
        fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    sovereign_canonical::ed25519_public_key(&text).map_err(|e| anyhow!("public key {arg:?} is {e}"))
}

pub(crate) fn named_key(arg: &str) -> anyhow::Result<(String, VerifyingKey)> {
    let (name, key) = arg.split_once('=').ok_or_else(|| anyhow!("witness {arg:?} must be NAME=HEXKEY"))?;
    Ok((name.to_string(), public_key(key)?))
}

pub(crate) fn write_secret(path: &Path, bytes: &[u8; 32]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", hex::encode(bytes)).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(crate) fn report_out(report: &Report, title: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let value = serde_json::json!({ "verdict": if report.passed() { "PASS" } else { "FAIL" }, "report": report });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render(title));
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify { bundle, keys, attestation, anchor, licence_rule, json } => {
            offline::verify(bundle, keys, attestation, (&anchor, licence_rule.as_deref()), json)
        }
        Command::Policy(cmd) => commands::policy::policy(cmd),
        Command::Run { pipeline, appliance, dataset, modules, policy, certificate, revocations, resume, out, json } => {
            let files =
                sovereign_cli::pipeline::RunFiles { pipeline, dataset, modules, policy, certificate, revocations };
            appliance::run_pipeline(&files, &appliance, resume.as_deref(), out.as_deref(), json)
        }
        Command::Approve { run, appliance, approver_key, certificate, json } => {
            appliance::approve(&run, &appliance, &approver_key, &certificate, json)
        }
        Command::Runs { appliance, json } => appliance::runs(appliance, json),
        Command::Keygen { out } => offline::keygen(out),
        Command::Cert(cmd) => commands::cert::cert(cmd),
        Command::Module(ModuleCommand::Sign { wasm, key, name, version, capabilities, out }) => {
            offline::module_sign(wasm, key, name, version, capabilities, out)
        }
        Command::VerifyLog { log, data_key, node_key, json } => offline::verify_log(log, data_key, node_key, json),
        Command::Audit(cmd) => commands::audit::audit(cmd),
        Command::Update(cmd) => commands::update::update(cmd),
        Command::License(cmd) => commands::license::license(cmd),
        Command::Anchor(cmd) => commands::anchor::anchor(cmd),
        Command::Gpu(cmd) => commands::gpu::gpu(cmd),
        Command::Metrics { appliance, json } => commands::gpu::metrics(appliance, json),
        Command::Attest {
            port,
            key,
            release_key,
            reference,
            platform,
            ek_ca,
            node_key,
            save,
            ak_ca,
            ak_cert_days,
            json,
        } => appliance::attest(
            port,
            key,
            appliance::AttestRoots { release_key, reference, platform, ek_ca, node_key },
            save,
            ak_ca.map(|ca| (ca, ak_cert_days)),
            json,
        ),
        Command::Status { appliance, json } => appliance::status(appliance, json),
    }
}
