//! Records the QEMU + OVMF platform profile (expected firmware PCRs) from a reference boot of
//! the shared image: `cargo xtask firmware-profile` (writes `firmware/qemu-ovmf.json`).
//!
//! PCRs 0–3 and 5–7 depend only on the firmware, its settings and the machine model; PCR 4
//! (boot application), 9 (initrd, measured by the kernel's EFI stub), 11 (UKI sections) and 15
//! (PID 1) are predicted per image and are not part of the profile.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use sha2_free::sha256_file;
use sovereign_qemu::Appliance;

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
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| sovereign_e2e::root().join("firmware/qemu-ovmf.json").to_string_lossy().into_owned());
    let mut appliance = Appliance::new(sovereign_e2e::image())?;
    let mut guest = appliance.boot(Duration::from_secs(240))?;
    guest.wait_for("sovereign-runtime: ready")?;
    let console = guest.console();
    guest.powerdown()?;
    guest.wait_exit()?;
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
    let profile = serde_json::json!({
        "platform": "qemu-system-x86_64 -machine q35 -cpu max, OVMF (Debian ovmf), Secure Boot off, swtpm (tpm-crb), virtio-blk disk, virtio-serial control port",
        "firmware": { "code": sovereign_qemu::guest::OVMF_CODE, "sha256": sha256_file(sovereign_qemu::guest::OVMF_CODE)? },
        "vars_template": { "path": sovereign_qemu::guest::OVMF_VARS, "sha256": sha256_file(sovereign_qemu::guest::OVMF_VARS)? },
        "pcrs": pcrs,
        "recorded_with": "cargo xtask firmware-profile",
    });
    std::fs::write(&out, serde_json::to_string_pretty(&profile)? + "\n")?;
    println!("wrote {out}");
    Ok(())
}
