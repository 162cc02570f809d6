//! PID 1. See the crate documentation (`lib.rs`) for the boot order and what it must never do.
//! Every fatal refusal prints one line `sovereign-init: FATAL: <what failed>: <why>` on the
//! console and powers the machine off.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount, umount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use sovereign_image::build::{MANIFEST_PATH, MANIFEST_SIG_PATH, RuntimeConfig};
use sovereign_image::manifest::Manifest;
use sovereign_init::state::{self, KeyArea, SealedKeys};
use sovereign_measured_boot::measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
use sovereign_measured_boot::policy::{PolicyKey, SignedPcrPolicy};
use sovereign_measured_boot::tpm::Tpm;
use zeroize::Zeroizing;

/// The release public key (Ed25519, hex) compiled in at build time.
const RELEASE_KEY: Option<&str> = option_env!("SOVEREIGN_RELEASE_PUBKEY");
/// The PCR-policy public key (P-256 SEC1, hex) compiled in at build time.
const PCR_POLICY_KEY: Option<&str> = option_env!("SOVEREIGN_PCR_POLICY_PUBKEY");
const TCTI: &str = "device:/dev/tpmrm0";
const MEASUREMENT_LOG: &str = "/run/sovereign/measurement.log";

/// A fatal refusal: what failed and why.
struct Fatal(String, String);

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
    nix::unistd::sync();
    let _ = umount(sovereign_image::build::DATA_MOUNT);
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot(2) does not return on success; if it failed there is nothing safe left to do.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("sovereign-init: refusing to run: this program is PID 1 of the Sovereign appliance, not a tool");
        std::process::exit(2);
    }
    match boot() {
        Ok(()) => say("powering off"),
        Err(Fatal(what, why)) => say(&format!("FATAL: {what}: {why}")),
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

fn boot() -> Result<(), Fatal> {
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", noexec, None)?;
    let kernel_done = uptime();
    say(&format!("started (kernel hand-off at uptime {kernel_done:.3}s)"));
    mount_fs("sysfs", "/sys", "sysfs", noexec, None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, None)?;
    mount_fs("securityfs", "/sys/kernel/security", "securityfs", noexec, None)?;
    mount_fs("tmpfs", "/run", "tmpfs", noexec, Some("mode=0700,size=16m"))?;

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

    // 2. Every node of the initramfs, hashed against the manifest.
    let problems = sovereign_init::audit::audit_tree(Path::new("/"), &manifest);
    if let Some(first) = problems.first() {
        return Err(Fatal(
            "initramfs does not match the manifest".into(),
            format!("{first} ({} problems)", problems.len()),
        ));
    }
    say(&format!("{} initramfs nodes match the manifest", manifest.files.len()));
    let config_bytes =
        fs::read(&manifest.runtime_config).map_err(|e| Fatal("reading the runtime config".into(), e.to_string()))?;
    let config: RuntimeConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| Fatal("runtime config".into(), e.to_string()))?;

    // 3. Modules, in order.
    for m in &manifest.modules {
        let file = File::open(&m.path).map_err(|e| Fatal(format!("module {}", m.name), e.to_string()))?;
        match nix::kmod::finit_module(&file, &CString::default(), nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            // A CPU-specific accelerator (crc32c-intel under TCG) refuses hardware it cannot
            // drive; the generic implementation the manifest also lists serves instead.
            Err(nix::errno::Errno::ENODEV) => say(&format!("module {}: no device for it (ENODEV); skipped", m.name)),
            Err(e) => return Err(Fatal(format!("loading module {}", m.name), e.to_string())),
        }
    }
    say(&format!("{} modules loaded", manifest.modules.len()));

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
    let policy_key = PCR_POLICY_KEY
        .ok_or("this PID 1 was built without SOVEREIGN_PCR_POLICY_PUBKEY".to_string())
        .and_then(|h| hex::decode(h).map_err(|e| e.to_string()))
        .and_then(|b| p256::ecdsa::VerifyingKey::from_sec1_bytes(&b).map_err(|e| e.to_string()))
        .map(PolicyKey::new)
        .map_err(fatal("PCR-policy key"))?;
    mount_fs(&config.esp_device, "/esp", "vfat", MsFlags::MS_RDONLY | noexec, Some("codepage=437,iocharset=ascii"))?;
    let policy_bytes = fs::read(format!("/esp/{}", sovereign_image::build::ESP_POLICY_PATH));
    let _ = umount("/esp");
    let policy_bytes =
        policy_bytes.map_err(|e| Fatal("reading the signed PCR policy from the ESP".into(), e.to_string()))?;
    let policy =
        SignedPcrPolicy::from_json(&policy_bytes).map_err(|e| Fatal("signed PCR policy".into(), e.to_string()))?;
    policy.verify(&policy_key).map_err(|e| Fatal("signed PCR policy".into(), e.to_string()))?;
    let current = tpm.pcr_read(&policy.selection()).map_err(|e| Fatal("reading PCRs".into(), e.to_string()))?;
    let differing: Vec<String> =
        policy.pcrs.0.iter().filter(|(i, v)| current.get(**i) != Some(v)).map(|(i, _)| format!("PCR {i}")).collect();
    if !differing.is_empty() {
        return Err(Fatal(
            "measured boot does not match the signed release".into(),
            format!("{} differ from the signed PCR policy; keys stay sealed", differing.join(", ")),
        ));
    }

    // Public PCR values, for the record (firmware profile: `cargo xtask firmware-profile`).
    if let Ok(all) = tpm.pcr_read(&sovereign_measured_boot::PcrSelection::new(0..=15).map_err(fatal("PCR selection"))?)
    {
        for (i, v) in &all.0 {
            say(&format!("pcr {i} = {v}"));
        }
    }

    // 6. The node keys.
    let keys = unseal_or_provision(&mut tpm, &config, &policy_key, &policy)?;
    // 7. Close the unseal window for the rest of this boot.
    tpm.measure(Measurement::separator(), &mut log)
        .map_err(|e| Fatal("extending the separator".into(), e.to_string()))?;
    fs::write(MEASUREMENT_LOG, log.to_bytes())
        .map_err(|e| Fatal("writing the measurement log".into(), e.to_string()))?;
    drop(tpm);
    say("unseal window closed (separator extended into PCR 15)");

    // The data partition (audit log, replay store, encrypted artifacts): never executable.
    mount_fs(&config.data_device, sovereign_image::build::DATA_MOUNT, "ext4", noexec, Some("errors=remount-ro"))?;
    say(&format!("data partition {} mounted on {} (noexec)", config.data_device, sovereign_image::build::DATA_MOUNT));

    // 8. Lock down.
    lockdown()?;
    say("locked down: module loading and kexec disabled, root read-only, writable mounts noexec");

    // 9. Run and supervise the runtime.
    let power_button = watch_power_button();
    supervise(&manifest.runtime, &keys, config.max_restarts, &power_button, kernel_done)
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
    let mut area = vec![0u8; state::AREA];
    f.read_exact(&mut area).map_err(|e| Fatal(format!("reading the state partition {device}"), e.to_string()))?;
    Ok(area)
}

