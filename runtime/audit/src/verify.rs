//! Verification reports and the offline verifier of a raw log file.
//!
//! A report lists every check with how many items it covered and how many failed, and names
//! every failure with its place. It passes only when every check ran and nothing failed.
//! Pure: no IO.

use serde::Serialize;

use crate::entry::Entry;
use crate::logfile::{self, DataKey, Tail};
use crate::merkle::{Hash, leaf_hash, root_from_leaves};
use crate::note::{Checkpoint, NoteVerifier, SignedNote};

/// One failure, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Where (member, entry index, byte offset, line).
    pub place: String,
    /// What is wrong.
    pub reason: String,
}

/// One kind of check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, e.g. `entries.signatures`.
    pub name: String,
    /// How many items it covered.
    pub checked: u64,
    /// Its failures.
    pub failures: Vec<Failure>,
    /// Summary.
    pub detail: String,
}

impl Check {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A verification report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Entries seen.
    pub entries: u64,
    /// Leaf hashes of the entries seen (not serialized).
    #[serde(skip)]
    pub leaf_hashes: Vec<Hash>,
}

impl Report {
    /// True only when at least one check ran and none failed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(Check::passed)
    }

    /// Failed checks.
    pub fn failures(&self) -> impl Iterator<Item = FailureView<'_>> {
        self.checks.iter().filter(|c| !c.passed()).map(|c| FailureView {
            name: &c.name,
            detail: c.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect::<Vec<_>>().join("; "),
        })
    }

    /// The named check.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Tree head over the first `size` entries seen.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        self.leaf_hashes.get(..usize::try_from(size).ok()?).map(root_from_leaves)
    }

    /// Records a check.
    pub fn add(&mut self, name: &str, checked: u64, failures: Vec<Failure>, detail: impl Into<String>) {
        self.checks.push(Check { name: name.into(), checked, failures, detail: detail.into() });
    }

    /// Records a check that could not run (a failure, by the fail-closed rule).
    pub fn not_evaluated(&mut self, name: &str, place: &str, why: &str) {
        self.add(name, 0, vec![fail(place, format!("not evaluated: {why}"))], "not evaluated");
    }

    /// Human-readable rendering: one line per check, then every failure.
    pub fn render(&self, title: &str) -> String {
        let mut s = format!("{title}: {}\n", if self.passed() { "PASS" } else { "FAIL" });
        for c in &self.checks {
            s.push_str(&format!(
                "  [{}] {:<26} {:>8} checked  {}\n",
                if c.passed() { "ok" } else { "FAIL" },
                c.name,
                c.checked,
                c.detail
            ));
            for f in &c.failures {
                s.push_str(&format!("         - {}: {}\n", f.place, f.reason));
            }
        }
        s
    }
}

/// A failed check, flattened.
#[derive(Debug)]
pub struct FailureView<'a> {
    /// Check name.
    pub name: &'a str,
    /// Its failures joined.
    pub detail: String,
}

/// Shorthand for a failure.
pub fn fail(place: impl Into<String>, reason: impl Into<String>) -> Failure {
    Failure { place: place.into(), reason: reason.into() }
}

/// Decodes every entry, checks canonical encoding and every entry's own signatures; records
/// `entries.decode` and `entries.signatures`. Returns the decoded entries' leaf hashes.
pub fn check_entries<'a>(report: &mut Report, encoded: impl Iterator<Item = (String, &'a [u8])>) -> Vec<Hash> {
    let mut hashes = Vec::new();
    let (mut decode_failures, mut sig_failures) = (Vec::new(), Vec::new());
    let (mut decoded, mut signatures) = (0u64, 0u64);
    for (place, bytes) in encoded {
        hashes.push(leaf_hash(bytes));
        decoded += 1;
        match Entry::decode(bytes) {
            Ok(entry) => {
                signatures += entry.signatures.len() as u64;
                for (i, reason) in entry.verify_signatures() {
                    sig_failures.push(fail(format!("{place} signature {i}"), reason));
                }
            }
            Err(e) => decode_failures.push(fail(place, e.to_string())),
        }
    }
    report.add("entries.decode", decoded, decode_failures, format!("{decoded} entries decode canonically"));
    report.add("entries.signatures", signatures, sig_failures, format!("{signatures} entry signatures verified"));
    hashes
}

