//! Compliance bundles end to end: export from a real log, verify offline with pinned keys,
//! and fail — naming the place — on any single flipped bit, a bundle from another log, an
//! unpinned or wrong key, a missing cosignature, or section content we cannot check.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;

use ed25519_dalek::SigningKey;
use sovereign_audit::bundle::{NamedKey, TrustedKeys, read_tar, verify_bundle, write_tar};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::note::cosign_note;
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};

const ORIGIN: &str = "sovereign.test/node-7";
const WITNESS: &str = "witness.test/w1";

fn key() -> DataKey {
    DataKey([0x17; 32])
}
fn node() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}
fn witness() -> SigningKey {
    SigningKey::from_bytes(&[8; 32])
}
fn operator() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn trust() -> TrustedKeys {
    TrustedKeys { node: Some(node().verifying_key()), witnesses: vec![(WITNESS.into(), witness().verifying_key())] }
}

/// A log with `n` entries (every third signed by an operator), an earlier checkpoint at
/// `n / 2`, and a witnessed checkpoint at `n`.
fn log_with(dir: &Path, n: u64) -> AuditLog {
    let log = AuditLog::create(&dir.join("audit.log"), ORIGIN, &key()).unwrap();
    for i in 0..n {
        let mut e = Entry::new(
            EntryKind::ALL[(i % 12) as usize],
            1_700_000_000_000 + i,
            Severity::Notice,
            vec![[i as u8; 32]],
            format!("event {i}").into_bytes(),
        );
        if i % 3 == 0 {
            e = e.sign(&operator());
        }
        log.append_entry(e).unwrap();
        if i + 1 == n / 2 {
            log.checkpoint(&node()).unwrap();
        }
    }
    let mut note = log.checkpoint(&node()).unwrap();
    cosign_note(&mut note, WITNESS, &witness(), 1_790_000_000);
    log.store_checkpoint(&note).unwrap();
    log
}

fn options() -> ExportOptions {
    ExportOptions {
        witnesses: vec![NamedKey { name: WITNESS.into(), key: hex::encode(witness().verifying_key().as_bytes()) }],
        ..Default::default()
    }
}

#[test]
fn exported_bundle_verifies_offline_with_every_check_listed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 40);
    let bundle = export_bundle(&log, &key(), &node(), &options()).unwrap();
    let report = verify_bundle(&bundle, &trust());
    assert!(report.passed(), "{}", report.render("bundle"));
    assert_eq!(report.entries, 40);
    assert_eq!(report.check("entries.signatures").unwrap().checked, 14);
    assert_eq!(report.check("checkpoint.cosignatures").unwrap().checked, 1);
    // The export after an earlier checkpoint carries a consistency proof from it. (The earlier
    // checkpoint was replaced by the final one in the store, so here: the final one covers all.)
    assert_eq!(report.check("tree").unwrap().checked, 40);
    // `SOVEREIGN_FUZZ_SEEDS=fuzz/seeds cargo test` refreshes the fuzz seed corpus.
    if let Some(seeds) = std::env::var_os("SOVEREIGN_FUZZ_SEEDS") {
        let seeds = std::path::PathBuf::from(seeds);
        let small = log_with(&tempfile::tempdir().unwrap().keep(), 3);
        let small_bundle = export_bundle(&small, &key(), &node(), &options()).unwrap();
        let fuzz_key_log = tempfile::tempdir().unwrap().keep().join("fuzz.log");
        let l = AuditLog::create(&fuzz_key_log, ORIGIN, &DataKey([7; 32])).unwrap();
        for i in 0..3 {
            l.append_entry(Entry::new(EntryKind::Artifact, i, Severity::Info, vec![], vec![i as u8])).unwrap();
        }
        let note = small.latest_checkpoint().unwrap().unwrap().to_text();
        for (target, bytes) in [
            ("compliance_bundle", small_bundle),
            ("audit_log_file", std::fs::read(&fuzz_key_log).unwrap()),
            ("signed_note", note.into_bytes()),
        ] {
            std::fs::create_dir_all(seeds.join(target)).unwrap();
            std::fs::write(seeds.join(target).join("real"), bytes).unwrap();
        }
    }
    // Standard tools can list it.
    let path = dir.path().join("bundle.tar");
    std::fs::write(&path, &bundle).unwrap();
    let out = std::process::Command::new("tar").arg("tf").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("entries.bin"));
}

/// A bundle written before the `anchors/` and `licences/` sections existed (they are absent)
/// still verifies; one without a section every bundle has always had does not.
#[test]
fn a_bundle_from_before_the_later_sections_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 12);
    let bundle = export_bundle(&log, &key(), &node(), &options()).unwrap();
    let without = |dirs: &[&str]| {
        let members: Vec<(String, Vec<u8>)> =
            read_tar(&bundle).unwrap().into_iter().filter(|(name, _)| !dirs.contains(&name.as_str())).collect();
        assert!(members.len() < read_tar(&bundle).unwrap().len(), "nothing was taken out");
        verify_bundle(&write_tar(&members), &trust())
    };
    let older = without(&["anchors/", "licences/"]);
    assert!(older.passed(), "{}", older.render("older bundle"));
    let broken = without(&["policies/"]);
    assert!(!broken.passed() && broken.render("bundle").contains("section missing"), "{}", broken.render("bundle"));
}

