//! The boot slots on a mounted ESP (see `sovereign_boot_contract::slots` for the layout): read
//! them, bless the release on trial, install a verified update next to the running release.
//! Every write is made durable before the next step depends on it, in an order a power cut
//! cannot turn into an unbootable ESP: the new slot's UKI is written under a name the boot
//! loader ignores and renamed into a slot only once complete, after its release's signed files.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

use sovereign_boot_contract::slots::{self, InstallPlan, Slot, SlotState, Survey};

/// The slots in `esp`'s slot directory.
pub fn survey(esp: &Path) -> Result<Survey, String> {
    let dir = esp.join(slots::SLOT_DIR);
    let entries = fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(slots::survey(names))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    File::create(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Blesses `slot` (a release on trial that came up healthy): renames it to its good name, so
/// the boot loader picks it without counting. Returns the new name.
pub fn bless(esp: &Path, slot: &Slot) -> Result<String, String> {
    if slot.state == SlotState::Good {
        return Ok(slot.file.clone());
    }
    let dir = esp.join(slots::SLOT_DIR);
    let good = slots::slot_file(slot.version, None);
    fs::rename(dir.join(&slot.file), dir.join(&good)).map_err(|e| format!("renaming {} to {good}: {e}", slot.file))?;
    sync_dir(&dir)?;
    Ok(good)
}

/// The files of a verified update bundle that go onto the ESP.
pub struct Release<'a> {
    /// Its version.
    pub version: u64,
    /// The signed UKI.
    pub uki: &'a [u8],
    /// Its signed PCR policy.
    pub policy: &'a [u8],
    /// Its signed reference values and their signature.
    pub reference: (&'a [u8], &'a [u8]),
}

/// Carries out `plan` for `release`: removes the other slots and their releases' files, writes
/// the release's signed files, then its UKI under a temporary name, then renames it into its
/// slot (on trial). A cut before the rename leaves a `.tmp` file the loader ignores and the next
/// install removes; the running slot is never touched. `progress` hears each step once it is
/// durable (PID 1 says them on the console; the power-cut tests cut there).
pub fn install(
    esp: &Path,
    plan: &InstallPlan,
    release: &Release<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let slot_dir = esp.join(slots::SLOT_DIR);
    for file in &plan.remove {
        let path = slot_dir.join(file);
        fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    // Left by an install that was cut.
    if let Ok(entries) = fs::read_dir(&slot_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    sync_dir(&slot_dir)?;
    progress(&format!("{} other slot(s) removed", plan.remove.len()));
    for version in plan.remove_releases.iter().chain(std::iter::once(&release.version)) {
        let dir = esp.join(slots::release_dir(*version));
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", dir.display())),
        }
    }
    let dir = esp.join(slots::release_dir(release.version));
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (path, bytes) in [
        (slots::policy_path(release.version), release.policy),
        (slots::reference_path(release.version), release.reference.0),
        (slots::reference_sig_path(release.version), release.reference.1),
    ] {
        write_synced(&esp.join(path), bytes)?;
    }
    sync_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    progress(&format!("signed release files written to {}", slots::release_dir(release.version)));
    let tmp = slot_dir.join(format!("sovereign-v{}.tmp", release.version));
    write_synced(&tmp, release.uki)?;
    progress(&format!("UKI written ({} bytes), not yet a slot", release.uki.len()));
    fs::rename(&tmp, slot_dir.join(&plan.write))
        .map_err(|e| format!("renaming {} into its slot: {e}", tmp.display()))?;
    sync_dir(&slot_dir)?;
    progress(&format!("slot {} in place", plan.write));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn esp_with(files: &[&str]) -> tempfile::TempDir {
        let esp = tempfile::tempdir().unwrap();
        fs::create_dir_all(esp.path().join(slots::SLOT_DIR)).unwrap();
        for f in files {
            fs::write(esp.path().join(slots::SLOT_DIR).join(f), f.as_bytes()).unwrap();
            let v = slots::parse_slot_file(f).unwrap().version;
            fs::create_dir_all(esp.path().join(slots::release_dir(v))).unwrap();
            fs::write(esp.path().join(slots::policy_path(v)), b"policy").unwrap();
        }
        esp
    }

    #[test]
    fn an_install_keeps_the_running_slot_and_writes_the_new_one_on_trial() {
        let esp = esp_with(&["sovereign-v1.efi", "sovereign-v2.efi", "sovereign-v3+0-1.efi"]);
        fs::write(esp.path().join(slots::SLOT_DIR).join("sovereign-v9.tmp"), b"cut").unwrap();
        let survey = survey(esp.path()).unwrap();
        let plan = survey.install_plan(2, 4).unwrap();
        let release = Release { version: 4, uki: b"uki v4", policy: b"p4", reference: (b"r4", b"s4") };
        let mut steps = Vec::new();
        install(esp.path(), &plan, &release, &mut |s| steps.push(s.to_string())).unwrap();
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert_eq!(steps[3], "slot sovereign-v4+1-0.efi in place");
        let after = super::survey(esp.path()).unwrap();
        let files: Vec<&str> = after.slots.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["sovereign-v4+1-0.efi", "sovereign-v2.efi"]);
        assert!(after.strangers.is_empty(), "{:?}", after.strangers);
        assert_eq!(fs::read(esp.path().join(slots::SLOT_DIR).join("sovereign-v2.efi")).unwrap(), b"sovereign-v2.efi");
        assert_eq!(fs::read(esp.path().join(slots::policy_path(4))).unwrap(), b"p4");
        assert_eq!(fs::read(esp.path().join(slots::reference_sig_path(4))).unwrap(), b"s4");
        assert!(esp.path().join(slots::policy_path(2)).exists());
        assert!(!esp.path().join(slots::release_dir(1)).exists());
        assert!(!esp.path().join(slots::release_dir(3)).exists());
    }

    #[test]
    fn blessing_renames_the_trial_slot_to_its_good_name() {
        let esp = esp_with(&["sovereign-v1.efi", "sovereign-v2+0-1.efi"]);
        let survey = survey(esp.path()).unwrap();
        let slot = survey.slot(2).unwrap().clone();
        assert_eq!(bless(esp.path(), &slot).unwrap(), "sovereign-v2.efi");
        let after = super::survey(esp.path()).unwrap();
        assert_eq!(after.slot(2).unwrap().state, SlotState::Good);
        assert_eq!(after.slots.len(), 2);
        // A good slot is left as it is.
        assert_eq!(bless(esp.path(), after.slot(1).unwrap()).unwrap(), "sovereign-v1.efi");
    }
}