fn unseal_or_provision(
    tpm: &mut Tpm,
    config: &RuntimeConfig,
    key: &PolicyKey,
    policy: &SignedPcrPolicy,
) -> Result<Zeroizing<Vec<u8>>, Fatal> {
    let area = read_area(&config.state_device)?;
    let sealed = match state::decode(&area).map_err(fatal("state partition"))? {
        KeyArea::Sealed(k) => {
            say("unsealing the node keys with the signed PCR policy");
            k
        }
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
            let keys = SealedKeys {
                keys: tpm
                    .seal_to_policy_key(&secret, key)
                    .map_err(|e| Fatal("sealing the node keys".into(), e.to_string()))?,
            };
            // The TPM will only ever release this object under PolicyAuthorize(PCR-policy key):
            // check that the sealed object says so before storing it (unsealing it here would
            // cost a second storage-key derivation on every first boot).
            let sealed_policy = state::auth_policy(&keys.keys.public).map_err(fatal("sealed object"))?;
            if sealed_policy != key.sealing_policy().0 {
                return Err(Fatal(
                    "sealing the node keys".into(),
                    "the sealed object's policy is not PolicyAuthorize(release PCR-policy key)".into(),
                ));
            }
            let mut f = OpenOptions::new()
                .write(true)
                .open(&config.state_device)
                .map_err(|e| Fatal("opening the state partition for writing".into(), e.to_string()))?;
            f.seek(SeekFrom::Start(0)).map_err(|e| Fatal("state partition".into(), e.to_string()))?;
            f.write_all(&state::encode(&keys)).map_err(|e| Fatal("writing the sealed keys".into(), e.to_string()))?;
            f.sync_all().map_err(|e| Fatal("syncing the sealed keys".into(), e.to_string()))?;
            say("node keys sealed to the release's PCR-policy key and stored on the state partition");
            return Ok(secret);
        }
    };
    let secret = Zeroizing::new(
        tpm.unseal_with_signed_policy(&sealed.keys, key, policy)
            .map_err(|e| Fatal("unsealing the node keys".into(), e.to_string()))?,
    );
    if secret.len() != 64 {
        return Err(Fatal("unsealing the node keys".into(), format!("{} bytes instead of 64", secret.len())));
    }
    Ok(secret)
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

