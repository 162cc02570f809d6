//! The Iron Path on the host, with the real parts: the example modules (built by `cargo xtask
//! modules`) in the wasmtime sandbox, the CozoDB policy, the governance kernel, the encrypted
//! audit log and store in a temporary directory. The appliance runs the same engine (the QEMU
//! end-to-end test in `tests/tests/pipeline.rs`). Each machine has its own swtpm, which holds
//! the state anchor's counter; the anchor's attacks and crash tests are at the end.

#![allow(clippy::unwrap_used, missing_docs)] // test code

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::Digest as _;
use sovereign_audit::logfile::DataKey;
use sovereign_boot_contract::slots::BootSlots;
use sovereign_governance::approvals::Approval;
use sovereign_governance::policy::PolicyBundle;
use sovereign_governance::signed::{RevocationList, RoleCertificate, RoleContext, RoleSignature};
use sovereign_measured_boot::tpm::{STATE_ANCHOR_INDEX, SharedTpm};
use sovereign_pipeline::anchor::{SLOTS, TpmCounter};
use sovereign_pipeline::engine::Attest;
use sovereign_pipeline::spec::Pipeline;
use sovereign_pipeline::{Command, Engine, EngineConfig, ReleaseReference, Reply, RunReport, RunStatus, StartRun};
use sovereign_protocol::deployment::{RollbackOutput, output_bytes};
use sovereign_protocol::pipeline::{ModuleFile, OPERATOR_ROLE};
use sovereign_protocol::{Blob, Payloads};
use sovereign_qemu::Swtpm;
use sovereign_sandbox::{Capability, ModuleManifest};

