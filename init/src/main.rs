//! PID 1. See the crate documentation (`lib.rs`) for the boot order and what it must never do.
//! Every fatal refusal prints one line `sovereign-init: FATAL: <what failed>: <why>` on the
//! console and powers the machine off.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount, umount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use sovereign_boot_contract::manifest::Manifest;
use sovereign_boot_contract::slots::{self, BootSlots};
use sovereign_boot_contract::{BootFacts, Handover, MANIFEST_PATH, MANIFEST_SIG_PATH, RuntimeConfig};
use sovereign_confine::{RUNTIME_GID, RUNTIME_UID};
use sovereign_init::loader::ModuleLoader;
use sovereign_init::sealing::{self, KeyRole, TrustedKeys};
use sovereign_init::state::{self, KeyArea};
use sovereign_measured_boot::measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
use sovereign_measured_boot::policy::{PolicyKey, SignedPcrPolicy};
use sovereign_measured_boot::tpm::Tpm;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use zeroize::Zeroizing;

/// The release public key (Ed25519, hex) compiled in at build time.
const RELEASE_KEY: Option<&str> = option_env!("SOVEREIGN_RELEASE_PUBKEY");
/// The PCR-policy public key (P-256 SEC1, hex) compiled in at build time.
const PCR_POLICY_KEY: Option<&str> = option_env!("SOVEREIGN_PCR_POLICY_PUBKEY");
const TCTI: &str = "device:/dev/tpmrm0";
/// The initramfs is hashed on at most this many threads (one per CPU below that).
const MAX_HASHING_THREADS: usize = 8;
const MEASUREMENT_LOG: &str = "/run/sovereign/measurement.log";
/// The firmware's TCG event log (securityfs: root only) and the copy the runtime reads.
const FIRMWARE_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
const FIRMWARE_LOG_COPY: &str = "/run/sovereign/firmware-eventlog.bin";

/// How long a release on trial has for its runtime to report healthy before PID 1 gives up on
/// it and reboots (so that the boot loader falls back). Under TCG a healthy runtime reports in
/// well under a minute.
const TRIAL_DEADLINE: Duration = Duration::from_secs(180);

/// Set once PID 1 knows this boot is a release's trial: from then on a fatal refusal reboots
/// (the boot loader then falls back to the release before) instead of powering off.
static TRIAL: AtomicBool = AtomicBool::new(false);
/// The hardware watchdog, open while a trial boot is not yet blessed: should the kernel or PID 1
/// hang, nobody pets it, it resets the machine, and the boot loader — the trial's one try spent
/// — falls back to the release that was good.
static WATCHDOG: std::sync::Mutex<Option<File>> = std::sync::Mutex::new(None);
const WATCHDOG_DEVICE: &str = "/dev/watchdog";

/// A fatal refusal: what failed and why.
struct Fatal(String, String);

/// How a boot that did not fail ends.
enum Ending {
    /// The runtime stopped (power button, clean exit): power off.
    PowerOff,
    /// An update was installed: reboot into its trial.
    Reboot(String),
}

fn fatal(what: &str) -> impl FnOnce(String) -> Fatal + '_ {
    move |why| Fatal(what.to_string(), why)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sovereign-init: {line} [t={:.3}]", uptime());
    let _ = out.flush();
}

fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

fn power_off() -> ! {
    halt(RebootMode::RB_POWER_OFF)
}

fn halt(mode: RebootMode) -> ! {
    nix::unistd::sync();
    let _ = umount(sovereign_boot_contract::DATA_MOUNT);
    let _ = umount("/esp");
    nix::unistd::sync();
    let _ = reboot(mode);
    // reboot(2) does not return on success; if it failed there is nothing safe left to do.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    // A panic in PID 1 ends it (the kernel then panics and, with `panic=-1`, resets): never a
    // PID 1 that carries on after one of its threads died half-way.
    sovereign_confine::abort_on_panic();
    if std::process::id() != 1 {
        eprintln!("sovereign-init: refusing to run: this program is PID 1 of the Sovereign appliance, not a tool");
        std::process::exit(2);
    }
    match boot() {
        Ok(Ending::PowerOff) => say("powering off"),
        Ok(Ending::Reboot(why)) => {
            say(&format!("rebooting: {why}"));
            halt(RebootMode::RB_AUTOBOOT);
        }
        Err(Fatal(what, why)) => {
            say(&format!("FATAL: {what}: {why}"));
            if TRIAL.load(Ordering::SeqCst) {
                say(
                    "this boot was a release's trial: rebooting, so that the boot loader falls back to the release before it",
                );
                halt(RebootMode::RB_AUTOBOOT);
            }
        }
    }
    power_off();
}

