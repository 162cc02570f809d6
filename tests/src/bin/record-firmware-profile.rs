//! Records the QEMU + OVMF platform profiles (expected firmware PCRs) from reference boots of
//! the shared image: `cargo xtask firmware-profile` writes `firmware/qemu-ovmf-secureboot.json`
//! (Secure Boot on, the project's keys enrolled: the appliance's platform) and
//! `firmware/qemu-ovmf.json` (Secure Boot off).
//!
//! PCRs 0–3 and 5–7 depend only on the firmware, its settings (PCR 7: Secure Boot and its keys)
//! and the machine model; PCR 4
//! (boot application), 9 (initrd, measured by the kernel's EFI stub), 11 (UKI sections) and 15
//! (PID 1) are predicted per image and are not part of the profile.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use sha2_free::sha256_file;
use sovereign_qemu::{Appliance, Firmware};

mod sha2_free {
    /// SHA-256 of a file via the system's sha256sum (keeps this tool's dependencies small).
    pub fn sha256_file(path: &str) -> anyhow::Result<String> {
        let out = std::process::Command::new("sha256sum").arg(path).output()?;
        anyhow::ensure!(out.status.success(), "sha256sum {path} failed");
        Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
    }
}

/// PCRs that belong to the platform profile.
const PROFILE_PCRS: [u8; 7] = [0, 1, 2, 3, 5, 6, 7];

fn main() -> anyhow::Result<()> {
    let dir =
        std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| sovereign_e2e::root().join("firmware"));
    for firmware in [Firmware::SecureBoot, Firmware::SecureBootOff] {
        record(firmware, &dir)?;
    }
    Ok(())
}

fn record(firmware: Firmware, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut appliance = Appliance::with_firmware(sovereign_e2e::image(), firmware)?;
    let mut guest = appliance.boot(Duration::from_secs(240))?;
    // PID 1 prints the PCRs before its release check: with Secure Boot off, systemd-stub takes
    // systemd-boot's load options in place of `.cmdline` and measures them into PCR 12 a second
    // time, so this (Secure Boot) image is refused there — after the PCRs are on the console.
    guest.wait_for("sovereign-init: pcr 15 = ")?;
    let console = guest.console();
    drop(guest);
    let mut pcrs = BTreeMap::new();
    for line in console.lines() {
        if let Some(rest) = line.split("sovereign-init: pcr ").nth(1) {
            let mut parts = rest.split(" = ");
            let (Some(i), Some(v)) = (parts.next(), parts.next()) else { continue };
            let i: u8 = i.trim().parse()?;
            if PROFILE_PCRS.contains(&i) {
                pcrs.insert(i.to_string(), v.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
    }
    anyhow::ensure!(pcrs.len() == PROFILE_PCRS.len(), "the boot did not print every profile PCR");
    let (out, platform, code, vars, vars_path) = match firmware {
        Firmware::SecureBoot => (
            dir.join("qemu-ovmf-secureboot.json"),
            "qemu-system-x86_64 -machine q35,smm=on -cpu max, OVMF with Secure Boot (Debian ovmf, OVMF_CODE_4M.secboot.fd), Secure Boot on with the project's DEVELOPMENT PK/KEK/db enrolled (firmware/secure-boot/), swtpm (tpm-crb), virtio-blk disk as the only boot device (bootindex 1, the only one QEMU names: OVMF prunes other boot options, so a virtio-net NIC leaves no measured trace), virtio-serial control port",
            sovereign_qemu::guest::OVMF_CODE_SECURE_BOOT,
            sovereign_qemu::guest::SECURE_BOOT_VARS,
            "firmware/ovmf-vars-secureboot.fd",
        ),
        Firmware::SecureBootOff => (
            dir.join("qemu-ovmf.json"),
            "qemu-system-x86_64 -machine q35 -cpu max, OVMF (Debian ovmf), Secure Boot off, swtpm (tpm-crb), virtio-blk disk as the only boot device (bootindex 1, the only one QEMU names: OVMF prunes other boot options, so a virtio-net NIC leaves no measured trace), virtio-serial control port",
            sovereign_qemu::guest::OVMF_CODE,
            sovereign_qemu::guest::OVMF_VARS,
            sovereign_qemu::guest::OVMF_VARS,
        ),
    };
    let profile = serde_json::json!({
        "platform": platform,
        "firmware": { "code": code, "sha256": sha256_file(code)? },
        "vars_template": { "path": vars_path, "sha256": sha256_file(vars)? },
        "pcrs": pcrs,
        "recorded_with": "cargo xtask firmware-profile",
    });
    std::fs::write(&out, serde_json::to_string_pretty(&profile)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}
