//! The boot slots on the ESP and the trial boot of a new release (pure: names and decisions,
//! no file system).
//!
//! The firmware starts systemd-boot (`EFI/BOOT/BOOTX64.EFI`, signed like the UKIs), which
//! finds the release UKIs in `EFI/Linux/` and boots the newest one whose boot counter is not
//! used up. A slot is one UKI file named after its release:
//!
//! - `sovereign-vN.efi` — a **good** release (blessed, or the factory image);
//! - `sovereign-vN+L-D.efi` — a release **on trial**: L tries left, D done. systemd-boot
//!   renames the file (L−1, D+1) *before* it starts it, so a trial that never reaches PID 1's
//!   blessing is not retried forever;
//! - `sovereign-vN+0-D.efi` — a **failed** trial: systemd-boot sorts it last, so the machine
//!   falls back to the release it ran before, which reports the failure.
//!
//! Each release's signed PCR policy and reference values sit beside the slots, in
//! `EFI/sovereign/vN/` (they name the UKI's PCR values, so they cannot travel inside it). PID 1
//! reads the ones of the version its own verified manifest states.

use serde::{Deserialize, Serialize};

/// systemd-boot, as the firmware's removable-media default path.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's configuration.
pub const LOADER_CONF_PATH: &str = "loader/loader.conf";
/// What the configuration says: no menu, no editor, no entries but the slots (no automatic
/// "reboot into firmware" or other-OS entries).
pub const LOADER_CONF: &str = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n";
/// The directory of the slots (systemd-boot's Type #2 entries).
pub const SLOT_DIR: &str = "EFI/Linux";
/// How many boots a new release gets to become healthy. One: a trial cut by a power failure
/// counts as failed and the node comes back on the release it ran; the staged bundle can be
/// applied again.
pub const TRIAL_TRIES: u32 = 1;
/// A slot file's name starts with this, then the release version.
const SLOT_PREFIX: &str = "sovereign-v";

/// The directory of release `version`'s signed files on the ESP.
pub fn release_dir(version: u64) -> String {
    format!("EFI/sovereign/v{version}")
}

/// The signed PCR policy of release `version`, on the ESP.
pub fn policy_path(version: u64) -> String {
    format!("{}/pcr-policy.json", release_dir(version))
}

/// The signed reference values of release `version`, on the ESP.
pub fn reference_path(version: u64) -> String {
    format!("{}/reference-values.json", release_dir(version))
}

/// Their detached signature.
pub fn reference_sig_path(version: u64) -> String {
    format!("{}/reference-values.sig", release_dir(version))
}

/// Where a slot stands. (Externally tagged, no flattening: it also travels in the control
/// protocol's postcard encoding, which has neither.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Blessed (or the factory release): booted as a release that works.
    Good,
    /// On trial, with tries left.
    Trial {
        /// Boots left before the loader gives up on it.
        tries_left: u32,
        /// Boots already started.
        tries_done: u32,
    },
    /// Its trial boots are used up without a blessing: the loader no longer picks it.
    Failed {
        /// Boots it was given.
        tries_done: u32,
    },
}

/// One slot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The release in it.
    pub version: u64,
    /// Its file name in [`SLOT_DIR`].
    pub file: String,
    /// Where it stands.
    pub state: SlotState,
}

/// The file name of release `version`'s slot: good, or on trial with `(tries_left, tries_done)`.
pub fn slot_file(version: u64, trial: Option<(u32, u32)>) -> String {
    match trial {
        None => format!("{SLOT_PREFIX}{version}.efi"),
        Some((left, done)) => format!("{SLOT_PREFIX}{version}+{left}-{done}.efi"),
    }
}

/// Reads a slot file's name; `None` for any other file (FAT keeps long names' case, but a
/// name written by another tool may differ in case: compared without it).
pub fn parse_slot_file(name: &str) -> Option<Slot> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".efi")?.strip_prefix(SLOT_PREFIX)?;
    let (version, counter) = match stem.split_once('+') {
        Some((v, c)) => (v, Some(c)),
        None => (stem, None),
    };
    let version = parse_decimal(version)?;
    let state = match counter {
        None => SlotState::Good,
        Some(c) => {
            let (left, done) = match c.split_once('-') {
                Some((l, d)) => (parse_decimal(l)?, parse_decimal(d)?),
                None => (parse_decimal(c)?, 0),
            };
            let (left, done) = (u32::try_from(left).ok()?, u32::try_from(done).ok()?);
            if left == 0 {
                SlotState::Failed { tries_done: done }
            } else {
                SlotState::Trial { tries_left: left, tries_done: done }
            }
        }
    };
    Some(Slot { version, file: name.to_string(), state })
}