fn mount_fs(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), Fatal> {
    let _ = fs::create_dir_all(target);
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(|e| Fatal(format!("mounting {fstype} on {target}"), e.to_string()))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn boot() -> Result<Ending, Fatal> {
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", noexec, None)?;
    let kernel_done = uptime();
    // Ctrl-Alt-Del must not reset the machine under a running runtime (no sync, no orderly
    // stop): the kernel now sends PID 1 SIGINT instead, which the supervisor logs and ignores.
    nix::sys::reboot::set_cad_enabled(false).map_err(|e| Fatal("disabling Ctrl-Alt-Del".into(), e.to_string()))?;
    // Blocked before any thread exists (threads inherit the mask); read through a signalfd by
    // the supervisor. The runtime starts with an empty mask (std resets it for children).
    ctrl_alt_del_signals().thread_block().map_err(|e| Fatal("blocking SIGINT".into(), e.to_string()))?;
    say(&format!("started (kernel hand-off at uptime {kernel_done:.3}s)"));
    mount_fs("sysfs", "/sys", "sysfs", noexec, None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, None)?;
    mount_fs("securityfs", "/sys/kernel/security", "securityfs", noexec, None)?;
    // The runtime (unprivileged) may pass through /run to PID 1's measurement log, no more.
    mount_fs("tmpfs", "/run", "tmpfs", noexec, Some("mode=0711,size=16m"))?;

    // 1. The signed manifest.
    let release_key = RELEASE_KEY
        .ok_or("this PID 1 was built without SOVEREIGN_RELEASE_PUBKEY".to_string())
        .and_then(|h| hex::decode(h).map_err(|e| e.to_string()))
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).map_err(|_| "not 32 bytes".to_string()))
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(|e| e.to_string()))
        .map_err(fatal("release key"))?;
    let manifest_bytes = fs::read(MANIFEST_PATH).map_err(|e| Fatal("reading the manifest".into(), e.to_string()))?;
    let signature =
        fs::read(MANIFEST_SIG_PATH).map_err(|e| Fatal("reading the manifest signature".into(), e.to_string()))?;
    let manifest = Manifest::verify(&manifest_bytes, &signature, &release_key)
        .map_err(|e| Fatal("manifest".into(), e.to_string()))?;
    say(&format!("manifest version {} verified with the release key", manifest.version));

    // 2. Every node of the initramfs against the manifest: first its shape, then every file's
    //    bytes on all CPUs. 3. The modules load, in order, on a thread of their own, each as
    //    soon as its own bytes are proven; nothing touches the TPM before every file matched.
    let root = Path::new("/");
    let survey = sovereign_init::audit::survey(root, &manifest);
    if let Some(first) = survey.problems.first() {
        return Err(Fatal(
            "initramfs does not match the manifest".into(),
            format!("{first} ({} problems)", survey.problems.len()),
        ));
    }
    let files = sovereign_init::audit::hashing_order(&manifest, survey.files);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_HASHING_THREADS));
    let mut modules = ModuleLoader::start(manifest.modules.clone(), load_module);
    let Ok(problems) = sovereign_init::audit::hash_files(root, &files, workers, |path| {
        modules.verified(path);
        Ok::<(), std::convert::Infallible>(())
    });
    modules.no_more_verified();
    if let Some(first) = problems.first() {
        return Err(Fatal(
            "initramfs does not match the manifest".into(),
            format!("{first} ({} problems)", problems.len()),
        ));
    }
    say(&format!("{} initramfs nodes match the manifest (hashed on {workers} threads)", manifest.files.len()));
    let config_bytes =
        fs::read(&manifest.runtime_config).map_err(|e| Fatal("reading the runtime config".into(), e.to_string()))?;
    let config: RuntimeConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| Fatal("runtime config".into(), e.to_string()))?;

    // 4. Measure the manifest and the configuration into the project PCR.
    let mut tpm = open_tpm()?;
    fs::create_dir_all("/run/sovereign").map_err(|e| Fatal("creating /run/sovereign".into(), e.to_string()))?;
    let mut log = MeasurementLog::new();
    for (kind, bytes, what) in [
        (MeasurementKind::Manifest, &manifest_bytes, format!("manifest v{}", manifest.version)),
        (MeasurementKind::RuntimeConfig, &config_bytes, "runtime config".to_string()),
    ] {
        let m = Measurement {
            pcr: PROJECT_PCR,
            kind,
            digest: sovereign_measured_boot::Sha256Digest(sha256(bytes)),
            description: what,
        };
        tpm.measure(m, &mut log).map_err(|e| Fatal("extending PCR 15".into(), e.to_string()))?;
        fs::write(MEASUREMENT_LOG, log.to_bytes())
            .map_err(|e| Fatal("writing the measurement log".into(), e.to_string()))?;
    }

    say("manifest and runtime config measured into PCR 15");
    // 5. The signed PCR policy from the ESP.
    let compiled_key = PCR_POLICY_KEY
        .ok_or("this PID 1 was built without SOVEREIGN_PCR_POLICY_PUBKEY".to_string())
        .and_then(|h| hex::decode(h).map_err(|e| e.to_string()))
        .and_then(|b| p256::ecdsa::VerifyingKey::from_sec1_bytes(&b).map_err(|e| e.to_string()))
        .map_err(fatal("PCR-policy key"))?;
    let trusted_keys = trusted_policy_keys(compiled_key, &config)?;
    // The ESP's modules (vfat and its code pages) may still be loading: mount once they are in.
    modules.retry_until_loaded(|| {
        mount_fs(&config.esp_device, "/esp", "vfat", MsFlags::MS_RDONLY | noexec, Some("codepage=437,iocharset=ascii"))
    })?;
    let policy_bytes = fs::read(format!("/esp/{}", slots::policy_path(manifest.version)));
    let reference = read_small(&format!("/esp/{}", slots::reference_path(manifest.version)))
        .and_then(|v| read_small(&format!("/esp/{}", slots::reference_sig_path(manifest.version))).map(|s| (v, s)));
    let boot_slots =
        sovereign_init::esp::survey(Path::new("/esp")).and_then(|survey| BootSlots::of(&survey, manifest.version));
    let _ = umount("/esp");
    match &boot_slots {
        Ok(b) => {
            TRIAL.store(b.trial, Ordering::SeqCst);
            let trial = if b.trial { "on trial (blessed once its runtime is healthy)" } else { "good" };
            say(&format!("boot slot: release v{} {trial}; {} slots on the ESP", manifest.version, b.slots.len()));
            if let Some(failed) = b.failed_update {
                say(&format!(
                    "update to release v{failed} FAILED its trial boot: the boot loader fell back to v{}",
                    manifest.version
                ));
            }
            let report = serde_json::to_vec_pretty(b).map_err(|e| Fatal("boot slot report".into(), e.to_string()))?;
            fs::write(slots::RUN_BOOT_SLOTS_PATH, report)
                .map_err(|e| Fatal(format!("writing {}", slots::RUN_BOOT_SLOTS_PATH), e.to_string()))?;
        }
        // Booted some other way than from a slot (by hand, from another path): it runs, but is
        // never blessed and installs no update (nothing to fall back to).
        Err(why) => say(&format!("boot slot unknown ({why}): no update will be installed from this boot")),
    }
    if TRIAL.load(Ordering::SeqCst) {
        arm_watchdog()?;
    }
    hand_over_reference_values(reference, &release_key, &manifest_bytes)?;
    let policy_bytes =
        policy_bytes.map_err(|e| Fatal("reading the signed PCR policy from the ESP".into(), e.to_string()))?;
    let policy =
        SignedPcrPolicy::from_json(&policy_bytes).map_err(|e| Fatal("signed PCR policy".into(), e.to_string()))?;
    policy.verify(&trusted_keys.current).map_err(|e| Fatal("signed PCR policy".into(), e.to_string()))?;
    if let Some((retiring, _)) = &trusted_keys.retiring {
        policy
            .bridged()
            .ok_or("this release rotates the PCR-policy key but its signed PCR policy carries no bridge signature by the retiring key".to_string())
            .and_then(|bridged| bridged.verify(retiring).map_err(|e| format!("bridge signature: {e}")))
            .map_err(fatal("signed PCR policy"))?;
    }
    if policy.release_version != manifest.version {
        return Err(Fatal(
            "signed PCR policy".into(),
            format!("it is for release v{}, the manifest is v{}", policy.release_version, manifest.version),
        ));
    }
    // Public PCR values, for the record — before the release check, so that a refused boot
    // shows them too (firmware profile: `cargo xtask firmware-profile`, which records the
    // firmware's PCRs also from a boot with Secure Boot off, where this image is refused).
    if let Ok(all) = tpm.pcr_read(&sovereign_measured_boot::PcrSelection::new(0..=15).map_err(fatal("PCR selection"))?)
    {
        for (i, v) in &all.0 {
            say(&format!("pcr {i} = {v}"));
        }
    }
    let current = tpm.pcr_read(&policy.selection()).map_err(|e| Fatal("reading PCRs".into(), e.to_string()))?;
    let proc_cmdline =
        fs::read_to_string("/proc/cmdline").map_err(|e| Fatal("reading /proc/cmdline".into(), e.to_string()))?;
    if let Some(why) = sovereign_init::release::refusal(&policy.pcrs, &current, &proc_cmdline, &manifest.cmdline) {
        return Err(Fatal("measured boot does not match the signed release".into(), why));
    }

    // Every module is in before the node keys are touched: with Secure Boot on, IMA's
    // architecture policy measures each module load into PCR 10, and any PCR extended while the
    // unseal's policy session is open voids it (TPM_RC_PCR_CHANGED); the PCRs handed to the
    // runtime must be final too.
    let loaded = modules.finish().map_err(|why| Fatal("kernel modules".into(), why))?;
    say(&format!("{loaded} modules loaded"));
    // 6. The node keys.
    // The anti-rollback floor must exist before any release policy can unseal (each checks
    // it with PolicyNV); the TPM, not this program, refuses a release older than it.
    let floor = tpm.floor_provision().map_err(|e| Fatal("the anti-rollback floor".into(), e.to_string()))?;
    say(&format!("anti-rollback floor v{floor}; this release is v{}", policy.release_version));
    let generation =
        tpm.key_generation_provision().map_err(|e| Fatal("the PCR-policy key generation".into(), e.to_string()))?;
    let (keys, retirement) = unseal_or_provision(&mut tpm, &config, &trusted_keys, &policy, generation)?;
    pet_watchdog();
    // 7. Close the unseal window for the rest of this boot.
    tpm.measure(Measurement::separator(), &mut log)
        .map_err(|e| Fatal("extending the separator".into(), e.to_string()))?;
    fs::write(MEASUREMENT_LOG, log.to_bytes())
        .map_err(|e| Fatal("writing the measurement log".into(), e.to_string()))?;
    say("unseal window closed (separator extended into PCR 15)");
    // What this boot established, handed to the runtime with the keys: read from the TPM now,
    // after the separator, so the runtime can check them against its own reading.
    let after = tpm
        .pcr_read(&sovereign_measured_boot::PcrSelection::new(0..=15).map_err(fatal("PCR selection"))?)
        .map_err(|e| Fatal("reading PCRs after the separator".into(), e.to_string()))?;
    let facts = BootFacts {
        measured_boot: current == policy.pcrs,
        image_version: manifest.version,
        pcrs: after.0.iter().map(|(i, v)| (*i, v.to_hex())).collect(),
        unseal_window_closed: after.0.get(&PROJECT_PCR) != current.0.get(&PROJECT_PCR),
    };
    drop(tpm);
    let handover = handover(&keys, facts)?;

    // The data partition (audit log, replay store, encrypted artifacts): never executable.
    mount_fs(&config.data_device, sovereign_boot_contract::DATA_MOUNT, "ext4", noexec, Some("errors=remount-ro"))?;
    say(&format!("data partition {} mounted on {} (noexec)", config.data_device, sovereign_boot_contract::DATA_MOUNT));

    // The network the signed configuration names: loopback, the interfaces this node has
    // among those it lists, the routes. No mesh configured: no interface is touched.
    match &config.mesh {
        Some(mesh) => {
            mesh.check().map_err(fatal("runtime configuration"))?;
            for line in sovereign_init::network::configure(mesh).map_err(fatal("network"))? {
                say(&format!("network: {line}"));
            }
        }
        None => say("network: none configured (no interface brought up)"),
    }

    // 8. Lock down.
    lockdown()?;
    say("locked down: module loading and kexec disabled, root read-only, writable mounts noexec");

    // 9. Confine what the runtime will inherit, give it its devices and files, run and
    //    supervise it.
    confine_children(&config)?;
    let ctrl_alt_del = watch_ctrl_alt_del()?;
    let power_button = watch_power_button();
    let updates = Updates {
        running: manifest.version,
        slots: boot_slots.ok(),
        esp_device: config.esp_device.clone(),
        update_root: config.update_root.clone(),
        release_key,
        retirement,
        state_device: config.state_device.clone(),
    };
    let supervisor = Supervisor { runtime: &manifest.runtime, handover: &handover, max_restarts: config.max_restarts };
    supervise(&supervisor, updates, &power_button, &ctrl_alt_del, kernel_done)
}

