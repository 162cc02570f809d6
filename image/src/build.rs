//! The image build (IO edge): kernel and modules, initramfs, signed manifest, UKI, PCR
//! prediction, signed PCR policy and reference values, and the raw disk image.
//!
//! External tools (Debian packages, installed by `cargo xtask setup`): `apt-get`, `dpkg-deb`,
//! `depmod`/`modprobe` (kmod), `ldd`, `objcopy` (binutils), the systemd EFI stub
//! (systemd-boot-efi), `mkfs.vfat` (dosfstools), `mcopy`/`mmd` (mtools), `sfdisk` (util-linux).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::measurement_log::PROJECT_PCR;
use sovereign_measured_boot::pcr::{PcrValues, Sha256Digest};
use sovereign_measured_boot::policy::SignedPcrPolicy;

use crate::cpio::{self, Node, S_IFCHR, S_IFDIR, S_IFREG};
use crate::keys::KeySet;
use crate::manifest::{FileEntry, Manifest, ModuleEntry, NodeKind};
use crate::pe;

/// Modules PID 1 loads, by name (dependencies are added in load order).
pub const MODULES: [&str; 13] = [
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    // The hardware watchdog a trial boot arms (QEMU's i6300esb); before the ESP's modules, so
    // that it is in when PID 1 learns from the ESP that this boot is a trial.
    "i6300esb",
    "fat",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "button",
    "evdev",
    "ext4",
];
/// The update policy images carry unless the build says otherwise.
pub const DEFAULT_UPDATE_POLICY: &str = include_str!("../../examples/policies/update.cozo");
/// The name the update policy is signed under.
pub const UPDATE_POLICY_NAME: &str = "update";
/// Default kernel command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0,115200 panic=-1 loglevel=4 lockdown=integrity";
pub use sovereign_boot_contract::{
    CONFIG_PATH, DATA_MOUNT, DATA_PARTITION_OFFSET, DATA_PARTITION_SIZE, MANIFEST_PATH, MANIFEST_SIG_PATH,
    RUNTIME_PATH, RuntimeConfig, STATE_FRESH_MARKER, STATE_PARTITION_OFFSET,
};

/// The zstd level of the initramfs in the UKI: deterministic (one thread, the crate's pinned
/// libzstd), about 3:1 on this initramfs, and quick enough for the tests' many variant builds.
pub const INITRD_ZSTD_LEVEL: i32 = 10;

/// A kernel and its module tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage.
    pub image: PathBuf,
    /// Root containing `lib/modules/<release>`.
    pub root: PathBuf,
    /// Kernel release.
    pub release: String,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildInput {
    /// PID 1 binary.
    pub init: PathBuf,
    /// Runtime binary.
    pub runtime: PathBuf,
    /// Kernel.
    pub kernel: Kernel,
    /// Image version.
    pub version: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// Runtime configuration.
    pub config: RuntimeConfig,
    /// The NVIDIA driver directory to carry (`crate::gpu_driver`); `None`: no GPU driver.
    pub gpu_driver: Option<PathBuf>,
    /// The update policy (CozoScript), signed by the release key into
    /// [`sovereign_boot_contract::UPDATE_POLICY_PATH`]; [`DEFAULT_UPDATE_POLICY`] unless changed.
    pub update_policy: String,
    /// systemd EFI stub.
    pub stub: PathBuf,
    /// The boot loader (systemd-boot), installed as the firmware's default boot path and
    /// signed with the same db key as the UKI.
    pub loader: PathBuf,
    /// The Secure Boot db key that signs the UKI (Authenticode); `None` builds an unsigned
    /// UKI, which firmware with Secure Boot on refuses.
    pub secure_boot: Option<SecureBootKey>,
}

/// A Secure Boot signing key: the private key and its X.509 certificate (PEM), enrolled in the
/// firmware's db.
#[derive(Debug, Clone)]
pub struct SecureBootKey {
    /// PEM private key.
    pub key: PathBuf,
    /// PEM certificate.
    pub cert: PathBuf,
}

