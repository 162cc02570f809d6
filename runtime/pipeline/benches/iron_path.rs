//! The demo pipeline's time broken down by stage: the Iron Path (`examples/iron-path.yaml`)
//! through the engine on the host — real modules in the sandbox, CozoDB policy, governance
//! kernel, encrypted audit log and store on a temporary directory (fdatasync included) — against
//! the naive baseline of the same three WASM stages run bare in the sandbox (no governance, no
//! store, no audit). The audit export's evidence is a real TPM quote from a private swtpm (an
//! AK kept loaded, as the runtime's `Attestor` does) over the attested PCRs with the bundle's
//! nonce; the event logs and EK certificate the appliance adds are file reads, not measured.
//!
//! Needs the example modules: `cargo xtask modules`. Run: `cargo bench -p sovereign-pipeline
//! --bench iron_path` (prints a Markdown table).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::logfile::DataKey;
use sovereign_governance::approvals::Approval;
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};
use sovereign_pipeline::{Command, Engine, EngineConfig, Pipeline, Reply, RunStatus, StartRun};
use sovereign_protocol::Payloads;
use sovereign_protocol::pipeline::{ModuleFile, OPERATOR_ROLE};
use sovereign_sandbox::{Capability, Limits, ModuleManifest, Sandbox};

/// Runs of the whole path when measuring (`cargo bench`); one otherwise.
const RUNS: usize = 15;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn signatures(p: &Pipeline, key: &SigningKey) -> Vec<RoleSignature> {
    p.stages
        .iter()
        .map(|s| {
            let mut nonce = [0u8; 16];
            OsRng.fill_bytes(&mut nonce);
            let ctx =
                RoleContext { action: s.kind.action(), environment: p.name.clone(), nonce, expiry_ms: now() + 600_000 };
            RoleSignature::create(OPERATOR_ROLE, ctx, key)
        })
        .collect()
}