/// What PID 1 needs to bless this boot's release, raise the floor and install an update.
struct Updates {
    running: u64,
    /// This boot's slot (`None`: booted from no slot).
    slots: Option<BootSlots>,
    esp_device: String,
    /// The update root (hex), from the signed runtime configuration.
    update_root: String,
    release_key: ed25519_dalek::VerifyingKey,
    /// A PCR-policy key rotation to finish once this release is good.
    retirement: Option<Retirement>,
    state_device: String,
}

/// Once the release is good: raise the TPM's key generation to `generation` (every copy of the
/// node keys sealed below it dies), then keep only `keep` in the key area.
struct Retirement {
    generation: u64,
    keep: sovereign_measured_boot::sealed::SealedBlob,
}

/// The PCR-policy keys this boot trusts: the one PID 1 was built with, or — when the signed
/// runtime configuration carries a rotation that starts or ends at it, signed by the retiring
/// key and the update root — the rotation's new key, with the retiring one as the bridge.
fn trusted_policy_keys(compiled: p256::ecdsa::VerifyingKey, config: &RuntimeConfig) -> Result<TrustedKeys, Fatal> {
    let Some(rotation) = &config.pcr_policy_rotation else {
        return Ok(TrustedKeys { current: PolicyKey::new(compiled), retiring: None });
    };
    let root = sovereign_update_root(&config.update_root).map_err(fatal("PCR-policy key rotation"))?;
    let verified = rotation.verify(&root).map_err(|e| Fatal("PCR-policy key rotation".into(), e.to_string()))?;
    if verified.from != compiled && verified.to != compiled {
        return Err(Fatal(
            "PCR-policy key rotation".into(),
            "it neither starts nor ends at the PCR-policy key this PID 1 was built with".into(),
        ));
    }
    say(&format!(
        "PCR-policy key rotation: this release's policies are signed by the new key; node keys sealed to the retiring key are resealed at key generation {}",
        verified.generation
    ));
    Ok(TrustedKeys {
        current: PolicyKey::new(verified.to),
        retiring: Some((PolicyKey::new(verified.from), verified.generation)),
    })
}