/// `virt-fw-vars` (PyPI `virt-firmware` 26.10, in the venv `cargo xtask setup` makes).
pub const VIRT_FW_VARS: &str = "/var/cache/sovereign/venv/bin/virt-fw-vars";
/// The owner GUID of the project's Secure Boot certificates in PK, KEK and db.
pub const SECURE_BOOT_OWNER: &str = "53564752-4e47-4e00-8000-000000000001";

/// Writes an OVMF variable store: `template` with `keys_dir`'s `PK.crt`, `KEK.crt` and `db.crt`
/// enrolled (owner [`SECURE_BOOT_OWNER`]) and Secure Boot on, no Microsoft keys. The output is
/// a function of its inputs (two runs are byte-identical; tested).
pub fn write_secure_boot_vars(keys_dir: &Path, template: &Path, out: &Path) -> anyhow::Result<()> {
    run(Command::new(VIRT_FW_VARS)
        .arg("--input")
        .arg(template)
        .arg("--output")
        .arg(out)
        .arg("--set-pk")
        .arg(SECURE_BOOT_OWNER)
        .arg(keys_dir.join("PK.crt"))
        .arg("--add-kek")
        .arg(SECURE_BOOT_OWNER)
        .arg(keys_dir.join("KEK.crt"))
        .arg("--add-db")
        .arg(SECURE_BOOT_OWNER)
        .arg(keys_dir.join("db.crt"))
        .arg("--no-microsoft")
        .arg("--sb"))
    .context("writing the Secure Boot variable store (cargo xtask setup installs virt-fw-vars)")?;
    Ok(())
}

/// systemd-boot as Debian's `systemd-boot-efi` installs it.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The time `sbsign` is made to see (it stamps the signing time into the PKCS#7; a fixed one
/// keeps two builds of the same inputs bit-identical). UTC.
pub const SIGNING_TIME: &str = "2026-11-30 12:00:00";

/// Signs `uki` (or the boot loader: any PE image) in place with `key` (Authenticode, `sbsign` under `faketime` at
/// [`SIGNING_TIME`]) and checks the signature with `sbverify`; returns the signed bytes.
pub fn sign_uki(uki: &Path, key: &SecureBootKey) -> anyhow::Result<Vec<u8>> {
    let signed = uki.with_extension("signed.efi");
    run(Command::new("faketime")
        .env("TZ", "UTC")
        .args(["-f", SIGNING_TIME, "sbsign", "--key"])
        .arg(&key.key)
        .arg("--cert")
        .arg(&key.cert)
        .arg("--output")
        .arg(&signed)
        .arg(uki))
    .context("signing the UKI for Secure Boot (apt-get install sbsigntool faketime)")?;
    run(Command::new("sbverify").arg("--cert").arg(&key.cert).arg(&signed))
        .context("the signed UKI does not verify with the db certificate")?;
    fs::rename(&signed, uki)?;
    Ok(fs::read(uki)?)
}

/// Release reference values, signed by the release key (`reference-values.json` + `.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceValues {
    /// Image version.
    pub version: u64,
    /// SHA-256 of the UKI file.
    pub uki_sha256: String,
    /// SHA-256 of the canonical manifest.
    pub manifest_sha256: String,
    /// Predicted PCR values (4: the UKI's Authenticode hash, and its kernel's unless the UKI is
    /// signed for Secure Boot, 9: load options and initrd,
    /// 11: stub sections, 12: the command line systemd-boot passes, 13: zero (no extension),
    /// 15: PID 1 before the separator).
    pub pcrs: PcrValues,
}

/// Everything a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The UKI.
    pub uki: PathBuf,
    /// The raw disk image.
    pub disk: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Predicted PCRs.
    pub reference: ReferenceValues,
}

fn run(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Downloads Debian's current `linux-image-amd64` into `cache` (once) and prepares modules.
pub fn fetch_debian_kernel(cache: &Path) -> anyhow::Result<Kernel> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let deps = String::from_utf8(run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?)?;
    let package = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .ok_or_else(|| anyhow!("apt-cache does not know linux-image-amd64's kernel package; run apt-get update"))?
        .to_string();
    let release = package.trim_start_matches("linux-image-").to_string();
    let root = cache.join(&package);
    let image = root.join("boot").join(format!("vmlinuz-{release}"));
    if !image.exists() {
        run(Command::new("apt-get").arg("download").arg(&package).current_dir(cache))?;
        let deb = fs::read_dir(cache)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
            .ok_or_else(|| anyhow!("apt-get download produced no {package} .deb"))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    }
    Ok(Kernel { image, root, release })
}

