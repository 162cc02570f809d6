//! Shared fixtures for the end-to-end tests: the image `cargo xtask image` built (one per
//! suite run, shared by every test), variants of it built on demand, and boot slots so that
//! no more guests run at once than the machine has cores (two, TCG).
//!
//! Must never: build the image itself (a missing image is a failure that says which command
//! makes it), change the shared image or keys, or let more than [`GUESTS_AT_ONCE`] guests run.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use sovereign_image::build::{self, BuildInput, BuildOutput, Kernel, RuntimeConfig, Tamper};
use sovereign_image::keys::{self, KeySet};

/// The repository root.
pub fn root() -> PathBuf {
    // Read at run time (cargo sets it for tests and `cargo run`): a compile-time path would be
    // stale when a shared target dir serves several checkouts.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where `cargo xtask image` put its outputs.
pub fn build_dir() -> PathBuf {
    root().join("build")
}

/// The stripped release binaries the shared image was built from (`cargo xtask image` puts
/// them in `build/bin`).
pub fn binaries() -> (PathBuf, PathBuf) {
    let bin = build_dir().join("bin");
    (bin.join("sovereign-init"), bin.join("sovereign-runtime"))
}

/// The shared image. Panics with what to run when it was not built.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let disk = build_dir().join("image").join("disk.raw");
        assert!(
            disk.exists(),
            "{} is missing: run `cargo xtask image` first (`cargo xtask test` does)",
            disk.display()
        );
        disk
    })
}

/// How many guests may run at once: one per core of the CI machine (two). A TCG guest keeps one
/// host thread busy; the test threads mostly wait on its console.
pub const GUESTS_AT_ONCE: usize = 2;

static RUNNING_GUESTS: Mutex<usize> = Mutex::new(0);
static GUEST_FINISHED: Condvar = Condvar::new();

/// A permit to boot guests, held for as long as the test runs them; at most [`GUESTS_AT_ONCE`]
/// are out at a time (cargo runs test binaries one after another, so this holds machine-wide).
pub struct BootSlot(());

impl Drop for BootSlot {
    fn drop(&mut self) {
        let mut running = RUNNING_GUESTS.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        GUEST_FINISHED.notify_one();
    }
}

/// Waits for a [`BootSlot`].
pub fn boot_slot() -> BootSlot {
    let mut running = RUNNING_GUESTS.lock().unwrap_or_else(|p| p.into_inner());
    while *running >= GUESTS_AT_ONCE {
        running = GUEST_FINISHED.wait(running).unwrap_or_else(|p| p.into_inner());
    }
    *running += 1;
    BootSlot(())
}

/// The development keys the shared image was built with.
pub fn dev_keys() -> KeySet {
    keys::load(&build_dir().join("keys")).unwrap_or_else(|e| panic!("loading build/keys: {e:#}"))
}

/// The build input of the shared image (same binaries, kernel, command line).
pub fn base_input() -> BuildInput {
    let (init, runtime) = binaries();
    let kernel: Kernel = build::fetch_debian_kernel(Path::new("/var/cache/sovereign/kernel"))
        .unwrap_or_else(|e| panic!("kernel: {e:#}"));
    BuildInput {
        init,
        runtime,
        kernel,
        version: 1,
        cmdline: build::DEFAULT_CMDLINE.into(),
        config: RuntimeConfig::default(),
        gpu_driver: None,
        update_policy: build::DEFAULT_UPDATE_POLICY.into(),
        stub: PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
        loader: PathBuf::from(build::SYSTEMD_BOOT),
        secure_boot: Some(secure_boot_key()),
    }
}

/// The development Secure Boot db key (`firmware/secure-boot/`), enrolled in
/// `firmware/ovmf-vars-secureboot.fd`.
pub fn secure_boot_key() -> build::SecureBootKey {
    let dir = root().join("firmware/secure-boot");
    build::SecureBootKey { key: dir.join("db.key"), cert: dir.join("db.crt") }
}

/// Builds a variant into `out`.
pub fn variant(input: &BuildInput, keys: &KeySet, out: &Path, tamper: &Tamper<'_>) -> BuildOutput {
    build::build_with(input, keys, out, tamper).unwrap_or_else(|e| panic!("building a variant: {e:#}"))
}

/// PCR values PID 1 printed on the console (`sovereign-init: pcr N = HEX`).
pub fn console_pcrs(console: &str) -> std::collections::BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split("sovereign-init: pcr ").nth(1))
        .filter_map(|rest| {
            let (i, v) = rest.split_once(" = ")?;
            Some((i.trim().to_string(), v.split_whitespace().next()?.to_string()))
        })
        .collect()
}

/// The appliance's platform profile: QEMU + OVMF with Secure Boot on and the project's keys.
pub const PLATFORM_PROFILE: &str = "firmware/qemu-ovmf-secureboot.json";