fn median(v: &mut [u64]) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64 / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = sovereign_bench::iterations(RUNS);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (release, admin, operator) =
        (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
    let approvers = [SigningKey::from_bytes(&[4; 32]), SigningKey::from_bytes(&[5; 32])];
    let caps = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];
    let (mut modules, mut attached) = (vec![], vec![]);
    for name in ["normalize", "train", "agent"] {
        let path = root.join("build/modules").join(format!("{name}.wasm"));
        let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e} (run `cargo xtask modules`)", path.display()))?;
        let manifest = ModuleManifest::sign(name, 1, &wasm, &caps, &release);
        modules.push(ModuleFile { manifest, wasm: sovereign_protocol::Blob::of(&wasm) });
        attached.push(wasm);
    }
    let yaml = std::fs::read_to_string(root.join("examples/iron-path.yaml"))?;
    let pipeline = Pipeline::parse(yaml.as_bytes())?;
    let dataset_bytes = std::fs::read(root.join("examples/datasets/sensors.csv"))?;
    let dataset = sovereign_protocol::Blob::of(&dataset_bytes);
    attached.push(dataset_bytes.clone());
    let payloads = Payloads::from_bytes(attached);
    let policy = PolicyBundle::sign(
        "iron-path",
        1,
        &std::fs::read_to_string(root.join("examples/policies/iron-path.cozo"))?,
        &release,
    );
    let certificate = RoleCertificate::issue(&operator.verifying_key(), &[OPERATOR_ROLE], 1, now() + 3_600_000, &admin);
    let dir = tempfile::tempdir_in(std::env::var_os("SOVEREIGN_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))?;
    // One TPM session for the state anchor and the quotes, as in the runtime.
    let swtpm = sovereign_qemu::Swtpm::start()?;
    let tpm = sovereign_measured_boot::tpm::SharedTpm::new(&swtpm.tcti());
    let mut engine = Engine::open(EngineConfig {
        identity: SigningKey::from_bytes(&[9; 32]),
        data_key: DataKey([8; 32]),
        state_dir: dir.path(),
        origin: "sovereign-bench/iron-path".into(),
        release: release.verifying_key(),
        admin: admin.verifying_key(),
        measurements: BTreeMap::from([("measured_boot".to_string(), serde_json::json!(true))]),
        counter: Box::new(sovereign_pipeline::anchor::TpmCounter::new(
            tpm.clone(),
            sovereign_measured_boot::tpm::STATE_ANCHOR_INDEX,
        )),
        reference_values: None,
        update: None,
        licence: None,
        gpu: Default::default(),
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
    })?;
    let ak = tpm.with(|t| t.create_attestation_key())?;
    let selection = sovereign_measured_boot::PcrSelection::new(sovereign_protocol::ATTESTED_PCRS)?;
    let identity = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let mut attest = |nonce: &[u8; 32]| -> Result<Vec<u8>, String> {
        let qualifying = sovereign_protocol::attest_qualifying_data(nonce, &identity);
        let quote = tpm.with(|t| t.quote(&ak, &qualifying, &selection)).map_err(|e| e.to_string())?;
        serde_json::to_vec(&serde_json::json!({
            "attest": hex::encode(&quote.attest),
            "signature": hex::encode(&quote.signature),
            "ak_public": hex::encode(&quote.ak_public),
        }))
        .map_err(|e| e.to_string())
    };
    let mut per_stage: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let mut whole = vec![];
    for _ in 0..runs {
        let start = StartRun {
            pipeline_yaml: yaml.as_bytes().to_vec(),
            dataset,
            modules: modules.clone(),
            policy: policy.clone(),
            certificate: certificate.clone(),
            role_signatures: signatures(&pipeline, &operator),
            revocations: RevocationList::issue(1, vec![], vec![], &admin),
        };
        let t = Instant::now();
        let Reply::Run(first) = engine.handle(Command::Start(Box::new(start)), &payloads, &mut attest).reply else {
            return Err("start".into());
        };
        let RunStatus::AwaitingApprovals { digest, .. } = first.status else {
            return Err(format!("{:?}", first.status).into());
        };
        for a in &approvers {
            let cert = RoleCertificate::issue(&a.verifying_key(), &["approver"], 7, now() + 3_600_000, &admin);
            engine.handle(
                Command::Approve {
                    run_id: first.run_id.clone(),
                    approval: Approval::sign(digest, now() + 600_000, a),
                    certificate: cert,
                },
                &payloads,
                &mut attest,
            );
        }
        let resume = Command::Resume {
            run_id: first.run_id.clone(),
            certificate: certificate.clone(),
            role_signatures: signatures(&pipeline, &operator),
        };
        let Reply::Run(done) = engine.handle(resume, &payloads, &mut attest).reply else { return Err("resume".into()) };
        whole.push(t.elapsed().as_micros() as u64);
        if done.status != RunStatus::Completed {
            return Err(format!("{:?}", done.status).into());
        }
        for s in &done.stages {
            let e = per_stage.entry(format!("{} ({})", s.name, s.kind)).or_default();
            e.0.push(s.micros);
            e.1.push(s.governance_micros);
        }
    }
    // The naive baseline: the WASM work alone.
    let sandbox = Sandbox::new(64 << 20)?;
    let loaded: Vec<_> = modules
        .iter()
        .map(|m| {
            let wasm = payloads.get(&m.wasm, &m.manifest.name).map_err(|e| e.to_string())?;
            sandbox.load(wasm, &m.manifest, &release.verifying_key()).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut bare = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        let prepared = sandbox.run(&loaded[0], &caps, &dataset_bytes, Limits::default())?;
        let model = sandbox.run(&loaded[1], &caps, &prepared.output, Limits::default())?;
        for policy in ["max_mse=0.5,min_rows=10", "max_mse=5,min_rows=20", "max_mse=1,min_rows=5"] {
            let mut input = model.output.clone();
            input.push(b'\n');
            input.extend_from_slice(policy.as_bytes());
            sandbox.run(&loaded[2], &caps, &input, Limits::default())?;
        }
        bare.push(t.elapsed().as_micros() as u64);
    }
    println!("| stage | runs | p50 total (ms) | p50 governance (ms) |");
    println!("| --- | --- | --- | --- |");
    for (name, (mut total, mut gov)) in per_stage {
        println!("| {name} | {} | {:.2} | {:.2} |", total.len(), median(&mut total), median(&mut gov));
    }
    println!("| whole Iron Path (start, 2 approvals, resume) | {runs} | {:.2} | |", median(&mut whole));
    println!(
        "| naive baseline: the WASM work alone (normalize, train, 3 agents) | {runs} | {:.2} | |",
        median(&mut bare)
    );
    Ok(())
}
