//! `cargo xtask`: the project's entry points that are more than `cargo build`.
//!
//! - `cargo xtask setup` — installs what the suite needs on Debian/Ubuntu (apt packages, the
//!   cargo-fuzz tool), or says exactly what to run when it cannot (not root, not Debian).
//! - `cargo xtask test` — `setup`, a check that the disk can take the build, then formatting,
//!   lints, dependency rules, the whole test suite (TPM tests against private swtpm instances)
//!   and a fuzz smoke run of every target.
//! - `cargo xtask bench` — the benchmarks whose results go into `docs/benchmarks.md`.
//!
//! Must never: hide a failing step (every step's failure stops the run with its name), or
//! touch anything outside the repository, the cargo target dir and the system package manager —
//! with one exception: when the disk is too full for the test build, stale sibling target dirs
//! under [`CACHE_ROOT`] (caches of other checkouts, nothing else) are removed, oldest first,
//! each one named as it goes.

#![forbid(unsafe_code)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::Instant;

/// Debian packages the test suite needs, with why.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the appliance image"),
    ("ovmf", "UEFI firmware for QEMU (measured boot)"),
    ("systemd-boot-efi", "the EFI stub the UKI is built on and systemd-boot, the A/B boot loader"),
    ("binutils", "objcopy assembles the UKI"),
    ("dosfstools", "mkfs.vfat builds the EFI system partition"),
    ("mtools", "mcopy fills the EFI system partition without mounting it"),
    ("kmod", "depmod/modprobe order the kernel modules"),
    ("fdisk", "sfdisk writes the GPT"),
    ("e2fsprogs", "mkfs.ext4 makes the data partition"),
    ("libtss2-dev", "tss-esapi links the tpm2-tss libraries"),
    ("pkg-config", "tss-esapi's build script finds tpm2-tss with it"),
    ("swtpm", "the software TPM every TPM test runs against"),
    ("swtpm-tools", "swtpm_setup/swtpm_localca provision EK certificates"),
    ("gnutls-bin", "swtpm_localca creates its CA with certtool"),
    ("tpm2-tools", "independent cross-checks (tpm2_eventlog, tpm2_checkquote)"),
    ("openssl", "an independent X.509 issuer for the EK certificate-profile tests"),
    ("build-essential", "C compiler for -sys crates and libFuzzer"),
    ("sbsigntool", "sbsign/sbverify sign the UKI for Secure Boot"),
    ("faketime", "a fixed signing time keeps the signed UKI bit-identical"),
    ("python3-venv", "a venv for virt-firmware (virt-fw-vars writes the Secure Boot variable store)"),
];

/// The venv holding virt-firmware, and its `virt-fw-vars` (the image builder's path).
const VENV: &str = "/var/cache/sovereign/venv";
const VIRT_FW_VARS: &str = "/var/cache/sovereign/venv/bin/virt-fw-vars";
/// ElectrumX 1.18.0 (PyPI `e-x`; 1.19+ refuse bcoin), in the same venv: the Electrum server of
/// the ledger tests.
const ELECTRUMX: &str = "/var/cache/sovereign/venv/bin/electrumx_server";
/// Where bcoin 1.0.2 (npm), the ledger tests' regtest node, is installed.
const BITCOIN_DIR: &str = "/var/cache/sovereign/bitcoin";
/// Where js-libp2p (npm, `runtime/mesh/tests/interop/package-lock.json`), the mesh's interop
/// test's other libp2p implementation, is installed.
const JS_LIBP2P_DIR: &str = "/var/cache/sovereign/js-libp2p";

/// Fuzz targets run by the smoke run, and for how long each.
const FUZZ_TARGETS: &[&str] = &[
    "event_log",
    "quote",
    "signature",
    "ecc_public",
    "measurement_log",
    "signed_policy",
    "sealed_blob",
    "verify_quote",
    "audit_log_file",
    "signed_note",
    "compliance_bundle",
    "control_request",
    "attest_evidence",
    "policy_bundle",
    "governed_request",
    "pipeline_yaml",
    "boot_handover",
    "update_bundle",
    "ledger_headers",
    "mesh_message",
];
const FUZZ_SECONDS: u32 = 6;

