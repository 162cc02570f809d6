//! The boot facts PID 1 handed over, checked against the TPM before the policy sees them.
//!
//! Pure: the TPM reading is the caller's.

use std::collections::BTreeMap;

use sovereign_boot_contract::BootFacts;

/// The facts the policy gets: PID 1's, with `measured_boot` true only if PID 1 said so *and*
/// the PCRs the runtime read itself are the ones PID 1 read after closing the unseal window.
/// Returns the differences (one line each) when they are not.
pub fn confirm(mut facts: BootFacts, read_back: &BTreeMap<u8, String>) -> (BootFacts, Vec<String>) {
    let differences: Vec<String> = facts
        .pcrs
        .iter()
        .filter(|(pcr, value)| read_back.get(pcr) != Some(value))
        .map(|(pcr, value)| {
            let now = read_back.get(pcr).map(String::as_str).unwrap_or("unreadable");
            format!("PCR {pcr}: PID 1 read {value}, the TPM now says {now}")
        })
        .collect();
    if facts.pcrs.is_empty() || !differences.is_empty() {
        facts.measured_boot = false;
    }
    (facts, differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BootFacts {
        BootFacts {
            measured_boot: true,
            image_version: 3,
            pcrs: BTreeMap::from([(7, "aa".into()), (15, "bb".into())]),
            unseal_window_closed: true,
        }
    }

    #[test]
    fn matching_pcrs_keep_pid1s_verdict() {
        let (f, diff) = confirm(facts(), &facts().pcrs);
        assert!(f.measured_boot && diff.is_empty());
        let mut said_no = facts();
        said_no.measured_boot = false;
        assert!(!confirm(said_no, &facts().pcrs).0.measured_boot);
    }

    #[test]
    fn a_pcr_that_moved_or_vanished_makes_the_boot_unmeasured() {
        let mut moved = facts().pcrs;
        moved.insert(15, "cc".into());
        let (f, diff) = confirm(facts(), &moved);
        assert!(!f.measured_boot);
        assert_eq!(diff, ["PCR 15: PID 1 read bb, the TPM now says cc"]);
        let (f, diff) = confirm(facts(), &BTreeMap::new());
        assert!(!f.measured_boot);
        assert_eq!(diff.len(), 2);
        let mut none = facts();
        none.pcrs.clear();
        assert!(!confirm(none, &BTreeMap::new()).0.measured_boot, "no PCRs at all is not a measured boot");
    }
}
