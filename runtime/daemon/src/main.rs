//! `sovereign-runtime`: the governance runtime daemon. It reads the node keys and this boot's
//! facts from its standard input (PID 1's pipe, never a file: `sovereign_boot_contract::Handover`),
//! checks the facts' PCRs against the TPM, and serves the signed control API — status,
//! attestation through the TPM, and pipelines (the Iron Path) on the data partition, governed,
//! sandboxed and audited, with the boot facts as the policy's measurements. It prints `ready`
//! only once its configuration, manifest, control port, engine and control thread are all up;
//! anything less is one `FATAL` line and exit status 2, which PID 1 handles with its restart
//! and power-off rule — except state on the data partition that the TPM-anchored check
//! refuses (cut, rolled back, missing, an older copy): then one `REFUSING` line, no `ready`,
//! and the control API answers `status` (with the refusal) and attestation, and refuses every
//! governed action. When the signed configuration names a mesh, it runs the mesh node too
//! (`sovereign_runtime::mesh`): a mesh that cannot start is a refusal to start. It exits
//! cleanly on SIGTERM.
//!
//! Must never: write the keys anywhere, execute anything, answer a request the gate refused, or
//! say `ready` while a part of it is missing.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;

use ed25519_dalek::{SigningKey, VerifyingKey};
use nix::sys::signal::{SigSet, Signal};
use sovereign_boot_contract::{BootFacts, Handover, RuntimeConfig};
use sovereign_measured_boot::tpm::{STATE_ANCHOR_INDEX, SharedTpm};
use sovereign_runtime::control;
use zeroize::Zeroizing;

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The pipeline engine on the data partition PID 1 mounted: audit log, replay store and the
/// encrypted store, under the node keys, with this boot's facts as the policy's measurements.
fn open_engine(
    identity: &SigningKey,
    data_key: &[u8; 32],
    config: &RuntimeConfig,
    facts: &BootFacts,
    tpm: &SharedTpm,
) -> Result<sovereign_pipeline::Engine, String> {
    let release = RELEASE_KEY
        .ok_or("this runtime was built without SOVEREIGN_RELEASE_PUBKEY")
        .map_err(str::to_string)
        .and_then(|h| key_from_hex(h).ok_or_else(|| "release key is not an Ed25519 key".to_string()))?;
    let admin =
        key_from_hex(&config.admin_root).ok_or("runtime config: admin_root is not an Ed25519 key".to_string())?;
    let identity_hex = hex::encode(identity.verifying_key().as_bytes());
    let licence = config
        .licence
        .as_ref()
        .map(|l| {
            let header = l.checkpoint_header.as_deref();
            sovereign_ledger::rule::parse(&l.network, l.checkpoint_height, header, &l.script, l.amount_sat, l.depth)
        })
        .transpose()
        .map_err(|e| format!("runtime config: licence rule: {e}"))?;
    sovereign_pipeline::Engine::open(sovereign_pipeline::EngineConfig {
        identity: identity.clone(),
        data_key: sovereign_audit::DataKey(*data_key),
        state_dir: std::path::Path::new(sovereign_boot_contract::DATA_MOUNT),
        origin: format!("sovereign-appliance/{}", &identity_hex[..16]),
        release,
        admin,
        measurements: facts.measurements(),
        counter: Box::new(sovereign_pipeline::anchor::TpmCounter::new(tpm.clone(), STATE_ANCHOR_INDEX)),
        reference_values: reference_values(),
        update: update_trust(config, facts.image_version, tpm, &release),
        licence,
        gpu: config.gpu.clone().unwrap_or_default(),
        // The image's own copy when it carries the driver (`sovereign-image build --gpu-driver`),
        // found where the dynamic loader looks.
        nvml_library: None,
    })
    .map_err(|e| e.to_string())
}

/// What pushed update bundles are checked against: the image's update root, this release, and
/// the TPM's anti-rollback floor. An image without an update root takes no updates (said here).
fn update_trust(
    config: &RuntimeConfig,
    running_version: u64,
    tpm: &SharedTpm,
    release: &VerifyingKey,
) -> Option<sovereign_pipeline::engine::update::UpdateTrust> {
    let Some(root) = key_from_hex(&config.update_root) else {
        println!("sovereign-runtime: the runtime config names no update root: update bundles will be refused");
        return None;
    };
    let tpm = tpm.clone();
    Some(sovereign_pipeline::engine::update::UpdateTrust {
        root,
        platform: sovereign_update::PLATFORM_QEMU_X86_64.into(),
        running_version,
        floor: Box::new(move || tpm.with(|t| t.floor()).map(|f| f.unwrap_or(0)).map_err(|e| e.to_string())),
        boot: Box::new(boot_slots),
        approvals: config.update_approvals,
        policy: update_policy(release),
    })
}