/// Where CI keeps its cargo target dirs (`.ci/run`), one per checkout path.
const CACHE_ROOT: &str = "/var/cache/sovereign";
/// What a full `cargo xtask test` writes, from an empty target dir to the end of the fuzz smoke
/// run (measured 5.0 GiB with one release build, 2026-11-30; 9.4 GiB with the three builds before), plus room for
/// the QEMU disk copies, swtpm state and temp files of the tests, and for growth.
const TEST_DISK_NEED: u64 = 14 << 30;
/// Below this, even a warm target dir cannot take the relinked test binaries and the image.
const TEST_DISK_FLOOR: u64 = 4 << 30;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => setup().and_then(|()| disk_preflight()).and_then(|()| test()),
        Some("bench") => setup().and_then(|()| bench()),
        Some("fuzz") => setup().and_then(|()| fuzz_smoke(FUZZ_SECONDS)),
        // No setup: a GPU machine needs only the toolchain, the driver and the GPU.
        Some("gpu-check") => gpu_check(),
        Some("image") => setup().and_then(|()| image(&root().join("build"))),
        Some("modules") => {
            setup().and_then(|()| release_build("the release build (the operator CLI signs the modules)")).and_then(|()| modules())
        }
        Some("run") => {
            setup().and_then(|()| image(&root().join("build"))).and_then(|()| modules()).and_then(|()| demo())
        }
        Some("update-demo") => setup()
            .and_then(|()| image(&root().join("build")))
            .and_then(|()| release_build("the release build (the operator CLI, sovereign-demo)"))
            .and_then(|()| update_demo()),
        Some("firmware-profile") => setup().and_then(|()| image(&root().join("build"))).and_then(|()| {
            step(
                "record the QEMU+OVMF platform profiles (Secure Boot on and off) from reference boots",
                Command::new(built("record-firmware-profile")).current_dir(root()),
            )
        }),
        Some("firmware-vars") => setup().and_then(|()| release_build("the release build (the image builder)")).and_then(|()| {
            step(
                "write firmware/ovmf-vars-secureboot.fd (OVMF variables, the Secure Boot keys of firmware/secure-boot/ enrolled)",
                Command::new(built("sovereign-image")).arg("secure-boot-vars").current_dir(root()),
            )
        }),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|test|bench|fuzz|gpu-check|image|modules|run|update-demo|firmware-profile|firmware-vars>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Step(msg)) => {
            eprintln!("xtask: FAILED: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Environment(msg)) => {
            eprintln!("xtask: cannot run here: {msg}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    /// A check ran and failed.
    Step(String),
    /// The machine lacks something we cannot install ourselves.
    Environment(String),
}

fn root() -> PathBuf {
    // Read at run time: cargo does not rebuild a workspace member when only its checkout path
    // changes, so a compile-time path would point at whichever clone built it first.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn step(name: &str, cmd: &mut Command) -> Result<(), Failure> {
    eprintln!("\n==> {name}\n    $ {}", render(cmd));
    let start = Instant::now();
    let status =
        cmd.status().map_err(|e| Failure::Environment(format!("{name}: cannot start {}: {e}", render(cmd))))?;
    if status.success() {
        eprintln!("    ok: {name} ({:.1}s)", start.elapsed().as_secs_f64());
        Ok(())
    } else {
        Err(Failure::Step(format!("{name} ({status})")))
    }
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Set by `cargo xtask test`: clippy-driver, run by every cargo command of the test flow as the
/// workspace's rustc wrapper, with `-D warnings`.
static LINT_WRAPPER: OnceLock<PathBuf> = OnceLock::new();

/// Separates the arguments in `CLIPPY_ARGS` (what `cargo clippy` itself sets).
const CLIPPY_ARGS: &str = "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__";

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    // TPM tests provoke expected failures; tpm2-tss would log each one to stderr.
    c.env("TSS2_LOG", "all+none");
    if let Some(driver) = LINT_WRAPPER.get() {
        c.env("RUSTC_WORKSPACE_WRAPPER", driver).env("CLIPPY_ARGS", CLIPPY_ARGS);
    }
    if let Some((release, pcr_policy)) = RELEASE_KEYS.get() {
        c.env("SOVEREIGN_RELEASE_PUBKEY", release).env("SOVEREIGN_PCR_POLICY_PUBKEY", pcr_policy);
    }
    c
}

/// The toolchain's clippy-driver (`rust-toolchain.toml` names the clippy component).
fn clippy_driver() -> Result<PathBuf, Failure> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root())
        .output()
        .map_err(|e| Failure::Environment(format!("running rustc --print sysroot: {e}")))?;
    let driver = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/clippy-driver");
    if !out.status.success() || !driver.exists() {
        return Err(Failure::Environment(format!(
            "{} is missing: run `rustup component add clippy`",
            driver.display()
        )));
    }
    Ok(driver)
}