/// Digits only (no sign, no spaces), at most 19 of them, no leading zero: one spelling per
/// number, so two files cannot claim one slot by spelling its version differently.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// What [`SLOT_DIR`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    /// The slots, newest release first.
    pub slots: Vec<Slot>,
    /// Files that are not slots (systemd-boot would list an `.efi` among them as an entry;
    /// Secure Boot still refuses to start one the db key did not sign).
    pub strangers: Vec<String>,
    /// Releases with more than one slot file (the first, by name, is the one in `slots`).
    pub duplicates: Vec<u64>,
}

/// Sorts the names of [`SLOT_DIR`]'s files into slots and strangers.
pub fn survey<I: IntoIterator<Item = String>>(names: I) -> Survey {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    let mut out = Survey::default();
    for name in names {
        match parse_slot_file(&name) {
            Some(slot) if out.slots.iter().any(|s| s.version == slot.version) => {
                if !out.duplicates.contains(&slot.version) {
                    out.duplicates.push(slot.version);
                }
                out.strangers.push(name);
            }
            Some(slot) => out.slots.push(slot),
            None => out.strangers.push(name),
        }
    }
    out.slots.sort_by_key(|s| std::cmp::Reverse(s.version));
    out
}

impl Survey {
    /// The slot of release `version`.
    pub fn slot(&self, version: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.version == version)
    }

    /// The newest release above `running` whose trial failed (the loader fell back from it).
    pub fn failed_update(&self, running: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.version > running && matches!(s.state, SlotState::Failed { .. }))
    }

    /// What installing release `new` next to the running release changes: every other slot
    /// goes (two slots: the one that runs and the one on trial), then the new one is written on
    /// trial. Refused for a release that is not newer than the running one, or when the running
    /// release has no slot (the loader could not fall back to it).
    pub fn install_plan(&self, running: u64, new: u64) -> Result<InstallPlan, String> {
        if new <= running {
            return Err(format!("release v{new} is not newer than the running release v{running}"));
        }
        match self.slot(running) {
            Some(s) if s.state == SlotState::Good => {}
            Some(s) => {
                return Err(format!(
                    "the running release v{running} is not blessed yet ({}): no update on top of a trial",
                    s.file
                ));
            }
            None => {
                return Err(format!(
                    "the running release v{running} has no slot in {SLOT_DIR}: nothing to fall back to"
                ));
            }
        }
        let remove = self.slots.iter().filter(|s| s.version != running).map(|s| s.file.clone()).collect();
        let remove_releases = self.slots.iter().filter(|s| s.version != running).map(|s| s.version).collect();
        Ok(InstallPlan { remove, remove_releases, write: slot_file(new, Some((TRIAL_TRIES, 0))) })
    }
}

/// The changes to the ESP that install a new release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// Slot files to delete first.
    pub remove: Vec<String>,
    /// Releases whose `EFI/sovereign/vN/` directory goes with them.
    pub remove_releases: Vec<u64>,
    /// The new slot's file name (on trial).
    pub write: String,
}

/// What PID 1 found about this boot's slot, for the runtime (`update status`) and the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSlots {
    /// The release running now (PID 1's verified manifest).
    pub running_version: u64,
    /// Whether this boot is the release's trial (it is blessed once the runtime is healthy).
    pub trial: bool,
    /// Every slot on the ESP, newest first.
    pub slots: Vec<Slot>,
    /// A newer release whose trial failed, the loader having fallen back to this one.
    pub failed_update: Option<u64>,
}

impl BootSlots {
    /// This boot as the survey shows it. `Err` when the running release has no slot, or its
    /// slot reads as failed (the loader does not start those): the ESP is not what booted.
    pub fn of(survey: &Survey, running: u64) -> Result<Self, String> {
        if survey.duplicates.contains(&running) {
            return Err(format!("release v{running} has more than one slot file in {SLOT_DIR}"));
        }
        let trial = match survey.slot(running).map(|s| s.state) {
            Some(SlotState::Good) => false,
            Some(SlotState::Trial { .. }) => true,
            // systemd-boot counts the try down *before* starting it: a release on its last try
            // boots with tries_left 0. It is on trial until blessed.
            Some(SlotState::Failed { tries_done }) if tries_done > 0 => true,
            Some(SlotState::Failed { .. }) => {
                return Err(format!("the slot of release v{running} says it has no tries and none done"));
            }
            None => return Err(format!("release v{running} has no slot in {SLOT_DIR}")),
        };
        Ok(BootSlots {
            running_version: running,
            trial,
            slots: survey.slots.clone(),
            failed_update: survey.failed_update(running).map(|s| s.version),
        })
    }
}