/// The release's update policy, signed by the release key (in the initramfs, so the manifest
/// covers it too); why not, said here and in every refused apply.
fn update_policy(release: &VerifyingKey) -> Result<sovereign_governance::policy::PolicyBundle, String> {
    use sovereign_boot_contract::UPDATE_POLICY_PATH;
    let policy = std::fs::read(UPDATE_POLICY_PATH)
        .map_err(|e| format!("reading {UPDATE_POLICY_PATH}: {e}"))
        .and_then(|b| sovereign_governance::policy::PolicyBundle::from_json(&b).map_err(|e| e.to_string()))
        .and_then(|p| p.verify(std::slice::from_ref(release)).map(|()| p).map_err(|e| e.to_string()));
    if let Err(why) = &policy {
        println!("sovereign-runtime: no update policy ({why}): every update apply will be refused");
    }
    policy
}

/// PID 1's report of this boot's slot (re-read each time: PID 1 rewrites it when it blesses
/// the release). `None` when there is none or it does not parse (said on the console).
fn boot_slots() -> Option<sovereign_boot_contract::slots::BootSlots> {
    use sovereign_boot_contract::slots::RUN_BOOT_SLOTS_PATH;
    let bytes = std::fs::read(RUN_BOOT_SLOTS_PATH).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(slots) => Some(slots),
        Err(e) => {
            println!("sovereign-runtime: PID 1's boot slot report {RUN_BOOT_SLOTS_PATH} does not parse: {e}");
            None
        }
    }
}

/// The release's reference values PID 1 checked and handed over, for the compliance bundles;
/// without them the bundles carry none (said once here, failed by name by an auditor).
fn reference_values() -> Option<sovereign_pipeline::ReleaseReference> {
    use sovereign_boot_contract::{RUN_REFERENCE_PATH, RUN_REFERENCE_SIG_PATH};
    match (std::fs::read(RUN_REFERENCE_PATH), std::fs::read(RUN_REFERENCE_SIG_PATH)) {
        (Ok(values), Ok(signature)) => Some(sovereign_pipeline::ReleaseReference { values, signature }),
        (Err(e), _) | (_, Err(e)) => {
            println!(
                "sovereign-runtime: no release reference values from PID 1 ({e}): compliance bundles will carry none"
            );
            None
        }
    }
}

const RELEASE_KEY: Option<&str> = option_env!("SOVEREIGN_RELEASE_PUBKEY");

fn key_from_hex(h: &str) -> Option<ed25519_dalek::VerifyingKey> {
    sovereign_canonical::ed25519_public_key(h).ok()
}

/// Reads PCRs 0–15 from the TPM, to check PID 1's reading.
fn read_pcrs() -> Result<BTreeMap<u8, String>, String> {
    let mut tpm = sovereign_measured_boot::tpm::Tpm::open(control::TCTI).map_err(|e| e.to_string())?;
    let selection = sovereign_measured_boot::PcrSelection::new(0..=15).map_err(|e| e.to_string())?;
    let values = tpm.pcr_read(&selection).map_err(|e| e.to_string())?;
    Ok(values.0.iter().map(|(i, v)| (*i, v.to_hex())).collect())
}