thread_local! {
    /// Every payload this test thread attached: what the control API would have delivered
    /// with each request as checked chunks.
    static SENT: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Attaches `bytes` (as the CLI would) and returns the request's reference to them.
fn attach(bytes: Vec<u8>) -> Blob {
    let blob = Blob::of(&bytes);
    SENT.with(|s| s.borrow_mut().push(bytes));
    blob
}

/// The bytes an attachment reference names.
fn attached(blob: &Blob) -> Vec<u8> {
    SENT.with(|s| s.borrow().iter().find(|b| Blob::of(b) == *blob).cloned()).expect("attached")
}

/// Asks the engine, with every payload attached so far.
trait Ask {
    fn ask(&mut self, command: Command, attest: Attest<'_>) -> Reply;
    fn fetch(&mut self, command: Command, attest: Attest<'_>) -> Vec<u8>;
}

impl Ask for Engine {
    fn ask(&mut self, command: Command, attest: Attest<'_>) -> Reply {
        let payloads = SENT.with(|s| Payloads::from_bytes(s.borrow().clone()));
        self.handle(command, &payloads, attest).reply
    }

    fn fetch(&mut self, command: Command, attest: Attest<'_>) -> Vec<u8> {
        let answer = self.handle(command, &Payloads::default(), attest);
        match (answer.reply, answer.payloads.as_slice()) {
            (Reply::Blob(blob), [bytes]) if Blob::of(bytes) == blob => bytes.clone(),
            (reply, p) => panic!("expected one attached payload, got {reply:?} with {} payloads", p.len()),
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Keys {
    release: SigningKey,
    admin: SigningKey,
    operator: SigningKey,
    approvers: Vec<SigningKey>,
}

fn keys() -> Keys {
    Keys {
        release: SigningKey::from_bytes(&[1; 32]),
        admin: SigningKey::from_bytes(&[2; 32]),
        operator: SigningKey::from_bytes(&[3; 32]),
        approvers: vec![SigningKey::from_bytes(&[4; 32]), SigningKey::from_bytes(&[5; 32])],
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A machine: its TPM (a private swtpm, which holds the state anchor's counter) and its data
/// partition (a temporary directory).
struct Machine {
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        Machine { tpm: Swtpm::start().unwrap(), dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The state anchor's TPM counter now (no engine may hold the TPM).
    fn counter(&self) -> Option<u64> {
        let mut tpm = sovereign_measured_boot::tpm::Tpm::open(&self.tpm.tcti()).unwrap();
        tpm.counter_value(STATE_ANCHOR_INDEX).unwrap()
    }

    /// The machine as a stop at this instant leaves it: the data partition's files as
    /// written so far (the engine writes records, artifacts and log entries through before
    /// going on) and the TPM's state, while this one goes on.
    fn snapshot(&self) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        copy_state(self.path(), dir.path());
        Machine { tpm: self.tpm.fork().unwrap(), dir }
    }
}

fn engine(machine: &Machine, k: &Keys) -> Engine {
    engine_with(machine, k, BTreeMap::from([("measured_boot".to_string(), serde_json::json!(true))]))
}

fn engine_with(machine: &Machine, k: &Keys, measurements: BTreeMap<String, serde_json::Value>) -> Engine {
    open_engine(machine, k, measurements).unwrap()
}

fn open_engine(
    machine: &Machine,
    k: &Keys,
    measurements: BTreeMap<String, serde_json::Value>,
) -> Result<Engine, sovereign_pipeline::EngineError> {
    let config = config(machine, k.release.verifying_key(), k.admin.verifying_key(), measurements);
    Engine::open(EngineConfig { reference_values: Some(reference_values(&k.release)), ..config })
}

/// The engine configuration of the tests' machine (its swtpm's counter anchors the state), with
/// no reference values and no update trust: each test sets what it is about.
fn config(
    machine: &Machine,
    release: VerifyingKey,
    admin: VerifyingKey,
    measurements: BTreeMap<String, serde_json::Value>,
) -> EngineConfig<'_> {
    EngineConfig {
        identity: SigningKey::from_bytes(&[9; 32]),
        data_key: DataKey([8; 32]),
        state_dir: machine.path(),
        origin: "sovereign-test/pipeline".into(),
        release,
        admin,
        measurements,
        counter: Box::new(TpmCounter::new(SharedTpm::new(&machine.tpm.tcti()), STATE_ANCHOR_INDEX)),
        reference_values: None,
        update: None,
        licence: None,
        gpu: Default::default(),
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
    }
}

/// Reference values of a release, signed by `release` (what PID 1 hands the appliance's runtime).
fn reference_values(release: &SigningKey) -> ReleaseReference {
    let values = br#"{"version":1,"manifest_sha256":"00","pcrs":{}}"#.to_vec();
    ReleaseReference { signature: release.sign(&values).to_bytes().to_vec(), values }
}

fn module(name: &str, k: &Keys) -> ModuleFile {
    let path = root().join("build/modules").join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} — build the modules with `cargo xtask modules`", path.display()));
    let caps = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];
    ModuleFile { manifest: ModuleManifest::sign(name, 1, &wasm, &caps, &k.release), wasm: attach(wasm) }
}

fn signatures(pipeline: &Pipeline, k: &Keys) -> Vec<RoleSignature> {
    pipeline
        .stages
        .iter()
        .map(|s| {
            let mut nonce = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
            let context = RoleContext {
                action: s.kind.action(),
                environment: pipeline.name.clone(),
                nonce,
                expiry_ms: now() + 600_000,
            };
            RoleSignature::create(OPERATOR_ROLE, context, &k.operator)
        })
        .collect()
}

fn certificate(k: &Keys) -> RoleCertificate {
    RoleCertificate::issue(&k.operator.verifying_key(), &[OPERATOR_ROLE], 1, now() + 3_600_000, &k.admin)
}

fn start(yaml: &str, k: &Keys) -> StartRun {
    start_with(yaml, k, "")
}

/// [`start`] with `more` appended to the Iron Path's policy.
fn start_with(yaml: &str, k: &Keys, more: &str) -> StartRun {
    let pipeline = Pipeline::parse(yaml.as_bytes()).unwrap();
    let policy = std::fs::read_to_string(root().join("examples/policies/iron-path.cozo")).unwrap() + more;
    StartRun {
        pipeline_yaml: yaml.as_bytes().to_vec(),
        dataset: attach(std::fs::read(root().join("examples/datasets/sensors.csv")).unwrap()),
        modules: ["normalize", "train", "agent"].iter().map(|m| module(m, k)).collect(),
        policy: PolicyBundle::sign("iron-path", 1, &policy, &k.release),
        certificate: certificate(k),
        role_signatures: signatures(&pipeline, k),
        revocations: RevocationList::issue(1, vec![], vec![], &k.admin),
    }
}

fn iron_path() -> String {
    std::fs::read_to_string(root().join("examples/iron-path.yaml")).unwrap()
}

fn no_tpm(_: &[u8; 32]) -> Result<Vec<u8>, String> {
    Err("no TPM in this test".into())
}

fn fake_evidence(nonce: &[u8; 32]) -> Result<Vec<u8>, String> {
    Ok(serde_json::to_vec(&serde_json::json!({ "nonce": hex::encode(nonce) })).unwrap())
}

fn run_report(reply: Reply) -> RunReport {
    match reply {
        Reply::Run(r) => *r,
        other => panic!("expected a run report, got {other:?}"),
    }
}

fn approve(engine: &mut Engine, report: &RunReport, who: &SigningKey, k: &Keys) -> Reply {
    let RunStatus::AwaitingApprovals { digest, .. } = report.status else { panic!("{:?}", report.status) };
    let certificate = RoleCertificate::issue(&who.verifying_key(), &["approver"], 7, now() + 3_600_000, &k.admin);
    let approval = Approval::sign(digest, now() + 600_000, who);
    engine.ask(Command::Approve { run_id: report.run_id.clone(), approval, certificate }, &mut no_tpm)
}

fn resume(engine: &mut Engine, run_id: &str, k: &Keys, attest: Attest<'_>) -> RunReport {
    let pipeline = Pipeline::parse(iron_path().as_bytes()).unwrap();
    run_report(engine.ask(
        Command::Resume {
            run_id: run_id.into(),
            certificate: certificate(k),
            role_signatures: signatures(&pipeline, k),
        },
        attest,
    ))
}

/// The policy reads the boot facts PID 1 hands the runtime (`BootFacts::measurements`): on a
/// boot that is not measured — PID 1 said so, or the runtime's own PCR reading disagreed with
/// PID 1's (`sovereign_runtime::boot::confirm`) — the Iron Path policy denies the first stage.
#[test]
fn a_boot_that_is_not_measured_is_denied_by_the_policy() {
    let k = keys();
    let facts = |measured_boot| sovereign_boot_contract::BootFacts {
        measured_boot,
        image_version: 1,
        pcrs: BTreeMap::from([(15, "ab".repeat(32))]),
        unseal_window_closed: true,
    };
    let dir = Machine::new();
    let mut unmeasured = engine_with(&dir, &k, facts(false).measurements());
    let report = run_report(unmeasured.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "prepare");
    assert!(reason.contains("the platform is not measured-boot verified"), "{reason}");
    assert!(report.stages.is_empty(), "a stage ran on an unmeasured boot: {report:?}");

    // The same facts with a measured boot: the first stages run.
    let dir = Machine::new();
    let mut measured = engine_with(&dir, &k, facts(true).measurements());
    let report = run_report(measured.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    assert!(matches!(report.status, RunStatus::AwaitingApprovals { .. }), "{:?}", report.status);
}

/// A node whose signed configuration states a licence rule: its decisions see `licensed`, and a
/// policy with `examples/policies/licensed.cozo` denies the Iron Path until a proof for this
/// node passes the rule. Proofs mined on a regtest chain here (`sovereign_ledger::regtest`):
/// another machine's, too little paid and too shallow are each refused by name, audited, and
/// not kept; the genuine one is kept, survives a restart, and the run goes ahead.
#[test]
fn a_licensed_policy_lets_the_iron_path_run_only_once_a_valid_licence_proof_is_imported() {
    use sovereign_ledger::bitcoin::Amount;
    use sovereign_ledger::regtest::{licence_transaction, proof_of};
    let k = keys();
    let machine = Machine::new();
    let rule =
        sovereign_ledger::rule::parse("regtest", 0, None, &format!("0014{}", "d3".repeat(20)), 50_000, 3).unwrap();
    let open = || {
        let config = config(&machine, k.release.verifying_key(), k.admin.verifying_key(), measured());
        Engine::open(EngineConfig { licence: Some(rule.clone()), ..config }).unwrap()
    };
    let licence_status = |engine: &mut Engine| match engine.ask(Command::LicenceStatus, &mut no_tpm) {
        Reply::Licence(state) => state,
        other => panic!("expected the licence state, got {other:?}"),
    };
    let licensed_policy = std::fs::read_to_string(root().join("examples/policies/licensed.cozo")).unwrap();
    let mut engine = open();
    let state = licence_status(&mut engine);
    assert!(state.configured && !state.licensed, "{state:?}");
    assert_eq!(state.reason.as_deref(), Some("no licence proof imported"));
    let report =
        run_report(engine.ask(Command::Start(Box::new(start_with(&iron_path(), &k, &licensed_policy))), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "prepare");
    assert!(reason.contains("this node has no valid Bitcoin licence"), "{reason}");

    // This node's machine ID is its identity's public key (the tests' identity).
    let node = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let proof = |machine_id: &[u8], sat: u64, on_top: u32| {
        serde_json::to_vec(&proof_of(&licence_transaction(&rule.terms, Amount::from_sat(sat), machine_id), on_top))
            .unwrap()
    };
    for (bytes, why) in [
        (proof(b"another appliance", 50_000, 2), "OP_RETURN"),
        (proof(&node, 49_999, 2), "0.00049999 BTC"),
        (proof(&node, 50_000, 1), "2 confirmations"),
        (b"{\"network\":\"regtest\"}".to_vec(), "not a proof file"),
    ] {
        let proof = attach(bytes);
        match engine.ask(Command::LicenceImport { proof }, &mut no_tpm) {
            Reply::Refused(reason) => assert!(reason.contains(why), "expected {why:?} in {reason:?}"),
            other => panic!("a bad licence proof was imported: {other:?}"),
        }
        assert!(!licence_status(&mut engine).licensed);
    }
    let genuine = attach(proof(&node, 50_000, 2));
    let Reply::Licence(state) = engine.ask(Command::LicenceImport { proof: genuine }, &mut no_tpm) else {
        panic!("the genuine proof was refused")
    };
    assert!(state.licensed && state.confirmations == Some(3) && state.height == Some(1), "{state:?}");

    // Kept across a restart; every import audited (four refusals, one import).
    drop(engine);
    let mut engine = open();
    assert!(licence_status(&mut engine).licensed);
    let report =
        run_report(engine.ask(Command::Start(Box::new(start_with(&iron_path(), &k, &licensed_policy))), &mut no_tpm));
    assert!(matches!(report.status, RunStatus::AwaitingApprovals { .. }), "{:?}", report.status);
    let payloads: Vec<String> = audit_lines(machine.path()).into_iter().filter(|p| p.contains("\"licence\"")).collect();
    assert_eq!(payloads.iter().filter(|p| p.contains("import refused")).count(), 4, "{payloads:#?}");
    assert_eq!(payloads.iter().filter(|p| p.contains("\"imported\"")).count(), 1, "{payloads:#?}");

    // The bundle carries the kept proof: offline, with the rule and the node identity, it backs
    // every decision that saw `licensed = true`; without the rule it is not evaluated; a node
    // identity the proof is not for does not pass.
    let bundle = engine.fetch(Command::ExportBundle, &mut fake_evidence);
    let members = sovereign_audit::bundle::read_tar(&bundle).unwrap();
    assert!(members.iter().any(|(n, _)| n == "licences/licence-proof.json"), "no licence proof in the bundle");
    let check = |rule: Option<sovereign_ledger::rule::Rule>, node: Option<VerifyingKey>| {
        let checker = sovereign_cli::licences::LicenceChecker { rule, node };
        let trusted = sovereign_audit::bundle::TrustedKeys { node: None, witnesses: vec![] };
        sovereign_audit::bundle::verify_bundle_with(&bundle, &trusted, Some(&checker)).check("licences").cloned()
    };
    let node_key = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let backed = check(Some(rule.clone()), Some(node_key)).expect("a licences check");
    assert!(backed.passed() && backed.detail.contains("at height 1 (3 confirmations) backs"), "{backed:?}");
    assert!(!backed.detail.contains("backs 0 decisions"), "no decision saw the licence: {backed:?}");
    assert!(!check(None, Some(node_key)).expect("a licences check").passed(), "passed without a rule");
    let stranger = SigningKey::from_bytes(&[3; 32]).verifying_key();
    assert!(!check(Some(rule), Some(stranger)).expect("a licences check").passed(), "passed for another node");
}

#[test]
fn reference_values_the_release_key_did_not_sign_are_refused_at_start() {
    let machine = Machine::new();
    let k = keys();
    let open = |reference: ReleaseReference| {
        let config = config(&machine, k.release.verifying_key(), k.admin.verifying_key(), measured());
        Engine::open(EngineConfig { reference_values: Some(reference), ..config }).map(drop).map_err(|e| e.to_string())
    };
    assert_eq!(open(reference_values(&k.admin)), Err("reference values: not signed by the release key".into()));
    let mut truncated = reference_values(&k.release);
    truncated.signature.truncate(10);
    assert_eq!(open(truncated), Err("reference values: a 10-byte signature is not Ed25519".into()));
    // Refused before anything was created: the same machine then opens with its genuine values.
    assert!(std::fs::read_dir(machine.path()).unwrap().next().is_none());
    assert_eq!(open(reference_values(&k.release)), Ok(()));
}

/// The project's update policy (`examples/policies/update.cozo`), signed by the release key of
/// `sovereign_update::fuzzing`.
fn update_policy() -> sovereign_governance::policy::PolicyBundle {
    let program = std::fs::read_to_string(root().join("examples/policies/update.cozo")).unwrap();
    sovereign_governance::policy::PolicyBundle::sign("update", 1, &program, &sovereign_update::fuzzing::release_key())
}

/// An engine at release 1 that takes update bundles from `sovereign_update::fuzzing`'s root,
/// with the floor and PID 1's boot report the test sets, requiring `approvals` update approvers,
/// deciding with the project's update policy on a measured-boot platform.
fn update_engine(
    machine: &Machine,
    approvals: u32,
    floor: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    boot: &std::sync::Arc<std::sync::Mutex<Option<BootSlots>>>,
) -> Engine {
    update_engine_with(machine, approvals, floor, boot, Ok(update_policy()), measured())
}

fn update_engine_with(
    machine: &Machine,
    approvals: u32,
    floor: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    boot: &std::sync::Arc<std::sync::Mutex<Option<BootSlots>>>,
    policy: Result<sovereign_governance::policy::PolicyBundle, String>,
    measurements: BTreeMap<String, serde_json::Value>,
) -> Engine {
    use sovereign_update::fuzzing::{release_key, root};
    let (reads, reported) = (std::sync::Arc::clone(floor), std::sync::Arc::clone(boot));
    let config = config(machine, release_key().verifying_key(), keys().admin.verifying_key(), measurements);
    Engine::open(EngineConfig {
        update: Some(sovereign_pipeline::engine::update::UpdateTrust {
            root: root().verifying_key(),
            platform: sovereign_update::PLATFORM_QEMU_X86_64.into(),
            running_version: 1,
            floor: Box::new(move || Ok(reads.load(std::sync::atomic::Ordering::SeqCst))),
            boot: Box::new(move || reported.lock().unwrap().clone()),
            approvals,
            policy,
        }),
        ..config
    })
    .unwrap()
}

#[test]
fn applying_an_update_needs_m_of_n_update_approvers_when_configured() {
    use sovereign_governance::approvals::Approval;
    use sovereign_protocol::pipeline::{UPDATE_APPROVER_ROLE, update_apply_digest};
    use sovereign_update::fuzzing::{genuine_bundle, key};
    let machine = Machine::new();
    let k = keys();
    let floor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let survey = sovereign_boot_contract::slots::survey(["sovereign-v1.efi".to_string()]);
    let boot = std::sync::Arc::new(std::sync::Mutex::new(Some(BootSlots::of(&survey, 1).unwrap())));
    let mut engine = update_engine(&machine, 2, &floor, &boot);
    let v2 = genuine_bundle(2, b"the UKI of release 2".to_vec(), &[key(1), key(2)]);
    let Reply::Update(pushed) = engine.ask(Command::UpdatePush { bundle: attach(v2.clone()) }, &mut no_tpm) else {
        panic!("v2 refused")
    };
    assert_eq!(pushed.approvals_required, 2);
    let digest = update_apply_digest(2, &Blob::of(&v2).sha256);
    let expiry = now() + 3_600_000;
    let approver = |who: &SigningKey, role: &str, serial: u64| {
        let certificate = RoleCertificate::issue(&who.verifying_key(), &[role], serial, expiry, &k.admin);
        (Approval::sign(digest, expiry, who), certificate)
    };
    let revocations = RevocationList::issue(1, vec![], vec![], &k.admin);
    let mut apply = |given: Vec<(Approval, RoleCertificate)>, revocations: Option<RevocationList>| {
        let (approvals, certificates) = given.into_iter().unzip();
        engine.ask(Command::UpdateApply { approvals, certificates, revocations }, &mut no_tpm)
    };
    let refused = |reply: Reply| match reply {
        Reply::Refused(why) => why,
        other => panic!("applied: {other:?}"),
    };
    let (a, b, outsider) = (&k.approvers[0], &k.approvers[1], &k.operator);

    // None, one, one twice, one with a pipeline approver's role, one for another bundle: refused.
    assert!(refused(apply(vec![], None)).contains("no revocation list"));
    let why = refused(apply(vec![], Some(revocations.clone())));
    assert!(why.starts_with("update not applied: ") && why.contains("0 of 2 required approvals"), "{why}");
    assert!(refused(apply(vec![approver(a, UPDATE_APPROVER_ROLE, 20)], Some(revocations.clone()))).contains("1 of 2"));
    let twice = vec![approver(a, UPDATE_APPROVER_ROLE, 20), approver(a, UPDATE_APPROVER_ROLE, 21)];
    assert!(refused(apply(twice, Some(revocations.clone()))).contains("already approved"));
    let wrong_role = vec![approver(a, UPDATE_APPROVER_ROLE, 20), approver(b, "approver", 22)];
    assert!(
        refused(apply(wrong_role, Some(revocations.clone())))
            .contains("no valid certificate for role \"update-approver\"")
    );
    let mut other_bundle = approver(b, UPDATE_APPROVER_ROLE, 23);
    other_bundle.0 = Approval::sign(update_apply_digest(3, &Blob::of(&v2).sha256), expiry, b);
    let other = vec![approver(a, UPDATE_APPROVER_ROLE, 20), other_bundle];
    assert!(refused(apply(other, Some(revocations.clone()))).contains("approves another request"));
    // A revoked approver's certificate does not count.
    let revoked_list = RevocationList::issue(2, vec![], vec![24], &k.admin);
    let revoked = vec![approver(a, UPDATE_APPROVER_ROLE, 20), approver(b, UPDATE_APPROVER_ROLE, 24)];
    assert!(refused(apply(revoked, Some(revoked_list.clone()))).contains("1 of 2"));
    // An outsider's key with a genuine certificate counts: M of N is any two holders.
    let two = vec![approver(a, UPDATE_APPROVER_ROLE, 20), approver(outsider, UPDATE_APPROVER_ROLE, 25)];
    let Reply::Update(applying) = apply(two, Some(revoked_list)) else { panic!("two approvals were not enough") };
    assert!(applying.applying);

    drop(engine);
    let lines = audit_lines(machine.path());
    let applied = lines.iter().find(|l| l.starts_with("update v2 applying")).expect("the apply is audited");
    assert!(applied.contains("approved by 2 of 2 required update approvers"), "{applied}");
    assert!(applied.contains(&hex::encode(a.verifying_key().as_bytes())), "{applied}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("update not applied: ")).count(), 7, "{lines:#?}");
    // The policy decided the apply with the approvals the engine counted.
    let decision = lines.iter().find(|l| l.contains("\"action\":\"update.apply\"")).expect("no update decision");
    assert!(decision.contains("with 2 of 2 required approvals"), "{decision}");
}

/// Applying an update is a governed action: the release's update policy decides it, the
/// decision and its input are audited (and re-evaluate offline to the same record), and the
/// policy is kept for compliance bundles. Denied on a platform that is not measured-boot
/// verified, refused without a policy; allowed otherwise.
#[test]
fn the_update_policy_decides_an_apply_and_its_decision_reevaluates_offline() {
    use sovereign_governance::governor::DecisionEvidence;
    use sovereign_governance::policy::reevaluate;
    use sovereign_update::fuzzing::{genuine_bundle, key};
    let survey = sovereign_boot_contract::slots::survey(["sovereign-v1.efi".to_string()]);
    let boot = std::sync::Arc::new(std::sync::Mutex::new(Some(BootSlots::of(&survey, 1).unwrap())));
    let floor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let v2 = genuine_bundle(2, b"the UKI of release 2".to_vec(), &[key(1), key(2)]);
    let apply = Command::UpdateApply { approvals: vec![], certificates: vec![], revocations: None };
    let unmeasured = BTreeMap::from([("measured_boot".to_string(), serde_json::json!(false))]);
    let cases: [(Result<_, String>, _, Option<&str>); 3] = [
        (
            Ok(update_policy()),
            unmeasured,
            Some("the update policy denies it: the running platform is not measured-boot verified"),
        ),
        (
            Err("reading /etc/sovereign/update-policy.json: not found".into()),
            measured(),
            Some("no update policy to decide with (reading"),
        ),
        (Ok(update_policy()), measured(), None),
    ];
    for (policy, measurements, refusal) in cases {
        let machine = Machine::new();
        let mut engine = update_engine_with(&machine, 0, &floor, &boot, policy, measurements);
        let Reply::Update(_) = engine.ask(Command::UpdatePush { bundle: attach(v2.clone()) }, &mut no_tpm) else {
            panic!("v2 refused")
        };
        match (engine.ask(apply.clone(), &mut no_tpm), refusal) {
            (Reply::Refused(why), Some(expected)) => assert!(why.contains(expected), "{why}"),
            (Reply::Update(state), None) => assert!(state.applying),
            (other, _) => panic!("{other:?} (expected {refusal:?})"),
        }
        drop(engine);
        let bytes = std::fs::read(machine.path().join("audit.log")).unwrap();
        let entries = sovereign_audit::logfile::decode_entries(&bytes, &DataKey([8; 32])).unwrap();
        let decisions: Vec<DecisionEvidence> = entries
            .iter()
            .filter(|e| e.kind == sovereign_audit::EntryKind::PolicyDecision)
            .map(|e| serde_json::from_slice(&e.payload).unwrap())
            .collect();
        if refusal.is_some_and(|r| r.starts_with("no update policy")) {
            assert!(decisions.is_empty());
            continue;
        }
        let [evidence] = decisions.as_slice() else { panic!("{} decisions", decisions.len()) };
        assert_eq!(evidence.input.action, "update.apply");
        assert_eq!(evidence.input.context["release_version"], serde_json::json!(2));
        reevaluate(&evidence.record, &update_policy(), &evidence.input).unwrap();
    }
}

#[test]
fn pushed_update_bundles_are_verified_before_a_byte_is_written_and_audited_either_way() {
    use sovereign_update::fuzzing::{genuine_bundle, key};
    let machine = Machine::new();
    let floor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let boot = std::sync::Arc::new(std::sync::Mutex::new(None::<BootSlots>));
    let mut engine = update_engine(&machine, 0, &floor, &boot);
    let staged = machine.path().join("update/staged.bundle");
    let state = |engine: &mut Engine| match engine.ask(Command::UpdateStatus, &mut no_tpm) {
        Reply::Update(state) => state,
        other => panic!("{other:?}"),
    };
    let refused = |engine: &mut Engine, bundle: Vec<u8>| match engine
        .ask(Command::UpdatePush { bundle: attach(bundle) }, &mut no_tpm)
    {
        Reply::Refused(why) => why,
        other => panic!("accepted: {other:?}"),
    };
    let before = state(&mut engine);
    assert_eq!((before.running_version, before.floor, before.staged), (1, 1, None));

    // Below the threshold, the running release, another platform's: refused, nothing written.
    let uki = |v: u64| format!("the UKI of release {v}").into_bytes();
    assert_eq!(
        refused(&mut engine, genuine_bundle(2, uki(2), &[key(1)])),
        "update refused: 1 valid release signatures; key set 1 requires 2"
    );
    assert_eq!(
        refused(&mut engine, genuine_bundle(1, uki(1), &[key(1), key(2)])),
        "update refused: release v1 is not above the anti-rollback floor v1"
    );
    assert!(!staged.exists() && !machine.path().join("update").exists(), "a refused bundle left bytes behind");

    // A genuine v2: verified, then written; the status names it.
    let v2 = genuine_bundle(2, uki(2), &[key(1), key(3)]);
    let Reply::Update(after) = engine.ask(Command::UpdatePush { bundle: attach(v2.clone()) }, &mut no_tpm) else {
        panic!("v2 refused")
    };
    let record = after.staged.clone().expect("staged");
    assert_eq!((record.release_version, record.sha256, record.signers.len()), (2, Blob::of(&v2).sha256, 2));
    assert_eq!(std::fs::read(&staged).unwrap(), v2);
    assert_eq!(state(&mut engine), after);

    // A changed byte in a later push is refused and leaves the staged v2 as it was.
    let mut flipped = genuine_bundle(3, uki(3), &[key(1), key(2)]);
    let last = flipped.len() - 2048;
    flipped[last] ^= 1;
    assert!(refused(&mut engine, flipped).starts_with("update refused: "));
    assert_eq!(std::fs::read(&staged).unwrap(), v2);

    // Applying it: refused while PID 1 reports no slot for this boot, or this boot's release
    // on trial itself; taken (and the runtime told to stop) on a good slot.
    let apply = |engine: &mut Engine| {
        engine.ask(Command::UpdateApply { approvals: vec![], certificates: vec![], revocations: None }, &mut no_tpm)
    };
    let Reply::Refused(why) = apply(&mut engine) else { panic!("applied with no boot slot") };
    assert_eq!(why, "update not applied: PID 1 reported no boot slot for this boot: nothing to fall back to");
    let survey = sovereign_boot_contract::slots::survey(["sovereign-v1+0-1.efi".to_string()]);
    *boot.lock().unwrap() = Some(BootSlots::of(&survey, 1).unwrap());
    let Reply::Refused(why) = apply(&mut engine) else { panic!("applied on top of a trial") };
    assert_eq!(why, "update not applied: the running release v1 is itself on trial, not yet blessed");
    let survey = sovereign_boot_contract::slots::survey(["sovereign-v1.efi".to_string()]);
    *boot.lock().unwrap() = Some(BootSlots::of(&survey, 1).unwrap());
    let Reply::Update(applying) = apply(&mut engine) else { panic!("a staged bundle on a good slot was not applied") };
    assert!(applying.applying);
    assert_eq!(applying.staged, Some(record.clone()));
    assert!(!applying.boot.unwrap().trial);

    // The next boots as PID 1 reports them: v2's trial, then (say it failed) v1 again with the
    // failure; each outcome audited once, however often the node restarts.
    let survey = sovereign_boot_contract::slots::survey(["sovereign-v1.efi", "sovereign-v2+0-1.efi"].map(String::from));
    *boot.lock().unwrap() = Some(BootSlots::of(&survey, 2).unwrap());
    assert_eq!(engine.record_boot().unwrap().len(), 1);
    assert_eq!(engine.record_boot().unwrap(), Vec::<String>::new());
    *boot.lock().unwrap() = Some(BootSlots::of(&survey, 1).unwrap());
    let failed = engine.record_boot().unwrap();
    assert_eq!(failed, ["update v2 FAILED its trial boot: the boot loader fell back to v1; the floor did not move"]);
    assert!(engine.record_boot().unwrap().is_empty());
    *boot.lock().unwrap() =
        Some(BootSlots::of(&sovereign_boot_contract::slots::survey(["sovereign-v1.efi".to_string()]), 1).unwrap());
    // The floor moved to 2 (v2 booted good, say): v2 itself is no update any more.
    floor.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(refused(&mut engine, v2), "update refused: release v2 is not above the anti-rollback floor v2");

    // Every push is in the audit log, with what was staged or why it was refused.
    drop(engine);
    let lines = audit_lines(machine.path());
    let updates: Vec<&String> = lines.iter().filter(|l| l.starts_with("update ")).collect();
    assert_eq!(updates.len(), 10, "{updates:#?}");
    assert!(updates[2].starts_with("update v2 staged: bundle "), "{updates:#?}");
    assert!(updates[0].contains("key set 1 requires 2") && updates[9].contains("floor v2"), "{updates:#?}");
    assert!(updates[7].starts_with("update v2 on its trial boot") && updates[8].contains("FAILED"), "{updates:#?}");
    assert!(updates[4].contains("no boot slot") && updates[5].contains("on trial"), "{updates:#?}");
    assert!(updates[6].starts_with("update v2 applying: bundle "), "{updates:#?}");
}

/// A pull from a mesh peer is a push whose bytes came from the peer: without a mesh, from a
/// peer that fails, with bytes that are not the digest asked for, or a bundle that does not
/// verify, it is refused by name, audited, and nothing is written; a genuine one is staged and
/// the audit line names the node it came from. The holder serves only the bundle it staged.
#[test]
fn update_bundles_pulled_from_a_peer_are_verified_as_pushes_and_audited_either_way() {
    use sovereign_pipeline::engine::update::staged_bundle;
    use sovereign_update::fuzzing::{genuine_bundle, key};
    let machine = Machine::new();
    let floor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let boot = std::sync::Arc::new(std::sync::Mutex::new(None::<BootSlots>));
    let mut engine = update_engine(&machine, 0, &floor, &boot);
    let v2 = genuine_bundle(2, b"the UKI of release 2".to_vec(), &[key(1), key(3)]);
    let v2_sha = Blob::of(&v2).sha256;
    let holder = [0x5a; 32];
    let pull =
        |engine: &mut Engine, sha256: [u8; 32]| engine.ask(Command::UpdatePull { from: holder, sha256 }, &mut no_tpm);
    let refused = |reply: Reply| match reply {
        Reply::Refused(why) => why,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(
        refused(pull(&mut engine, v2_sha)),
        "update not pulled from node 5a5a5a5a5a5a5a5a: this node has no mesh to pull an update from"
    );

    // What the peer answers, by the digest asked for.
    let mut forged = genuine_bundle(3, b"the UKI of release 3".to_vec(), &[key(1), key(2)]);
    let last = forged.len() - 2048;
    forged[last] ^= 1;
    let forged_sha = Blob::of(&forged).sha256;
    let answers = std::collections::BTreeMap::from([(v2_sha, v2.clone()), (forged_sha, forged.clone())]);
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    engine.set_bundle_fetcher(Box::new(move |from, sha256| {
        seen.lock().unwrap().push(*from);
        match sha256 {
            [0xee, ..] => Ok(b"not what was asked for".to_vec()),
            _ => answers.get(sha256).cloned().ok_or_else(|| "no update is staged here".to_string()),
        }
    }));
    assert_eq!(
        refused(pull(&mut engine, [0x11; 32])),
        "update not pulled from node 5a5a5a5a5a5a5a5a: no update is staged here"
    );
    let wrong = refused(pull(&mut engine, [0xee; 32]));
    assert!(wrong.contains("the bundle received has SHA-256 ") && wrong.contains("not the eeee"), "{wrong}");
    assert!(refused(pull(&mut engine, forged_sha)).starts_with("update refused: "));
    assert!(!machine.path().join("update").exists(), "a refused pull left bytes behind");

    // The genuine one: staged as a push would be.
    let Reply::Update(state) = pull(&mut engine, v2_sha) else { panic!("the genuine bundle was refused") };
    let staged = state.staged.expect("staged");
    assert_eq!((staged.release_version, staged.sha256, staged.size), (2, v2_sha, v2.len() as u64));
    assert_eq!(std::fs::read(machine.path().join("update/staged.bundle")).unwrap(), v2);
    assert!(asked.lock().unwrap().iter().all(|from| *from == holder));

    // This node now serves exactly that bundle to a peer pulling it, and nothing else.
    assert_eq!(staged_bundle(machine.path(), &v2_sha), Ok(v2.clone()));
    let other = staged_bundle(machine.path(), &forged_sha).unwrap_err();
    assert!(other.starts_with("the update staged here is v2 with SHA-256 "), "{other}");
    assert_eq!(staged_bundle(&machine.path().join("nowhere"), &v2_sha).unwrap_err(), "no update is staged here");
    let mut damaged = v2.clone();
    damaged[10] ^= 1;
    std::fs::write(machine.path().join("update/staged.bundle"), &damaged).unwrap();
    assert_eq!(
        staged_bundle(machine.path(), &v2_sha).unwrap_err(),
        "the staged bundle on disk does not match its record"
    );

    drop(engine);
    let lines = audit_lines(machine.path());
    let updates: Vec<&String> = lines.iter().filter(|l| l.starts_with("update ")).collect();
    assert_eq!(updates.len(), 5, "{updates:#?}");
    assert!(
        updates[..3].iter().all(|l| l.starts_with("update not pulled from node 5a5a5a5a5a5a5a5a: ")),
        "{updates:#?}"
    );
    assert!(updates[3].starts_with("update refused: "), "{updates:#?}");
    assert!(
        updates[4].starts_with("update v2 staged: bundle ")
            && updates[4].ends_with(", pulled from node 5a5a5a5a5a5a5a5a"),
        "{updates:#?}"
    );
}

/// Anchoring on the node: `AnchorPrepare` signs a fresh checkpoint and answers its unfunded
/// PSBT (audited); what a wallet makes of it is mined (on a regtest chain in memory), and the
/// anchor file is imported — verified against the chain the node's licence rule pins and
/// against the node's own log — refused by name (and audited) when it is too shallow, of
/// another log, of a second history, or for a node that pins no chain; kept otherwise, and
/// carried by the next compliance bundle, whose `anchors` check passes offline (and is not
/// evaluated without a chain to check it in).
#[test]
fn a_checkpoint_the_node_prepared_is_anchored_imported_and_carried_by_its_bundles() {
    use sovereign_ledger::anchor::{AnchorFile, commitment, transaction};
    use sovereign_ledger::bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};
    let k = keys();
    let machine = Machine::new();
    let rule =
        sovereign_ledger::rule::parse("regtest", 0, None, &format!("0014{}", "d3".repeat(20)), 50_000, 3).unwrap();
    let pinned = config(&machine, k.release.verifying_key(), k.admin.verifying_key(), measured());
    let mut engine = Engine::open(EngineConfig { licence: Some(rule.clone()), ..pinned }).unwrap();
    run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let Reply::Anchor(prepared) = engine.ask(Command::AnchorPrepare, &mut no_tpm) else { panic!("not prepared") };
    let note = sovereign_audit::note::SignedNote::parse(&prepared.checkpoint).unwrap();
    sovereign_audit::note::NoteVerifier::new(
        "sovereign-test/pipeline",
        SigningKey::from_bytes(&[9; 32]).verifying_key(),
    )
    .verify_signature(&note)
    .unwrap();
    assert_eq!(prepared.commitment, commitment(&note.body));
    let psbt = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, prepared.psbt.unwrap()).unwrap();
    let unsigned = sovereign_ledger::bitcoin::psbt::Psbt::deserialize(&psbt).unwrap().unsigned_tx;
    assert_eq!(unsigned, transaction(&prepared.commitment));

    // What a wallet makes of it, mined with `depth` confirmations, for the checkpoint `body`.
    let funded = |c: &[u8; 32]| {
        let mut tx = transaction(c);
        tx.input.push(TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        });
        tx.output.push(TxOut { value: Amount::from_sat(90_000), script_pubkey: ScriptBuf::new() });
        tx
    };
    let file = |body: &str, on_top: u32| {
        let tx = funded(&commitment(body));
        attach(
            serde_json::to_vec(&AnchorFile {
                checkpoint: body.to_string(),
                proof: sovereign_ledger::regtest::proof_of(&tx, on_top),
            })
            .unwrap(),
        )
    };
    let import = |engine: &mut Engine, file: Blob| engine.ask(Command::AnchorImport { file }, &mut no_tpm);
    let refused = |reply: Reply| match reply {
        Reply::Refused(why) => why,
        other => panic!("imported: {other:?}"),
    };
    let other_log = note.body.replacen("sovereign-test/pipeline", "sovereign-test/elsewhere", 1);
    let mut lines: Vec<String> = note.body.lines().map(String::from).collect();
    lines[2] = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0x42u8; 32]);
    let second_history = lines.join("\n") + "\n";
    let mut beyond: Vec<String> = note.body.lines().map(String::from).collect();
    beyond[1] = "1000000".into();
    let beyond = beyond.join("\n") + "\n";
    for (body, on_top, expected) in [
        (note.body.as_str(), 1, "2 confirmations, 3 needed"),
        (other_log.as_str(), 2, "is of log \"sovereign-test/elsewhere\", not this node's"),
        (second_history.as_str(), 2, "is not this log's: its root differs"),
        (beyond.as_str(), 2, "the anchored checkpoint has size 1000000"),
    ] {
        let why = refused(import(&mut engine, file(body, on_top)));
        assert!(why.starts_with("anchor refused: ") && why.contains(expected), "{why} (expected {expected:?})");
    }
    let Reply::Anchor(kept) = import(&mut engine, file(&note.body, 4)) else {
        panic!("the genuine anchor was refused")
    };
    assert_eq!(
        (kept.size, kept.height, kept.confirmations, kept.checkpoint.as_str()),
        (prepared.size, Some(1), Some(5), note.body.as_str())
    );

    // The next bundle carries it; it checks offline against the chain, and only with one.
    let bundle = engine.fetch(Command::ExportBundle, &mut fake_evidence);
    let members = sovereign_audit::bundle::read_tar(&bundle).unwrap();
    let carried = format!("anchors/{}.json", prepared.size);
    assert!(members.iter().any(|(name, _)| *name == carried), "the bundle does not carry {carried}");
    let bundle_note = members.iter().find(|(n, _)| n == "checkpoint.txt").map(|(_, t)| t.clone()).unwrap();
    let bundle_note = sovereign_audit::note::SignedNote::parse(std::str::from_utf8(&bundle_note).unwrap()).unwrap();
    let check = |chain: Option<(sovereign_ledger::bitcoin::Network, sovereign_ledger::chain::Checkpoint, u32)>| {
        let checker = sovereign_cli::anchors::AnchorChecker::new(chain, None, Ok(bundle_note.clone()));
        let trusted = sovereign_audit::bundle::TrustedKeys { node: None, witnesses: vec![] };
        let report = sovereign_audit::bundle::verify_bundle_with(&bundle, &trusted, Some(&checker));
        report.check("anchors").cloned().expect("an anchors check")
    };
    let passed = check(Some((rule.network, rule.checkpoint, 3)));
    assert!(passed.passed(), "{passed:?}");
    assert!(
        passed.detail.contains("consistent with the bundle's entries") && passed.detail.contains("anchored by block 1"),
        "{passed:?}"
    );
    assert!(!check(None).passed(), "anchors passed without a chain to check them in");

    // A node that pins no chain refuses every anchor; every import is in the log.
    drop(engine);
    let config = config(&machine, k.release.verifying_key(), k.admin.verifying_key(), measured());
    let mut unpinned = Engine::open(config).unwrap();
    let why = refused(import(&mut unpinned, file(&note.body, 4)));
    assert!(why.contains("pins no Bitcoin chain"), "{why}");
    drop(unpinned);
    let anchors: Vec<String> = audit_lines(machine.path()).into_iter().filter(|l| l.contains("\"anchor\"")).collect();
    assert_eq!(anchors.len(), 7, "{anchors:#?}");
    assert!(anchors[0].contains("\"prepared\"") && anchors[5].contains("\"imported\""), "{anchors:#?}");
}

#[test]
fn the_iron_path_pauses_for_approvals_promotes_rolls_back_and_exports() {
    let dir = Machine::new();
    let k = keys();
    let mut engine = engine(&dir, &k);

    // Runs until promotion, then waits: a pipeline without enough approvals stops there.
    let report = run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let kinds: Vec<&str> = report.stages.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["data_preparation", "model_training", "agent_chain"], "{report:?}");
    let RunStatus::AwaitingApprovals { have: 0, need: 2, candidate, .. } = report.status else {
        panic!("{:?}", report.status)
    };
    assert_eq!(report.stages[1].artifact, candidate);
    assert!(report.stages[2].summary.contains("3 of 3 agents approve"), "{}", report.stages[2].summary);

    // One approval is not enough: resuming stops at promotion again, refused and audited.
    assert_eq!(approve(&mut engine, &report, &k.approvers[0], &k), Reply::Approved { have: 1, need: 2 });
    let again = approve(&mut engine, &report, &k.approvers[0], &k);
    assert!(matches!(&again, Reply::Refused(r) if r.contains("already approved")), "{again:?}");
    let paused = resume(&mut engine, &report.run_id, &k, &mut no_tpm);
    assert!(matches!(paused.status, RunStatus::AwaitingApprovals { have: 1, need: 2, .. }), "{:?}", paused.status);
    assert_eq!(paused.stages.len(), 3);

    // A second approver: promotion, rollback (proved), then audit export, which fails closed
    // without attestation evidence.
    assert_eq!(approve(&mut engine, &report, &k.approvers[1], &k), Reply::Approved { have: 2, need: 2 });
    let failed = resume(&mut engine, &report.run_id, &k, &mut no_tpm);
    let RunStatus::Failed { stage, reason } = &failed.status else { panic!("{:?}", failed.status) };
    assert_eq!(stage, "export");
    assert!(reason.contains("attestation evidence: no TPM"), "{reason}");
    assert_eq!(failed.stages.len(), 5);
    assert!(failed.stages[3].summary.contains("promoted with 2 approvals"));
    assert!(failed.stages[4].summary.contains("restored the empty deployment"), "{}", failed.stages[4].summary);
    assert_eq!(engine.deployment().unwrap().live(), None);

    // A second run (promoted, not rolled back: its pipeline has no rollback stage) and a third
    // whose rollback restores the second run's model and proves it.
    let no_rollback = iron_path().replace("  - name: rollback\n    type: rollback\n\n", "");
    let second = run_report(engine.ask(Command::Start(Box::new(start(&no_rollback, &k))), &mut no_tpm));
    for a in &k.approvers {
        assert!(matches!(approve(&mut engine, &second, a, &k), Reply::Approved { .. }));
    }
    let pipeline = Pipeline::parse(no_rollback.as_bytes()).unwrap();
    let done = run_report(engine.ask(
        Command::Resume {
            run_id: second.run_id.clone(),
            certificate: certificate(&k),
            role_signatures: signatures(&pipeline, &k),
        },
        &mut fake_evidence,
    ));
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let model = done.stages[1].artifact;
    assert_eq!(engine.deployment().unwrap().live(), Some(model));
    let bundle = done.bundle.expect("bundle");
    let bytes = engine.fetch(Command::Artifact { run_id: second.run_id.clone(), sha256: bundle }, &mut no_tpm);
    assert!(bytes.len() > 1024 && bytes.windows(13).any(|w| w == b"evidence.json"));

    let third = run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    for a in &k.approvers {
        approve(&mut engine, &third, a, &k);
    }
    let third = resume(&mut engine, &third.run_id, &k, &mut fake_evidence);
    assert_eq!(third.status, RunStatus::Completed, "{third:?}");
    assert!(
        third.stages[4].summary.contains(&format!("restored model {}", &hex::encode(model)[..16])),
        "{}",
        third.stages[4].summary
    );
    assert_eq!(engine.deployment().unwrap().live(), Some(model));
    // Deterministic: the same dataset and modules trained the same model.
    assert_eq!(third.stages[1].artifact, model);

    // Offline, an auditor recomputes the deployment from the bundle's log alone: three
    // promotions, and both rollbacks restore the state the log holds before what they undo.
    let bundle = third.bundle.expect("bundle");
    let bytes = engine.fetch(Command::Artifact { run_id: third.run_id.clone(), sha256: bundle }, &mut no_tpm);
    let check = deployment_check(&bytes);
    assert!(check.passed() && check.checked == 2, "{check:?}");
    assert!(check.detail.starts_with("3 promotions replayed"), "{check:?}");

    // The role certificates and revocation lists every decision depended on travel in the
    // bundle: an auditor pinning the admin root checks each decision's roles against them.
    let roles = |bundle: &[u8], admin: VerifyingKey| {
        let trust = sovereign_audit::bundle::TrustedKeys {
            node: Some(SigningKey::from_bytes(&[9; 32]).verifying_key()),
            witnesses: vec![],
        };
        let checker = sovereign_cli::roles::RoleChecker { admin: Some(admin) };
        let report = sovereign_audit::bundle::verify_bundle_with(bundle, &trust, Some(&checker));
        let get = |name: &str| report.check(name).unwrap_or_else(|| panic!("no {name} check")).clone();
        (get("role-certificates.signatures"), get("decisions.roles"))
    };
    let (signatures, decisions) = roles(&bytes, k.admin.verifying_key());
    assert!(signatures.passed() && signatures.checked >= 4, "{signatures:?}"); // operator, 2 approvers, a list
    assert!(decisions.passed() && decisions.checked >= 15, "{decisions:?}");
    let (signatures, _) = roles(&bytes, SigningKey::from_bytes(&[0x77; 32]).verifying_key());
    assert!(!signatures.passed() && signatures.failures.len() as u64 == signatures.checked, "{signatures:?}");
    // The release's signed reference values travel in the bundle: checked against the release
    // key the auditor pins, and against the values the auditor pins, if any.
    let reference_check = |bundle: &[u8], release: VerifyingKey, pinned: Option<Vec<u8>>| {
        let trust = sovereign_audit::bundle::TrustedKeys {
            node: Some(SigningKey::from_bytes(&[9; 32]).verifying_key()),
            witnesses: vec![],
        };
        let checker = sovereign_cli::bundle_attestation::AttestationChecker {
            trust: Some(sovereign_cli::bundle_attestation::BundleTrust {
                release_key: release,
                pinned_reference: pinned,
                platform_profile: vec![],
                ek_roots: vec![],
            }),
            identity: trust.node,
            ak_ca: None,
            required: true,
        };
        let report = sovereign_audit::bundle::verify_bundle_with(bundle, &trust, Some(&checker));
        let check = report.check("reference-values").unwrap_or_else(|| panic!("{}", report.render("b"))).clone();
        check.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect::<Vec<_>>().join("; ")
    };
    let ours = reference_values(&k.release);
    assert_eq!(reference_check(&bytes, k.release.verifying_key(), None), "");
    assert_eq!(reference_check(&bytes, k.release.verifying_key(), Some(ours.values.clone())), "");
    assert_eq!(
        reference_check(&bytes, k.admin.verifying_key(), None),
        "reference-values/reference-values.sig: the reference values are not signed by the pinned release key"
    );
    let other_release = br#"{"version":2,"manifest_sha256":"11","pcrs":{}}"#.to_vec();
    assert!(
        reference_check(&bytes, k.release.verifying_key(), Some(other_release))
            .ends_with("release v1's reference values, not the ones the auditor pinned (--reference): another release"),
    );
    // The same log exported by a node that leaves out the operator's certificate: every
    // decision FAILS by entry, naming the principal it has no certificate for.
    let members = sovereign_audit::bundle::read_tar(&bytes).unwrap();
    let operator_hex = hex::encode(k.operator.verifying_key().as_bytes());
    let without_operator: Vec<(String, String, Vec<u8>)> = members
        .iter()
        .filter_map(|(name, data)| {
            let (section, file) = name.split_once('/')?;
            let keep = section != "role-certificates"
                || !serde_json::from_slice::<RoleCertificate>(data)
                    .is_ok_and(|c| hex::encode(c.operator) == operator_hex);
            (keep && !file.is_empty() && section != "attestation").then(|| (section.into(), file.into(), data.clone()))
        })
        .collect();

    // The node lies: a rollback of the second run's promotion that claims a restored state
    // other than the one before that promotion. Signed by the node, in its log: still FAIL.
    drop(engine);
    let (log, _) = sovereign_audit::AuditLog::open(&dir.path().join("audit.log"), &DataKey([8; 32])).unwrap();
    let promoted_at = done.stages[3].entry.expect("the promotion's audit entry");
    let claim = RollbackOutput {
        rolled_back: hex::encode(model),
        undoes_entry: promoted_at,
        restored_model: None,
        restored_state: hex::encode([0x5e; 32]),
        recorded_state: hex::encode(sovereign_pipeline::engine::Deployment::default().hash()),
    };
    let payload = serde_json::json!({"run": third.run_id, "stage": "rollback", "type": "rollback", "output": claim});
    let digest: [u8; 32] = sha2::Sha256::digest(output_bytes(&claim)).into();
    let (forged_at, _) = log
        .append_entry(sovereign_audit::Entry::new(
            sovereign_audit::EntryKind::Artifact,
            now(),
            sovereign_audit::Severity::Info,
            vec![digest],
            payload.to_string().into_bytes(),
        ))
        .unwrap();
    let forged = sovereign_audit::export::export_bundle(
        &log,
        &DataKey([8; 32]),
        &SigningKey::from_bytes(&[9; 32]),
        &Default::default(),
    )
    .unwrap();
    let check = deployment_check(&forged);
    assert!(!check.passed());
    let reasons: Vec<String> = check.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with(&format!("entry {forged_at}: rollback claims restored state 5e5e")), "{reasons:?}");

    let options = sovereign_audit::export::ExportOptions { section_files: without_operator, ..Default::default() };
    let stripped =
        sovereign_audit::export::export_bundle(&log, &DataKey([8; 32]), &SigningKey::from_bytes(&[9; 32]), &options)
            .unwrap();
    let (signatures, decisions) = roles(&stripped, k.admin.verifying_key());
    assert!(signatures.passed(), "{signatures:?}");
    assert!(!decisions.passed(), "{decisions:?}");
    assert!(
        decisions.failures.iter().all(|f| f.place.starts_with("entry ") && f.reason.contains(&operator_hex)),
        "{decisions:?}"
    );
}

/// The `deployment.rollbacks` check of `sovereign verify` on a bundle.
fn deployment_check(bundle: &[u8]) -> sovereign_audit::verify::Check {
    let trust = sovereign_audit::bundle::TrustedKeys {
        node: Some(SigningKey::from_bytes(&[9; 32]).verifying_key()),
        witnesses: vec![],
    };
    let report = sovereign_audit::bundle::verify_bundle_with(
        bundle,
        &trust,
        Some(&sovereign_cli::deployment::DeploymentChecker),
    );
    report.check("deployment.rollbacks").unwrap_or_else(|| panic!("{}", report.render("bundle"))).clone()
}

#[test]
fn tampered_modules_wrong_datasets_and_hostile_agents_are_refused_and_audited() {
    let dir = Machine::new();
    let k = keys();
    let mut engine = engine(&dir, &k);

    // A module whose bytes differ from what its release-signed manifest pins.
    let mut tampered = start(&iron_path(), &k);
    let mut bytes = attached(&tampered.modules[1].wasm);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tampered.modules[1].wasm = attach(bytes);
    let reply = engine.ask(Command::Start(Box::new(tampered)), &mut no_tpm);
    assert!(matches!(&reply, Reply::Refused(r) if r.contains("module train: bytes hash to")), "{reply:?}");

    // A dataset that is not the one the pipeline pins: the policy denies data preparation.
    let mut wrong = start(&iron_path(), &k);
    let mut bytes = attached(&wrong.dataset);
    bytes.extend_from_slice(b"99,99\n");
    wrong.dataset = attach(bytes);
    let report = run_report(engine.ask(Command::Start(Box::new(wrong)), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "prepare");
    assert!(reason.contains("dataset does not hash"), "{reason}");

    // A role signature is single use: replaying a run's signatures is refused.
    let first = start(&iron_path(), &k);
    let mut replayed = first.clone();
    run_report(engine.ask(Command::Start(Box::new(first)), &mut no_tpm));
    replayed.role_signatures.truncate(1);
    let report = run_report(engine.ask(Command::Start(Box::new(replayed)), &mut no_tpm));
    assert!(
        matches!(&report.status, RunStatus::Failed { reason, .. } if reason.contains("replay")),
        "{:?}",
        report.status
    );

    // A hostile agent (an infinite loop) is terminated; the chain loses consensus; the engine
    // keeps serving.
    let hostile_wasm = wat::parse_str(
        r#"(module (import "sovereign" "output_write" (func $w (param i32 i32) (result i32)))
             (memory (export "memory") 1) (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))"#,
    )
    .unwrap();
    let mut hostile =
        start(&iron_path().replace("{ name: safety, module: agent", "{ name: safety, module: spinner"), &k);
    hostile.modules.push(ModuleFile {
        manifest: ModuleManifest::sign("spinner", 1, &hostile_wasm, &[Capability::WriteOutput], &k.release),
        wasm: attach(hostile_wasm),
    });
    engine.limits.wall_ms = 500;
    let report = run_report(engine.ask(Command::Start(Box::new(hostile)), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "review");
    assert!(reason.contains("consensus unanimous (3 of 3) not reached (2 of 3 approve)"), "{reason}");
    let ok = run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    assert!(matches!(ok.status, RunStatus::AwaitingApprovals { .. }), "{:?}", ok.status);

    // Each kind of hostile agent ends as an audited termination, and the engine serves on.
    let hostile_agents = [
        (
            "bomb",
            r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (loop $l (drop (memory.grow (i32.const 1000))) (br $l)) (i32.const 0)))"#,
            "terminated: ",
        ),
        (
            "recursion",
            r#"(module (memory (export "memory") 1) (func $f (result i32) (call $f)) (func (export "run") (result i32) (call $f)))"#,
            "stack exhausted",
        ),
        ("trap", r#"(module (memory (export "memory") 1) (func (export "run") (result i32) unreachable))"#, "trap"),
    ];
    for (name, wat_text, expect) in hostile_agents {
        let wasm = wat::parse_str(wat_text).unwrap();
        let mut start = start(
            &iron_path().replace("{ name: safety, module: agent", &format!("{{ name: safety, module: {name}")),
            &k,
        );
        start
            .modules
            .push(ModuleFile { manifest: ModuleManifest::sign(name, 1, &wasm, &[], &k.release), wasm: attach(wasm) });
        let report = run_report(engine.ask(Command::Start(Box::new(start)), &mut no_tpm));
        assert!(
            matches!(&report.status, RunStatus::Failed { stage, .. } if stage == "review"),
            "{name}: {:?}",
            report.status
        );
        let bytes = std::fs::read(dir.path().join("audit.log")).unwrap();
        let entries = sovereign_audit::logfile::decode_entries(&bytes, &DataKey([8; 32])).unwrap();
        let line = format!("module {name} terminated: ");
        let audited =
            entries.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).find(|t| t.contains(&line));
        assert!(audited.as_deref().is_some_and(|t| t.contains(expect)), "{name}: {audited:?}");
    }
    // An import the manifest does not declare: refused at load, audited.
    let sneaky = wat::parse_str(r#"(module (import "sovereign" "random" (func $r (param i32 i32) (result i32))) (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#).unwrap();
    let mut start_sneaky =
        start(&iron_path().replace("{ name: safety, module: agent", "{ name: safety, module: sneaky"), &k);
    start_sneaky.modules.push(ModuleFile {
        manifest: ModuleManifest::sign("sneaky", 1, &sneaky, &[Capability::WriteOutput], &k.release),
        wasm: attach(sneaky),
    });
    let reply = engine.ask(Command::Start(Box::new(start_sneaky)), &mut no_tpm);
    assert!(matches!(&reply, Reply::Refused(r) if r.contains("import not granted: sovereign.random")), "{reply:?}");
    let ok = run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    assert!(matches!(ok.status, RunStatus::AwaitingApprovals { .. }), "{:?}", ok.status);

    // Every refusal above is in the audit log.
    let bytes = std::fs::read(dir.path().join("audit.log")).unwrap();
    let entries = sovereign_audit::logfile::decode_entries(&bytes, &DataKey([8; 32])).unwrap();
    let text: Vec<String> = entries.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).collect();
    assert!(text.iter().any(|t| t.contains("module spinner terminated: ")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("dataset does not hash")));
    assert!(text.iter().any(|t| t.contains("replay")));
    assert!(
        text.iter()
            .any(|t| t.contains("pipeline run refused at load: stage train: refused: module train: bytes hash to"))
    );
    assert!(text.iter().any(|t| t.contains("pipeline run refused at load") && t.contains("sovereign.random")));
}

/// Copies a state dir, file by file.
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_state(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn audit_lines(dir: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(dir.join("audit.log")).unwrap();
    let entries = sovereign_audit::logfile::decode_entries(&bytes, &DataKey([8; 32])).unwrap();
    entries.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).collect()
}

fn status(engine: &mut Engine, run_id: &str) -> RunStatus {
    run_report(engine.ask(Command::Status { run_id: run_id.into() }, &mut no_tpm)).status
}

#[test]
fn a_run_interrupted_inside_a_stage_resumes_as_a_new_execution() {
    let dir = Machine::new();
    let k = keys();
    let mut live = engine(&dir, &k);
    let report = run_report(live.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    for a in &k.approvers {
        approve(&mut live, &report, a, &k);
    }
    // The TPM is asked for evidence inside the export stage: the runtime "stops" right there.
    let mut stopped = None;
    let mut stop_inside_export = |nonce: &[u8; 32]| {
        stopped = Some(dir.snapshot());
        fake_evidence(nonce)
    };
    let finished = resume(&mut live, &report.run_id, &k, &mut stop_inside_export);
    assert_eq!(finished.status, RunStatus::Completed, "{finished:?}");
    drop(live);
    let stopped = stopped.unwrap();

    // The restarted runtime sees the run as interrupted inside `export`, not as running.
    let mut restarted = engine(&stopped, &k);
    assert_eq!(
        status(&mut restarted, &report.run_id),
        RunStatus::Interrupted { stage: "export".into(), in_flight: true }
    );
    // Listed as interrupted, for the operator who lost the reply.
    let Reply::Runs(runs) = restarted.ask(Command::Runs, &mut no_tpm) else { panic!("no run list") };
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].run_id.as_str(), runs[0].stages_done, runs[0].total_stages), (report.run_id.as_str(), 5, 6));
    assert!(matches!(runs[0].status, RunStatus::Interrupted { .. }));
    // An interrupted run takes no approvals: only a promotion that is waiting does.
    let late = approve(&mut restarted, &report, &k.approvers[0], &k);
    assert!(matches!(&late, Reply::Refused(r) if r.contains("no promotion waiting")), "{late:?}");

    let resumed = resume(&mut restarted, &report.run_id, &k, &mut fake_evidence);
    assert_eq!(resumed.status, RunStatus::Completed, "{resumed:?}");
    assert_eq!(resumed.stages.len(), 6);
    // The stages done before the stop are kept as they were; the interrupted one ran again
    // under a new execution ID (the first one stays spent in the replay store).
    assert_eq!(resumed.stages[..5], finished.stages[..5]);
    assert_eq!(resumed.stages[5].execution_id, format!("{}:export#1", report.run_id));
    assert!(resumed.bundle.is_some());
    let lines = audit_lines(stopped.path());
    assert!(
        lines.iter().any(|l| l.contains(&format!("execution \"{}:export\" ended by an interruption", report.run_id))),
        "the interrupted execution is closed in the audit log"
    );
    let again = restarted.ask(
        Command::Resume { run_id: report.run_id.clone(), certificate: certificate(&k), role_signatures: vec![] },
        &mut no_tpm,
    );
    assert!(matches!(&again, Reply::Refused(r) if r.contains("not waiting to be resumed")), "{again:?}");
}

/// Rewinds a stored run to the moment its `promote` stage had started: the marker written before
/// the stage's governance, with the deployment state of that moment. This is the record a stop
/// inside `promote` leaves, whether before or after it wrote the deployment.
fn rewind_into_promote(state: &std::path::Path, run_id: &str, marked_stage: usize) {
    let store = sovereign_pipeline::store::Store::open(&state.join("store"), &DataKey([8; 32])).unwrap();
    let name = format!("run-{run_id}");
    let mut run: serde_json::Value = serde_json::from_slice(&store.get_record(&name).unwrap().unwrap()).unwrap();
    let promote = 3;
    assert_eq!(run["pipeline"]["stages"][promote]["name"], "promote");
    run["report"]["stages"].as_array_mut().unwrap().truncate(promote);
    run["outputs"].as_object_mut().unwrap().remove("promote");
    run["next"] = promote.into();
    let empty = sovereign_pipeline::engine::Deployment::default().hash();
    run["in_flight"] = serde_json::json!({ "stage": marked_stage, "deployment_before": empty });
    store.put_record(&name, &serde_json::to_vec(&run).unwrap()).unwrap();
}

#[test]
fn an_interrupted_promotion_is_never_applied_twice() {
    let dir = Machine::new();
    let k = keys();
    let no_rollback = iron_path().replace("  - name: rollback\n    type: rollback\n\n", "");
    let mut live = engine(&dir, &k);
    let report = run_report(live.ask(Command::Start(Box::new(start(&no_rollback, &k))), &mut no_tpm));
    let RunStatus::AwaitingApprovals { digest: first_digest, candidate, .. } = report.status else { panic!() };
    for a in &k.approvers {
        approve(&mut live, &report, a, &k);
    }
    let mut snapshots = None;
    let mut snapshot = |nonce: &[u8; 32]| {
        snapshots = Some((dir.snapshot(), dir.snapshot()));
        fake_evidence(nonce)
    };
    assert_eq!(resume(&mut live, &report.run_id, &k, &mut snapshot).status, RunStatus::Completed);
    drop(live);
    let (applied, unapplied) = snapshots.unwrap();

    // Stopped inside `promote` after the deployment was written: resuming must not promote a
    // second time; the run fails naming both states and the deployment stays as it is.
    // A record whose marker disagrees with its next stage is not guessed at.
    rewind_into_promote(applied.path(), &report.run_id, 2);
    let mut inconsistent = engine(&applied, &k);
    let refused = inconsistent.ask(
        Command::Resume { run_id: report.run_id.clone(), certificate: certificate(&k), role_signatures: vec![] },
        &mut no_tpm,
    );
    assert!(
        matches!(&refused, Reply::Refused(r) if r.contains("marks stage #2 in flight but stage #3 next")),
        "{refused:?}"
    );
    drop(inconsistent);
    rewind_into_promote(applied.path(), &report.run_id, 3);
    let mut restarted = engine(&applied, &k);
    assert_eq!(
        status(&mut restarted, &report.run_id),
        RunStatus::Interrupted { stage: "promote".into(), in_flight: true }
    );
    let before = restarted.deployment().unwrap();
    assert_eq!(before.promotions.len(), 1);
    let failed = resume(&mut restarted, &report.run_id, &k, &mut fake_evidence);
    let RunStatus::Failed { stage, reason } = &failed.status else { panic!("{:?}", failed.status) };
    assert_eq!(stage, "promote");
    assert!(reason.contains("interrupted after it changed the deployment"), "{reason}");
    assert!(reason.contains(&hex::encode(before.hash())), "{reason}");
    assert_eq!(restarted.deployment().unwrap(), before);
    assert!(audit_lines(applied.path()).iter().any(|l| l.contains("not re-run, so it is not applied twice")));

    // Stopped inside `promote` before the deployment was written: the promotion runs again, as
    // a new execution, so the approvals given to the interrupted one are asked for again.
    rewind_into_promote(unapplied.path(), &report.run_id, 3);
    let store = sovereign_pipeline::store::Store::open(&unapplied.path().join("store"), &DataKey([8; 32])).unwrap();
    let empty = serde_json::to_vec(&sovereign_pipeline::engine::Deployment::default()).unwrap();
    store.put_record("deployment", &empty).unwrap();
    let mut restarted = engine(&unapplied, &k);
    let paused = resume(&mut restarted, &report.run_id, &k, &mut fake_evidence);
    let RunStatus::AwaitingApprovals { have: 0, need: 2, digest, candidate: same, .. } = paused.status else {
        panic!("{:?}", paused.status)
    };
    assert_eq!(same, candidate);
    assert_ne!(digest, first_digest, "approvals are bound to the execution they approve");
    // An approval of the interrupted execution does not count for the new one.
    let stale = Approval::sign(first_digest, now() + 600_000, &k.approvers[0]);
    let cert = RoleCertificate::issue(&k.approvers[0].verifying_key(), &["approver"], 7, now() + 3_600_000, &k.admin);
    let refused = restarted
        .ask(Command::Approve { run_id: report.run_id.clone(), approval: stale, certificate: cert }, &mut no_tpm);
    assert!(matches!(refused, Reply::Refused(_)), "{refused:?}");
    for a in &k.approvers {
        assert!(matches!(approve(&mut restarted, &paused, a, &k), Reply::Approved { .. }));
    }
    let done = resume(&mut restarted, &report.run_id, &k, &mut fake_evidence);
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.stages[3].execution_id, format!("{}:promote#1", report.run_id));
    let deployment = restarted.deployment().unwrap();
    assert_eq!(deployment.promotions.len(), 1, "promoted exactly once");
    assert_eq!(deployment.live(), Some(candidate));
}

