//! `sovereign-demo`: the README's main command after the image is built. Boots the shared
//! image in QEMU (OVMF, a freshly provisioned swtpm), streams the boot, runs the real
//! `sovereign status` and `sovereign attest` CLI against the appliance as the development admin,
//! prints what was verified, and shuts the guest down with the ACPI power button.
//!
//! Exit code: 0 when the appliance came up and attested PASS, 1 otherwise, 2 on a setup error.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use sovereign_e2e::{build_dir, root};

fn say(start: Instant, line: &str) {
    eprintln!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64());
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sovereign-demo: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn sovereign_cli() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let cli = exe.with_file_name("sovereign");
    anyhow::ensure!(
        cli.exists(),
        "{} is missing: build it with `cargo build --release -p sovereign-cli`",
        cli.display()
    );
    Ok(cli)
}

fn run() -> anyhow::Result<bool> {
    let start = Instant::now();
    let cli = sovereign_cli()?;
    let image = build_dir().join("image");
    let keys = build_dir().join("keys");
    let disk = image.join("disk.raw");
    anyhow::ensure!(disk.exists(), "{} is missing: run `cargo xtask image`", disk.display());
    let out = build_dir().join("demo");
    std::fs::create_dir_all(&out)?;

    say(start, "provisioning a private software TPM (swtpm) with an EK certificate from a local CA");
    let mut appliance = sovereign_qemu::Appliance::new(&disk)?;
    let ek_ca = out.join("ek-ca.pem");
    std::fs::write(&ek_ca, appliance.ek_ca_pem()?)?;
    say(start, &format!("booting {} under OVMF with QEMU (TCG, no KVM: about 20-30 s)", disk.display()));
    let mut guest = appliance.boot(Duration::from_secs(300))?;
    let mut shown = 0usize;
    let ready = loop {
        let console = guest.console();
        for line in console.lines().skip(shown) {
            if line.contains("sovereign-") || line.contains("Linux version") {
                say(start, &format!("  guest: {line}"));
            }
        }
        shown = console.lines().count();
        if console.contains("sovereign-runtime: control: attestation") {
            break true;
        }
        if console.contains("sovereign-init: FATAL") || guest.finished() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !ready {
        say(start, "the appliance did not come up; see the console above");
        let _ = guest.powerdown();
        let _ = guest.wait_exit();
        return Ok(false);
    }
    let socket = appliance.control_socket();
    let admin = keys.join("admin.key");
    say(start, "$ sovereign status");
    let status = Command::new(&cli).args(["status", "--socket"]).arg(&socket).arg("--key").arg(&admin).status()?;
    let saved = out.join("attestation");
    let attest_args: Vec<(&str, PathBuf)> = vec![
        ("--socket", socket.clone()),
        ("--key", admin.clone()),
        ("--release-key", keys.join("release.pub")),
        ("--reference", image.join("reference-values.json")),
        ("--platform", root().join("firmware/qemu-ovmf.json")),
        ("--ek-ca", ek_ca.clone()),
        ("--save", saved.clone()),
    ];
    let shown_args: Vec<String> =
        attest_args.iter().map(|(k, v)| format!("{k} {}", v.strip_prefix(root()).unwrap_or(v).display())).collect();
    say(start, &format!("$ sovereign attest {}", shown_args.join(" ")));
    let mut cmd = Command::new(&cli);
    cmd.arg("attest");
    for (k, v) in &attest_args {
        cmd.arg(k).arg(v);
    }
    let attested = cmd.status()?;
    say(start, "pressing the ACPI power button");
    guest.powerdown()?;
    guest.wait_exit()?;
    let console = guest.console();
    for line in console.lines().skip(shown).filter(|l| l.contains("sovereign-")) {
        say(start, &format!("  guest: {line}"));
    }
    let passed = status.success() && attested.success();
    say(
        start,
        &if passed {
            format!(
                "PASS: the appliance booted, proved its firmware, image and configuration with a TPM quote bound to a fresh nonce and its identity key, and shut down cleanly; evidence in {}",
                saved.display()
            )
        } else {
            "FAIL: see the checks above".to_string()
        },
    );
    Ok(passed)
}
