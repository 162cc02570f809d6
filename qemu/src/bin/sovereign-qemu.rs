//! `sovereign-qemu`: boot a Sovereign disk image in QEMU with OVMF and a private, provisioned
//! swtpm, streaming the serial console. Every process it starts is stopped when it exits.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: sovereign-qemu boot DISK [--stay]   (boots; powers off after the runtime is ready unless --stay)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some("boot"), Some(disk)) = (args.first().map(String::as_str), args.get(1)) else { return usage() };
    let stay = args.iter().any(|a| a == "--stay");
    let disk = PathBuf::from(disk);
    match run(&disk, stay) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sovereign-qemu: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(disk: &std::path::Path, stay: bool) -> Result<ExitCode, sovereign_qemu::GuestError> {
    eprintln!("sovereign-qemu: provisioning a private swtpm (EK certificate from a local CA) …");
    let mut appliance = sovereign_qemu::Appliance::new(disk)?;
    eprintln!("sovereign-qemu: booting {} under OVMF (TCG: about 20 s) …", disk.display());
    let mut guest = appliance.boot(Duration::from_secs(if stay { 24 * 3600 } else { 300 }))?;
    let mut shown = 0usize;
    let mut print_new = |guest: &sovereign_qemu::Guest| {
        let console = guest.console();
        for line in console.lines().skip(shown) {
            println!("{line}");
        }
        shown = console.lines().count();
    };
    let ready = loop {
        print_new(&guest);
        let console = guest.console();
        if console.contains("sovereign-runtime: ready") {
            break true;
        }
        if console.contains("sovereign-init: FATAL") {
            break false;
        }
        if guest.finished() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if ready && stay {
        let socket = appliance.control_socket();
        let ca = socket.with_file_name("ek-ca.pem");
        match appliance.ek_ca_pem().map(|pem| std::fs::write(&ca, pem)) {
            Ok(Ok(())) => eprintln!(
                "sovereign-qemu: runtime ready; control socket {} (use with `sovereign … --socket`), EK CA {}",
                socket.display(),
                ca.display()
            ),
            _ => eprintln!("sovereign-qemu: runtime ready; control socket {}", socket.display()),
        }
    }
    if ready && !stay {
        eprintln!("sovereign-qemu: runtime ready; pressing the ACPI power button");
        guest.powerdown()?;
    }
    let status = guest.wait_exit();
    print_new(&guest);
    status?;
    Ok(if ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
