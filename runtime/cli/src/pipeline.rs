//! The operator's side of pipelines: building a signed run request (role signatures, modules
//! with their release-signed manifests, the signed policy, the dataset), talking to the
//! appliance's engine over the control API, rendering the seed-000 style summary, and the
//! section checkers of `sovereign verify` run as one ([`Checkers`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::Report;
use sovereign_canonical::now_ms;
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};
use sovereign_pipeline::Pipeline;
use sovereign_protocol::pipeline::{
    Command, ModuleFile, OPERATOR_ROLE, Reply, RunReport, RunStatus, RunSummary, StartRun,
};
use sovereign_protocol::{Blob, Request, Response};
use sovereign_sandbox::ModuleManifest;

/// How long role signatures sent with a run stay valid.
pub const ROLE_SIGNATURE_TTL_MS: u64 = 10 * 60 * 1000;

/// Sends one pipeline command with `payloads` (what its [`Blob`]s refer to) to the node
/// `node` (pinned, or learned by [`crate::discover`] when `None`) and returns the engine's reply
/// with the payloads its blobs refer to. The response's signature is verified against that
/// identity; each payload chunk against the signed manifest.
pub fn command(
    endpoint: &crate::Endpoint,
    operator: &SigningKey,
    node: Option<&VerifyingKey>,
    cmd: &Command,
    payloads: &[Vec<u8>],
) -> anyhow::Result<(Reply, Vec<Vec<u8>>)> {
    let timeout = Duration::from_secs(600);
    let identity = crate::node_identity(endpoint, operator, node, Duration::from_secs(60))?;
    let mut progress = crate::client::progress_on_terminal();
    for attempt in 1.. {
        let request = crate::sign(Request::Pipeline(cmd.clone()), &identity, payloads, operator);
        let answer = crate::exchange(endpoint, &request, payloads, timeout, &mut progress)?;
        match answer.response.verify(&request, &identity).map_err(|e| anyhow!("response: {e}"))? {
            Response::Pipeline(reply) => return Ok((reply.clone(), answer.payloads)),
            Response::Refused(why) if crate::client::sign_again(why, attempt) => continue,
            Response::Refused(why) => bail!("the appliance refused the request: {why}"),
            other => bail!("unexpected response {other:?}"),
        }
    }
    unreachable!("the attempts above return")
}

/// Sends one request that is not a pipeline command (e.g. [`Request::Metrics`]) to the node
/// `node` (pinned, or learned by [`crate::discover`]) and returns its verified response.
pub fn ask(
    endpoint: &crate::Endpoint,
    operator: &SigningKey,
    node: Option<&VerifyingKey>,
    request: &Request,
) -> anyhow::Result<Response> {
    let identity = crate::node_identity(endpoint, operator, node, Duration::from_secs(60))?;
    for attempt in 1.. {
        let signed = crate::sign(request.clone(), &identity, &[], operator);
        let answer = crate::exchange(endpoint, &signed, &[], Duration::from_secs(60), &mut |_| {})?;
        match answer.response.verify(&signed, &identity).map_err(|e| anyhow!("response: {e}"))? {
            Response::Refused(why) if crate::client::sign_again(why, attempt) => continue,
            other => return Ok(other.clone()),
        }
    }
    unreachable!("the attempts above return")
}

/// The payload a reply's blob names, checked against it.
pub fn blob_payload(reply: &Reply, payloads: Vec<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    let Reply::Blob(blob) = reply else { bail!("expected a payload, the appliance answered {reply:?}") };
    let mut payloads = payloads.into_iter();
    match (payloads.next(), payloads.next()) {
        (Some(bytes), None) if Blob::of(&bytes) == *blob => Ok(bytes),
        (Some(_), None) => bail!("the appliance sent a payload that does not hash to what its reply names"),
        _ => bail!("the appliance's reply names one payload but carries another number"),
    }
}

/// One role signature per stage action of `pipeline`, valid for [`ROLE_SIGNATURE_TTL_MS`].
pub fn role_signatures(pipeline: &Pipeline, operator: &SigningKey) -> Vec<RoleSignature> {
    pipeline
        .stages
        .iter()
        .map(|s| {
            let mut nonce = [0u8; 16];
            OsRng.fill_bytes(&mut nonce);
            let context = RoleContext {
                action: s.kind.action(),
                environment: pipeline.name.clone(),
                nonce,
                expiry_ms: now_ms() + ROLE_SIGNATURE_TTL_MS,
            };
            RoleSignature::create(OPERATOR_ROLE, context, operator)
        })
        .collect()
}