/// Module files in load order for [`MODULES`] and their dependencies.
pub fn module_order(kernel: &Kernel) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in MODULES {
        let text = String::from_utf8(run(Command::new("modprobe")
            .arg("-d")
            .arg(&kernel.root)
            .arg("-S")
            .arg(&kernel.release)
            .arg("--show-depends")
            .arg(m))?)?;
        for line in text.lines() {
            let Some(path) = line.trim().strip_prefix("insmod ") else {
                if line.starts_with("builtin ") {
                    continue;
                }
                bail!("unexpected modprobe output for {m}: {line}");
            };
            let path = PathBuf::from(path.trim());
            if seen.insert(path.clone()) {
                let name = path.file_stem().map(|s| s.to_string_lossy().replace('-', "_")).unwrap_or_default();
                out.push((name, path));
            }
        }
    }
    Ok(out)
}

/// Shared libraries (absolute paths as the loader will look for them) that `binaries` need,
/// plus `libtss2-tcti-device.so.0`, which tss-esapi loads at run time.
pub fn libraries(binaries: &[&Path]) -> anyhow::Result<BTreeSet<String>> {
    let mut libs = BTreeSet::new();
    let mut queue: Vec<PathBuf> = binaries.iter().map(|p| p.to_path_buf()).collect();
    queue.push(PathBuf::from("/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"));
    libs.insert("/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0".to_string());
    let mut done = BTreeSet::new();
    while let Some(bin) = queue.pop() {
        if !done.insert(bin.clone()) {
            continue;
        }
        let text = String::from_utf8(run(Command::new("ldd").arg(&bin))?)?;
        for line in text.lines() {
            let line = line.trim();
            let path = if let Some((_, rest)) = line.split_once("=> ") {
                rest.split(" (").next().unwrap_or("").trim().to_string()
            } else if line.starts_with('/') {
                line.split(" (").next().unwrap_or("").trim().to_string()
            } else {
                continue;
            };
            if path.starts_with('/') && libs.insert(path.clone()) {
                queue.push(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

fn dir_nodes(paths: &BTreeSet<String>) -> Vec<Node> {
    let mut dirs = BTreeSet::new();
    for p in paths {
        let mut cur = Path::new(p).parent();
        while let Some(d) = cur {
            let s = d.to_string_lossy().trim_start_matches('/').to_string();
            if !s.is_empty() {
                dirs.insert(s);
            }
            cur = d.parent();
        }
    }
    dirs.into_iter().map(|d| Node { path: d, mode: S_IFDIR | 0o755, data: vec![], rdev: (0, 0) }).collect()
}

/// Assembles the initramfs nodes and the (unsigned) manifest.
pub fn initramfs(input: &BuildInput, signed_update_policy: &[u8]) -> anyhow::Result<(Vec<Node>, Manifest)> {
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    files.push(("/init".into(), read(&input.init)?, 0o755));
    files.push((RUNTIME_PATH.into(), read(&input.runtime)?, 0o755));
    let driver =
        input.gpu_driver.as_deref().map(|dir| crate::gpu_driver::read(dir, &input.kernel.release)).transpose()?;
    let (driver_files, driver_modules) = match &driver {
        Some(d) => d.files(&input.kernel.release)?,
        None => (vec![], vec![]),
    };
    // What the driver's libraries need from the system comes along like the runtime's own.
    let mut needing: Vec<&Path> = vec![&input.init, &input.runtime];
    if let Some(d) = &driver {
        needing.extend(d.libraries.iter().map(|(_, p)| p.as_path()));
    }
    for lib in libraries(&needing)? {
        if driver_files.iter().any(|(path, _, _)| *path == lib) {
            continue;
        }
        let data = read(Path::new(&lib))?;
        files.push((lib, data, 0o755));
    }
    let mut modules = Vec::new();
    for (name, path) in module_order(&input.kernel)? {
        let rel = path
            .strip_prefix(&input.kernel.root)
            .with_context(|| format!("{} is outside the kernel root", path.display()))?;
        let dest = format!("/{}", rel.to_string_lossy());
        files.push((dest.clone(), read(&path)?, 0o644));
        modules.push(ModuleEntry { name, path: dest });
    }
    // The GPU driver's modules after the kernel's own, in the order its directory states.
    files.extend(driver_files);
    modules.extend(driver_modules.into_iter().map(|(name, path)| ModuleEntry { name, path }));
    let config = config_bytes(&input.config)?;
    files.push((CONFIG_PATH.into(), config.clone(), 0o644));
    files.push((sovereign_boot_contract::UPDATE_POLICY_PATH.into(), signed_update_policy.to_vec(), 0o644));

    let mut paths: BTreeSet<String> = files.iter().map(|(p, _, _)| p.clone()).collect();
    for extra in ["/dev/console", "/proc/.", "/sys/.", "/run/.", "/esp/.", "/state/.", MANIFEST_PATH] {
        paths.insert(extra.to_string());
    }
    let mut nodes = dir_nodes(&paths);
    // Mount points PID 1 uses, and /root, which the kernel creates in every rootfs.
    for (d, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("esp", 0o700),
        ("state", 0o700),
        ("dev", 0o755),
        ("root", 0o700),
    ] {
        nodes.retain(|n| n.path != d);
        nodes.push(Node { path: d.into(), mode: S_IFDIR | mode, data: vec![], rdev: (0, 0) });
    }
    nodes.push(Node { path: "dev/console".into(), mode: S_IFCHR | 0o600, data: vec![], rdev: (5, 1) });
    for (p, data, mode) in &files {
        nodes.push(Node {
            path: p.trim_start_matches('/').into(),
            mode: S_IFREG | mode,
            data: data.clone(),
            rdev: (0, 0),
        });
    }
    let mut entries: Vec<FileEntry> = nodes
        .iter()
        .map(|n| {
            let kind = match n.mode & cpio::S_IFMT {
                S_IFDIR => NodeKind::Directory,
                S_IFCHR => NodeKind::CharDevice,
                _ => NodeKind::File,
            };
            let path = format!("/{}", n.path);
            let mode = n.mode & 0o7777;
            if kind == NodeKind::File {
                return FileEntry::regular(&path, mode, &n.data);
            }
            FileEntry {
                path,
                kind,
                mode,
                size: n.data.len() as u64,
                sha256: String::new(),
                chunks: Vec::new(),
                rdev: (kind == NodeKind::CharDevice).then_some(n.rdev),
                link: None,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: crate::manifest::FORMAT.into(),
        version: input.version,
        kernel_release: input.kernel.release.clone(),
        cmdline: input.cmdline.clone(),
        runtime: RUNTIME_PATH.into(),
        runtime_config: CONFIG_PATH.into(),
        runtime_config_sha256: sha256_hex(&config),
        modules,
        files: entries,
    };
    manifest.check_consistency().map_err(|e| anyhow!("{e}"))?;
    Ok((nodes, manifest))
}

/// The runtime configuration's bytes as the initramfs carries them (measured into PCR 15).
pub fn config_bytes(config: &RuntimeConfig) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(config)?)
}

/// The PCRs the seal policy binds, predicted from the assembled UKI and PID 1's inputs:
/// PCR 9 (the Linux stub: load options and initrd), PCR 11 (the systemd stub: the UKI's
/// sections), PCR 12 (systemd-boot: the `.cmdline` it passes as load options; no credential),
/// PCR 13 at zero (no system extension) and PCR 15 (PID 1: manifest and runtime
/// configuration, before the separator).
pub fn predict_seal_pcrs(
    uki: &[u8],
    manifest_bytes: &[u8],
    config: &[u8],
    secure_boot: bool,
) -> anyhow::Result<PcrValues> {
    let mut pcrs = PcrValues::new();
    pcrs.set(pe::PCR_KERNEL_BOOT, pe::predict_pcr9_from_uki(uki).map_err(|e| anyhow!("PCR 9: {e}"))?);
    pcrs.set(pe::PCR_KERNEL_IMAGE, pe::predict_pcr11_from_uki(uki).map_err(|e| anyhow!("PCR 11: {e}"))?);
    let pcr12 = pe::predict_pcr12_from_uki(uki, secure_boot).map_err(|e| anyhow!("PCR 12: {e}"))?;
    pcrs.set(pe::PCR_KERNEL_CONFIG, pcr12);
    pcrs.set(pe::PCR_SYSEXTS, Sha256Digest::default());
    pcrs.set(PROJECT_PCR, predict_pcr15(manifest_bytes, config));
    Ok(pcrs)
}

/// Predicted PCR 15 after PID 1 measured the manifest and the runtime configuration.
pub fn predict_pcr15(manifest_bytes: &[u8], config: &[u8]) -> Sha256Digest {
    let mut pcrs = PcrValues::new();
    pcrs.set(PROJECT_PCR, Sha256Digest::default());
    pcrs.extend(PROJECT_PCR, &Sha256Digest::of(manifest_bytes));
    pcrs.extend(PROJECT_PCR, &Sha256Digest::of(config));
    pcrs.get(PROJECT_PCR).copied().unwrap_or_default()
}

/// Assembles a UKI with objcopy and zeroes its build-time fields.
pub fn assemble_uki(
    stub: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    osrel: &str,
    work: &Path,
    out: &Path,
) -> anyhow::Result<Vec<u8>> {
    let stub_bytes = fs::read(stub)
        .with_context(|| format!("reading the EFI stub {} (install systemd-boot-efi)", stub.display()))?;
    let stub_pe = pe::Pe::parse(&stub_bytes).map_err(|e| anyhow!("{}: {e}", stub.display()))?;
    let cmdline_file = work.join("cmdline.txt");
    let osrel_file = work.join("os-release");
    fs::write(&cmdline_file, cmdline)?;
    fs::write(&osrel_file, osrel)?;
    let mut vma = stub_pe.image_base + stub_pe.end_rva();
    let mut cmd = Command::new("objcopy");
    for (name, file) in [
        (".osrel", &osrel_file),
        (".cmdline", &cmdline_file),
        (".linux", &kernel.to_path_buf()),
        (".initrd", &initrd.to_path_buf()),
    ] {
        let size = fs::metadata(file)?.len();
        cmd.arg("--add-section").arg(format!("{name}={}", file.display()));
        cmd.arg("--change-section-vma").arg(format!("{name}=0x{vma:x}"));
        vma += size.div_ceil(0x1000) * 0x1000;
    }
    cmd.arg(stub).arg(out);
    run(&mut cmd)?;
    let mut uki = fs::read(out)?;
    pe::normalize(&mut uki).map_err(|e| anyhow!("normalizing the UKI: {e}"))?;
    fs::write(out, &uki)?;
    Ok(uki)
}

/// Builds a raw GPT disk: partition 1 the ESP (FAT32) with the boot loader and its
/// configuration, release `version`'s UKI in its (good) slot, and the release's signed PCR
/// policy and signed reference values (`reference`: the JSON, its signature) in its directory
/// (see [`sovereign_boot_contract::slots`]); partition 2 the state partition (key area, marked
/// factory-fresh), partition 3 the data partition (an empty ext4 file system, made
/// reproducibly: fixed UUID, hash seed and time).
pub fn build_disk(
    loader: &Path,
    uki: &Path,
    version: u64,
    policy: &Path,
    reference: [&Path; 2],
    work: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    use sovereign_boot_contract::slots;
    const MIB: u64 = 1024 * 1024;
    // Room for two slots (a UKI is ~22 MiB) and the loader.
    let esp_size = 64 * MIB;
    let state_size = 16 * MIB;
    let data_size = DATA_PARTITION_SIZE;
    let data = work.join("data.img");
    let _ = fs::remove_file(&data);
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-L", "sovereign-data", "-U", "5f0e5e1c-7a3d-4c8b-9e21-53c0e2a1b005"])
        .args(["-E", "hash_seed=5f0e5e1c-7a3d-4c8b-9e21-53c0e2a1b006,root_owner=0:0", "-m", "0", "-b", "4096"])
        .arg(&data)
        .arg(format!("{}k", data_size / 1024)))
    .context("making the data partition's ext4 file system (mkfs.ext4, e2fsprogs)")?;
    let esp = work.join("esp.img");
    let _ = fs::remove_file(&esp);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "SOVEREIGN", "-i", "50564552", "-C"])
        .arg(&esp)
        .arg((esp_size / 1024).to_string()))?;
    let mtools = |args: &[&str]| -> anyhow::Result<()> {
        run(Command::new(args[0]).env("MTOOLS_SKIP_CHECK", "1").args(&args[1..]))?;
        Ok(())
    };
    let esp_s = esp.to_string_lossy().to_string();
    let release_dir = format!("::{}", slots::release_dir(version));
    mtools(&["mmd", "-i", &esp_s, "::EFI", "::EFI/BOOT", "::EFI/Linux", "::EFI/sovereign", &release_dir, "::loader"])?;
    let loader_conf = work.join("loader.conf");
    fs::write(&loader_conf, slots::LOADER_CONF)?;
    let slot = format!("{}/{}", slots::SLOT_DIR, slots::slot_file(version, None));
    let files = [
        (loader, slots::LOADER_PATH.to_string()),
        (loader_conf.as_path(), slots::LOADER_CONF_PATH.to_string()),
        (uki, slot),
        (policy, slots::policy_path(version)),
        (reference[0], slots::reference_path(version)),
        (reference[1], slots::reference_sig_path(version)),
    ];
    for (file, path) in files {
        mtools(&["mcopy", "-i", &esp_s, &file.to_string_lossy(), &format!("::{path}")])?;
    }
    let total = MIB + esp_size + state_size + data_size + MIB;
    let _ = fs::remove_file(out);
    let f = fs::File::create(out)?;
    f.set_len(total)?;
    drop(f);
    let script = format!(
        "label: gpt\nlabel-id: 5F0E5E1C-7A3D-4C8B-9E21-53C0E2A1B001\nunit: sectors\n\
         start=2048, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5F0E5E1C-7A3D-4C8B-9E21-53C0E2A1B002, name=\"esp\"\n\
         size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5F0E5E1C-7A3D-4C8B-9E21-53C0E2A1B003, name=\"sovereign-state\"\n\
         size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5F0E5E1C-7A3D-4C8B-9E21-53C0E2A1B004, name=\"sovereign-data\"\n",
        esp_size / 512,
        state_size / 512,
        data_size / 512
    );
    let mut child = Command::new("sfdisk")
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg("-q")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting sfdisk (util-linux)")?;
    {
        use std::io::Write as _;
        child.stdin.take().ok_or_else(|| anyhow!("sfdisk stdin"))?.write_all(script.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("sfdisk failed to write the partition table");
    }
    run(Command::new("dd").arg(format!("if={}", esp.display())).arg(format!("of={}", out.display())).args([
        "bs=1M",
        "seek=1",
        "conv=notrunc",
        "status=none",
    ]))?;
    run(Command::new("dd").arg(format!("if={}", data.display())).arg(format!("of={}", out.display())).args([
        "bs=1M",
        &format!("seek={}", DATA_PARTITION_OFFSET / MIB),
        // The empty file system is mostly zeros: leave them as holes in the image.
        "conv=notrunc,sparse",
        "status=none",
    ]))?;
    // Mark the state partition as factory-fresh: only then may PID 1 provision keys.
    let mut disk = fs::OpenOptions::new().write(true).open(out)?;
    std::io::Seek::seek(&mut disk, std::io::SeekFrom::Start(STATE_PARTITION_OFFSET))?;
    std::io::Write::write_all(&mut disk, STATE_FRESH_MARKER)?;
    disk.sync_all()?;
    Ok(())
}

/// Edits initramfs nodes.
pub type NodeEdit<'a> = &'a dyn Fn(&mut Vec<Node>);
/// Edits the manifest bytes and signature.
pub type ManifestEdit<'a> = &'a dyn Fn(&mut Vec<u8>, &mut Vec<u8>);

/// Deliberate damage for end-to-end tests of the refusals: applied after signing, so the
/// result is what an attacker without the keys could produce.
#[derive(Default)]
pub struct Tamper<'a> {
    /// Changes initramfs nodes after the manifest was signed.
    pub nodes: Option<NodeEdit<'a>>,
    /// Changes the manifest bytes and/or signature after signing.
    pub manifest: Option<ManifestEdit<'a>>,
    /// Puts this signed PCR policy on the ESP instead of the build's own.
    pub policy: Option<&'a Path>,
}

impl std::fmt::Debug for Tamper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tamper")
    }
}