fn start_runtime(path: &str, keys: &[u8]) -> Result<Child, Fatal> {
    let mut child = Command::new(path)
        .env_clear()
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal(format!("starting the runtime {path}"), e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or(Fatal("runtime".into(), "no stdin pipe".into()))?;
    stdin.write_all(keys).map_err(|e| Fatal("handing the keys to the runtime".into(), e.to_string()))?;
    drop(stdin);
    Ok(child)
}

fn supervise(
    runtime: &str,
    keys: &[u8],
    max_restarts: u32,
    power_button: &mpsc::Receiver<()>,
    kernel_done: f64,
) -> Result<(), Fatal> {
    let mut restarts = 0u32;
    let mut child = start_runtime(runtime, keys)?;
    say(&format!("runtime started (pid {}, uptime {:.3}s; kernel took {kernel_done:.3}s)", child.id(), uptime()));
    loop {
        if power_button.try_recv().is_ok() {
            say("power button: shutting down");
            return stop(child);
        }
        // Reap every exited process (PID 1's duty), noticing the runtime's exit.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() as u32 == child.id() => {
                    if code == 0 {
                        say("runtime exited cleanly: shutting down");
                        return Ok(());
                    }
                    restarts += 1;
                    if restarts > max_restarts {
                        return Err(Fatal(
                            "runtime".into(),
                            format!("exited with status {code} after {max_restarts} restarts"),
                        ));
                    }
                    let delay = Duration::from_millis(250 << restarts.min(6));
                    say(&format!("runtime exited with status {code}; restart {restarts}/{max_restarts} in {delay:?}"));
                    std::thread::sleep(delay);
                    child = start_runtime(runtime, keys)?;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() as u32 == child.id() => {
                    restarts += 1;
                    if restarts > max_restarts {
                        return Err(Fatal("runtime".into(), format!("killed by {sig} after {max_restarts} restarts")));
                    }
                    say(&format!("runtime killed by {sig}; restart {restarts}/{max_restarts}"));
                    std::thread::sleep(Duration::from_millis(250 << restarts.min(6)));
                    child = start_runtime(runtime, keys)?;
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: Child) -> Result<(), Fatal> {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            say("runtime stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(pid, Signal::SIGKILL);
    say("runtime did not stop within 10 s: killed");
    Ok(())
}