/// Checks a signed checkpoint against entries' leaf hashes: signature by `node` (key name =
/// origin), origin, size within the entries, root equal to the recomputed tree head.
pub fn check_checkpoint(
    report: &mut Report,
    note: &SignedNote,
    node: Option<&NoteVerifier>,
    origin: &str,
    leaves: &[Hash],
    place: &str,
) -> Option<Checkpoint> {
    let cp = match Checkpoint::parse_body(&note.body) {
        Ok(cp) => cp,
        Err(e) => {
            report.add("checkpoint.signature", 1, vec![fail(place, e.to_string())], "checkpoint body does not parse");
            report.not_evaluated("checkpoint.root", place, "checkpoint body does not parse");
            return None;
        }
    };
    match node {
        Some(v) => {
            let mut failures = Vec::new();
            if cp.origin != origin || v.name != origin {
                failures
                    .push(fail(place, format!("checkpoint origin {:?} is not the log's origin {origin:?}", cp.origin)));
            }
            if let Err(e) = v.verify_signature(note) {
                failures.push(fail(place, e.to_string()));
            }
            report.add(
                "checkpoint.signature",
                1,
                failures,
                format!("signed by the node identity {}", hex::encode(v.key.as_bytes())),
            );
        }
        None => report.not_evaluated("checkpoint.signature", place, "no node identity key is pinned (pass --node-key)"),
    }
    let failures = match usize::try_from(cp.size).ok().and_then(|n| leaves.get(..n)) {
        None => {
            vec![fail(place, format!("checkpoint covers {} entries but only {} are present", cp.size, leaves.len()))]
        }
        Some(prefix) if root_from_leaves(prefix) != cp.root => {
            vec![fail(
                place,
                format!("tree head over the first {} entries differs from the checkpoint's root", cp.size),
            )]
        }
        Some(_) => vec![],
    };
    report.add("checkpoint.root", 1, failures, format!("tree of {} entries recomputed", cp.size));
    Some(cp)
}

/// Verifies a raw log file offline: header and key, every record's authentication and chain,
/// a clean end, every entry, and (when given) the checkpoint stored beside it.
pub fn verify_log_bytes(
    bytes: &[u8],
    key: &DataKey,
    node: Option<&NoteVerifier>,
    checkpoint: Option<&SignedNote>,
) -> Report {
    let mut report = Report::default();
    let decoded = match logfile::decode(bytes, key) {
        Ok(d) => d,
        Err(e) => {
            report.add("log.header", 1, vec![fail("header", e.to_string())], "header does not open");
            for name in ["log.records", "entries.decode", "entries.signatures"] {
                report.not_evaluated(name, "log", "header does not open");
            }
            return report;
        }
    };
    report.add("log.header", 1, vec![], format!("origin {}", decoded.header.origin));
    let n = decoded.entries.len() as u64;
    let failures = match &decoded.tail {
        Tail::Clean => vec![],
        Tail::Torn { offset, bytes, reason } => vec![fail(
            format!("byte {offset}"),
            format!("torn tail of {bytes} bytes ({reason}): an unacknowledged write; opening the log recovers it"),
        )],
        Tail::Corrupt { index, offset, reason } => {
            vec![fail(format!("record {index} at byte {offset}"), reason.clone())]
        }
    };
    report.add("log.records", n, failures, format!("{n} records authenticate in order (AES-256-GCM, chained)"));
    let hashes = check_entries(
        &mut report,
        decoded.entries.iter().enumerate().map(|(i, b)| (format!("entry {i}"), b.as_slice())),
    );
    if let Some(note) = checkpoint {
        check_checkpoint(&mut report, note, node, &decoded.header.origin, &hashes, "checkpoint");
    }
    report.entries = n;
    report.leaf_hashes = hashes;
    report
}