impl Updates {
    fn mount_esp(&self) -> Result<(), String> {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some(self.esp_device.as_str()), "/esp", Some("vfat"), flags, Some("codepage=437,iocharset=ascii"))
            .map_err(|e| format!("mounting the ESP {} read-write: {e}", self.esp_device))
    }

    fn unmount_esp() -> Result<(), String> {
        nix::unistd::sync();
        umount("/esp").map_err(|e| format!("unmounting the ESP: {e}"))
    }

    /// The runtime is healthy: a release on trial is blessed (its slot renamed), and then — only
    /// then — the TPM's anti-rollback floor moves to this release. A good release raises it too
    /// (a no-op unless a cut came between a blessing and the raise). Failures are said, not
    /// fatal: the node keeps running, its trial unblessed or the floor lower.
    fn healthy(&mut self) {
        if self.slots.as_ref().is_some_and(|s| s.trial) {
            let running = self.running;
            let blessed = self.mount_esp_for(|esp| {
                let survey = sovereign_init::esp::survey(esp)?;
                let slot = survey.slot(running).ok_or(format!("release v{running} has no slot any more"))?;
                sovereign_init::esp::bless(esp, slot)
            });
            let Some(slots) = self.slots.as_mut() else { return };
            match blessed {
                Ok(file) => {
                    slots.trial = false;
                    if let Some(slot) = slots.slots.iter_mut().find(|s| s.version == self.running) {
                        slot.file.clone_from(&file);
                        slot.state = sovereign_boot_contract::slots::SlotState::Good;
                    }
                    TRIAL.store(false, Ordering::SeqCst);
                    say(&format!("release v{} blessed: its runtime is healthy; slot {file}", self.running));
                    disarm_watchdog();
                    if let Ok(report) = serde_json::to_vec_pretty(&*slots) {
                        let _ = fs::write(slots::RUN_BOOT_SLOTS_PATH, report);
                    }
                }
                Err(why) => {
                    say(&format!("release v{} NOT blessed ({why}): the floor stays where it is", self.running));
                    return;
                }
            }
        }
        let raised = Tpm::open(TCTI)
            .map_err(|e| e.to_string())
            .and_then(|mut tpm| tpm.floor_raise(self.running).map_err(|e| e.to_string()));
        match raised {
            Ok(floor) => say(&format!("release v{} good: anti-rollback floor at v{floor}", self.running)),
            Err(e) => {
                say(&format!("anti-rollback floor NOT raised to v{} (older releases still unseal): {e}", self.running))
            }
        }
        if let Some(retirement) = self.retirement.take() {
            match self.retire(&retirement) {
                Ok(()) => say(&format!(
                    "PCR-policy key generation at {}: copies of the node keys sealed to the retired key are refused by the TPM; the key area holds the new key's copy alone",
                    retirement.generation
                )),
                Err(e) => say(&format!(
                    "PCR-policy key rotation NOT finished (the retiring key's copy still unseals; retried at the next good boot): {e}"
                )),
            }
        }
    }

    /// Finishes a rotation: the TPM's key generation first (from then on the retired key's
    /// copies are dead), then the key area rewritten with the new copy alone (a cut between
    /// the two leaves a dead copy beside it, dropped at the next good boot).
    fn retire(&self, retirement: &Retirement) -> Result<(), String> {
        Tpm::open(TCTI)
            .and_then(|mut tpm| tpm.key_generation_raise(retirement.generation))
            .map_err(|e| format!("raising the key generation: {e}"))?;
        let area = read_area(&self.state_device).map_err(|Fatal(what, why)| format!("{what}: {why}"))?;
        let KeyArea::Sealed(copy) = state::decode(&area)? else {
            return Err("the key area reads as fresh".into());
        };
        let (offset, sequence) = copy.next_write();
        write_key_copy(&self.state_device, offset, sequence, std::slice::from_ref(&retirement.keep))
    }

    fn mount_esp_for<T>(&self, f: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
        self.mount_esp()?;
        let result = f(Path::new("/esp"));
        let unmounted = Self::unmount_esp();
        let value = result?;
        unmounted.map(|()| value)
    }

    /// Installs the update bundle the runtime staged: read from the data partition (the
    /// runtime's, so verified again here, against this image's update root, release key, the
    /// TPM's floor and the running release), then written next to the running slot, on trial.
    fn install_staged(&self) -> Result<u64, String> {
        use sovereign_boot_contract::DATA_MOUNT;
        let slots = self.slots.as_ref().ok_or("this boot came from no slot: nothing to fall back to")?;
        if slots.trial {
            return Err(format!("release v{} is still on trial", self.running));
        }
        let root = sovereign_update_root(&self.update_root)?;
        let path = Path::new(DATA_MOUNT).join(slots::STAGED_BUNDLE);
        let bytes = read_at_most(&path, sovereign_update::MAX_BUNDLE_BYTES)?;
        let record = read_at_most(&Path::new(DATA_MOUNT).join(slots::STAGED_RECORD), 1 << 20)?;
        let named = sovereign_init::staged::named_release(&record, &bytes)?;
        let floor = Tpm::open(TCTI)
            .and_then(|mut tpm| tpm.floor())
            .map_err(|e| format!("reading the anti-rollback floor: {e}"))?
            .unwrap_or(0);
        let trust = sovereign_update::Trust {
            root,
            root_serial: 0,
            keyset_serial: 0,
            floor: floor.max(self.running),
            platform: sovereign_update::PLATFORM_QEMU_X86_64.into(),
            release_key: self.release_key,
        };
        let verified = sovereign_update::verify(&bytes, &trust).map_err(|e| format!("the staged bundle: {e}"))?;
        if verified.release_version != named {
            return Err(format!("the staged bundle is v{}, its record says v{named}", verified.release_version));
        }
        let file = |name: &str| verified.files.get(name).map(Vec::as_slice).ok_or(format!("the bundle has no {name}"));
        let release = sovereign_init::esp::Release {
            version: verified.release_version,
            uki: file("uki.efi")?,
            policy: file("pcr-policy.json")?,
            reference: (file("reference-values.json")?, file("reference-values.sig")?),
        };
        self.mount_esp_for(|esp| {
            let survey = sovereign_init::esp::survey(esp)?;
            let plan = survey.install_plan(self.running, release.version)?;
            let version = release.version;
            sovereign_init::esp::install(esp, &plan, &release, &mut |step| {
                say(&format!("installing v{version}: {step}"))
            })
        })?;
        // Installed: the staged copy has done its job.
        for done in [slots::STAGED_RECORD, slots::STAGED_BUNDLE] {
            let _ = fs::remove_file(Path::new(DATA_MOUNT).join(done));
        }
        Ok(verified.release_version)
    }
}

