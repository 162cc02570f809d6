//! Reading back what the kernel enforces: `/proc/self/status` (IDs, capability sets,
//! `NoNewPrivs`, `Seccomp`) and `/sys/kernel/security/lockdown`. [`parse_status`] is pure.

use sovereign_protocol::Confinement;

/// Where the kernel reports the lockdown mode (`none [integrity] confidentiality`).
pub const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// Parses `/proc/self/status` and the lockdown file's text into a [`Confinement`]. A field that
/// is missing or malformed is an error naming it: a confinement report never guesses.
pub fn parse_status(status: &str, lockdown: &str) -> Result<Confinement, String> {
    let field = |name: &str| -> Result<&str, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .map(str::trim)
            .ok_or_else(|| format!("/proc/self/status has no {name} line"))
    };
    let ids = |name: &str| -> Result<[u32; 4], String> {
        let values: Vec<u32> = field(name)?
            .split_whitespace()
            .map(|v| v.parse().map_err(|_| format!("{name}: {v:?} is not an ID")))
            .collect::<Result<_, _>>()?;
        <[u32; 4]>::try_from(values).map_err(|v| format!("{name}: {} values, not 4", v.len()))
    };
    let caps = |name: &str| -> Result<u64, String> {
        let v = field(name)?;
        u64::from_str_radix(v, 16).map_err(|_| format!("{name}: {v:?} is not a hex mask"))
    };
    let number = |name: &str| -> Result<u32, String> {
        let v = field(name)?;
        v.parse().map_err(|_| format!("{name}: {v:?} is not a number"))
    };
    let groups = field("Groups")?
        .split_whitespace()
        .map(|v| v.parse().map_err(|_| format!("Groups: {v:?} is not an ID")))
        .collect::<Result<Vec<u32>, String>>()?;
    let seccomp_mode = u8::try_from(number("Seccomp")?).map_err(|_| "Seccomp: out of range".to_string())?;
    Ok(Confinement {
        uids: ids("Uid")?,
        gids: ids("Gid")?,
        groups,
        cap_inh: caps("CapInh")?,
        cap_prm: caps("CapPrm")?,
        cap_eff: caps("CapEff")?,
        cap_bnd: caps("CapBnd")?,
        cap_amb: caps("CapAmb")?,
        no_new_privs: number("NoNewPrivs")? == 1,
        seccomp_mode,
        // Older kernels lack the counter; the mode above still says whether a filter is on.
        seccomp_filters: number("Seccomp_filters").unwrap_or(0),
        lockdown: lockdown_mode(lockdown),
    })
}

/// The bracketed mode of the lockdown file (`none [integrity] confidentiality` → `integrity`).
fn lockdown_mode(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map(str::to_string)
        .unwrap_or_else(|| format!("unknown ({:?})", text.trim()))
}

/// Reads this process's confinement from the kernel. The lockdown file missing (no securityfs,
/// no lockdown LSM) reads as `unreadable: <why>`, which [`Confinement::shortfalls`] refuses.
pub fn read() -> Result<Confinement, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let lockdown = std::fs::read_to_string(LOCKDOWN).unwrap_or_else(|e| format!("unreadable: {e}"));
    parse_status(&status, &lockdown)
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    /// A confined runtime's status, as Linux 6.1 writes it (fields trimmed to the ones read).
    const CONFINED: &str = "Name:\tsovereign-runt\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t990\t990\t990\t990\n\
Gid:\t990\t990\t990\t990\nFDSize:\t64\nGroups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n\
Seccomp:\t2\nSeccomp_filters:\t2\nSpeculation_Store_Bypass:\tthread vulnerable\n";

    #[test]
    fn a_confined_status_has_no_shortfalls() {
        let c = parse_status(CONFINED, "none [integrity] confidentiality\n").unwrap();
        assert_eq!(c.uids, [990; 4]);
        assert_eq!((c.seccomp_mode, c.seccomp_filters), (2, 2));
        assert_eq!(c.lockdown, "integrity");
        assert!(c.shortfalls().is_empty(), "{:?}", c.shortfalls());
    }

    #[test]
    fn every_shortfall_is_named() {
        let root = CONFINED
            .replace("Uid:\t990\t990\t990\t990", "Uid:\t0\t0\t0\t0")
            .replace("Groups:\t", "Groups:\t0 4")
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff")
            .replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff")
            .replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
            .replace("Seccomp:\t2", "Seccomp:\t0");
        let c = parse_status(&root, "[none] integrity confidentiality").unwrap();
        let all = c.shortfalls().join("; ");
        for expected in [
            "uid 0",
            "supplementary groups [0, 4]",
            "effective capabilities 0x000001ffffffffff",
            "bounding capabilities",
            "no_new_privs is off",
            "seccomp mode is 0",
            "kernel lockdown is \"none\"",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from {all:?}");
        }
        let unreadable = parse_status(CONFINED, "unreadable: No such file or directory").unwrap();
        assert!(unreadable.shortfalls().join(" ").contains("kernel lockdown is \"unknown"));
    }

    #[test]
    fn malformed_status_is_an_error_not_a_guess() {
        assert!(parse_status("", "").unwrap_err().contains("Groups"));
        let no_caps = CONFINED.replace("CapEff:\t0000000000000000\n", "");
        assert!(parse_status(&no_caps, "").unwrap_err().contains("CapEff"));
        let bad = CONFINED.replace("Seccomp:\t2\n", "Seccomp:\tfilter\n");
        assert!(parse_status(&bad, "").unwrap_err().contains("Seccomp"));
    }
}