fn is_debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release")
        .map(|s| {
            s.lines().any(|l| {
                l.starts_with("ID=debian")
                    || l.starts_with("ID=ubuntu")
                    || l.contains("ID_LIKE=debian")
                    || l.contains("ID_LIKE=\"debian")
            })
        })
        .unwrap_or(false)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn setup() -> Result<(), Failure> {
    if !is_debian_like() {
        let list: Vec<&str> = APT_PACKAGES.iter().map(|(p, _)| *p).collect();
        return Err(Failure::Environment(format!(
            "this is not Debian or Ubuntu; install the equivalents of: {} (and `cargo install cargo-fuzz --locked`)",
            list.join(" ")
        )));
    }
    let missing: Vec<&str> = APT_PACKAGES.iter().map(|(p, _)| *p).filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        for (p, why) in APT_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
            eprintln!("xtask: missing {p}: {why}");
        }
        let install = format!("apt-get update && apt-get install -y --no-install-recommends {}", missing.join(" "));
        if !is_root() {
            return Err(Failure::Environment(format!(
                "not root, so not installing packages; run: sudo sh -c '{install}'"
            )));
        }
        step("apt-get update", Command::new("apt-get").arg("update").arg("-qq"))?;
        step(
            "install system packages",
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    let have_fuzz = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_fuzz {
        step("install cargo-fuzz", cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    if !Path::new(VIRT_FW_VARS).exists() {
        step(
            "a venv for virt-firmware (virt-fw-vars writes OVMF variable stores)",
            Command::new("python3").args(["-m", "venv", VENV]),
        )?;
        step(
            "install virt-firmware 26.10 from PyPI",
            Command::new(format!("{VENV}/bin/pip")).args(["install", "--quiet", "virt-firmware==26.10"]),
        )?;
    }
    if !Path::new(ELECTRUMX).exists() {
        step(
            "install ElectrumX 1.18.0 from PyPI (the ledger tests' Electrum server)",
            Command::new(format!("{VENV}/bin/pip")).args(["install", "--quiet", "e-x==1.18.0"]),
        )?;
    }
    let have_prometheus_parser = Command::new(format!("{VENV}/bin/python"))
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_prometheus_parser {
        step(
            "install prometheus-client 0.21.1 from PyPI (the metrics test's independent parser)",
            Command::new(format!("{VENV}/bin/pip")).args(["install", "--quiet", "prometheus-client==0.21.1"]),
        )?;
    }
    if !Path::new(BITCOIN_DIR).join("node_modules/bcoin/bin/node").exists() {
        let have_npm = Command::new("npm").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !have_npm {
            if !is_root() {
                return Err(Failure::Environment(
                    "npm is missing (the ledger tests' regtest node is bcoin from npm): run sudo apt-get install -y nodejs npm".into(),
                ));
            }
            step(
                "install Node.js and npm (bcoin, the ledger tests' regtest node)",
                Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "nodejs",
                    "npm",
                ]),
            )?;
        }
        std::fs::create_dir_all(BITCOIN_DIR)
            .map_err(|e| Failure::Environment(format!("creating {BITCOIN_DIR}: {e}")))?;
        let npm = |args: &[&str]| {
            let mut c = Command::new("npm");
            c.current_dir(BITCOIN_DIR).args(args);
            c
        };
        step("npm init (bcoin's directory)", &mut npm(&["init", "-y", "--silent"]))?;
        step("pin leveldown 6.1.1 for bcoin", &mut npm(&["pkg", "set", "overrides.leveldown=6.1.1"]))?;
        step(
            "install bcoin 1.0.2 from npm (the ledger tests' regtest node)",
            &mut npm(&["install", "--silent", "--ignore-scripts", "bcoin@1.0.2"]),
        )?;
    }
    // js-libp2p, exactly as the committed lockfile pins it (installed again when it changes).
    let interop = root().join("runtime/mesh/tests/interop");
    let lock = std::fs::read(interop.join("package-lock.json"))
        .map_err(|e| Failure::Environment(format!("reading the interop test's package-lock.json: {e}")))?;
    let installed = Path::new(JS_LIBP2P_DIR);
    if std::fs::read(installed.join("package-lock.json")).ok().as_deref() != Some(lock.as_slice())
        || !installed.join("node_modules/libp2p/package.json").exists()
    {
        std::fs::create_dir_all(installed)
            .and_then(|()| std::fs::copy(interop.join("package.json"), installed.join("package.json")))
            .and_then(|_| std::fs::write(installed.join("package-lock.json"), &lock))
            .map_err(|e| Failure::Environment(format!("preparing {JS_LIBP2P_DIR}: {e}")))?;
        step(
            "install js-libp2p 2.10.0 from npm (the mesh's interop test)",
            Command::new("npm").current_dir(installed).args(["ci", "--silent", "--ignore-scripts"]),
        )?;
    }
    let wasm_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown"))
        .unwrap_or(false);
    if !wasm_target {
        step(
            "add the wasm32-unknown-unknown target (stage modules)",
            Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
        )?;
    }
    Ok(())
}