#[test]
fn a_range_export_proves_inclusion_and_consistency() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 30);
    // Grow the log after the witnessed checkpoint: the export signs a new checkpoint and
    // proves the witnessed one is a prefix of it.
    for i in 30..45 {
        log.append_entry(Entry::new(EntryKind::Artifact, i, Severity::Info, vec![], vec![i as u8])).unwrap();
    }
    let bundle = export_bundle(&log, &key(), &node(), &ExportOptions { range: Some((10, 20)), ..options() }).unwrap();
    let trust_without_witness = TrustedKeys { node: Some(node().verifying_key()), witnesses: vec![] };
    let report = verify_bundle(&bundle, &trust_without_witness);
    assert!(report.passed(), "{}", report.render("bundle"));
    assert_eq!(report.check("tree").unwrap().checked, 10, "ten inclusion proofs");
    assert_eq!(report.check("proofs.consistency").unwrap().checked, 1);
    // The new checkpoint is not cosigned: pinning the witness makes that a named failure.
    let report = verify_bundle(&bundle, &trust());
    let cos = report.check("checkpoint.cosignatures").unwrap();
    assert!(!cos.passed() && cos.failures[0].place.contains(WITNESS), "{}", report.render("bundle"));
}

#[test]
fn any_flipped_bit_fails_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    let bundle = export_bundle(&log, &key(), &node(), &options()).unwrap();
    assert!(verify_bundle(&bundle, &trust()).passed());
    // Every byte of the file, one bit each (rotating through the 8 bit positions).
    for i in 0..bundle.len() {
        let mut b = bundle.clone();
        b[i] ^= 1 << (i % 8);
        let report = verify_bundle(&b, &trust());
        assert!(!report.passed(), "flipping bit {} of byte {i} went unnoticed", i % 8);
        let failure = report.checks.iter().find(|c| !c.passed()).unwrap();
        assert!(!failure.failures[0].place.is_empty(), "byte {i}: failure without a place");
    }
}

#[test]
fn content_changes_are_named_by_member() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 6);
    let bundle = export_bundle(&log, &key(), &node(), &options()).unwrap();
    let mut members = read_tar(&bundle).unwrap();
    let entries = members.iter_mut().find(|(n, _)| n == "entries.bin").unwrap();
    let last = entries.1.len() - 1;
    entries.1[last] ^= 0x20;
    let report = verify_bundle(&write_tar(&members), &trust());
    let m = report.check("members").unwrap();
    assert_eq!(m.failures[0].place, "entries.bin", "{}", report.render("bundle"));
    assert!(!report.check("tree").unwrap().passed() || !report.check("entries.decode").unwrap().passed());
}

#[test]
fn wrong_or_missing_trust_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5);
    let bundle = export_bundle(&log, &key(), &node(), &options()).unwrap();
    let unpinned = verify_bundle(&bundle, &TrustedKeys::default());
    assert!(!unpinned.passed(), "verified with no pinned key");
    assert!(unpinned.check("index.signature").unwrap().failures[0].reason.contains("not evaluated"));
    let stranger = TrustedKeys { node: Some(SigningKey::from_bytes(&[1; 32]).verifying_key()), witnesses: vec![] };
    let report = verify_bundle(&bundle, &stranger);
    assert!(!report.passed());
    assert!(!report.check("checkpoint.signature").unwrap().passed());
}

#[test]
fn a_bundle_from_another_log_fails() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = AuditLog::create(&other_dir.join("audit.log"), "someone.else/log", &key()).unwrap();
    other.append_entry(Entry::new(EntryKind::Update, 1, Severity::Info, vec![], vec![])).unwrap();
    let other_node = SigningKey::from_bytes(&[33; 32]);
    other.checkpoint(&other_node).unwrap();
    let bundle = export_bundle(&other, &key(), &other_node, &ExportOptions::default()).unwrap();
    let report = verify_bundle(&bundle, &trust());
    assert!(!report.passed());
    assert!(!report.check("keys").unwrap().passed());
    assert!(!report.check("index.signature").unwrap().passed());
}

#[test]
fn unverifiable_section_content_is_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let opts =
        ExportOptions { section_files: vec![("attestation".into(), "quote.bin".into(), vec![1, 2, 3])], ..options() };
    let bundle = export_bundle(&log, &key(), &node(), &opts).unwrap();
    let report = verify_bundle(&bundle, &trust());
    let s = report.check("sections").unwrap();
    assert!(!s.passed() && s.failures[0].place == "attestation/quote.bin", "{}", report.render("bundle"));
}

