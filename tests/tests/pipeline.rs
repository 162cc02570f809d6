//! The Iron Path in the real appliance (one boot, a reboot after a power cut, and a boot of
//! the disk as the cut left it, which the TPM-anchored state check refuses; OVMF +
//! swtpm): the pipeline engine behind the control API, driven by the operator library the
//! `sovereign` CLI uses.
//!
//! A tampered module is refused before anything runs; a hostile agent (an endless loop) is
//! terminated, the chain loses consensus, and the runtime keeps serving; a power cut in the
//! middle of a stage leaves the run interrupted, and after the reboot it resumes; a run with
//! one approval stops at promotion; with two it promotes, rolls back with proof, and exports a
//! compliance bundle that verifies offline — hash chain, checkpoint, re-evaluated decisions,
//! and the TPM quote bound to the bundle's checkpoint — and fails once a byte of it is flipped;
//! a second promotion followed by a rollback restores and proves the first run's model, read
//! back from the encrypted data partition. The guest has no GPU: its status says `no GPU: …`, a
//! governed GPU kernel stage is denied with that reason, and the metrics count the decision.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sha2::Digest as _;

use ed25519_dalek::SigningKey;
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_cli::bundle_attestation::{AttestationChecker, BundleTrust};
use sovereign_cli::pipeline::{Checkers, blob_payload, command, role_signatures};
use sovereign_e2e::{attestation_ca, boot_slot, build_dir, certify_ak, dev_keys, image, operator_trust, root};
use sovereign_governance::approvals::Approval;
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::signed::{RevocationList, RoleCertificate};
use sovereign_pipeline::Pipeline;
use sovereign_protocol::Blob;
use sovereign_protocol::pipeline::UpdateState as UpdateStateOf;
use sovereign_protocol::pipeline::{Command, ModuleFile, OPERATOR_ROLE, Reply, RunReport, RunStatus, StartRun};
use sovereign_qemu::Appliance;
use sovereign_sandbox::{Capability, ModuleManifest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const READY: &str = "sovereign-runtime: control: attestation key ready";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Operator {
    socket: std::path::PathBuf,
    admin: SigningKey,
    certificate: RoleCertificate,
    revocations: RevocationList,
    policy: PolicyBundle,
    modules: Vec<Module>,
}

/// A module as the operator sends it: its signed manifest and its bytes.
type Module = (ModuleFile, Vec<u8>);

impl Operator {
    fn send(&self, cmd: &Command) -> Reply {
        command(&sovereign_cli::Endpoint::from(&self.socket), &self.admin, None, cmd, &[]).unwrap().0
    }

    fn fetch(&self, cmd: &Command) -> Vec<u8> {
        let (reply, payloads) =
            command(&sovereign_cli::Endpoint::from(&self.socket), &self.admin, None, cmd, &[]).unwrap();
        blob_payload(&reply, payloads).unwrap()
    }

    fn start(&self, yaml: &str, modules: Vec<Module>) -> Reply {
        let (start, payloads) = self.start_request(yaml, modules);
        command(&sovereign_cli::Endpoint::from(&self.socket), &self.admin, None, &start, &payloads).unwrap().0
    }

    fn start_request(&self, yaml: &str, modules: Vec<Module>) -> (Command, Vec<Vec<u8>>) {
        let pipeline = Pipeline::parse(yaml.as_bytes()).unwrap();
        let dataset = std::fs::read(root().join("examples/datasets/sensors.csv")).unwrap();
        let (modules, wasm): (Vec<ModuleFile>, Vec<Vec<u8>>) = modules.into_iter().unzip();
        let start = StartRun {
            role_signatures: role_signatures(&pipeline, &self.admin),
            pipeline_yaml: yaml.as_bytes().to_vec(),
            dataset: Blob::of(&dataset),
            modules,
            policy: self.policy.clone(),
            certificate: self.certificate.clone(),
            revocations: self.revocations.clone(),
        };
        let mut payloads = vec![dataset];
        payloads.extend(wasm);
        (Command::Start(Box::new(start)), payloads)
    }

    fn approve(&self, report: &RunReport, approver: &SigningKey) -> Reply {
        let RunStatus::AwaitingApprovals { digest, .. } = report.status else { panic!("{:?}", report.status) };
        let admin = dev_keys().admin;
        let certificate =
            RoleCertificate::issue(&approver.verifying_key(), &["approver"], 5, now_ms() + 3_600_000, &admin);
        let approval = Approval::sign(digest, now_ms() + 3_600_000, approver);
        self.send(&Command::Approve { run_id: report.run_id.clone(), approval, certificate })
    }

    fn resume(&self, run_id: &str, yaml: &str) -> RunReport {
        let pipeline = Pipeline::parse(yaml.as_bytes()).unwrap();
        report(self.send(&Command::Resume {
            run_id: run_id.into(),
            certificate: self.certificate.clone(),
            role_signatures: role_signatures(&pipeline, &self.admin),
        }))
    }
}

fn report(reply: Reply) -> RunReport {
    match reply {
        Reply::Run(r) => *r,
        other => panic!("expected a run report, got {other:?}"),
    }
}

fn modules() -> Vec<Module> {
    let keys = dev_keys();
    ["normalize", "train", "agent"]
        .iter()
        .map(|name| {
            let wasm = std::fs::read(build_dir().join("modules").join(format!("{name}.wasm"))).unwrap();
            let caps = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];
            let manifest = ModuleManifest::sign(name, 1, &wasm, &caps, &keys.release);
            (ModuleFile { manifest, wasm: Blob::of(&wasm) }, wasm)
        })
        .collect()
}