fn sovereign_update_root(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    hex::decode(hex_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .ok_or("the runtime configuration names no valid update root: this image takes no updates".into())
}

/// Reads a file of at most `max` bytes.
fn read_at_most(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// Loads one module whose file has been verified (the module loader's job).
/// The parameters PID 1 loads a module with (none for most). The trial's watchdog fires after
/// 60 s without a sign of life: a slow boot under emulation or on a busy host stalls for
/// seconds, never for a minute, and a hang is still reset within one.
fn module_parameters(name: &str) -> &'static str {
    match name {
        "i6300esb" => "heartbeat=60",
        _ => "",
    }
}

fn load_module(m: &sovereign_boot_contract::manifest::ModuleEntry) -> Result<(), String> {
    let file = File::open(&m.path).map_err(|e| format!("opening {}: {e}", m.path))?;
    let parameters = CString::new(module_parameters(&m.name)).map_err(|e| e.to_string())?;
    match nix::kmod::finit_module(&file, &parameters, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        // A CPU-specific accelerator (crc32c-intel under TCG) refuses hardware it cannot
        // drive; the generic implementation the manifest also lists serves instead.
        Err(nix::errno::Errno::ENODEV) => {
            say(&format!("module {}: no device for it (ENODEV); skipped", m.name));
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a file of at most 1 MiB (what the ESP holds beside the UKI is small).
fn read_small(path: &str) -> Result<Vec<u8>, String> {
    read_at_most(Path::new(path), 1 << 20)
}

/// The release's reference values from the ESP, for the runtime's compliance bundles: handed
/// over only when signed by the release key for this boot's manifest. Without them the node
/// still boots (its keys are the PCR policy's business), and says so: its bundles then carry
/// none, which an auditor's `sovereign verify` fails by name.
fn hand_over_reference_values(
    found: Result<(Vec<u8>, Vec<u8>), String>,
    release_key: &ed25519_dalek::VerifyingKey,
    manifest: &[u8],
) -> Result<(), Fatal> {
    let (values, signature) = match found {
        Ok(f) => f,
        Err(why) => {
            say(&format!("no release reference values for the runtime's bundles: {why}"));
            return Ok(());
        }
    };
    if let Some(why) = sovereign_init::release::reference_values_refusal(&values, &signature, release_key, manifest) {
        say(&format!("the reference values on the ESP are not handed to the runtime: {why}"));
        return Ok(());
    }
    for (path, bytes) in [
        (sovereign_boot_contract::RUN_REFERENCE_PATH, &values),
        (sovereign_boot_contract::RUN_REFERENCE_SIG_PATH, &signature),
    ] {
        fs::write(path, bytes).map_err(|e| Fatal(format!("writing {path}"), e.to_string()))?;
    }
    say("release reference values verified (release key, this manifest) and handed to the runtime");
    Ok(())
}

/// Arms the hardware watchdog for a trial boot. Without one a hang would never fall back, so a
/// trial refuses to go on (its FATAL reboots, and the loader falls back).
fn arm_watchdog() -> Result<(), Fatal> {
    let device = OpenOptions::new().write(true).open(WATCHDOG_DEVICE).map_err(|e| {
        Fatal(
            "trial boot".into(),
            format!("no hardware watchdog ({WATCHDOG_DEVICE}: {e}): a hang could never fall back"),
        )
    })?;
    *WATCHDOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(device);
    say(
        "hardware watchdog armed for the trial: should this boot hang, the machine resets and the boot loader falls back",
    );
    Ok(())
}

/// Tells the watchdog PID 1 is alive (nothing when none is armed).
fn pet_watchdog() {
    if let Some(device) = WATCHDOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
        let _ = device.write_all(b"\0");
    }
}

/// Disarms the watchdog (the magic close: 'V', then close).
fn disarm_watchdog() {
    if let Some(mut device) = WATCHDOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        match device.write_all(b"V") {
            Ok(()) => say("hardware watchdog disarmed: the trial is over"),
            Err(e) => say(&format!("hardware watchdog NOT disarmed ({e}): it will reset the machine")),
        }
    }
}

fn open_tpm() -> Result<Tpm, Fatal> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Tpm::open(TCTI) {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() > deadline => return Err(Fatal("opening the TPM".into(), e.to_string())),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn read_area(device: &str) -> Result<Vec<u8>, Fatal> {
    let mut f =
        File::open(device).map_err(|e| Fatal(format!("opening the state partition {device}"), e.to_string()))?;
    let mut area = vec![0u8; 2 * state::AREA];
    f.read_exact(&mut area).map_err(|e| Fatal(format!("reading the state partition {device}"), e.to_string()))?;
    Ok(area)
}

/// Writes one key-area copy at `offset` of the state partition and syncs it.
fn write_key_copy(
    device: &str,
    offset: u64,
    sequence: u64,
    blobs: &[sovereign_measured_boot::sealed::SealedBlob],
) -> Result<(), String> {
    let bytes = state::encode(sequence, blobs)?;
    let mut f = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| format!("opening the state partition {device} for writing: {e}"))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| format!("state partition: {e}"))?;
    f.write_all(&bytes).map_err(|e| format!("writing the sealed keys: {e}"))?;
    f.sync_all().map_err(|e| format!("syncing the sealed keys: {e}"))
}

/// The authPolicy of each sealed copy.
fn auth_policies(blobs: &[sovereign_measured_boot::sealed::SealedBlob]) -> Result<Vec<[u8; 32]>, Fatal> {
    blobs.iter().map(|b| state::auth_policy(&b.public).map_err(fatal("sealed object"))).collect()
}

/// Seals the node keys to `key` at `generation` and checks that the sealed object says so
/// (the TPM releases it only under PolicyAuthorize(key) and the generation's PolicyNV).
fn seal_node_keys(
    tpm: &mut Tpm,
    secret: &[u8],
    key: &PolicyKey,
    generation: u64,
) -> Result<sovereign_measured_boot::sealed::SealedBlob, Fatal> {
    let sealed = tpm
        .seal_to_policy_key(secret, key, generation)
        .map_err(|e| Fatal("sealing the node keys".into(), e.to_string()))?;
    let expected = key.sealing_policy(generation).map_err(|e| Fatal("sealing the node keys".into(), e.to_string()))?;
    if state::auth_policy(&sealed.public).map_err(fatal("sealed object"))? != expected.0 {
        return Err(Fatal(
            "sealing the node keys".into(),
            "the sealed object's policy is not PolicyAuthorize(PCR-policy key) at this key generation".into(),
        ));
    }
    Ok(sealed)
}

fn unseal_or_provision(
    tpm: &mut Tpm,
    config: &RuntimeConfig,
    keys: &TrustedKeys,
    policy: &SignedPcrPolicy,
    generation: u64,
) -> Result<(Zeroizing<Vec<u8>>, Option<Retirement>), Fatal> {
    let area = read_area(&config.state_device)?;
    let copy = match state::decode(&area).map_err(fatal("state partition"))? {
        KeyArea::Sealed(copy) => copy,
        KeyArea::Fresh => {
            say("first boot: generating the node identity and data key (TPM RNG mixed with the kernel's)");
            let mut secret = Zeroizing::new(tpm.random(64).map_err(|e| Fatal("TPM random".into(), e.to_string()))?);
            let mut kernel = Zeroizing::new([0u8; 64]);
            OsRng.try_fill_bytes(kernel.as_mut()).map_err(|e| Fatal("kernel random".into(), e.to_string()))?;
            if secret.len() != 64 {
                return Err(Fatal("TPM random".into(), format!("{} bytes instead of 64", secret.len())));
            }
            for (s, k) in secret.iter_mut().zip(kernel.iter()) {
                *s ^= k;
            }
            // Checked by its authPolicy instead of unsealing it here (that would cost a second
            // storage-key derivation on every first boot).
            let sealed = seal_node_keys(tpm, &secret, &keys.current, generation)?;
            // The first copy goes beside the factory marker: a cut leaves the marker whole.
            write_key_copy(&config.state_device, state::AREA as u64, 1, &[sealed])
                .map_err(fatal("storing the sealed keys"))?;
            say(&format!(
                "node keys sealed to the release's PCR-policy key (key generation {generation}) and stored on the state partition"
            ));
            return Ok((secret, None));
        }
    };
    let policies = auth_policies(&copy.blobs)?;
    let opener = sealing::choose(&policies, keys, generation).map_err(fatal("unsealing the node keys"))?;
    let opened = &copy.blobs[opener.index];
    let (key, presented) = match (opener.role, &keys.retiring) {
        (KeyRole::Retiring, Some((retiring, _))) => {
            let bridged =
                policy.bridged().ok_or(Fatal("unsealing the node keys".into(), "no bridge signature".into()))?;
            (retiring, bridged)
        }
        _ => (&keys.current, policy.clone()),
    };
    let whose = if opener.role == KeyRole::Retiring { "the retiring" } else { "this release's" };
    say(&format!(
        "unsealing the node keys with the signed PCR policy ({whose} PCR-policy key, key generation {})",
        opener.generation
    ));
    let secret = Zeroizing::new(
        tpm.unseal_with_signed_policy(opened, key, &presented, opener.generation)
            .map_err(|e| Fatal("unsealing the node keys".into(), e.to_string()))?,
    );
    if secret.len() != 64 {
        return Err(Fatal("unsealing the node keys".into(), format!("{} bytes instead of 64", secret.len())));
    }
    let mut blobs = copy.blobs.clone();
    if let (KeyRole::Retiring, Some((_, to_generation))) = (opener.role, &keys.retiring) {
        if *to_generation <= opener.generation {
            return Err(Fatal(
                "PCR-policy key rotation".into(),
                format!(
                    "its generation {to_generation} is not above the retiring key's sealed generation {}: the old copy would outlive it",
                    opener.generation
                ),
            ));
        }
        let resealed = seal_node_keys(tpm, &secret, &keys.current, *to_generation)?;
        blobs = sealing::after_rotation(opened, resealed);
        let (offset, sequence) = copy.next_write();
        write_key_copy(&config.state_device, offset, sequence, &blobs).map_err(fatal("storing the resealed keys"))?;
        say(&format!(
            "PCR-policy key rotation: node keys resealed to the new key at key generation {to_generation}; the retiring key's copy is kept until this release is good"
        ));
    }
    let policies = auth_policies(&blobs)?;
    let retirement = sealing::retirement(&blobs, &policies, keys, generation)
        .map(|(generation, keep)| Retirement { generation, keep });
    Ok((secret, retirement))
}

/// The runtime's standard input: the 64 unsealed key bytes and this boot's facts.
fn handover(keys: &[u8], facts: BootFacts) -> Result<Zeroizing<Vec<u8>>, Fatal> {
    let (Some(seed), Some(data)) = (keys.get(..32), keys.get(32..64)) else {
        return Err(Fatal("handing over the keys".into(), format!("{} key bytes instead of 64", keys.len())));
    };
    let mut identity_seed = Zeroizing::new([0u8; 32]);
    identity_seed.copy_from_slice(seed);
    let mut data_key = Zeroizing::new([0u8; 32]);
    data_key.copy_from_slice(data);
    Ok(Handover { identity_seed, data_key, facts }.encode())
}

fn lockdown() -> Result<(), Fatal> {
    for (file, what) in
        [("/proc/sys/kernel/modules_disabled", "module loading"), ("/proc/sys/kernel/kexec_load_disabled", "kexec")]
    {
        fs::write(file, "1").map_err(|e| Fatal(format!("disabling {what}"), e.to_string()))?;
    }
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| Fatal("remounting the root read-only".into(), e.to_string()))?;
    Ok(())
}