/// Everything the runtime needs before it may say `ready`: the signed configuration and
/// manifest, the checked boot facts, the control port and the pipeline engine, then the control
/// API serving on its own thread. Any of them missing is a refusal to start, named in one line
/// — except the engine: state on the data partition that the anchor refuses (or an engine that
/// cannot open) leaves the control API serving status and attestation, with the refusal in
/// `status` and every governed action refused (`Ok(Some(why))`, and no `ready`).
fn start(
    identity: &SigningKey,
    data_key: &[u8; 32],
    facts: BootFacts,
    started_ms: u64,
) -> Result<Option<String>, String> {
    use sovereign_boot_contract::{CONFIG_PATH, MANIFEST_PATH, MANIFEST_SIG_PATH};
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("reading {path}: {e}"));
    let config: RuntimeConfig =
        serde_json::from_slice(&read(CONFIG_PATH)?).map_err(|e| format!("runtime configuration {CONFIG_PATH}: {e}"))?;
    let manifest = read(MANIFEST_PATH)?;
    let manifest_signature = read(MANIFEST_SIG_PATH)?;
    let version = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| v["version"].as_u64())
        .ok_or(format!("manifest {MANIFEST_PATH}: no version"))?;
    if version != facts.image_version {
        return Err(format!(
            "manifest {MANIFEST_PATH} is version {version}, PID 1 verified version {}",
            facts.image_version
        ));
    }
    let read_back = read_pcrs().map_err(|e| format!("reading the PCRs back from the TPM: {e}"))?;
    let (facts, differences) = sovereign_runtime::boot::confirm(facts, &read_back);
    for d in &differences {
        println!("sovereign-runtime: boot facts: {d}");
    }
    println!(
        "sovereign-runtime: boot facts: measured boot {}, image version {}, unseal window {}, {} PCRs read back{}",
        facts.measured_boot,
        facts.image_version,
        if facts.unseal_window_closed { "closed" } else { "OPEN" },
        read_back.len(),
        if differences.is_empty() { " and equal to PID 1's" } else { " and DIFFERENT from PID 1's" }
    );
    let mut admins = Vec::new();
    for h in &config.admins {
        admins.push(key_from_hex(h).ok_or(format!("runtime configuration: admin key {h:?} is not an Ed25519 key"))?);
    }
    let port = control::find_port(&config.control_port)
        .ok_or(format!("no virtio-serial port named {} (the control API's port)", config.control_port))?;
    let tpm = SharedTpm::new(control::TCTI);
    let (mut engine, refused) = match open_engine(identity, data_key, &config, &facts, &tpm) {
        Ok(mut engine) => {
            println!("sovereign-runtime: {}", engine.anchor_summary());
            match engine.record_boot() {
                Ok(lines) => lines.iter().for_each(|l| println!("sovereign-runtime: audited: {l}")),
                Err(e) => println!("sovereign-runtime: this boot's update outcome could not be audited: {e}"),
            }
            println!("sovereign-runtime: pipelines ready (audit log of {} entries)", engine.audit().size());
            (Some(engine), None)
        }
        Err(why) => {
            println!("sovereign-runtime: REFUSING every governed action: pipeline engine: {why}");
            (None, Some(format!("pipeline engine: {why}")))
        }
    };
    println!("sovereign-runtime: control API on {} ({} authorized operator keys)", port.display(), admins.len());
    let node = std::sync::Arc::new(control::Node {
        identity: identity.clone(),
        version,
        manifest,
        manifest_signature,
        attestor: std::sync::Mutex::new(control::Attestor::appliance(tpm.clone())),
        refused: refused.clone(),
        observed: Default::default(),
    });
    if let Some(engine) = engine.as_ref() {
        node.observed.watch_engine(engine);
        sovereign_runtime::gpu::start_monitor(engine.gpu().clone())?;
    }
    // The mesh, when the configuration names one: it cannot start, the runtime does not either.
    let mut mesh_thread = None;
    if let Some(settings) = &config.mesh {
        let release = RELEASE_KEY
            .and_then(key_from_hex)
            .ok_or("mesh: this runtime was built without a valid SOVEREIGN_RELEASE_PUBKEY")?;
        let reference = reference_values().map(|r| (r.values, r.signature));
        let audit = engine.as_ref().map(|e| e.audit().clone());
        let (mesh, cosigner) =
            sovereign_runtime::mesh::start(settings, identity, node.clone(), audit, release, reference)
                .map_err(|e| format!("mesh: {e}"))?;
        // Exported bundles carry their checkpoint cosigned by the admitted witnesses.
        if let Some(engine) = engine.as_mut() {
            engine.set_cosigner(Box::new(move |note| cosigner.cosign(note, std::time::Duration::from_secs(20))));
            // Update bundles pulled from admitted peers (`UpdatePull`), verified by the engine.
            let puller = mesh.puller();
            engine.set_bundle_fetcher(Box::new(move |from, sha256| puller.pull(from, sha256)));
        }
        let _ = node.observed.mesh_admitted.set(mesh.admitted_count());
        // This node's staged bundle, served to admitted peers that pull it.
        let state_dir = std::path::Path::new(sovereign_boot_contract::DATA_MOUNT);
        mesh.serve_updates(move |sha256| sovereign_pipeline::engine::update::staged_bundle(state_dir, sha256))?;
        mesh_thread = Some(mesh);
    }
    let gate = control::gate(&node, admins, started_ms);
    let server = control::ControlServer::start(node, engine, gate).map_err(|e| format!("starting the engine: {e}"))?;
    if let Some(mesh) = mesh_thread {
        // Operators holding the swarm key reach the same control API over the mesh.
        mesh.serve_control(server.clone())?;
        std::thread::Builder::new()
            .name("mesh".into())
            .spawn(move || mesh.run())
            .map_err(|e| format!("starting the mesh thread: {e}"))?;
    }
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control::serve_port(server, port))
        .map_err(|e| format!("starting the control thread: {e}"))?;
    if refused.is_none() {
        say_healthy();
    }
    Ok(refused)
}