/// The modules in `dir`: every `NAME.wasm` with its `NAME.manifest.json`, and the WASM bytes —
/// and every GPU kernel image, `NAME.ptx` or `NAME.cubin`, with its manifest the same way.
pub fn load_modules(dir: &Path) -> anyhow::Result<Vec<(ModuleFile, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("wasm" | "ptx" | "cubin")) {
            continue;
        }
        let manifest_path = path.with_extension("manifest.json");
        let manifest: ModuleManifest = serde_json::from_slice(
            &fs::read(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?,
        )
        .with_context(|| format!("{} is not a module manifest", manifest_path.display()))?;
        let wasm = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push((ModuleFile { wasm: Blob::of(&wasm), manifest }, wasm));
    }
    out.sort_by(|a, b| a.0.manifest.name.cmp(&b.0.manifest.name));
    Ok(out)
}

/// Where a pipeline's dataset is: beside the pipeline file or in `datasets/` beside it.
pub fn find_dataset(pipeline_path: &Path, pipeline: &Pipeline) -> Option<PathBuf> {
    let name = pipeline.stages.iter().find_map(|s| match &s.kind {
        sovereign_pipeline::spec::StageKind::DataPreparation { dataset, .. } => Some(dataset.clone()),
        _ => None,
    })?;
    let dir = pipeline_path.parent().unwrap_or(Path::new("."));
    [dir.join(&name), dir.join("datasets").join(&name)].into_iter().find(|p| p.exists())
}

/// Everything `sovereign run` sends.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The dataset (found beside the pipeline when `None`).
    pub dataset: Option<PathBuf>,
    /// Directory with the modules and their manifests.
    pub modules: PathBuf,
    /// The signed policy bundle.
    pub policy: PathBuf,
    /// The operator's role certificate.
    pub certificate: PathBuf,
    /// The admin root's revocation list.
    pub revocations: PathBuf,
}

/// Reads a JSON file as `T`, naming the file and what it should have been when it is not.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(&fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{} is not a {what}", path.display()))
}

/// Builds the start request, with the payloads it refers to (the dataset, then the modules).
pub fn start_request(files: &RunFiles, operator: &SigningKey) -> anyhow::Result<(StartRun, Vec<Vec<u8>>)> {
    let yaml = fs::read(&files.pipeline).with_context(|| format!("reading {}", files.pipeline.display()))?;
    let pipeline = Pipeline::parse(&yaml).map_err(|e| anyhow!("{}: {e}", files.pipeline.display()))?;
    let dataset_path = match &files.dataset {
        Some(p) => p.clone(),
        None => find_dataset(&files.pipeline, &pipeline)
            .ok_or_else(|| anyhow!("the pipeline's dataset is not beside it; name it with --dataset"))?,
    };
    let dataset = fs::read(&dataset_path).with_context(|| format!("reading {}", dataset_path.display()))?;
    let (modules, wasm): (Vec<ModuleFile>, Vec<Vec<u8>>) = load_modules(&files.modules)?.into_iter().unzip();
    let start = StartRun {
        role_signatures: role_signatures(&pipeline, operator),
        pipeline_yaml: yaml,
        dataset: Blob::of(&dataset),
        modules,
        policy: read_json::<PolicyBundle>(&files.policy, "policy bundle")?,
        certificate: read_json::<RoleCertificate>(&files.certificate, "role certificate")?,
        revocations: read_json::<RevocationList>(&files.revocations, "revocation list")?,
    };
    let mut payloads = vec![dataset];
    payloads.extend(wasm);
    // Identical modules (or a module equal to the dataset) travel once.
    let mut seen = std::collections::BTreeSet::new();
    payloads.retain(|p| seen.insert(Blob::of(p).sha256));
    Ok((start, payloads))
}

/// The resume request for `run_id`.
pub fn resume_request(
    run_id: &str,
    pipeline: &Pipeline,
    certificate: RoleCertificate,
    operator: &SigningKey,
) -> Command {
    Command::Resume { run_id: run_id.into(), certificate, role_signatures: role_signatures(pipeline, operator) }
}

fn short(h: &[u8; 32]) -> String {
    hex::encode(&h[..8])
}