/// Watches every input device for the ACPI power button (EV_KEY / KEY_POWER).
fn watch_power_button() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    if let Ok(entries) = fs::read_dir("/dev/input") {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("event") {
                continue;
            }
            let tx = tx.clone();
            let path = e.path();
            std::thread::spawn(move || {
                let Ok(mut f) = File::open(&path) else { return };
                let mut ev = [0u8; 24];
                while f.read_exact(&mut ev).is_ok() {
                    let kind = u16::from_ne_bytes([ev[16], ev[17]]);
                    let code = u16::from_ne_bytes([ev[18], ev[19]]);
                    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                    if kind == 1 && code == 116 && value == 1 {
                        let _ = tx.send(());
                    }
                }
            });
        }
    }
    rx
}

fn ctrl_alt_del_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(Signal::SIGINT);
    set
}

/// The kernel's Ctrl-Alt-Del notice (SIGINT to PID 1, since Ctrl-Alt-Del is disabled).
fn watch_ctrl_alt_del() -> Result<SignalFd, Fatal> {
    SignalFd::with_flags(&ctrl_alt_del_signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Fatal("watching for Ctrl-Alt-Del".into(), e.to_string()))
}

/// What the runtime inherits and may touch. PID 1 drops the capability bounding set and sets
/// `no_new_privs` on itself (both inherited, neither limits PID 1's own capabilities); the
/// runtime's uid gets the TPM resource manager, its control port, the data partition's files
/// and read access to PID 1's measurement log and a copy of the firmware event log. Nothing
/// else on the machine is its.
fn confine_children(config: &RuntimeConfig) -> Result<(), Fatal> {
    let (uid, gid) = (Some(RUNTIME_UID), Some(RUNTIME_GID));
    let give = |path: &Path, mode: u32| -> Result<(), Fatal> {
        std::os::unix::fs::chown(path, uid, gid)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .map_err(|e| Fatal(format!("giving {} to the runtime", path.display()), e.to_string()))
    };
    give(Path::new("/dev/tpmrm0"), 0o600)?;
    give_nvidia_devices(&give)?;
    match sovereign_runtime_port(&config.control_port) {
        Some(port) => give(&port, 0o600)?,
        None => {
            say(&format!("no virtio-serial port named {}: the runtime will have no control API", config.control_port))
        }
    }
    give_tree(Path::new(sovereign_boot_contract::DATA_MOUNT), &give)?;
    // The one place under /run the runtime writes: it says there that it is healthy.
    fs::create_dir_all(slots::RUN_RUNTIME_DIR)
        .map_err(|e| Fatal(format!("creating {}", slots::RUN_RUNTIME_DIR), e.to_string()))?;
    give(Path::new(slots::RUN_RUNTIME_DIR), 0o700)?;
    // Read-only for the runtime: the firmware event log (securityfs keeps it root-only) and
    // PID 1's measurement log, both owned by root, group-readable by the runtime.
    let firmware_log = fs::read(FIRMWARE_LOG)
        .map_err(|e| Fatal(format!("reading the firmware event log {FIRMWARE_LOG}"), e.to_string()))?;
    fs::write(FIRMWARE_LOG_COPY, firmware_log)
        .map_err(|e| Fatal(format!("writing {FIRMWARE_LOG_COPY}"), e.to_string()))?;
    if Path::new(slots::RUN_BOOT_SLOTS_PATH).exists() {
        std::os::unix::fs::chown(slots::RUN_BOOT_SLOTS_PATH, Some(0), gid)
            .and_then(|()| fs::set_permissions(slots::RUN_BOOT_SLOTS_PATH, fs::Permissions::from_mode(0o640)))
            .map_err(|e| Fatal(format!("letting the runtime read {}", slots::RUN_BOOT_SLOTS_PATH), e.to_string()))?;
    }
    for (path, mode) in [("/run/sovereign", 0o750), (MEASUREMENT_LOG, 0o640), (FIRMWARE_LOG_COPY, 0o640)] {
        std::os::unix::fs::chown(path, Some(0), gid)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .map_err(|e| Fatal(format!("letting the runtime read {path}"), e.to_string()))?;
    }
    let dropped = sovereign_confine::drop_bounding_set()
        .map_err(|e| Fatal("dropping the capability bounding set".into(), e.to_string()))?;
    sovereign_confine::set_no_new_privs().map_err(|e| Fatal("setting no_new_privs".into(), e.to_string()))?;
    say(&format!(
        "runtime confinement: uid/gid {RUNTIME_UID}/{RUNTIME_GID}, {dropped} capabilities dropped from the bounding set, no_new_privs; it installs its seccomp filter before reading input"
    ));
    Ok(())
}