/// Builds the example stage modules (`modules/`, wasm32-unknown-unknown) into `build/modules/`.
fn modules() -> Result<(), Failure> {
    let target = target_dir().join("modules");
    step(
        "example WASM stage modules (wasm32-unknown-unknown)",
        cargo()
            .args(["build", "--release", "--target", "wasm32-unknown-unknown", "--manifest-path"])
            .arg(root().join("modules/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target),
    )?;
    let out = root().join("build/modules");
    std::fs::create_dir_all(&out).map_err(|e| Failure::Environment(format!("creating {}: {e}", out.display())))?;
    let release = root().join("build/keys/release.key");
    for name in ["normalize", "train", "agent"] {
        let from = target.join(format!("wasm32-unknown-unknown/release/stage_{name}.wasm"));
        let to = out.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to)
            .map_err(|e| Failure::Step(format!("copying {} to {}: {e}", from.display(), to.display())))?;
        if release.exists() {
            step(
                &format!("release-signed manifest of module {name}"),
                Command::new(built("sovereign"))
                    .args(["module", "sign", "--key"])
                    .arg(&release)
                    .args(["--name", name, "--capability", "read_input", "--capability", "write_output"])
                    .args(["--capability", "log"])
                    .arg(&to),
            )?;
        }
    }
    // The example governed GPU kernel: PTX, signed with the gpu_kernel capability alone (the
    // sandbox refuses it as WASM; only a gpu_kernel stage launches it).
    let kernel = out.join("invert.ptx");
    std::fs::copy(root().join("examples/kernels/invert.ptx"), &kernel)
        .map_err(|e| Failure::Step(format!("copying the example kernel to {}: {e}", kernel.display())))?;
    if release.exists() {
        step(
            "release-signed manifest of GPU kernel invert",
            Command::new(built("sovereign"))
                .args(["module", "sign", "--key"])
                .arg(&release)
                .args(["--name", "invert", "--capability", "gpu_kernel"])
                .arg(&kernel),
        )?;
        step(
            "release-signed Iron Path policy",
            Command::new(built("sovereign"))
                .args(["policy", "sign"])
                .arg(root().join("examples/policies/iron-path.cozo"))
                .args(["--name", "iron-path", "--version", "1", "--key"])
                .arg(&release)
                .arg("--out")
                .arg(root().join("build/iron-path.policy.json")),
        )?;
    }
    Ok(())
}

fn test() -> Result<(), Failure> {
    step("format", cargo().args(["fmt", "--all", "--check"]))?;
    // Clippy runs inside the one release build instead of a separate `cargo clippy` (a check
    // build of every dependency: minutes of CI): clippy-driver wraps rustc for the workspace's
    // own crates only, so the dependencies compile once, shared by everything below.
    let driver = clippy_driver()?;
    LINT_WRAPPER.get_or_init(|| driver);
    release_build("lints (clippy, -D warnings) and the release build of every target")?;
    step(
        "the verifier builds without the TPM stack",
        cargo().args(["build", "--release", "-p", "sovereign-measured-boot", "--no-default-features", "--lib"]),
    )?;
    image(&root().join("build"))?;
    modules()?;
    // The fuzz build (a second build of every dependency, with the sanitizers: minutes cold)
    // runs beside the tests at the lowest CPU priority: TCG guests leave the cores idle while
    // they wait (swtpm, images being built, consoles), and the build takes only those cycles.
    let fuzz_build = BackgroundStep::start("fuzz targets build (beside the tests, nice 19)", &mut fuzz_build())?;
    // The one release build (shared with the image, the CLI and the benchmarks); every
    // benchmark runs one short iteration of each row (`sovereign-bench`: no `--bench`).
    step(
        "tests (unit, swtpm, the image booted in QEMU under OVMF) and every benchmark once",
        cargo().args(["test", "--release", "--workspace", "--all-targets", "--", "--test-threads", "4"]),
    )?;
    // The README's main command, as a user runs it (one more boot): it must attest PASS.
    demo()?;
    // The README's update command (two more boots): push, apply, trial, blessing, floor.
    update_demo()?;
    fuzz_build.finish()?;
    fuzz_runs(FUZZ_SECONDS)
}

/// The fuzz targets' build. cargo-fuzz needs unstable compiler flags (sanitizers, coverage);
/// the pinned stable toolchain accepts them with RUSTC_BOOTSTRAP=1. Only the fuzz build uses
/// this. `--dev`: unoptimised (with debug assertions), which compiles wasmtime and CozoDB with
/// the sanitizers in far less time than `--release`; a smoke run needs coverage, not speed.
fn fuzz_build() -> Command {
    let mut cmd = cargo();
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .current_dir(root().join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "build", "--dev"]);
    cmd
}