#[test]
fn the_iron_path_runs_governed_in_the_appliance_and_its_bundle_verifies_offline() {
    let _slot = boot_slot();
    let keys = dev_keys();
    let mut appliance = Appliance::new(image()).unwrap();
    let trust = operator_trust(&appliance);
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    assert!(guest.console().contains("sovereign-runtime: pipelines ready"), "{}", guest.console());
    // The operator attests the node and certifies its AK before any bundle; the AK and its
    // certificate are kept on the data partition, so they survive the power cut below.
    certify_ak(&appliance, &appliance.control_socket());
    let policy_text = std::fs::read_to_string(root().join("examples/policies/iron-path.cozo")).unwrap();
    let op = Operator {
        socket: appliance.control_socket(),
        certificate: RoleCertificate::issue(
            &keys.admin.verifying_key(),
            &[OPERATOR_ROLE],
            1,
            now_ms() + 3_600_000,
            &keys.admin,
        ),
        revocations: RevocationList::issue(1, vec![], vec![], &keys.admin),
        policy: PolicyBundle::sign("iron-path", 1, &policy_text, &keys.release),
        modules: modules(),
        admin: keys.admin.clone(),
    };
    let yaml = std::fs::read_to_string(root().join("examples/iron-path.yaml")).unwrap();

    // A tampered module is refused before anything runs.
    let mut tampered = op.modules.clone();
    let (train, bytes) = tampered.iter_mut().find(|m| m.0.manifest.name == "train").unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    train.wasm = Blob::of(bytes);
    let reply = op.start(&yaml, tampered);
    assert!(matches!(&reply, Reply::Refused(r) if r.contains("module train: bytes hash to")), "{reply:?}");

    // No GPU in this guest: the node says why, in its status and its GPU state; a pipeline with a
    // governed GPU kernel (the example PTX, release-signed as a gpu_kernel image) is denied at
    // that stage with the reason, after the stage before it ran; the metrics count it.
    let endpoint = sovereign_cli::Endpoint::from(&op.socket);
    let ask = |request: sovereign_protocol::Request| {
        sovereign_cli::pipeline::ask(&endpoint, &op.admin, None, &request).unwrap()
    };
    let sovereign_protocol::Response::Status(status) = ask(sovereign_protocol::Request::Status) else {
        panic!("status")
    };
    assert!(status.gpu.starts_with("no GPU: the NVIDIA driver is not loaded (NVML: "), "{}", status.gpu);
    let Reply::Gpu(gpu) = op.send(&Command::GpuStatus) else { panic!("gpu status") };
    assert!(!gpu.available && gpu.emergency_stop.is_none() && gpu.status == status.gpu, "{gpu:?}");
    let ptx = std::fs::read(root().join("examples/kernels/invert.ptx")).unwrap();
    let mut gpu_modules = op.modules.clone();
    gpu_modules.push((
        ModuleFile {
            manifest: ModuleManifest::sign("invert", 1, &ptx, &[Capability::GpuKernel], &keys.release),
            wasm: Blob::of(&ptx),
        },
        ptx,
    ));
    let dataset_sha256 =
        hex::encode(sha2::Sha256::digest(std::fs::read(root().join("examples/datasets/sensors.csv")).unwrap()));
    let gpu_yaml = format!(
        "name: gpu-path\nversion: \"1\"\nstages:\n  - {{ name: prepare, type: data_preparation, dataset: sensors.csv, dataset_sha256: \"{dataset_sha256}\", module: normalize }}\n  - {{ name: invert, type: gpu_kernel, kernel: invert, entry: invert, output_bytes: 4096, memory_bytes: 1048576, time_limit_ms: 2000 }}\ngovernance: {{ enforcement_level: strict, policy_binding_required: true, role_signatures_required: true }}\n"
    );
    let denied = report(op.start(&gpu_yaml, gpu_modules));
    let RunStatus::Failed { stage, reason } = &denied.status else { panic!("{:?}", denied.status) };
    assert_eq!(stage, "invert");
    assert!(reason.contains("no GPU: the NVIDIA driver is not loaded"), "{reason}");
    assert_eq!(denied.stages.len(), 1, "the data preparation ran: {denied:?}");
    let sovereign_protocol::Response::Metrics(text) = ask(sovereign_protocol::Request::Metrics) else {
        panic!("metrics")
    };
    let samples = sovereign_cli::metrics::samples(&text).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|x| x == v)))
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(value("sovereign_gpu_available", None), 0.0, "{text}");
    assert!(value("sovereign_governed_decisions_total", Some(("verdict", "deny"))) >= 1.0, "{text}");
    assert!(value("sovereign_attestations_total", Some(("outcome", "evidence"))) >= 1.0, "{text}");

    // A hostile agent loops forever: terminated, audited, consensus lost; the runtime serves on.
    let spinner = sovereign_qemu_free_spinner();
    let mut hostile_modules = op.modules.clone();
    hostile_modules.push((
        ModuleFile {
            manifest: ModuleManifest::sign("spinner", 1, &spinner, &[Capability::WriteOutput], &keys.release),
            wasm: Blob::of(&spinner),
        },
        spinner,
    ));
    let hostile_yaml = yaml.replace("{ name: safety, module: agent", "{ name: safety, module: spinner");
    let hostile = report(op.start(&hostile_yaml, hostile_modules.clone()));
    let RunStatus::Failed { stage, reason } = &hostile.status else { panic!("{:?}", hostile.status) };
    assert_eq!(stage, "review");
    assert!(reason.contains("not reached (2 of 3 approve)"), "{reason}");
    // The cut below is timed from a warm run like the one it cuts: the first run also compiled
    // the spinner, and a cold run can take more than twice as long as a warm one, which put the
    // cut after the warm run had finished.
    let started = std::time::Instant::now();
    let warm = report(op.start(&hostile_yaml, hostile_modules.clone()));
    let hostile_took = started.elapsed();
    assert!(matches!(&warm.status, RunStatus::Failed { stage, .. } if stage == "review"), "{:?}", warm.status);
    // Where to cut: a quarter of the way into `review`, past the stages before it (their times
    // are in the report). Halfway through the whole run was too late once, when the cut run went
    // more than twice as fast as the warm one and was answered before the cut.
    let before_review = Duration::from_micros(warm.stages.iter().map(|s| s.micros).sum());
    let cut_at = before_review + hostile_took.saturating_sub(before_review) / 4;

    // The power is cut while a stage is in flight: the spinner holds `review` until the sandbox
    // terminates it (fuel or wall clock), and QEMU is killed a quarter into that stage (what the appliance had
    // written to its disk stays, as on a real machine). After the reboot the run shows as
    // interrupted inside `review`; resumed, its finished stages are kept and `review` runs again
    // as a new execution. The audit log, cut mid-run, keeps verifying (the bundles below).
    let (socket, admin, cut_start) =
        (op.socket.clone(), op.admin.clone(), op.start_request(&hostile_yaml, hostile_modules));
    let cut_sender = std::thread::spawn(move || {
        command(&sovereign_cli::Endpoint::from(&socket), &admin, None, &cut_start.0, &cut_start.1)
    });
    std::thread::sleep(cut_at);
    drop(guest); // QEMU killed: the power cut
    let unanswered = cut_sender.join().unwrap();
    // The disk as the power cut left it: an older copy of the data partition, put back below.
    let older_disk = tempfile::NamedTempFile::new().unwrap();
    appliance.save_disk(older_disk.path()).unwrap();
    assert!(
        unanswered.is_err(),
        "the cut run was answered before the cut at {cut_at:?} (warm run {hostile_took:?}, {before_review:?} before review): {unanswered:?}"
    );
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    // The power cut did not brick the node: its state is the anchored one (or one advance
    // ahead, finished now).
    assert!(guest.console().contains("sovereign-runtime: ready"), "{}", guest.console());
    let Reply::Runs(runs) = op.send(&Command::Runs) else { panic!("no run list") };
    let cut =
        runs.iter().find(|r| matches!(r.status, RunStatus::Interrupted { .. })).unwrap_or_else(|| panic!("{runs:?}"));
    assert_eq!(
        cut.status,
        RunStatus::Interrupted { stage: "review".into(), in_flight: true },
        "power cut {cut_at:?} into a run that takes {hostile_took:?}: {runs:?}"
    );
    assert_eq!(cut.stages_done, 2);
    let resumed = op.resume(&cut.run_id, &hostile_yaml);
    let RunStatus::Failed { stage, reason } = &resumed.status else { panic!("{:?}", resumed.status) };
    assert_eq!((stage.as_str(), resumed.stages.len()), ("review", 2));
    assert!(reason.contains("not reached (2 of 3 approve)"), "{reason}");

    // One approval: the run stops at promotion.
    let run = report(op.start(&yaml, op.modules.clone()));
    assert!(matches!(run.status, RunStatus::AwaitingApprovals { have: 0, need: 2, .. }), "{:?}", run.status);
    let approvers = [SigningKey::from_bytes(&[0x61; 32]), SigningKey::from_bytes(&[0x62; 32])];
    assert_eq!(op.approve(&run, &approvers[0]), Reply::Approved { have: 1, need: 2 });
    let paused = op.resume(&run.run_id, &yaml);
    assert!(matches!(paused.status, RunStatus::AwaitingApprovals { have: 1, need: 2, .. }), "{:?}", paused.status);
    assert_eq!(paused.stages.len(), 3);

    // Two: promotion, rollback (nothing was live before: the empty deployment, proven), export.
    assert_eq!(op.approve(&run, &approvers[1]), Reply::Approved { have: 2, need: 2 });
    let done = op.resume(&run.run_id, &yaml);
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let kinds: Vec<&str> = done.stages.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["data_preparation", "model_training", "agent_chain", "promotion", "rollback", "audit_export"]);
    assert!(done.stages[4].summary.contains("restored the empty deployment"), "{}", done.stages[4].summary);
    let bundle = op.fetch(&Command::Artifact { run_id: run.run_id.clone(), sha256: done.bundle.unwrap() });

    // Offline: everything, the attestation bound to the bundle's checkpoint included.
    let identity = ed25519_dalek::VerifyingKey::from_bytes(&done.snapshot.public_key).unwrap();
    let verify_trusting = |bytes: &[u8], ak_ca: Option<ed25519_dalek::VerifyingKey>, trust: BundleTrust| {
        let decisions =
            sovereign_cli::decisions::DecisionChecker { policy_signers: vec![keys.release.verifying_key()] };
        let attestation = AttestationChecker { trust: Some(trust), identity: Some(identity), ak_ca, required: true };
        let deployment = sovereign_cli::deployment::DeploymentChecker;
        let roles = sovereign_cli::roles::RoleChecker { admin: Some(keys.admin.verifying_key()) };
        let checkers = Checkers(vec![&decisions, &deployment, &attestation, &roles]);
        verify_bundle_with(bytes, &TrustedKeys { node: Some(identity), witnesses: vec![] }, Some(&checkers))
    };
    let pinned = BundleTrust::pinning(&trust);
    let verify_pinning = |bytes: &[u8], ak_ca| verify_trusting(bytes, ak_ca, pinned.clone());
    let verify = |bytes: &[u8]| verify_pinning(bytes, Some(attestation_ca().0.verifying_key()));
    let verified = verify(&bundle);
    assert!(verified.passed(), "{}", verified.render("bundle"));
    let attested = verified.checks.iter().find(|c| c.name == "attestation").expect("attestation check");
    assert!(attested.failures.is_empty() && attested.detail.contains("the AK is certified"), "{attested:?}");
    // The release's reference values came with the bundle (from the ESP, through PID 1): equal
    // to the build's; an auditor who pins only the release key judges the quote by them; one
    // who pins another release's values FAILS them, and the quote is not judged.
    let reference = verified.check("reference-values").expect("reference-values check");
    assert!(reference.passed() && reference.detail.ends_with("equal to the pinned ones"), "{reference:?}");
    let unpinned_reference = BundleTrust { pinned_reference: None, ..pinned.clone() };
    let own = verify_trusting(&bundle, Some(attestation_ca().0.verifying_key()), unpinned_reference);
    assert!(own.passed(), "{}", own.render("bundle"));
    let mut another_release = trust.reference_values.clone();
    another_release.extend_from_slice(b"\n");
    let other = BundleTrust { pinned_reference: Some(another_release), ..pinned.clone() };
    let other = verify_trusting(&bundle, Some(attestation_ca().0.verifying_key()), other);
    let failures = |name: &str| other.check(name).map(|c| format!("{:?}", c.failures)).unwrap_or_default();
    assert!(failures("reference-values").contains("not the ones the auditor pinned"), "{}", other.render("b"));
    assert!(failures("attestation").contains("not judged: no checked reference values"), "{}", other.render("b"));
    for (name, minimum) in [
        ("executions.bound", 6),
        ("deployment.rollbacks", 1),
        ("role-certificates.signatures", 4),
        ("decisions.roles", 6),
    ] {
        let check = verified.check(name).unwrap_or_else(|| panic!("no {name} check"));
        assert!(check.passed() && check.checked >= minimum, "{check:?}");
    }
    // The same bundle for an auditor who pins no attestation CA, or another one: FAIL, named.
    let why = |report: &sovereign_audit::verify::Report| {
        report.check("attestation").map(|c| format!("{:?}", c.failures)).unwrap_or_default()
    };
    let unpinned = verify_pinning(&bundle, None);
    assert!(!unpinned.passed() && why(&unpinned).contains("no attestation CA pinned"), "{}", why(&unpinned));
    let stranger = SigningKey::from_bytes(&[0x5c; 32]).verifying_key();
    let foreign = verify_pinning(&bundle, Some(stranger));
    assert!(!foreign.passed() && why(&foreign).contains("not the pinned attestation CA"), "{}", why(&foreign));
    let mut flipped = bundle.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    assert!(!verify(&flipped).passed());

    // A second promotion (no rollback stage), then a third run whose rollback restores it.
    let no_rollback = yaml.replace("  - name: rollback\n    type: rollback\n\n", "");
    let second = report(op.start(&no_rollback, op.modules.clone()));
    for a in &approvers {
        assert!(matches!(op.approve(&second, a), Reply::Approved { .. }));
    }
    let second = op.resume(&second.run_id, &no_rollback);
    assert_eq!(second.status, RunStatus::Completed, "{second:?}");
    let model = second.stages[1].artifact;
    let third = report(op.start(&yaml, op.modules.clone()));
    for a in &approvers {
        op.approve(&third, a);
    }
    let third = op.resume(&third.run_id, &yaml);
    assert_eq!(third.status, RunStatus::Completed, "{third:?}");
    assert!(
        third.stages[4].summary.contains(&format!("restored model {}", &hex::encode(model)[..16])),
        "{}",
        third.stages[4].summary
    );

    // `sovereign audit export --socket`: the whole log now, with fresh evidence, verifies too —
    // and carries the policy every decision so far was made under.
    let export = op.fetch(&Command::ExportBundle);
    let exported = verify(&export);
    assert!(exported.passed(), "{}", exported.render("export"));
    assert!(exported.entries > verified.entries);

    // Updates over the same signed, streamed channel. The image's own bundle (v1, the running
    // release, at the floor the runtime raised at start) is refused before anything is written;
    // a v2 bundle signed by 2 of the 3 release signers is verified on the node and staged; both
    // pushes are audited. (The v2 payload is this image re-signed as release 2 — manifest,
    // reference values, PCR policy — a genuinely signed bundle; booting it is not what this
    // checks.)
    let image = sovereign_e2e::build_dir().join("image");
    let platform = sovereign_update::PLATFORM_QEMU_X86_64;
    let push = |bytes: Vec<u8>| {
        let cmd = Command::UpdatePush { bundle: sovereign_protocol::stream::Blob::of(&bytes) };
        command(&sovereign_cli::Endpoint::from(&op.socket), &op.admin, None, &cmd, &[bytes]).unwrap().0
    };
    let (v1, _) = sovereign_image::update::bundle(&image, &keys, 2, platform).unwrap();
    match push(v1) {
        Reply::Refused(why) => {
            assert_eq!(why, "update refused: release v1 is not above the anti-rollback floor v1")
        }
        other => panic!("the running release was taken as an update: {other:?}"),
    }
    let resigned = tempfile::tempdir().unwrap();
    resign_as_release(&image, resigned.path(), &keys, 2);
    let (v2, written) = sovereign_image::update::bundle(resigned.path(), &keys, 2, platform).unwrap();
    assert_eq!(written.refused, None);
    let Reply::Update(state) = push(v2.clone()) else { panic!("the signed v2 bundle was refused") };
    let staged = state.staged.expect("staged");
    assert_eq!((state.running_version, state.floor, staged.release_version), (1, 1, 2));
    assert_eq!(staged.sha256, sovereign_protocol::stream::Blob::of(&v2).sha256);
    assert_eq!(op.send(&Command::UpdateStatus), Reply::Update(UpdateStateOf { staged: Some(staged), ..state }));
    let log = verify(&op.fetch(&Command::ExportBundle));
    assert!(log.passed(), "{}", log.render("export"));

    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();

    // The data partition put back as the power cut left it, under the TPM that anchored
    // everything since: the runtime refuses every governed action, says why in one line on the
    // console and in `status`, and still attests.
    appliance.restore_disk(older_disk.path()).unwrap();
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let console = guest.console();
    assert!(!console.contains("sovereign-runtime: ready"), "an older copy was accepted:\n{console}");
    let refused_line = console.lines().find(|l| l.contains("REFUSING every governed action")).unwrap_or_else(|| {
        panic!("no refusal on the console:\n{console}");
    });
    assert!(refused_line.contains("older copy"), "{refused_line}");
    let os = std::ffi::OsStr::new;
    let admin_key = build_dir().join("keys/admin.key");
    let socket = appliance.control_socket();
    let (code, stdout, stderr) = sovereign_e2e::sovereign(&[
        os("status"),
        os("--socket"),
        socket.as_os_str(),
        os("--key"),
        admin_key.as_os_str(),
        os("--json"),
    ]);
    assert_eq!(code, 1, "status of a refusing node must fail:\n{stdout}\n{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let refused = status["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("older copy") && refused.contains("TPM counter"), "{status}");
    let why = command(&sovereign_cli::Endpoint::from(&op.socket), &op.admin, None, &Command::Runs, &[])
        .map(|r| r.0)
        .unwrap_err()
        .to_string();
    assert!(why.contains("refuses every governed action") && why.contains("older copy"), "{why}");
    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}