/// When the image carries the NVIDIA driver and it registered its devices (its modules loaded
/// above, before module loading was disabled), makes the device nodes `nvidia-modprobe` would
/// (the appliance has no such helper) and gives them to the runtime. Nothing without a driver.
fn give_nvidia_devices(give: &dyn Fn(&Path, u32) -> Result<(), Fatal>) -> Result<(), Fatal> {
    let Ok(gpus) = fs::read_dir("/proc/driver/nvidia/gpus") else { return Ok(()) };
    let gpus = gpus.filter_map(Result::ok).count();
    let devices = fs::read_to_string("/proc/devices")
        .map_err(|e| Fatal("reading /proc/devices for the NVIDIA driver's devices".into(), e.to_string()))?;
    let nodes = sovereign_init::devices::nvidia_nodes(&devices, gpus);
    for node in &nodes {
        let dev = nix::sys::stat::makedev(node.major, node.minor);
        match nix::sys::stat::mknod(
            node.path.as_str(),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            dev,
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Fatal(format!("making {}", node.path), e.to_string())),
        }
        give(Path::new(&node.path), 0o600)?;
    }
    say(&format!("NVIDIA driver: {gpus} GPU(s); {} device nodes made for the runtime", nodes.len()));
    Ok(())
}

/// Gives every file and directory under `root` (not following symlinks) to the runtime.
fn give_tree(root: &Path, give: &dyn Fn(&Path, u32) -> Result<(), Fatal>) -> Result<(), Fatal> {
    let meta = fs::symlink_metadata(root).map_err(|e| Fatal(format!("reading {}", root.display()), e.to_string()))?;
    if meta.is_dir() {
        give(root, 0o700)?;
        let entries = fs::read_dir(root).map_err(|e| Fatal(format!("listing {}", root.display()), e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| Fatal(format!("listing {}", root.display()), e.to_string()))?;
            give_tree(&entry.path(), give)?;
        }
        Ok(())
    } else if meta.is_file() {
        give(root, 0o600)
    } else {
        Err(Fatal(
            format!("the data partition holds {}", root.display()),
            "neither a file nor a directory; refusing to hand it to the runtime".into(),
        ))
    }
}