/// Runs the whole build into `out_dir`.
pub fn build(input: &BuildInput, keys: &KeySet, out_dir: &Path) -> anyhow::Result<BuildOutput> {
    build_with(input, keys, out_dir, &Tamper::default())
}

/// [`build`], with deliberate damage (tests only).
pub fn build_with(
    input: &BuildInput,
    keys: &KeySet,
    out_dir: &Path,
    tamper: &Tamper<'_>,
) -> anyhow::Result<BuildOutput> {
    let mut with_admin = input.clone();
    if let Some(l) = &input.config.licence {
        let header = l.checkpoint_header.as_deref();
        sovereign_ledger::rule::parse(&l.network, l.checkpoint_height, header, &l.script, l.amount_sat, l.depth)
            .map_err(|e| anyhow!("the licence rule: {e}"))?;
    }
    if let Some(mesh) = &input.config.mesh {
        mesh.check().map_err(|e| anyhow!("the mesh settings: {e}"))?;
        sovereign_mesh::swarm_key::SwarmKey::parse(mesh.swarm_key.as_bytes())
            .map_err(|e| anyhow!("the mesh settings: swarm key: {e}"))?;
    }
    if with_admin.config.admins.is_empty() {
        with_admin.config.admins.push(hex::encode(keys.admin.verifying_key().as_bytes()));
    }
    if with_admin.config.admin_root.is_empty() {
        with_admin.config.admin_root = hex::encode(keys.admin.verifying_key().as_bytes());
    }
    if with_admin.config.update_root.is_empty() {
        with_admin.config.update_root = hex::encode(keys.update.root.verifying_key().as_bytes());
    }
    match (&with_admin.config.pcr_policy_rotation, &keys.pcr_policy_rotation) {
        (None, Some(pending)) => with_admin.config.pcr_policy_rotation = Some(pending.statement.clone()),
        (Some(given), Some(pending)) if *given == pending.statement => {}
        (Some(_), _) => {
            return Err(anyhow!(
                "the runtime configuration carries a PCR-policy key rotation the key set does not hold (no retiring key to bridge with)"
            ));
        }
        (None, None) => {}
    }
    let input = &with_admin;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let work = out_dir.join("work");
    fs::create_dir_all(&work)?;
    let update_policy = sovereign_governance::policy::PolicyBundle::sign(
        UPDATE_POLICY_NAME,
        input.version,
        &input.update_policy,
        &keys.release,
    );
    let (mut nodes, manifest) = initramfs(input, &serde_json::to_vec_pretty(&update_policy)?)?;
    let (manifest_bytes, signature) = manifest.sign(&keys.release);
    let (mut shipped_manifest, mut shipped_signature) = (manifest_bytes.clone(), signature.clone());
    if let Some(f) = tamper.manifest {
        f(&mut shipped_manifest, &mut shipped_signature);
    }
    if let Some(f) = tamper.nodes {
        f(&mut nodes);
    }
    nodes.push(Node {
        path: MANIFEST_PATH.trim_start_matches('/').into(),
        mode: S_IFREG | 0o644,
        data: shipped_manifest,
        rdev: (0, 0),
    });
    nodes.push(Node {
        path: MANIFEST_SIG_PATH.trim_start_matches('/').into(),
        mode: S_IFREG | 0o644,
        data: shipped_signature,
        rdev: (0, 0),
    });
    let initrd = out_dir.join("initrd.cpio");
    let cpio_bytes = cpio::write(&nodes);
    fs::write(&initrd, &cpio_bytes)?;
    // The UKI carries it zstd-compressed (the kernel unpacks it): a third of the size, so a
    // third of what firmware reads, verifies and measures at every boot.
    let initrd_zst = out_dir.join("initrd.cpio.zst");
    let compressed =
        zstd::bulk::compress(&cpio_bytes, INITRD_ZSTD_LEVEL).context("compressing the initramfs with zstd")?;
    fs::write(&initrd_zst, compressed)?;
    fs::write(out_dir.join("manifest.json"), &manifest_bytes)?;
    fs::write(out_dir.join("manifest.sig"), &signature)?;

    let osrel = format!(
        "NAME=Sovereign\nID=sovereign\nVERSION_ID={}\nPRETTY_NAME=\"Sovereign appliance {}\"\n",
        input.version, input.version
    );
    let uki_path = out_dir.join("sovereign.efi");
    let mut uki =
        assemble_uki(&input.stub, &input.kernel.image, &initrd_zst, &input.cmdline, &osrel, &work, &uki_path)?;
    let loader_path = out_dir.join("BOOTX64.EFI");
    fs::copy(&input.loader, &loader_path)
        .with_context(|| format!("copying the boot loader {} (install systemd-boot-efi)", input.loader.display()))?;
    let mut loader = fs::read(&loader_path)?;
    if let Some(key) = &input.secure_boot {
        uki = sign_uki(&uki_path, key)?;
        loader = sign_uki(&loader_path, key)?;
    }
    let pcrs = predict_seal_pcrs(&uki, &manifest_bytes, &config_bytes(&input.config)?, input.secure_boot.is_some())?;
    let mut policy =
        SignedPcrPolicy::sign(pcrs.clone(), input.version, &keys.pcr_policy).map_err(|e| anyhow!("{e}"))?;
    if let Some(pending) = &keys.pcr_policy_rotation {
        // Nodes still sealed to the retiring key open their keys once with this signature.
        policy.add_bridge(&pending.previous).map_err(|e| anyhow!("{e}"))?;
    }
    let policy_path = out_dir.join("pcr-policy.json");
    fs::write(&policy_path, policy.to_json())?;
    // The reference values add what firmware measures about this UKI (PCR 4: the UKI and its
    // kernel's Authenticode hashes, from the file that boots: signing pads it). The seal policy leaves it out: it is the verifier's to
    // judge (it changes with the firmware's boot path), and PCR 11 covers the same bytes.
    let mut reference_pcrs = pcrs;
    // A signed UKI is made for the Secure Boot platform, whose firmware measures it (and not
    // the kernel inside it) into PCR 4; an unsigned one for a platform without Secure Boot.
    let secure_boot = input.secure_boot.is_some();
    reference_pcrs.set(4, pe::predict_pcr4(&loader, &uki, secure_boot).map_err(|e| anyhow!("PCR 4: {e}"))?);
    let reference = ReferenceValues {
        version: input.version,
        uki_sha256: sha256_hex(&uki),
        manifest_sha256: sha256_hex(&manifest_bytes),
        pcrs: reference_pcrs,
    };
    let reference_bytes = serde_json::to_vec_pretty(&reference)?;
    let reference_paths = [out_dir.join("reference-values.json"), out_dir.join("reference-values.sig")];
    fs::write(&reference_paths[0], &reference_bytes)?;
    fs::write(&reference_paths[1], keys.release.sign(&reference_bytes).to_bytes())?;
    let disk = out_dir.join("disk.raw");
    let reference_on_esp = [reference_paths[0].as_path(), reference_paths[1].as_path()];
    let policy_on_esp = tamper.policy.unwrap_or(&policy_path);
    build_disk(&loader_path, &uki_path, input.version, policy_on_esp, reference_on_esp, &work, &disk)?;
    Ok(BuildOutput { uki: uki_path, disk, initrd, reference })
}