/// A step that runs while others do, at the lowest CPU priority, its output kept in a file
/// (shown when it fails) so it does not interleave with theirs. Killed if dropped unfinished.
struct BackgroundStep {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
    start: Instant,
}

impl BackgroundStep {
    fn start(name: &str, cmd: &mut Command) -> Result<Self, Failure> {
        let log = target_dir().join(format!("{}.log", name.split(' ').take(2).collect::<Vec<_>>().join("-")));
        let file = std::fs::File::create(&log)
            .map_err(|e| Failure::Environment(format!("{name}: creating {}: {e}", log.display())))?;
        let err = file.try_clone().map_err(|e| Failure::Environment(format!("{name}: {e}")))?;
        let mut niced = Command::new("nice");
        niced.arg("-n").arg("19").arg(cmd.get_program()).args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            niced.current_dir(dir);
        }
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => niced.env(key, v),
                None => niced.env_remove(key),
            };
        }
        eprintln!("\n==> {name} (started; its output: {})\n    $ nice -n 19 {}", log.display(), render(cmd));
        let child = niced
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| Failure::Environment(format!("{name}: cannot start {}: {e}", render(cmd))))?;
        Ok(BackgroundStep { name: name.into(), child: Some(child), log, start: Instant::now() })
    }

    /// Waits for it; a failure shows the end of its output.
    fn finish(mut self) -> Result<(), Failure> {
        let name = self.name.clone();
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let waiting = Instant::now();
        let status = child.wait().map_err(|e| Failure::Environment(format!("{name}: waiting: {e}")))?;
        if status.success() {
            eprintln!(
                "    ok: {name} (started {:.1}s ago; {:.1}s of waiting for it after the steps beside it)",
                self.start.elapsed().as_secs_f64(),
                waiting.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        Err(Failure::Step(format!("{name} ({status}; its output: {})", self.log.display())))
    }
}

impl Drop for BackgroundStep {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fuzz_smoke(seconds: u32) -> Result<(), Failure> {
    step("fuzz targets build", &mut fuzz_build())?;
    fuzz_runs(seconds)
}

/// A smoke run of every fuzz target (built already).
fn fuzz_runs(seconds: u32) -> Result<(), Failure> {
    let fuzz_dir = root().join("fuzz");
    for target in FUZZ_TARGETS {
        // Work corpus (ignored by git) first, then the committed seeds from real artifacts.
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| Failure::Environment(format!("creating {}: {e}", corpus.display())))?;
        let seeds = fuzz_dir.join("seeds").join(target);
        let mut cmd = cargo();
        cmd.env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--dev", target])
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=0"]);
        step(&format!("fuzz smoke: {target} ({seconds}s)"), &mut cmd)?;
    }
    Ok(())
}

/// The public halves of the development keys, compiled into PID 1 and the runtime; set once
/// `build/keys` exists and passed to every later cargo command, so that the one release build
/// has them and nothing is built a second time without them.
static RELEASE_KEYS: OnceLock<(String, String)> = OnceLock::new();

/// The one release build: the whole workspace with one feature resolution (a `-p` selection
/// would resolve features differently and compile wasmtime and CozoDB again), and in the test
/// flow every target (tests, benchmarks) too. Cheap when nothing changed.
fn release_build(what: &str) -> Result<(), Failure> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--workspace"]);
    if LINT_WRAPPER.get().is_some() {
        cmd.arg("--all-targets");
    }
    step(what, &mut cmd)
}

