//! The whole update (issue 15, item 8) against one plain boot, on the host's wall clock, in the
//! same run: a plain boot of the shared image (QEMU start → PID 1 raised the floor after the
//! runtime reported healthy), then the update to a v2 of the same inputs — push (22 MiB over the
//! signed control API), apply (runtime stops, PID 1 verifies the bundle again, installs it on
//! trial, reboots) and the trial boot until PID 1 blessed it and raised the floor. Run:
//! `cargo bench -p sovereign-e2e --bench update` (after `cargo xtask image`).

use std::time::{Duration, Instant};

use sovereign_protocol::pipeline::{Command, Reply};

const TIMEOUT: Duration = Duration::from_secs(240);
/// Apply, with no approvals: the shared image's configuration requires none.
const UNAPPROVED_APPLY: Command =
    Command::UpdateApply { approvals: Vec::new(), certificates: Vec::new(), revocations: None };

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = sovereign_e2e::dev_keys();
    let releases = tempfile::tempdir()?;
    let mut input = sovereign_e2e::base_input();
    input.version = 2;
    let v2_dir = releases.path().join("v2");
    sovereign_e2e::variant(&input, &keys, &v2_dir, &sovereign_image::build::Tamper::default());
    let (v2, _) = sovereign_image::update::bundle(&v2_dir, &keys, 2, sovereign_update::PLATFORM_QEMU_X86_64)?;
    println!("bundle: {} bytes", v2.len());
    println!(
        "| run | plain boot (s) | push (s) | apply → reboot (s) | trial boot → blessed + floor (s) | whole update (s) | update / plain boot |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for run in 1..=sovereign_bench::iterations(3) {
        let mut appliance = sovereign_qemu::Appliance::new(sovereign_e2e::image())?;
        let socket = appliance.control_socket();
        // The first boot provisions the keys: not a plain boot.
        let mut guest = appliance.boot(TIMEOUT)?;
        guest.wait_for("release v1 good: anti-rollback floor at v1")?;
        guest.powerdown()?;
        guest.wait_exit()?;
        let started = Instant::now();
        let mut guest = appliance.boot(TIMEOUT)?;
        guest.wait_for("release v1 good: anti-rollback floor at v1")?;
        guest.wait_for("sovereign-runtime: control: attestation key ready")?;
        let plain = started.elapsed();

        let started = Instant::now();
        let cmd = Command::UpdatePush { bundle: sovereign_protocol::Blob::of(&v2) };
        let (reply, _) = sovereign_cli::pipeline::command(
            &sovereign_cli::Endpoint::from(&socket),
            &keys.admin,
            None,
            &cmd,
            std::slice::from_ref(&v2),
        )?;
        let Reply::Update(_) = reply else { return Err(format!("push refused: {reply:?}").into()) };
        let pushed = started.elapsed();
        let (reply, _) = sovereign_cli::pipeline::command(
            &sovereign_cli::Endpoint::from(&socket),
            &keys.admin,
            None,
            &UNAPPROVED_APPLY,
            &[],
        )?;
        let Reply::Update(_) = reply else { return Err(format!("apply refused: {reply:?}").into()) };
        guest.wait_for("rebooting: release v2 installed on trial")?;
        guest.wait_exit()?;
        let applied = started.elapsed() - pushed;
        let trial_started = Instant::now();
        let mut guest = appliance.boot(TIMEOUT)?;
        guest.wait_for("release v2 good: anti-rollback floor at v2")?;
        let trial = trial_started.elapsed();
        let whole = started.elapsed();
        guest.powerdown()?;
        guest.wait_exit()?;
        println!(
            "| {run} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            plain.as_secs_f64(),
            pushed.as_secs_f64(),
            applied.as_secs_f64(),
            trial.as_secs_f64(),
            whole.as_secs_f64(),
            whole.as_secs_f64() / plain.as_secs_f64()
        );
    }
    Ok(())
}