/// Every part of the runtime is up: PID 1 is told (a file in the one directory under /run that
/// is the runtime's), and then blesses a release on trial and raises the anti-rollback floor.
/// A failure leaves the release unblessed (a trial then falls back) and says so.
fn say_healthy() {
    use sovereign_boot_contract::slots::RUN_HEALTHY_PATH;
    match std::fs::write(RUN_HEALTHY_PATH, b"healthy\n") {
        Ok(()) => println!("sovereign-runtime: healthy (told PID 1)"),
        Err(e) => println!("sovereign-runtime: could not tell PID 1 it is healthy ({RUN_HEALTHY_PATH}: {e})"),
    }
}

fn main() -> ExitCode {
    let started_ms = sovereign_canonical::now_ms();
    sovereign_confine::abort_on_panic();
    // Confined before a byte of input is read: seccomp allow-list and kill-list on every
    // thread. PID 1 already made this process unprivileged; the runtime refuses to go on unless
    // the kernel reports all of it.
    if let Err(e) = sovereign_confine::confine_self() {
        println!("sovereign-runtime: FATAL: confinement: {e}");
        return ExitCode::from(2);
    }
    match sovereign_confine::read() {
        Ok(c) if c.shortfalls().is_empty() => println!(
            "sovereign-runtime: confined: uid {} gid {}, no capabilities, no_new_privs, seccomp filter ({} stacked), lockdown {}",
            c.uids[0], c.gids[0], c.seccomp_filters, c.lockdown
        ),
        Ok(c) => {
            println!("sovereign-runtime: FATAL: confinement: {}", c.shortfalls().join("; "));
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("sovereign-runtime: FATAL: confinement: {e}");
            return ExitCode::from(2);
        }
    }
    // Block SIGTERM first so it is delivered to sigwait, not the default handler.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    if let Err(e) = term.thread_block() {
        eprintln!("sovereign-runtime: cannot block SIGTERM: {e}");
        return ExitCode::from(2);
    }
    // The handover: the keys and this boot's facts, from PID 1's pipe, up to end of file.
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = 68 + sovereign_boot_contract::MAX_FACTS_BYTES as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut bytes) {
        println!("sovereign-runtime: FATAL: did not receive the node keys from PID 1: {e}");
        return ExitCode::from(2);
    }
    let handover = match Handover::decode(&bytes) {
        Ok(h) => h,
        Err(e) => {
            println!("sovereign-runtime: FATAL: the handover from PID 1: {e}");
            return ExitCode::from(2);
        }
    };
    drop(bytes);
    let identity = SigningKey::from_bytes(&handover.identity_seed);
    let data_key = handover.data_key;
    println!("sovereign-runtime: node identity {}", hex::encode(identity.verifying_key().as_bytes()));
    match start(&identity, &data_key, handover.facts, started_ms) {
        Err(why) => {
            println!("sovereign-runtime: FATAL: not starting: {why}");
            return ExitCode::from(2);
        }
        Ok(Some(_)) => println!("sovereign-runtime: serving status and attestation only (uptime {})", uptime()),
        Ok(None) => println!("sovereign-runtime: ready (uptime {})", uptime()),
    }
    let signal = term.wait();
    println!("sovereign-runtime: {} received, shutting down", signal.map(|s| s.as_str()).unwrap_or("signal"));
    drop((data_key, identity));
    ExitCode::SUCCESS
}