/// A binary of the release build.
fn built(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// Builds the appliance image with the development keys in `build/keys` (generated once).
fn image(build: &Path) -> Result<(), Failure> {
    let keys = build.join("keys");
    if !keys.join("release.key").exists() {
        release_build("the release build (the image builder makes the development keys)")?;
        step("development keys", Command::new(built("sovereign-image")).args(["keygen", "--dir"]).arg(&keys))?;
    }
    let read = |name: &str| {
        std::fs::read_to_string(keys.join(name))
            .map(|s| s.trim().to_string())
            .map_err(|e| Failure::Environment(format!("reading {}: {e}", keys.join(name).display())))
    };
    let (release, pcr_policy) = (read("release.pub")?, read("pcr-policy.pub")?);
    if RELEASE_KEYS.get_or_init(|| (release.clone(), pcr_policy.clone())) != &(release, pcr_policy) {
        return Err(Failure::Environment("build/keys changed while xtask was running".into()));
    }
    release_build("PID 1 and runtime (release; the release and PCR-policy keys compiled in)")?;
    // Stripped copies outside the target dir: the image takes these, and no later build in the
    // same target dir can change what the image was built from.
    let bin = build.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| Failure::Environment(format!("creating {}: {e}", bin.display())))?;
    for name in ["sovereign-init", "sovereign-runtime"] {
        step(
            &format!("strip {name} for the image"),
            Command::new("objcopy").arg("--strip-all").arg(built(name)).arg(bin.join(name)),
        )?;
    }
    step(
        "image (initramfs, signed manifest, UKI, PCR policy, disk)",
        Command::new(built("sovereign-image"))
            .args(["build", "--keys"])
            .arg(&keys)
            .arg("--init")
            .arg(bin.join("sovereign-init"))
            .arg("--runtime")
            .arg(bin.join("sovereign-runtime"))
            .arg("--out")
            .arg(build.join("image"))
            .arg("--db-key")
            .arg(root().join("firmware/secure-boot/db.key"))
            .arg("--db-cert")
            .arg(root().join("firmware/secure-boot/db.crt")),
    )
}

/// Boots the appliance and attests it with the real `sovereign` CLI (`sovereign-demo`, which
/// runs the `sovereign` binary beside it).
fn demo() -> Result<(), Failure> {
    release_build("the release build (operator CLI `sovereign`, `sovereign-demo`)")?;
    step(
        "boot the appliance in QEMU (OVMF + swtpm), attest it, run the Iron Path, verify its bundle, shut it down",
        Command::new(built("sovereign-demo")).current_dir(root()).env("TSS2_LOG", "all+none"),
    )
}