#[test]
fn an_export_from_a_log_cut_below_or_other_than_the_last_signed_checkpoint_is_refused() {
    let signed = tempfile::tempdir().unwrap();
    log_with(signed.path(), 20);
    let checkpoint = std::fs::read(signed.path().join("audit.log.checkpoint")).unwrap();
    // The same log cut back to 10 entries: its checkpoint of 20 is still beside it.
    let cut = tempfile::tempdir().unwrap();
    let log = log_with(cut.path(), 10);
    std::fs::write(cut.path().join("audit.log.checkpoint"), &checkpoint).unwrap();
    let refusal = export_bundle(&log, &key(), &node(), &options()).unwrap_err().to_string();
    assert!(refusal.contains("holds 10 entries, fewer than the 20"), "{refusal}");
    // A log of 20 other entries under the same checkpoint.
    let other = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&other.path().join("audit.log"), ORIGIN, &key()).unwrap();
    for i in 0..20u8 {
        log.append_entry(Entry::new(EntryKind::Artifact, 1, Severity::Info, vec![], vec![i])).unwrap();
    }
    std::fs::write(other.path().join("audit.log.checkpoint"), &checkpoint).unwrap();
    let refusal = export_bundle(&log, &key(), &node(), &options()).unwrap_err().to_string();
    assert!(refusal.contains("first 20 entries are not the ones"), "{refusal}");
    // Grown past it: the export carries the consistency proof from it.
    let grown = tempfile::tempdir().unwrap();
    let log = log_with(grown.path(), 20);
    log.append_entry(Entry::new(EntryKind::Artifact, 1, Severity::Info, vec![], vec![1])).unwrap();
    // (Its new checkpoint is not witnessed yet: only the node is pinned.)
    let node_only = TrustedKeys { node: Some(node().verifying_key()), witnesses: vec![] };
    let bundle = export_bundle(&log, &key(), &node(), &ExportOptions::default()).unwrap();
    let report = verify_bundle(&bundle, &node_only);
    assert!(report.passed(), "{}", report.render("bundle"));
    assert_eq!(report.check("proofs.consistency").map(|c| c.checked), Some(1), "{}", report.render("bundle"));
}

#[test]
fn a_witnessed_checkpoint_joins_the_bundle_cosigned_or_proven_consistent_and_a_forged_one_is_refused() {
    use sovereign_audit::note::{Checkpoint, SignedNote, sign_note};
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("audit.log"), ORIGIN, &key()).unwrap();
    let append = |n: u64| {
        for i in 0..n {
            log.append_entry(Entry::new(EntryKind::Attestation, i, Severity::Info, vec![], vec![i as u8])).unwrap();
        }
    };
    append(10);
    // The mesh's witnesses cosigned the log as it stands: the export's checkpoint carries it.
    let mut witnessed = SignedNote::new(log.checkpoint_body().body());
    sign_note(&mut witnessed, ORIGIN, &node());
    cosign_note(&mut witnessed, WITNESS, &witness(), 1_790_000_000);
    let with = |w: Option<SignedNote>| ExportOptions { witnessed: w, ..Default::default() };
    let bundle = export_bundle(&log, &key(), &node(), &with(Some(witnessed.clone()))).unwrap();
    let report = verify_bundle(&bundle, &trust());
    assert!(report.passed(), "{}", report.render("bundle"));
    assert_eq!(report.check("checkpoint.cosignatures").unwrap().checked, 1);
    // Another witness key under the same name is not that witness.
    let other = TrustedKeys {
        node: Some(node().verifying_key()),
        witnesses: vec![(WITNESS.into(), SigningKey::from_bytes(&[0x33; 32]).verifying_key())],
    };
    assert!(verify_bundle(&bundle, &other).check("checkpoint.cosignatures").is_some_and(|c| !c.passed()));

    // The log grew after the witnesses cosigned: the bundle proves its checkpoint extends the
    // witnessed one, but the witnesses did not cosign the new one — pinned, that is a failure.
    append(15);
    let grown = export_bundle(&log, &key(), &node(), &with(Some(witnessed))).unwrap();
    let report = verify_bundle(&grown, &trust());
    assert!(
        report.check("proofs.consistency").is_some_and(|c| c.passed() && c.checked >= 1),
        "{}",
        report.render("bundle")
    );
    assert!(report.check("checkpoint.cosignatures").is_some_and(|c| !c.passed()), "{}", report.render("bundle"));

    // A witnessed checkpoint the log does not hold (another root at its size) is refused.
    let mut forged =
        SignedNote::new(Checkpoint { origin: ORIGIN.into(), size: 10, root: [9; 32], extensions: vec![] }.body());
    sign_note(&mut forged, ORIGIN, &node());
    let e = export_bundle(&log, &key(), &node(), &with(Some(forged))).unwrap_err().to_string();
    assert!(e.contains("not one of this log's"), "{e}");
}