fn measured() -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("measured_boot".to_string(), serde_json::json!(true))])
}

/// Opens the engine on `machine` after `attack` changed its data partition, expecting a
/// refusal; puts the partition back as it was. Returns the refusal.
fn refused_after(machine: &Machine, k: &Keys, attack: impl FnOnce(&std::path::Path)) -> String {
    let kept = tempfile::tempdir().unwrap();
    copy_state(machine.path(), kept.path());
    attack(machine.path());
    let refusal = match open_engine(machine, k, measured()) {
        Ok(_) => panic!("the engine started on attacked state"),
        Err(e) => e.to_string(),
    };
    assert!(!refusal.contains('\n'), "a refusal is one line: {refusal}");
    std::fs::remove_dir_all(machine.path()).unwrap();
    copy_state(kept.path(), machine.path());
    refusal
}

fn swap_first_two_records(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[..96].rotate_left(48);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn state_cut_rolled_back_missing_or_from_an_older_copy_is_refused_at_start_by_name() {
    let k = keys();
    let machine = Machine::new();
    let mut live = engine(&machine, &k);
    assert!(live.anchor_summary().contains("a new data partition"), "{}", live.anchor_summary());
    run_report(live.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let Reply::Blob(_) = live.ask(Command::ExportBundle, &mut fake_evidence) else { panic!("no bundle") };
    drop(live);
    let older = tempfile::tempdir().unwrap();
    copy_state(machine.path(), older.path());
    let counter_then = machine.counter().unwrap();

    let mut live = engine(&machine, &k);
    run_report(live.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let Reply::Blob(_) = live.ask(Command::ExportBundle, &mut fake_evidence) else { panic!("no bundle") };
    let (size, anchored) = (live.audit().size(), *live.anchored());
    drop(live);
    assert!(machine.counter().unwrap() >= counter_then + 2, "each command that changed the state advanced the anchor");
    assert_eq!((anchored.head.log_size, anchored.counter), (size, machine.counter()));
    assert!(anchored.head.checkpoint_size > 0 && anchored.head.replay.records > 0, "{anchored:?}");

    let older = older.path();
    let older_file = |name: &'static str| {
        move |dir: &std::path::Path| {
            std::fs::copy(older.join(name), dir.join(name)).unwrap();
        }
    };
    type Attack<'a> = Box<dyn FnOnce(&std::path::Path) + 'a>;
    let attacks: Vec<(&str, Attack, &str)> = vec![
        ("audit log cut back", Box::new(older_file("audit.log")), "fewer than the"),
        ("audit log deleted", Box::new(|d| std::fs::remove_file(d.join("audit.log")).unwrap()), "audit.log is missing"),
        (
            "replay store deleted",
            Box::new(|d| std::fs::remove_file(d.join("replay.store")).unwrap()),
            "replay store is missing",
        ),
        ("replay store rolled back", Box::new(older_file("replay.store")), "spent identifiers would be usable again"),
        (
            "replay store reordered",
            Box::new(|d| swap_first_two_records(&d.join("replay.store"))),
            "are not the ones anchored",
        ),
        (
            "checkpoint deleted",
            Box::new(|d| std::fs::remove_file(d.join("audit.log.checkpoint")).unwrap()),
            "checkpoint is missing",
        ),
        ("checkpoint rolled back", Box::new(older_file("audit.log.checkpoint")), "older than the one of size"),
        (
            "anchor slots deleted",
            Box::new(|d| SLOTS.iter().for_each(|s| std::fs::remove_file(d.join(s)).unwrap())),
            "wiped",
        ),
        (
            "partition wiped",
            Box::new(|d| {
                std::fs::remove_dir_all(d).unwrap();
                std::fs::create_dir(d).unwrap();
            }),
            "wiped",
        ),
        (
            "older copy of the whole partition",
            Box::new(|d| {
                std::fs::remove_dir_all(d).unwrap();
                copy_state(older, d);
            }),
            "older copy",
        ),
    ];
    for (attack, change, why) in attacks {
        let refusal = refused_after(&machine, &k, |d| change(d));
        assert!(refusal.contains(why), "{attack}: {refusal:?} does not say {why:?}");
        // Nothing was recreated or advanced by the refusal.
        assert_eq!(machine.counter(), anchored.counter, "{attack}: the refusal moved the counter");
    }
    // The untouched partition still starts, with everything it acknowledged.
    let restarted = engine(&machine, &k);
    assert_eq!(restarted.audit().size(), size);
    drop(restarted);
    // Factory adoption of other state is for a TPM that never anchored any.
    let counter = Box::new(TpmCounter::new(SharedTpm::new(&machine.tpm.tcti()), STATE_ANCHOR_INDEX));
    let adopted = sovereign_pipeline::anchor::StateAnchor::adopt(older, &DataKey([8; 32]), counter);
    assert!(adopted.unwrap_err().contains("already anchors"));
}

#[test]
fn an_advance_cut_between_its_record_and_the_counter_is_finished_at_the_next_start() {
    let k = keys();
    let machine = Machine::new();
    let mut live = engine(&machine, &k);
    run_report(live.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    drop(live);
    // The TPM as it was before the next advance; the partition as it is after it.
    let tpm_before = machine.tpm.fork().unwrap();
    let partition_before = tempfile::tempdir().unwrap();
    copy_state(machine.path(), partition_before.path());
    let before = machine.counter().unwrap();
    let mut live = engine(&machine, &k);
    run_report(live.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    let size = live.audit().size();
    drop(live);
    assert_eq!(machine.counter(), Some(before + 1));
    let cut = Machine { tpm: tpm_before, dir: tempfile::tempdir().unwrap() };
    copy_state(machine.path(), cut.path());
    let restarted = engine(&cut, &k);
    assert!(restarted.anchor_summary().contains("cut by a power loss, finished"), "{}", restarted.anchor_summary());
    assert_eq!(restarted.audit().size(), size, "nothing acknowledged was lost");
    drop(restarted);
    assert_eq!(cut.counter(), Some(before + 1), "the interrupted increment was finished");
    // The other way round — the TPM after the advance, the partition before it — is an older copy.
    let stale = Machine { tpm: machine.tpm.fork().unwrap(), dir: tempfile::tempdir().unwrap() };
    copy_state(partition_before.path(), stale.path());
    let refusal = open_engine(&stale, &k, measured()).unwrap_err().to_string();
    assert!(refusal.contains("older copy"), "{refusal}");
}

#[test]
fn a_first_boot_cut_inside_genesis_is_finished_not_bricked() {
    let k = keys();
    let machine = Machine::new();
    // Genesis as a cut left it: the genesis record in a slot, the counter defined, and the
    // new log's header half written.
    let genesis = sovereign_audit::anchor::Record { counter: None, head: sovereign_audit::anchor::StateHead::empty() };
    std::fs::write(machine.path().join(SLOTS[0]), genesis.encode(&DataKey([8; 32]))).unwrap();
    let mut tpm = sovereign_measured_boot::tpm::Tpm::open(&machine.tpm.tcti()).unwrap();
    tpm.counter_define(STATE_ANCHOR_INDEX).unwrap();
    drop(tpm);
    std::fs::write(machine.path().join("audit.log"), b"SOVLOG").unwrap();
    let mut first = engine(&machine, &k);
    assert!(first.anchor_summary().contains("a new data partition"), "{}", first.anchor_summary());
    run_report(first.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
    assert!(first.audit().size() > 0);
    let anchored = *first.anchored();
    drop(first);
    assert_eq!(machine.counter(), anchored.counter);
    // Once finished, a leftover genesis record (in the slot the current record is not in) is
    // never taken again.
    let other = sovereign_audit::anchor::slot_for(anchored.counter.unwrap() + 1);
    std::fs::write(machine.path().join(SLOTS[other]), genesis.encode(&DataKey([8; 32]))).unwrap();
    let reopened = engine(&machine, &k);
    assert_eq!(reopened.anchored().counter, anchored.counter);
}

/// The child of the SIGKILL test: runs the Iron Path up to its approvals again and again on the
/// machine the parent names, printing each acknowledged run and the log size after it. Not a
/// test of its own (ignored, so it is never counted as one); the parent runs it.
#[test]
#[ignore = "the child process of the SIGKILL test, run by its parent"]
fn sigkill_child() {
    let (Ok(dir), Ok(tcti), Ok(progress)) = (
        std::env::var("SOVEREIGN_ANCHOR_CHILD_DIR"),
        std::env::var("SOVEREIGN_ANCHOR_CHILD_TCTI"),
        std::env::var("SOVEREIGN_ANCHOR_CHILD_PROGRESS"),
    ) else {
        panic!("sigkill_child is run by the SIGKILL test, which names its machine in the environment");
    };
    let mut progress = std::fs::OpenOptions::new().append(true).create(true).open(progress).unwrap();
    let mut say = |line: String| {
        use std::io::Write as _;
        progress.write_all(format!("{line}\n").as_bytes()).unwrap();
        progress.sync_data().unwrap();
    };
    let k = keys();
    let mut engine = Engine::open(EngineConfig {
        identity: SigningKey::from_bytes(&[9; 32]),
        data_key: DataKey([8; 32]),
        state_dir: std::path::Path::new(&dir),
        origin: "sovereign-test/pipeline".into(),
        release: k.release.verifying_key(),
        admin: k.admin.verifying_key(),
        measurements: measured(),
        counter: Box::new(TpmCounter::new(SharedTpm::new(&tcti), STATE_ANCHOR_INDEX)),
        reference_values: None,
        update: None,
        licence: None,
        gpu: Default::default(),
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
    })
    .unwrap();
    say("started".into());
    loop {
        SENT.with(|s| s.borrow_mut().clear());
        let report = run_report(engine.ask(Command::Start(Box::new(start(&iron_path(), &k))), &mut no_tpm));
        say(format!("acked {} {}", report.run_id, engine.audit().size()));
    }
}

#[test]
fn sigkill_at_any_moment_loses_nothing_acknowledged_and_never_bricks_the_node() {
    let k = keys();
    let machine = Machine::new();
    let progress_dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut acked_size = 0;
    let mut kills_after_an_ack = 0;
    for round in 0..10u64 {
        let progress = progress_dir.path().join(format!("round-{round}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_child", "--ignored", "--test-threads=1"])
            .env("SOVEREIGN_ANCHOR_CHILD_DIR", machine.path())
            .env("SOVEREIGN_ANCHOR_CHILD_TCTI", machine.tpm.tcti())
            .env("SOVEREIGN_ANCHOR_CHILD_PROGRESS", &progress)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = || std::fs::read_to_string(&progress).unwrap_or_default();
        // Wait until the engine is up, then let it work a varying time (crossing advances at
        // different points) and kill it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !lines().starts_with("started") {
            assert!(std::time::Instant::now() < deadline, "round {round}: the child did not start");
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the child exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut rng = [0u8; 2];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rng);
        std::thread::sleep(std::time::Duration::from_millis(50 + u64::from(u16::from_le_bytes(rng)) % 2500));
        child.kill().unwrap();
        child.wait().unwrap();
        let before = acked.len();
        for line in lines().lines() {
            if let Some(rest) = line.strip_prefix("acked ") {
                let (run, size) = rest.split_once(' ').unwrap();
                acked.push(run.to_string());
                acked_size = size.parse().unwrap();
            }
        }
        kills_after_an_ack += usize::from(acked.len() > before);
        // The next start is never refused and holds every acknowledged run and entry.
        let mut restarted = open_engine(&machine, &k, measured())
            .unwrap_or_else(|e| panic!("round {round}: the node was bricked by a kill: {e}"));
        assert!(restarted.audit().size() >= acked_size, "round {round}: acknowledged entries lost");
        for run in &acked {
            let status = restarted.ask(Command::Status { run_id: run.clone() }, &mut no_tpm);
            assert!(matches!(status, Reply::Run(_)), "round {round}: acknowledged run {run} lost: {status:?}");
        }
    }
    assert!(kills_after_an_ack >= 3, "too few kills landed after work was acknowledged ({kills_after_an_ack}/10)");
}

/// The example governed kernel, signed by `signer` with `capabilities`.
fn kernel_file(signer: &SigningKey, capabilities: &[Capability]) -> ModuleFile {
    let ptx = std::fs::read(root().join("examples/kernels/invert.ptx")).unwrap();
    ModuleFile { manifest: ModuleManifest::sign("invert", 1, &ptx, capabilities, signer), wasm: attach(ptx) }
}

const GPU_PIPELINE: &str = r#"
name: gpu-path
version: "1.0.0"
stages:
  - { name: prepare, type: data_preparation, dataset: sensors.csv, dataset_sha256: "DATASET", module: normalize }
  - { name: invert, type: gpu_kernel, kernel: invert, entry: invert, output_bytes: 4096, threads: 256, memory_bytes: 1048576, time_limit_ms: 2000 }
governance: { enforcement_level: strict, policy_binding_required: true, role_signatures_required: true }
"#;

fn gpu_pipeline() -> String {
    let dataset = std::fs::read(root().join("examples/datasets/sensors.csv")).unwrap();
    GPU_PIPELINE.replace("DATASET", &hex::encode(sha2::Sha256::digest(&dataset)))
}

fn gpu_start(k: &Keys, kernel: ModuleFile) -> StartRun {
    let mut start = start(&gpu_pipeline(), k);
    start.modules.push(kernel);
    start
}

/// Without a GPU (NVML cannot load: every test engine here points it at a library that does not
/// exist, so this holds on a GPU machine too): the Iron Path policy denies a `gpu_kernel` stage
/// with the node's own `no GPU: <reason>`; a policy that allows it anyway still meets the
/// engine's refusal by name; the stages before it ran, and every decision is counted by verdict
/// and policy for the metrics.
#[test]
fn a_gpu_kernel_stage_without_a_gpu_is_denied_with_the_reason_and_refused_by_name() {
    let k = keys();
    let machine = Machine::new();
    let mut engine = engine(&machine, &k);
    assert!(!engine.gpu().available());
    assert!(
        engine.gpu().describe().starts_with("no GPU: the NVIDIA driver is not loaded (NVML: "),
        "{}",
        engine.gpu().describe()
    );
    let kernel = kernel_file(&k.release, &[Capability::GpuKernel]);
    let report = run_report(engine.ask(Command::Start(Box::new(gpu_start(&k, kernel.clone()))), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "invert");
    assert!(
        reason.contains("no GPU: the NVIDIA driver is not loaded"),
        "the policy's denial names the reason: {reason}"
    );
    assert_eq!(report.stages.len(), 1, "the data preparation before it ran: {report:?}");
    let decisions = engine.audit().stats().decisions;
    let count = |verdict: &str| -> u64 {
        decisions.iter().filter(|((v, p), _)| v == verdict && p.starts_with("iron-path")).map(|(_, n)| n).sum()
    };
    assert_eq!((count("allow"), count("deny")), (1, 1), "{decisions:?}");

    // A policy that allows everything: the engine itself refuses the stage, by name.
    let mut permissive = gpu_start(&k, kernel);
    permissive.policy =
        PolicyBundle::sign("anything-goes", 1, "allow[reason] := input_action[a], reason = 'allowed'", &k.release);
    let report = run_report(engine.ask(Command::Start(Box::new(permissive)), &mut no_tpm));
    let RunStatus::Failed { stage, reason } = &report.status else { panic!("{:?}", report.status) };
    assert_eq!(stage, "invert");
    assert!(reason.starts_with("stage invert (gpu_kernel): no GPU: the NVIDIA driver is not loaded"), "{reason}");
    let lines = audit_lines(machine.path());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stage invert (gpu_kernel invert): refused: no GPU: the NVIDIA driver is not loaded")),
        "the refusal is audited"
    );
}

/// A kernel image that is unsigned (another key), altered after signing, signed for WASM use,
/// or not a kernel image at all is refused at load, by name, before anything runs; a WASM
/// stage pointed at a kernel image's manifest is refused by the sandbox.
#[test]
fn kernel_images_unsigned_altered_or_signed_for_another_use_are_refused_by_name() {
    let k = keys();
    let machine = Machine::new();
    let mut engine = engine(&machine, &k);
    let refused = |engine: &mut Engine, kernel: ModuleFile| match engine
        .ask(Command::Start(Box::new(gpu_start(&k, kernel))), &mut no_tpm)
    {
        Reply::Refused(why) => why,
        other => panic!("a bad kernel image was taken: {other:?}"),
    };
    let foreign = kernel_file(&SigningKey::from_bytes(&[77; 32]), &[Capability::GpuKernel]);
    assert!(
        refused(&mut engine, foreign)
            .contains("stage invert: kernel image refused: module invert: manifest not signed by the release key")
    );
    let mut altered = kernel_file(&k.release, &[Capability::GpuKernel]);
    let mut bytes = attached(&altered.wasm);
    bytes.extend_from_slice(b"\n// one more line\n");
    altered.wasm = attach(bytes);
    let why = refused(&mut engine, altered);
    assert!(why.contains("stage invert: kernel image refused: module invert:"), "{why}");
    let as_wasm = kernel_file(&k.release, &[Capability::ReadInput, Capability::WriteOutput]);
    assert!(refused(&mut engine, as_wasm).contains("does not sign it as a GPU kernel (capability gpu_kernel)"));
    let wasm = std::fs::read(root().join("build/modules/normalize.wasm")).unwrap();
    let not_a_kernel = ModuleFile {
        manifest: ModuleManifest::sign("invert", 1, &wasm, &[Capability::GpuKernel], &k.release),
        wasm: attach(wasm),
    };
    let why = refused(&mut engine, not_a_kernel);
    assert!(why.contains("kernel image invert: kernel image refused: neither a cubin (ELF) nor PTX text"), "{why}");
    // The other way round: a WASM stage whose module's manifest signs a GPU kernel.
    let mut swapped = start(&iron_path(), &k);
    let wasm = std::fs::read(root().join("build/modules/normalize.wasm")).unwrap();
    swapped.modules[0] = ModuleFile {
        manifest: ModuleManifest::sign("normalize", 1, &wasm, &[Capability::GpuKernel], &k.release),
        wasm: attach(wasm),
    };
    match engine.ask(Command::Start(Box::new(swapped)), &mut no_tpm) {
        Reply::Refused(why) => {
            assert!(why.contains("its manifest signs a GPU kernel image, not a WASM module"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let lines = audit_lines(machine.path());
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("pipeline run refused at load")).count(),
        5,
        "each refusal audited"
    );
}

/// The emergency stop: any admitted operator engages it (audited, kept across a restart); it
/// clears only with approvals of this engagement by as many distinct gpu-operators as the node's
/// configuration requires — one approver twice, an approver without the role, or an approval of
/// another engagement do not count.
#[test]
fn the_gpu_emergency_stop_is_kept_across_restarts_and_cleared_only_by_m_distinct_gpu_operators() {
    use sovereign_protocol::pipeline::{GPU_OPERATOR_ROLE, GpuState, gpu_clear_digest};
    let k = keys();
    let machine = Machine::new();
    let settings = sovereign_boot_contract::gpu::GpuSettings { clear_approvals: 2, ..Default::default() };
    let open = |machine: &Machine| {
        let config = config(machine, k.release.verifying_key(), k.admin.verifying_key(), measured());
        Engine::open(EngineConfig { gpu: settings.clone(), ..config }).unwrap()
    };
    let gpu_state = |reply: Reply| match reply {
        Reply::Gpu(state) => state,
        other => panic!("{other:?}"),
    };
    let mut engine = open(&machine);
    let state: GpuState = gpu_state(engine.ask(Command::GpuStatus, &mut no_tpm));
    assert!(!state.available && state.emergency_stop.is_none() && state.status.starts_with("no GPU: "), "{state:?}");
    let state =
        gpu_state(engine.ask(Command::GpuStop { reason: "fan failure reported by the site".into() }, &mut no_tpm));
    assert_eq!(state.generation, 1);
    assert!(state.emergency_stop.as_deref().unwrap_or("").contains("fan failure reported by the site"), "{state:?}");
    assert!(matches!(engine.ask(Command::GpuStop { reason: " ".into() }, &mut no_tpm), Reply::Refused(_)));
    drop(engine);

    // A restart does not clear it.
    let mut engine = open(&machine);
    let state = gpu_state(engine.ask(Command::GpuStatus, &mut no_tpm));
    assert!(state.emergency_stop.is_some(), "the stop survived the restart: {state:?}");
    let node = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let revocations = RevocationList::issue(1, vec![], vec![], &k.admin);
    let gpu_operator = |who: &SigningKey, role: &str| {
        RoleCertificate::issue(&who.verifying_key(), &[role], 11, now() + 3_600_000, &k.admin)
    };
    let (a, b) = (&k.approvers[0], &k.approvers[1]);
    let approval =
        |who: &SigningKey, generation: u64| Approval::sign(gpu_clear_digest(&node, generation), now() + 600_000, who);
    let clear = |engine: &mut Engine, approvals: Vec<Approval>, certificates: Vec<RoleCertificate>| {
        engine.ask(Command::GpuClear { approvals, certificates, revocations: revocations.clone() }, &mut no_tpm)
    };
    let refusal = |reply: Reply| match reply {
        Reply::Refused(why) => why,
        other => panic!("cleared: {other:?}"),
    };
    let one = refusal(clear(&mut engine, vec![approval(a, 1)], vec![gpu_operator(a, GPU_OPERATOR_ROLE)]));
    assert!(one.starts_with("GPU emergency stop not cleared:"), "{one}");
    let twice =
        refusal(clear(&mut engine, vec![approval(a, 1), approval(a, 1)], vec![gpu_operator(a, GPU_OPERATOR_ROLE)]));
    assert!(twice.contains("already approved"), "{twice}");
    let no_role = refusal(clear(
        &mut engine,
        vec![approval(a, 1), approval(b, 1)],
        vec![gpu_operator(a, GPU_OPERATOR_ROLE), gpu_operator(b, "approver")],
    ));
    assert!(no_role.starts_with("GPU emergency stop not cleared:"), "{no_role}");
    let stale = refusal(clear(
        &mut engine,
        vec![approval(a, 0), approval(b, 0)],
        vec![gpu_operator(a, GPU_OPERATOR_ROLE), gpu_operator(b, GPU_OPERATOR_ROLE)],
    ));
    assert!(stale.contains("approves another request"), "{stale}");
    assert!(gpu_state(engine.ask(Command::GpuStatus, &mut no_tpm)).emergency_stop.is_some());
    // More approvers than required is fine: the stop clears at the second.
    let c = SigningKey::from_bytes(&[6; 32]);
    let state = gpu_state(clear(
        &mut engine,
        vec![approval(a, 1), approval(b, 1), approval(&c, 1)],
        vec![
            gpu_operator(a, GPU_OPERATOR_ROLE),
            gpu_operator(b, GPU_OPERATOR_ROLE),
            gpu_operator(&c, GPU_OPERATOR_ROLE),
        ],
    ));
    assert!(state.emergency_stop.is_none(), "{state:?}");
    let lines = audit_lines(machine.path());
    assert!(lines.iter().any(|l| l.contains("GPU emergency stop 1 engaged: operator ")));
    assert!(lines.iter().any(|l| l.starts_with("GPU emergency stop 1 cleared by ")));
    assert_eq!(lines.iter().filter(|l| l.starts_with("GPU emergency stop not cleared")).count(), 4);
    drop(engine);
    let mut engine = open(&machine);
    assert!(gpu_state(engine.ask(Command::GpuStatus, &mut no_tpm)).emergency_stop.is_none(), "cleared stays cleared");
}