/// An update through the real CLI (`sovereign-demo update`): v2 built and bundled, pushed,
/// applied, booted on trial, blessed, floored.
fn update_demo() -> Result<(), Failure> {
    step(
        "update the appliance through the CLI (push, apply, trial boot, blessing, floor)",
        Command::new(built("sovereign-demo")).arg("update").current_dir(root()).env("TSS2_LOG", "all+none"),
    )
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Makes sure the test build has the disk it needs before it starts: a linker that runs out of
/// space dies with SIGBUS halfway through, which says nothing about the cause. Needs
/// [`TEST_DISK_NEED`] less what the target dir already holds (never less than
/// [`TEST_DISK_FLOOR`]); when short, removes stale sibling target dirs under [`CACHE_ROOT`],
/// least recently used first; fails naming the shortfall if that is not enough.
fn disk_preflight() -> Result<(), Failure> {
    let target = target_dir();
    std::fs::create_dir_all(&target)
        .map_err(|e| Failure::Environment(format!("creating the target dir {}: {e}", target.display())))?;
    let held = bytes_under(&target)?;
    let need = TEST_DISK_NEED.saturating_sub(held).max(TEST_DISK_FLOOR);
    let mut free = free_bytes(&target)?;
    if free < need {
        for stale in stale_sibling_caches(&target, Path::new(CACHE_ROOT)) {
            if free >= need {
                break;
            }
            eprintln!(
                "xtask: {} free, {} needed: removing the stale build cache {}",
                gib(free),
                gib(need),
                stale.display()
            );
            std::fs::remove_dir_all(&stale)
                .map_err(|e| Failure::Environment(format!("removing {}: {e}", stale.display())))?;
            free = free_bytes(&target)?;
        }
    }
    if free < need {
        return Err(Failure::Environment(format!(
            "only {} free on the filesystem of {}, and the test build needs about {} more (its target dir holds {})",
            gib(free),
            target.display(),
            gib(need),
            gib(held)
        )));
    }
    eprintln!(
        "xtask: disk: {} free for {} (target dir holds {}, needs about {} more)",
        gib(free),
        target.display(),
        gib(held),
        gib(need)
    );
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The sibling target dirs (`target`, `target-<key>`) of `target` under `cache_root`, least
/// recently used first; nothing when `target` does not live there.
fn stale_sibling_caches(target: &Path, cache_root: &Path) -> Vec<PathBuf> {
    let (Ok(target), Ok(cache_root)) = (target.canonicalize(), cache_root.canonicalize()) else {
        return Vec::new();
    };
    if target.parent() != Some(cache_root.as_path()) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(&cache_root) else {
        return Vec::new();
    };
    let mut stale: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| *path != target && path.is_dir())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name == "target" || name.starts_with("target-"))
        })
        .map(|path| (last_used(&path), path))
        .collect();
    stale.sort();
    stale.into_iter().map(|(_, path)| path).collect()
}

/// When a target dir was last written: the newest mtime of the dir and its profile dirs.
fn last_used(dir: &Path) -> std::time::SystemTime {
    let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
    let children = std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok).map(|e| mtime(&e.path()));
    children.chain(std::iter::once(mtime(dir))).max().unwrap_or(std::time::UNIX_EPOCH)
}

/// Bytes available to us on the filesystem holding `path` (`df`, so no unsafe statvfs here).
fn free_bytes(path: &Path) -> Result<u64, Failure> {
    // `df` prints a header line, then the number.
    byte_count("df", &["--output=avail", "-B1"], path, true, |text| text.lines().nth(1))
}

/// Bytes held under `dir` (`du`).
fn bytes_under(dir: &Path) -> Result<u64, Failure> {
    // `du -s` prints the number, then the path. It exits non-zero when a file vanishes while it
    // counts (a build running beside it); the total it prints still holds.
    byte_count("du", &["-s", "-B1"], dir, false, |text| text.split_whitespace().next())
}

