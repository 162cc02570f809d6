//! `sovereign-demo`: the README's main command after the image is built. Boots the shared
//! image in QEMU (OVMF, a freshly provisioned swtpm), streams the boot, runs the real
//! `sovereign status` and `sovereign attest` CLI against the appliance as the development admin,
//! runs the Iron Path (`run`, two `approve`s, `run --resume`), verifies the exported compliance
//! bundle offline with `sovereign verify`, prints what was verified, and shuts the guest down with the ACPI power button.
//!
//! `sovereign-demo update` (`cargo xtask update-demo`): an update through the real CLI — builds
//! release 2 of the same inputs and its bundle (2 of the 3 development release signers), boots
//! the appliance, `sovereign update status`, `push`, `apply`; the appliance reboots into v2 on
//! trial, PID 1 blesses it once its runtime is healthy and raises the floor; `sovereign update
//! status` again.
//!
//! Exit code: 0 when the appliance came up and attested PASS (the update: came up on v2,
//! blessed, floor 2), 1 otherwise, 2 on a setup error.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use sovereign_e2e::{build_dir, root};

fn say(start: Instant, line: &str) {
    eprintln!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64());
}

fn main() -> ExitCode {
    let outcome = match std::env::args().nth(1).as_deref() {
        None => run(),
        Some("update") => update(),
        Some(other) => {
            eprintln!("usage: sovereign-demo [update] (not {other:?})");
            return ExitCode::from(2);
        }
    };
    match outcome {
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
    // The operator's attestation CA: it certifies the node's AK once the attestation passed,
    // and an auditor pins its public key (`sovereign verify --ak-ca`).
    let ak_ca = out.join("attestation-ca.key");
    if !ak_ca.exists() {
        let made =
            Command::new(&cli).arg("keygen").arg("--out").arg(&ak_ca).stdout(std::process::Stdio::null()).status()?;
        anyhow::ensure!(made.success(), "sovereign keygen failed");
    }
    let attest_args: Vec<(&str, PathBuf)> = vec![
        ("--socket", socket.clone()),
        ("--key", admin.clone()),
        ("--release-key", keys.join("release.pub")),
        ("--reference", image.join("reference-values.json")),
        ("--platform", root().join(sovereign_e2e::PLATFORM_PROFILE)),
        ("--ek-ca", ek_ca.clone()),
        ("--save", saved.clone()),
        ("--ak-ca", ak_ca.clone()),
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
    let iron_path = match iron_path(start, &cli, &socket, &out, &ek_ca) {
        Ok(summary) => Some(summary),
        Err(e) => {
            say(start, &format!("the Iron Path failed: {e:#}"));
            None
        }
    };
    say(start, "pressing the ACPI power button");
    guest.powerdown()?;
    guest.wait_exit()?;
    let console = guest.console();
    for line in console.lines().skip(shown).filter(|l| l.contains("sovereign-")) {
        say(start, &format!("  guest: {line}"));
    }
    let passed = status.success() && attested.success() && iron_path.is_some();
    if let Some(summary) = &iron_path {
        eprintln!("{summary}");
    }
    say(
        start,
        &if passed {
            format!(
                "PASS: the appliance booted, proved its firmware, image and configuration with a TPM quote bound to a fresh nonce and its identity key, ran the Iron Path under governance, its compliance bundle verified offline, and it shut down cleanly; evidence in {}",
                saved.display()
            )
        } else {
            "FAIL: see the checks above".to_string()
        },
    );
    Ok(passed)
}

/// Runs `sovereign ARGS`, echoing the command; returns (exit code, stdout).
fn cli_run(start: Instant, cli: &std::path::Path, args: &[String]) -> anyhow::Result<(i32, String)> {
    let shown: Vec<String> = args.iter().map(|a| a.replace(&format!("{}/", root().display()), "")).collect();
    say(start, &format!("$ sovereign {}", shown.join(" ")));
    let out = Command::new(cli).args(args).stderr(std::process::Stdio::inherit()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    if !args.contains(&"--json".to_string()) {
        eprint!("{stdout}");
    }
    Ok((code, stdout))
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// The Iron Path through the real CLI: run (stops at promotion), two approvals, resume
/// (promotion, rollback, audit export), the run listed by `runs`, then offline verification of
/// the exported bundle.
fn iron_path(
    start: Instant,
    cli: &std::path::Path,
    socket: &std::path::Path,
    out: &std::path::Path,
    ek_ca: &std::path::Path,
) -> anyhow::Result<String> {
    let keys = build_dir().join("keys");
    let image = build_dir().join("image");
    let dir = out.join("iron-path");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let s = |x: &str| x.to_string();
    let admin_key = p(&keys.join("admin.key"));
    say(
        start,
        "operator material: a pipeline-operator certificate for the admin key, two approvers, a revocation list",
    );
    let issue = |operator: String, role: &str, serial: u64, out: &std::path::Path| -> anyhow::Result<()> {
        let args = [
            s("cert"),
            s("issue"),
            s("--admin-key"),
            admin_key.clone(),
            s("--operator"),
            operator,
            s("--role"),
            s(role),
            s("--serial"),
            serial.to_string(),
            s("--out"),
            p(out),
        ];
        let (code, _) = cli_run(start, cli, &args)?;
        anyhow::ensure!(code == 0, "sovereign cert issue failed");
        Ok(())
    };
    let cert = dir.join("operator.cert.json");
    issue(p(&keys.join("admin.pub")), "pipeline-operator", 1, &cert)?;
    let revocations = dir.join("revocations.json");
    let revoke = [
        s("cert"),
        s("revocations"),
        s("--admin-key"),
        admin_key.clone(),
        s("--version"),
        s("1"),
        s("--out"),
        p(&revocations),
    ];
    let (code, _) = cli_run(start, cli, &revoke)?;
    anyhow::ensure!(code == 0, "sovereign cert revocations failed");
    let mut approvers = vec![];
    for i in 1..=2u64 {
        let key = dir.join(format!("approver-{i}.key"));
        let (code, _) = cli_run(start, cli, &[s("keygen"), s("--out"), p(&key)])?;
        anyhow::ensure!(code == 0, "sovereign keygen failed");
        let cert = dir.join(format!("approver-{i}.cert.json"));
        issue(format!("{}.pub", p(&key)), "approver", 10 + i, &cert)?;
        approvers.push((key, cert));
    }
    let appliance = vec![s("--socket"), p(socket), s("--key"), admin_key.clone()];
    let mut run_args = vec![s("run"), p(&root().join("examples/iron-path.yaml"))];
    run_args.extend(appliance.clone());
    run_args.extend([
        s("--modules"),
        p(&build_dir().join("modules")),
        s("--policy"),
        p(&build_dir().join("iron-path.policy.json")),
    ]);
    run_args.extend([s("--certificate"), p(&cert), s("--revocations"), p(&revocations), s("--out"), p(&dir)]);
    let (code, _) = cli_run(start, cli, &run_args)?;
    anyhow::ensure!(code == 3, "the run should stop at promotion waiting for approvals (exit 3), exited {code}");
    let run_id = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix("run-").and_then(|n| n.strip_suffix(".json")).map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no run report written"))?;
    for (key, cert) in &approvers {
        let mut args = vec![s("approve"), run_id.clone()];
        args.extend(appliance.clone());
        args.extend([s("--approver-key"), p(key), s("--certificate"), p(cert)]);
        let (code, _) = cli_run(start, cli, &args)?;
        anyhow::ensure!(code == 0, "approve failed");
    }
    let mut resume = run_args.clone();
    resume.extend([s("--resume"), run_id.clone()]);
    let (code, _) = cli_run(start, cli, &resume)?;
    anyhow::ensure!(code == 0, "the resumed run did not complete (exit {code})");
    let mut list = vec![s("runs")];
    list.extend(appliance.clone());
    let (code, table) = cli_run(start, cli, &list)?;
    let listed = table.lines().any(|l| l.starts_with(run_id.as_str()) && l.ends_with("completed"));
    anyhow::ensure!(code == 0 && listed, "sovereign runs does not list run {run_id} as completed:\n{table}");
    let bundle = dir.join("compliance-bundle.tar");
    let identity = {
        let mut args = vec![s("status")];
        args.extend(appliance.clone());
        args.push(s("--json"));
        let (_, stdout) = cli_run(start, cli, &args)?;
        let v: serde_json::Value = serde_json::from_str(&stdout)?;
        v["identity"].as_str().unwrap_or_default().to_string()
    };
    let verify = vec![
        s("verify"),
        p(&bundle),
        s("--node-key"),
        identity.clone(),
        s("--policy-key"),
        p(&keys.join("release.pub")),
        s("--admin-key"),
        p(&keys.join("admin.pub")),
        s("--release-key"),
        p(&keys.join("release.pub")),
        s("--reference"),
        p(&image.join("reference-values.json")),
        s("--platform"),
        p(&root().join(sovereign_e2e::PLATFORM_PROFILE)),
        s("--ek-ca"),
        p(ek_ca),
        s("--ak-ca"),
        p(&out.join("attestation-ca.key.pub")),
    ];
    let (code, _) = cli_run(start, cli, &verify)?;
    anyhow::ensure!(code == 0, "the compliance bundle did not verify offline");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("run-{run_id}.json")))?)?;
    let mut summary = format!("\nIRON PATH SUMMARY (run {run_id})\n");
    for stage in report["stages"].as_array().into_iter().flatten() {
        summary.push_str(&format!(
            "  {:<8} {:<17} {}  {}\n",
            stage["name"].as_str().unwrap_or(""),
            stage["kind"].as_str().unwrap_or(""),
            stage["artifact"]
                .as_array()
                .map(|a| a.iter().filter_map(|b| b.as_u64()).map(|b| format!("{b:02x}")).collect::<String>())
                .unwrap_or_default(),
            stage["summary"].as_str().unwrap_or("")
        ));
    }
    summary.push_str(&format!(
        "  audit log: {} entries, bundle verified offline (hash chain, Merkle proofs, checkpoint signature, re-evaluated policy decisions, TPM attestation bound to the checkpoint)\n  bundle: {}\n",
        report["audit_size"], bundle.display()
    ));
    Ok(summary)
}

/// Boots the appliance and waits until its runtime is up, streaming PID 1's and the runtime's
/// lines; `false` if it did not come up.
fn boot_shown(
    start: Instant,
    appliance: &mut sovereign_qemu::Appliance,
) -> anyhow::Result<(sovereign_qemu::Guest, bool)> {
    let mut guest = appliance.boot(Duration::from_secs(300))?;
    let mut shown = 0usize;
    let up = loop {
        let console = guest.console();
        for line in console.lines().skip(shown) {
            let pcr = line.contains("sovereign-init: pcr ");
            if !pcr && (line.contains("sovereign-init") || line.contains("sovereign-runtime: ready")) {
                say(start, &format!("  guest: {line}"));
            }
        }
        shown = console.lines().count();
        if console.contains("anti-rollback floor at v") && console.contains("sovereign-runtime: control: attestation") {
            break true;
        }
        if console.contains("sovereign-init: FATAL") || guest.finished() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok((guest, up))
}

/// An update through the real CLI (see the crate documentation).
fn update() -> anyhow::Result<bool> {
    let start = Instant::now();
    let cli = sovereign_cli()?;
    let disk = build_dir().join("image/disk.raw");
    anyhow::ensure!(disk.exists(), "{} is missing: run `cargo xtask image`", disk.display());
    let out = build_dir().join("demo/update");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let keys = sovereign_e2e::dev_keys();
    say(
        start,
        "building release 2 (same PID 1, runtime and kernel; version 2) and its update bundle, signed by 2 of the 3 development release keys",
    );
    let mut input = sovereign_e2e::base_input();
    input.version = 2;
    let v2 = out.join("v2");
    sovereign_image::build::build(&input, &keys, &v2)?;
    let (bundle, written) = sovereign_image::update::bundle(&v2, &keys, 2, sovereign_update::PLATFORM_QEMU_X86_64)?;
    anyhow::ensure!(written.refused.is_none(), "the v2 bundle does not verify: {:?}", written.refused);
    let bundle_path = out.join("sovereign-v2.bundle");
    std::fs::write(&bundle_path, &bundle)?;
    say(start, &format!("bundle {} ({} bytes, sha256 {})", bundle_path.display(), written.size, written.sha256));

    let mut appliance = sovereign_qemu::Appliance::new(&disk)?;
    say(start, "booting release 1 (QEMU, OVMF, systemd-boot, swtpm)");
    let (guest, up) = boot_shown(start, &mut appliance)?;
    anyhow::ensure!(up, "release 1 did not come up");
    let socket = appliance.control_socket();
    let s = |x: &str| x.to_string();
    let appliance_args = vec![s("--socket"), p(&socket), s("--key"), p(&build_dir().join("keys/admin.key"))];
    let update = |verb: &str, extra: &[String]| -> anyhow::Result<(i32, String)> {
        let mut args = vec![s("update"), s(verb)];
        args.extend(extra.iter().cloned());
        args.extend(appliance_args.clone());
        cli_run(start, &cli, &args)
    };
    let (code, _) = update("status", &[])?;
    anyhow::ensure!(code == 0, "sovereign update status failed");
    let (code, _) = update("push", &[p(&bundle_path)])?;
    anyhow::ensure!(code == 0, "sovereign update push was refused");
    let (code, _) = update("apply", &[])?;
    anyhow::ensure!(code == 0, "sovereign update apply was refused");
    let mut guest = guest;
    guest.wait_for("sovereign-init: rebooting")?;
    guest.wait_exit()?;
    for line in guest.console().lines().filter(|l| l.contains("installing v2") || l.contains("rebooting")) {
        say(start, &format!("  guest: {line}"));
    }
    say(start, "the appliance rebooted: release 2 on trial");
    let (mut guest, up) = boot_shown(start, &mut appliance)?;
    // The guest's clock comes from its RTC (whole seconds) and may run up to a second ahead of
    // the host's: a request signed in that second is "signed before this runtime started" and
    // refused with "sign it again" — which the demo does, a second later, at most twice.
    let mut shown_code = 1;
    for _ in 0..3 {
        shown_code = update("status", &[])?.0;
        if shown_code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let (code, status) = update("status", &[s("--json")])?;
    let code = if shown_code == 0 { code } else { shown_code };
    say(start, "pressing the ACPI power button");
    guest.powerdown()?;
    guest.wait_exit()?;
    let state: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    let passed = up
        && code == 0
        && state["running_version"] == 2
        && state["floor"] == 2
        && state["boot"]["trial"] == false
        && guest.console().contains("release v2 blessed");
    say(
        start,
        &if passed {
            "PASS: release 2 was pushed, verified twice (runtime and PID 1), installed beside release 1, booted on trial, blessed once healthy, and the TPM's anti-rollback floor moved to 2 only after that".to_string()
        } else {
            format!("FAIL: the update did not complete; update status: {status}")
        },
    );
    Ok(passed)
}
