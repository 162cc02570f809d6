//! The commands that need no appliance: `verify` (a compliance bundle, attestation included),
//! `verify-log`, `keygen`, `module sign`.

use anyhow::{Context as _, anyhow};
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::DataKey;
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_audit::note::NoteVerifier;
use sovereign_audit::verify::verify_log_bytes;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::args::*;
use crate::{named_key, public_key, read_hex32, report_out, write_secret};

pub(crate) fn verify(
    bundle: PathBuf,
    keys: VerifyKeys,
    attestation: AttestTrustArgs,
    (anchor, licence_rule): (&VerifyAnchorArgs, Option<&Path>),
    json: bool,
) -> anyhow::Result<ExitCode> {
    let VerifyKeys { node_key, witnesses, policy_keys, admin_key } = keys;
    let bytes = fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let trust = TrustedKeys {
        node: node_key.as_deref().map(public_key).transpose()?,
        witnesses: witnesses.iter().map(|w| named_key(w)).collect::<anyhow::Result<_>>()?,
    };
    if trust.node.is_none() && !json {
        eprintln!("sovereign: warning: no --node-key given; signature checks cannot pass without a pinned key");
    }
    let checker = sovereign_cli::decisions::DecisionChecker {
        policy_signers: policy_keys.iter().map(|k| public_key(k)).collect::<anyhow::Result<_>>()?,
    };
    let attest = sovereign_cli::bundle_attestation::AttestationChecker {
        trust: bundle_trust(&attestation)?,
        identity: trust.node,
        ak_ca: attestation.ak_ca.as_deref().map(public_key).transpose()?,
        required: attestation.release_key.is_some()
            || attestation.reference.is_some()
            || attestation.platform.is_some()
            || attestation.ek_ca.is_some()
            || attestation.ak_ca.is_some(),
    };
    let deployment = sovereign_cli::deployment::DeploymentChecker;
    let roles = sovereign_cli::roles::RoleChecker { admin: admin_key.as_deref().map(public_key).transpose()? };
    let anchors = crate::commands::anchor::checker(&bundle, anchor)?;
    let licences = sovereign_cli::licences::LicenceChecker {
        rule: licence_rule.map(crate::commands::license::rule_file).transpose()?,
        node: trust.node,
    };
    let checkers = sovereign_cli::pipeline::Checkers(vec![&checker, &deployment, &attest, &roles, &anchors, &licences]);
    let report = verify_bundle_with(&bytes, &trust, Some(&checkers));
    report_out(&report, &format!("compliance bundle {}", bundle.display()), json)
}

pub(crate) fn keygen(out: PathBuf) -> anyhow::Result<ExitCode> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    write_secret(&out, &seed)?;
    let public = hex::encode(SigningKey::from_bytes(&seed).verifying_key().as_bytes());
    seed.fill(0);
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    fs::write(&pub_path, format!("{public}\n")).with_context(|| format!("writing {}", pub_path.display()))?;
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn module_sign(
    wasm: PathBuf,
    key: PathBuf,
    name: String,
    version: u64,
    capabilities: Vec<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let release = SigningKey::from_bytes(&read_hex32(&key, "release key")?);
    let bytes = fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let caps = capabilities
        .iter()
        .map(|c| sovereign_sandbox::Capability::of_name(c).ok_or_else(|| anyhow!("unknown capability {c:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = sovereign_sandbox::ModuleManifest::sign(&name, version, &bytes, &caps, &release);
    let out = out.unwrap_or_else(|| wasm.with_extension("manifest.json"));
    fs::write(&out, serde_json::to_vec_pretty(&manifest)?).with_context(|| format!("writing {}", out.display()))?;
    println!("signed module {name} v{version} (sha256 {}) -> {}", hex::encode(manifest.module_sha256), out.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify_log(
    log: PathBuf,
    data_key: PathBuf,
    node_key: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = DataKey(read_hex32(&data_key, "data key")?);
    let bytes = fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
    let checkpoint = sovereign_audit::store::read_checkpoint(&log)?;
    let origin = sovereign_audit::logfile::decode_header(&bytes, &key).map(|(h, _)| h.origin).unwrap_or_default();
    let node = node_key.as_deref().map(public_key).transpose()?.map(|k| NoteVerifier::new(origin, k));
    let report = verify_log_bytes(&bytes, &key, node.as_ref(), checkpoint.as_ref());
    report_out(&report, &format!("audit log {}", log.display()), json)
}

/// The auditor's attestation roots for a bundle: the release key, the platform profile and the
/// EK roots; the reference values only if pinned (otherwise the bundle's own, if the release
/// key signed them).
fn bundle_trust(args: &AttestTrustArgs) -> anyhow::Result<Option<sovereign_cli::bundle_attestation::BundleTrust>> {
    let (Some(release_key), Some(platform), Some(ek_ca)) = (&args.release_key, &args.platform, &args.ek_ca) else {
        return Ok(None);
    };
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(Some(sovereign_cli::bundle_attestation::BundleTrust {
        release_key: public_key(release_key)?,
        pinned_reference: args.reference.as_deref().map(read).transpose()?,
        platform_profile: read(platform)?,
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(&read(ek_ca)?)
            .map_err(|e| anyhow!("{}: {e}", ek_ca.display()))?,
    }))
}