/// The recorded platform profile ([`PLATFORM_PROFILE`]): (firmware SHA-256, PCRs).
pub fn firmware_profile() -> (String, std::collections::BTreeMap<String, String>) {
    let path = root().join(PLATFORM_PROFILE);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sha = v["firmware"]["sha256"].as_str().unwrap_or_default().to_string();
    let pcrs = v["pcrs"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    (sha, pcrs)
}

/// SHA-256 of the installed OVMF code (via sha256sum).
pub fn installed_firmware_sha256() -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(sovereign_qemu::guest::OVMF_CODE_SECURE_BOOT)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// What an operator of the shared image trusts: the release key, the release's signed
/// reference values, the platform profile, and the EK CA of `appliance`'s TPM.
pub fn operator_trust(appliance: &sovereign_qemu::Appliance) -> sovereign_cli::attest::Trust {
    let image = build_dir().join("image");
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ca = appliance.ek_ca_pem().unwrap_or_else(|e| panic!("EK CA: {e}"));
    sovereign_cli::attest::Trust {
        release_key: dev_keys().release.verifying_key(),
        reference_values: read(image.join("reference-values.json")),
        reference_signature: read(image.join("reference-values.sig")),
        platform_profile: read(root().join(PLATFORM_PROFILE)),
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(ca.as_bytes())
            .unwrap_or_else(|e| panic!("EK CA: {e}")),
        node_identity: None,
    }
}

/// The development attestation CA (a fixed key: development only, like `build/keys`), and the
/// hex public key an auditor pins with `sovereign verify --ak-ca`.
pub fn attestation_ca() -> (ed25519_dalek::SigningKey, String) {
    let seed: [u8; 32] = sovereign_governance::canonical::sha256(b"sovereign development attestation CA");
    let ca = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = hex::encode(ca.verifying_key().as_bytes());
    (ca, public)
}

/// Attests the appliance on `socket` as its admin (`sovereign attest`'s library path) and,
/// since it passed, certifies its attestation key with [`attestation_ca`]: what an operator does
/// once per node before its bundles can be audited. Panics unless both succeed.
pub fn certify_ak(appliance: &sovereign_qemu::Appliance, socket: &Path) -> sovereign_protocol::akcert::AkCertificate {
    let admin = dev_keys().admin;
    let timeout = std::time::Duration::from_secs(120);
    let (exchange, report) = sovereign_cli::attest::attest(
        &sovereign_cli::Endpoint::from(socket),
        &admin,
        &operator_trust(appliance),
        now_unix(),
        timeout,
    )
    .unwrap_or_else(|e| panic!("attest: {e:#}"));
    assert!(report.passed(), "{}", report.render());
    let exchange = exchange.unwrap_or_else(|| panic!("no exchange"));
    sovereign_cli::attest::certify(
        &sovereign_cli::Endpoint::from(socket),
        &admin,
        &exchange,
        &attestation_ca().0,
        now_unix(),
        86_400,
        timeout,
    )
    .unwrap_or_else(|e| panic!("certify: {e:#}"))
}

/// The release build of the operator CLI `sovereign` (beside this test binary, or one level up
/// from `deps/`). Panics with what to run when it is missing.
pub fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dirs = exe.ancestors().skip(1).take(2);
    dirs.find_map(|d| Some(d.join("sovereign")).filter(|p| p.exists())).unwrap_or_else(|| {
        panic!("the `sovereign` CLI is not beside {}: build it with `cargo build --release --workspace`", exe.display())
    })
}

/// Runs the `sovereign` CLI: (exit code, stdout, stderr).
pub fn sovereign(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = std::process::Command::new(cli_binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", cli_binary().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sovereign audit export --socket SOCKET --key <admin key> --out OUT` against a running
/// appliance; panics with the CLI's output unless it succeeded.
pub fn export_from(socket: &Path, out: &Path) {
    let os = |s: &str| std::ffi::OsString::from(s);
    let admin_key = build_dir().join("keys/admin.key");
    let (code, stdout, stderr) = sovereign(&[
        &os("audit"),
        &os("export"),
        &os("--socket"),
        socket.as_os_str(),
        &os("--key"),
        admin_key.as_os_str(),
        &os("--out"),
        out.as_os_str(),
    ]);
    assert_eq!(code, 0, "sovereign audit export failed:\n{stdout}\n{stderr}");
}

/// `sovereign verify BUNDLE --json` with every trust root of the shared image pinned: the node
/// identity (hex), the release key (as policy key and release key), the admin root, the signed reference values,
/// the platform profile, the appliance's EK CA (`ek_ca`, a PEM file) and the development
/// attestation CA ([`attestation_ca`]). Returns the exit code
/// and the JSON verdict; panics with the output when it is not JSON.
pub fn verify_offline(bundle: &Path, identity_hex: &str, ek_ca: &Path) -> (i32, serde_json::Value) {
    let os = |s: &str| std::ffi::OsString::from(s);
    let release = build_dir().join("keys/release.pub");
    let (code, stdout, stderr) = sovereign(&[
        &os("verify"),
        bundle.as_os_str(),
        &os("--node-key"),
        &os(identity_hex),
        &os("--policy-key"),
        release.as_os_str(),
        &os("--admin-key"),
        build_dir().join("keys/admin.pub").as_os_str(),
        &os("--release-key"),
        release.as_os_str(),
        &os("--reference"),
        build_dir().join("image/reference-values.json").as_os_str(),
        &os("--platform"),
        root().join(PLATFORM_PROFILE).as_os_str(),
        &os("--ek-ca"),
        ek_ca.as_os_str(),
        &os("--ak-ca"),
        &os(&attestation_ca().1),
        &os("--json"),
    ]);
    let verdict = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: exit {code}\n{stdout}\n{stderr}"));
    (code, verdict)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