/// Where PID 1 puts [`BootSlots`] for the runtime (JSON).
pub const RUN_BOOT_SLOTS_PATH: &str = "/run/sovereign/boot-slots.json";
/// The directory the runtime may write to under `/run` (its own: PID 1 reads it).
pub const RUN_RUNTIME_DIR: &str = "/run/sovereign/runtime";
/// The runtime creates this file once every part of it is up (`ready`): PID 1 then blesses a
/// release on trial and raises the anti-rollback floor to it.
pub const RUN_HEALTHY_PATH: &str = "/run/sovereign/runtime/healthy";
/// The runtime's exit status that asks PID 1 to install the staged update bundle (after
/// verifying it again) and reboot into its trial.
pub const EXIT_INSTALL_UPDATE: i32 = 75;
/// The staged bundle on the data partition, relative to its mount point.
pub const STAGED_BUNDLE: &str = "update/staged.bundle";
/// The record that names it (version, SHA-256).
pub const STAGED_RECORD: &str = "update/staged.json";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn slot_names_round_trip_and_read_systemd_boots_counters() {
        assert_eq!(parse_slot_file(&slot_file(7, None)).unwrap().state, SlotState::Good);
        assert_eq!(
            parse_slot_file(&slot_file(7, Some((1, 0)))).unwrap().state,
            SlotState::Trial { tries_left: 1, tries_done: 0 }
        );
        assert_eq!(parse_slot_file("sovereign-v7+0-1.efi").unwrap().state, SlotState::Failed { tries_done: 1 });
        assert_eq!(
            parse_slot_file("sovereign-v7+3.efi").unwrap().state,
            SlotState::Trial { tries_left: 3, tries_done: 0 }
        );
        assert_eq!(parse_slot_file("SOVEREIGN-V7.EFI").unwrap().version, 7);
        for bad in [
            "sovereign-v.efi",
            "sovereign-v07.efi",
            "sovereign-v-1.efi",
            "sovereign-v1+.efi",
            "sovereign-v1+1-.efi",
            "sovereign-v1+a-0.efi",
            "sovereign-v99999999999999999999.efi",
            "sovereign-v1.conf",
            "other-v1.efi",
            "sovereign-v1 .efi",
        ] {
            assert_eq!(parse_slot_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_trial_is_a_trial_until_blessed_and_a_failed_newer_slot_is_reported() {
        let s = survey(names(&["sovereign-v1.efi", "sovereign-v2+0-1.efi", "readme.txt"]));
        assert_eq!(s.strangers, vec!["readme.txt".to_string()]);
        assert_eq!(s.slots.iter().map(|s| s.version).collect::<Vec<_>>(), vec![2, 1]);
        // Booted as v2: systemd-boot already counted its one try down.
        let v2 = BootSlots::of(&s, 2).unwrap();
        assert!(v2.trial);
        assert_eq!(v2.failed_update, None);
        // Booted as v1: v2's trial failed and the loader fell back.
        let v1 = BootSlots::of(&s, 1).unwrap();
        assert!(!v1.trial);
        assert_eq!(v1.failed_update, Some(2));
        assert!(BootSlots::of(&s, 3).unwrap_err().contains("no slot"));
    }

    #[test]
    fn installing_keeps_the_running_slot_and_replaces_every_other() {
        let s = survey(names(&["sovereign-v1.efi", "sovereign-v2.efi", "sovereign-v3+0-1.efi"]));
        let plan = s.install_plan(2, 4).unwrap();
        assert_eq!(plan.remove, names(&["sovereign-v3+0-1.efi", "sovereign-v1.efi"]));
        assert_eq!(plan.remove_releases, vec![3, 1]);
        assert_eq!(plan.write, "sovereign-v4+1-0.efi");
        assert!(s.install_plan(2, 2).unwrap_err().contains("not newer"));
        assert!(s.install_plan(5, 6).unwrap_err().contains("no slot"));
        let on_trial = survey(names(&["sovereign-v1.efi", "sovereign-v2+0-1.efi"]));
        assert!(on_trial.install_plan(2, 3).unwrap_err().contains("not blessed"));
    }

    #[test]
    fn two_spellings_of_one_release_are_not_two_slots() {
        let s = survey(names(&["sovereign-v2.efi", "sovereign-v2+1-0.efi"]));
        assert_eq!(s.slots.len(), 1);
        assert_eq!(s.duplicates, vec![2]);
        assert_eq!(s.strangers, names(&["sovereign-v2.efi"]));
        assert!(BootSlots::of(&s, 2).unwrap_err().contains("more than one"));
    }
}