/// One word (or short phrase) for a run's status, for listings.
pub fn status_word(status: &RunStatus) -> String {
    match status {
        RunStatus::Completed => "completed".into(),
        RunStatus::Running => "running".into(),
        RunStatus::AwaitingApprovals { have, need, .. } => format!("awaiting approvals ({have} of {need})"),
        RunStatus::Interrupted { stage, in_flight: true } => format!("INTERRUPTED inside {stage}"),
        RunStatus::Interrupted { stage, in_flight: false } => format!("INTERRUPTED before {stage}"),
        RunStatus::Failed { stage, .. } => format!("failed at {stage}"),
    }
}

/// The `sovereign runs` table.
pub fn render_runs(runs: &[RunSummary]) -> String {
    let mut out = format!("{:<32}  {:<16}  {:>6}  status\n", "run", "pipeline", "stages");
    for r in runs {
        out.push_str(&format!(
            "{:<32}  {:<16}  {:>6}  {}\n",
            r.run_id,
            r.pipeline,
            format!("{}/{}", r.stages_done, r.total_stages),
            status_word(&r.status)
        ));
    }
    if runs.is_empty() {
        out.push_str("(no runs)\n");
    }
    out
}

/// The seed-000 style summary of a run.
pub fn render(report: &RunReport) -> String {
    let bar = "=".repeat(78);
    let mut out =
        format!("{bar}\nTHE IRON PATH - {} v{} (run {})\n{bar}\n", report.pipeline, report.version, report.run_id);
    out.push_str(&format!(
        "config snapshot {} signed by node {}\npolicy {}\n",
        hex::encode(report.config_hash),
        short(&report.snapshot.public_key),
        hex::encode(report.policy_hash)
    ));
    for s in &report.stages {
        out.push_str(&format!(
            "  [ok] {:<10} {:<16} artifact {}…  {:>8.1} ms (governance {:.1} ms)  {}\n",
            s.name,
            s.kind,
            short(&s.artifact),
            s.micros as f64 / 1000.0,
            s.governance_micros as f64 / 1000.0,
            s.summary
        ));
    }
    let status = match &report.status {
        RunStatus::Completed => "IRON PATH EXECUTION SUCCESSFUL".to_string(),
        RunStatus::Running => "running".to_string(),
        RunStatus::AwaitingApprovals { have, need, role, candidate, digest } => format!(
            "STOPPED AT PROMOTION: {have} of {need} approvals by role {role:?} for model {}\n  approvers sign: sovereign approve {} (digest {})",
            hex::encode(candidate),
            report.run_id,
            hex::encode(digest)
        ),
        RunStatus::Interrupted { stage, in_flight } => format!(
            "INTERRUPTED {} stage {stage}: the runtime stopped while this run was going\n  pick it up with: sovereign run PIPELINE.yaml … --resume {}",
            if *in_flight { "inside" } else { "before" },
            report.run_id
        ),
        RunStatus::Failed { stage, reason } => format!("FAILED at stage {stage}: {reason}"),
    };
    out.push_str(&format!(
        "{bar}\n{status}\nstages completed: {} of {}; audit log: {} entries\n",
        report.stages.len(),
        report.total_stages,
        report.audit_size
    ));
    if let Some(b) = report.bundle {
        out.push_str(&format!("compliance bundle: {}\n", hex::encode(b)));
    }
    out.push_str(&bar);
    out.push('\n');
    out
}

/// Exit code of a run report: 0 completed, 3 waiting to be resumed (approvals, or after an
/// interruption of the runtime), 1 failed.
pub fn exit_code(report: &RunReport) -> u8 {
    match report.status {
        RunStatus::Completed => 0,
        RunStatus::AwaitingApprovals { .. } | RunStatus::Interrupted { .. } | RunStatus::Running => 3,
        RunStatus::Failed { .. } => 1,
    }
}

/// Runs several section checkers as one.
pub struct Checkers<'a>(pub Vec<&'a dyn SectionChecker>);

impl SectionChecker for Checkers<'_> {
    fn sections(&self) -> Vec<&'static str> {
        self.0.iter().flat_map(|c| c.sections()).collect()
    }

    fn check(
        &self,
        report: &mut Report,
        entries: &[(String, sovereign_audit::Entry)],
        files: &BTreeMap<String, Vec<u8>>,
    ) {
        for c in &self.0 {
            let mine: BTreeMap<String, Vec<u8>> = files
                .iter()
                .filter(|(name, _)| c.sections().iter().any(|s| name.starts_with(&format!("{s}/"))))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            c.check(report, entries, &mine);
        }
    }
}