/// A module that loops forever.
fn sovereign_qemu_free_spinner() -> Vec<u8> {
    wat::parse_str(
        r#"(module (import "sovereign" "output_write" (func $w (param i32 i32) (result i32)))
             (memory (export "memory") 1) (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))"#,
    )
    .unwrap()
}

/// Copies the built image's release files into `out` re-signed as release `version` with the
/// development keys: the manifest (version), the reference values (version, manifest digest)
/// and the PCR policy (floor assertion) — what a release build of that version signs.
fn resign_as_release(
    image: &std::path::Path,
    out: &std::path::Path,
    keys: &sovereign_image::keys::KeySet,
    version: u64,
) {
    use sha2::Digest as _;
    let read = |name: &str| std::fs::read(image.join(name)).unwrap();
    let mut manifest = sovereign_boot_contract::manifest::Manifest::verify(
        &read("manifest.json"),
        &read("manifest.sig"),
        &keys.release.verifying_key(),
    )
    .unwrap();
    manifest.version = version;
    let (manifest, manifest_sig) = manifest.sign(&keys.release);
    let mut reference: serde_json::Value = serde_json::from_slice(&read("reference-values.json")).unwrap();
    reference["version"] = version.into();
    reference["manifest_sha256"] = hex::encode(sha2::Sha256::digest(&manifest)).into();
    let reference = serde_json::to_vec_pretty(&reference).unwrap();
    let reference_sig = ed25519_dalek::Signer::sign(&keys.release, &reference).to_bytes();
    let policy = sovereign_measured_boot::SignedPcrPolicy::from_json(&read("pcr-policy.json")).unwrap();
    let policy = sovereign_measured_boot::SignedPcrPolicy::sign(policy.pcrs, version, &keys.pcr_policy).unwrap();
    let files: [(&str, Vec<u8>); 6] = [
        ("sovereign.efi", read("sovereign.efi")),
        ("manifest.json", manifest),
        ("manifest.sig", manifest_sig),
        ("reference-values.json", reference),
        ("reference-values.sig", reference_sig.to_vec()),
        ("pcr-policy.json", policy.to_json().into_bytes()),
    ];
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes).unwrap();
    }
}