/// `/dev/vportNpM` of the virtio-serial port called `name`.
fn sovereign_runtime_port(name: &str) -> Option<std::path::PathBuf> {
    fs::read_dir("/sys/class/virtio-ports").ok()?.flatten().find_map(|e| {
        let port = fs::read_to_string(e.path().join("name")).ok()?;
        (port.trim() == name).then(|| Path::new("/dev").join(e.file_name()))
    })
}

fn start_runtime(path: &str, handover: &[u8]) -> Result<Child, Fatal> {
    // std drops the supplementary groups (setgroups(0)) before setgid/setuid; leaving uid 0
    // clears every capability, and the empty bounding set and no_new_privs PID 1 set keep
    // them cleared across the exec.
    let mut child = Command::new(path)
        .env_clear()
        .uid(RUNTIME_UID)
        .gid(RUNTIME_GID)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal(format!("starting the runtime {path}"), e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or(Fatal("runtime".into(), "no stdin pipe".into()))?;
    stdin.write_all(handover).map_err(|e| Fatal("handing the keys to the runtime".into(), e.to_string()))?;
    drop(stdin);
    Ok(child)
}

/// The runtime PID 1 starts and restarts.
struct Supervisor<'a> {
    runtime: &'a str,
    handover: &'a [u8],
    max_restarts: u32,
}

impl Supervisor<'_> {
    fn start(&self) -> Result<Child, Fatal> {
        start_runtime(self.runtime, self.handover)
    }

    /// Counts a restart; refuses once there were too many.
    fn restart(&self, restarts: &mut u32, how: &str) -> Result<Child, Fatal> {
        *restarts += 1;
        if *restarts > self.max_restarts {
            return Err(Fatal("runtime".into(), format!("{how} after {} restarts", self.max_restarts)));
        }
        let delay = Duration::from_millis(250 << (*restarts).min(6));
        say(&format!("runtime {how}; restart {restarts}/{} in {delay:?}", self.max_restarts));
        std::thread::sleep(delay);
        self.start()
    }
}

fn supervise(
    supervisor: &Supervisor<'_>,
    mut updates: Updates,
    power_button: &mpsc::Receiver<()>,
    ctrl_alt_del: &SignalFd,
    kernel_done: f64,
) -> Result<Ending, Fatal> {
    let mut restarts = 0u32;
    let mut healthy = false;
    let started = Instant::now();
    let mut child = supervisor.start()?;
    say(&format!("runtime started (pid {}, uptime {:.3}s; kernel took {kernel_done:.3}s)", child.id(), uptime()));
    loop {
        pet_watchdog();
        // Health first: the runtime reports it before it says `ready`, so a power button
        // pressed after `ready` never overtakes the blessing and the floor.
        if !healthy && Path::new(slots::RUN_HEALTHY_PATH).exists() {
            healthy = true;
            updates.healthy();
        }
        if power_button.try_recv().is_ok() {
            say("power button: shutting down");
            return shut_down(child).map(|()| Ending::PowerOff);
        }
        while let Ok(Some(_)) = ctrl_alt_del.read_signal() {
            say("Ctrl-Alt-Del ignored: this appliance shuts down by its power button");
        }
        if !healthy && TRIAL.load(Ordering::SeqCst) && started.elapsed() > TRIAL_DEADLINE {
            let _ = shut_down(child);
            return Err(Fatal(
                "trial boot".into(),
                format!("the runtime did not report healthy within {} s", TRIAL_DEADLINE.as_secs()),
            ));
        }
        // Reap every exited process (PID 1's duty), noticing the runtime's exit.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() as u32 == child.id() => {
                    if code == 0 {
                        say("runtime exited cleanly: shutting down");
                        return shut_down_reaped().map(|()| Ending::PowerOff);
                    }
                    if code == slots::EXIT_INSTALL_UPDATE {
                        say("runtime stopped to apply the staged update");
                        return install_and_reboot(&updates);
                    }
                    child = supervisor.restart(&mut restarts, &format!("exited with status {code}"))?;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() as u32 == child.id() => {
                    if sig == Signal::SIGSYS {
                        say("runtime killed by the kernel (SIGSYS): it made a system call its seccomp filter forbids");
                    }
                    child = supervisor.restart(&mut restarts, &format!("killed by {sig}"))?;
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime stopped so that the staged update is applied: every other process stopped,
/// then the bundle verified again and installed on trial with the data partition still
/// mounted, then it is unmounted and the machine reboots into the trial. A refused install
/// leaves the ESP as it was and the node comes back up on the running release, which says why.
fn install_and_reboot(updates: &Updates) -> Result<Ending, Fatal> {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let _ = sovereign_init::shutdown::reap_all(Duration::from_secs(5));
    let installed = updates.install_staged();
    shut_down_reaped()?;
    match installed {
        Ok(version) => Ok(Ending::Reboot(format!("release v{version} installed on trial beside v{}", updates.running))),
        Err(why) => {
            say(&format!("update NOT installed: {why}"));
            Ok(Ending::Reboot(format!("back to release v{} (the update was not installed)", updates.running)))
        }
    }
}

/// Stops the runtime (SIGTERM, SIGKILL after 10 s), then every other process, reaps them all,
/// and leaves the data partition unmounted and synced for [`power_off`].
fn shut_down(child: Child) -> Result<(), Fatal> {
    let pid = Pid::from_raw(child.id() as i32);
    match sovereign_init::shutdown::stop(pid, Duration::from_secs(10)) {
        Ok(sovereign_init::shutdown::Stopped::Exited) => say("runtime stopped"),
        Ok(sovereign_init::shutdown::Stopped::Killed) => say("runtime did not stop within 10 s: killed"),
        Err(e) => say(&format!("stopping the runtime: {e}")),
    }
    shut_down_reaped()
}

fn shut_down_reaped() -> Result<(), Fatal> {
    // Anything left (nothing should be: the runtime cannot fork a program) is killed.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    match sovereign_init::shutdown::reap_all(Duration::from_secs(5)) {
        Ok(n) => say(&format!("every process reaped ({n} after the runtime)")),
        Err(e) => say(&format!("reaping: {e}")),
    }
    nix::unistd::sync();
    match umount(sovereign_boot_contract::DATA_MOUNT) {
        Ok(()) => say("data partition synced and unmounted"),
        Err(e) => say(&format!("unmounting the data partition: {e} (synced)")),
    }
    Ok(())
}