/// Runs `tool args path` and reads a byte count from its output where `pick` finds it (only
/// from a successful run when `must_succeed`).
fn byte_count(
    tool: &str,
    args: &[&str],
    path: &Path,
    must_succeed: bool,
    pick: fn(&str) -> Option<&str>,
) -> Result<u64, Failure> {
    let out = Command::new(tool)
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| Failure::Environment(format!("{tool} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let count =
        if out.status.success() || !must_succeed { pick(&text).and_then(|n| n.trim().parse().ok()) } else { None };
    count.ok_or_else(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Failure::Environment(format!(
            "{tool} {} ({}): no byte count in {text:?} {}",
            path.display(),
            out.status,
            stderr.trim()
        ))
    })
}

/// The tests and benchmark rows that need an NVIDIA GPU and driver (`sovereign-gpu`'s
/// `device-tests`): they fail, by name, on a machine without one — never skipped.
fn gpu_check() -> Result<(), Failure> {
    step(
        "GPU device tests: NVML readings, a governed kernel's launch, a memory-budget refusal, a time limit",
        cargo()
            .args(["test", "--release", "-p", "sovereign-gpu", "--features", "device-tests", "--test", "device"])
            .args(["--", "--test-threads=1", "--nocapture"]),
    )?;
    step(
        "GPU benchmarks: monitor pass, NVML sampling, governed against bare kernel launch",
        cargo().args(["bench", "-p", "sovereign-gpu", "--features", "device-tests", "--bench", "gpu"]),
    )
}

fn bench() -> Result<(), Failure> {
    step("TPM benchmarks (swtpm)", cargo().args(["bench", "-p", "sovereign-measured-boot", "--bench", "tpm"]))?;
    step(
        "attestation round trip through the control server (swtpm)",
        cargo().args(["bench", "-p", "sovereign-runtime", "--bench", "attest"]),
    )?;
    step("WASM stage invocation overhead", cargo().args(["bench", "-p", "sovereign-sandbox", "--bench", "invoke"]))?;
    modules()?;
    step("the Iron Path by stage", cargo().args(["bench", "-p", "sovereign-pipeline", "--bench", "iron_path"]))?;
    step(
        "governed action (policy, binding, replay store, audit)",
        cargo().args(["bench", "-p", "sovereign-governance", "--bench", "governed"]),
    )?;
    step("audit-log benchmarks", cargo().args(["bench", "-p", "sovereign-audit", "--bench", "audit"]))?;
    step("GPU monitor judging pass (no GPU needed)", cargo().args(["bench", "-p", "sovereign-gpu", "--bench", "gpu"]))?;
    step(
        "mesh: admission, re-attestation and witnessing (swtpm, 127.0.0.1)",
        cargo().args(["bench", "-p", "sovereign-mesh", "--bench", "mesh"]),
    )?;
    step(
        "the verifier on a real appliance's evidence (a mesh peer's admission)",
        cargo().args(["bench", "-p", "sovereign-verifier", "--bench", "verify"]),
    )
}

#[cfg(test)]
mod tidy;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn age(path: &Path, seconds_ago: u64) {
        let when = SystemTime::now() - Duration::from_secs(seconds_ago);
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(when).expect("set mtime");
    }

    #[test]
    fn only_sibling_target_dirs_are_offered_oldest_first() {
        let root = env::temp_dir().join(format!("xtask-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["target-aaa", "target-bbb", "target", "kernel", "target-ours"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        std::fs::create_dir_all(root.join("target-bbb/debug")).expect("mkdir");
        std::fs::write(root.join("target-file"), b"not a dir").expect("write");
        age(&root.join("target-aaa"), 300);
        age(&root.join("target"), 200);
        age(&root.join("target-bbb"), 500);
        age(&root.join("target-bbb/debug"), 10); // used recently, through its profile dir

        let offered = stale_sibling_caches(&root.join("target-ours"), &root);
        let names: Vec<_> = offered.iter().filter_map(|p| p.file_name()?.to_str()).collect();
        assert_eq!(names, ["target-aaa", "target", "target-bbb"]);

        // A target dir outside the cache root never prunes anything.
        std::fs::create_dir_all(root.join("target-ours/nested")).expect("mkdir");
        assert!(stale_sibling_caches(&root.join("target-ours/nested"), &root).is_empty());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn df_and_du_are_read() {
        let dir = env::temp_dir();
        assert!(free_bytes(&dir).is_ok_and(|free| free > 0));
        assert!(bytes_under(&dir).is_ok());
        assert!(free_bytes(Path::new("/nonexistent/xtask")).is_err());
    }
}
