//! The durable log on a real filesystem: reopen, group commit, torn tails, tampering
//! (bit flips, reordered, removed and spliced records), wrong keys, checkpoints.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use sovereign_audit::note::NoteVerifier;
use sovereign_audit::verify::verify_log_bytes;
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity, StoreError};

const ORIGIN: &str = "sovereign.test/node-1";

fn key() -> DataKey {
    DataKey([0x42; 32])
}

fn node() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn entry(i: u64) -> Entry {
    Entry::new(
        EntryKind::PolicyDecision,
        1_700_000_000_000 + i,
        Severity::Info,
        vec![[i as u8; 32]],
        format!("decision {i}").into_bytes(),
    )
}

fn new_log(dir: &Path, n: u64) -> (PathBuf, AuditLog) {
    let path = dir.join("audit.log");
    let log = AuditLog::create(&path, ORIGIN, &key()).unwrap();
    for i in 0..n {
        log.append_entry(entry(i)).unwrap();
    }
    (path, log)
}

/// Byte offsets where each record starts (header length first), for surgical tampering.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let header = 12 + ORIGIN.len() + 32;
    let mut offs = vec![];
    let mut o = header;
    while o < bytes.len() {
        offs.push(o);
        let len = u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        o += 4 + 12 + len;
    }
    offs
}

#[test]
fn appends_survive_reopen_with_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 25);
    let root = log.root();
    let hash = log.append(EntryKind::Refusal, b"unsigned request refused", Severity::Warning).unwrap();
    drop(log);
    let (log, recovery) = AuditLog::open(&path, &key()).unwrap();
    assert_eq!(recovery.entries, 26);
    assert_eq!(recovery.dropped_bytes, 0);
    assert_eq!(log.root_at(25).unwrap(), root);
    let leaves_proof = log.inclusion_proof(25, 26).unwrap();
    sovereign_audit::merkle::verify_inclusion(&hash, 25, 26, &leaves_proof, &log.root()).unwrap();
    log.verify_integrity(&key(), None).unwrap();
}

#[test]
fn concurrent_appenders_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 0);
    let log = Arc::new(log);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..50).map(|i| log.append_entry(entry(t * 1000 + i)).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(u64, [u8; 32])> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    acked.sort();
    assert_eq!(
        acked.iter().map(|a| a.0).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>(),
        "indices are dense and unique"
    );
    drop(log);
    let entries = sovereign_audit::logfile::decode_entries(&fs::read(&path).unwrap(), &key()).unwrap();
    for (index, hash) in acked {
        assert_eq!(entries[index as usize].hash(), hash, "entry {index} changed");
    }
}

#[test]
fn a_torn_tail_is_dropped_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 10);
    let root = log.root();
    drop(log);
    let clean = fs::read(&path).unwrap();
    // Simulate a crash during the next batch: a partial record, or a length with zeros.
    let mut partial_record = clean.clone();
    let extra = {
        let (p2, log2) = new_log(&dir.path().join("x").tap_mkdir(), 11);
        drop(log2);
        let b = fs::read(p2).unwrap();
        let offs = record_offsets(&b);
        b[offs[10]..].to_vec()
    };
    partial_record.extend_from_slice(&extra[..extra.len() / 2]);
    let mut zero_tail = clean.clone();
    zero_tail.extend_from_slice(&[0u8; 300]);
    for torn in [partial_record, zero_tail] {
        fs::write(&path, &torn).unwrap();
        let (log, recovery) = AuditLog::open(&path, &key()).unwrap();
        assert_eq!(recovery.entries, 10);
        assert!(recovery.dropped_bytes > 0);
        assert_eq!(log.root(), root);
        assert_eq!(fs::read(&path).unwrap(), clean, "recovery truncated exactly the torn tail");
        log.append_entry(entry(99)).unwrap();
        drop(log);
        let (log, _) = AuditLog::open(&path, &key()).unwrap();
        assert_eq!(log.size(), 11);
        log.verify_integrity(&key(), None).unwrap();
        fs::write(&path, &clean).unwrap();
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn tampering_in_the_middle_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 8);
    drop(log);
    let clean = fs::read(&path).unwrap();
    let offs = record_offsets(&clean);
    let rec = |i: usize| clean[offs[i]..*offs.get(i + 1).unwrap_or(&clean.len())].to_vec();

    let mut flipped = clean.clone();
    flipped[offs[3] + 20] ^= 0x01;
    let mut reordered = clean[..offs[2]].to_vec();
    reordered.extend(rec(3));
    reordered.extend(rec(2));
    reordered.extend_from_slice(&clean[offs[4]..]);
    let mut removed = clean[..offs[2]].to_vec();
    removed.extend_from_slice(&clean[offs[3]..]);
    // A record from another log under the same data key.
    let other_dir = dir.path().join("other").tap_mkdir();
    let (other_path, other) = new_log(&other_dir, 8);
    drop(other);
    let other_bytes = fs::read(&other_path).unwrap();
    let other_offs = record_offsets(&other_bytes);
    let mut spliced = clean[..offs[5]].to_vec();
    spliced.extend_from_slice(&other_bytes[other_offs[5]..other_offs[6]]);
    spliced.extend_from_slice(&clean[offs[6]..]);

    for (what, bytes, index) in
        [("bit flip", flipped, 3), ("reordered", reordered, 2), ("removed", removed, 2), ("spliced", spliced, 5)]
    {
        fs::write(&path, &bytes).unwrap();
        match AuditLog::open(&path, &key()) {
            Err(StoreError::Corrupt { index: i, .. }) => assert_eq!(i, index, "{what}"),
            other => panic!("{what}: expected Corrupt at record {index}, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: the file was modified by a refused open");
        let report = verify_log_bytes(&bytes, &key(), None, None);
        assert!(!report.passed(), "{what}");
        let detail = report.check("log.records").unwrap().failures[0].place.clone();
        assert!(detail.starts_with(&format!("record {index}")), "{what}: {detail}");
    }
}

#[test]
fn wrong_key_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 3);
    drop(log);
    let err = AuditLog::open(&path, &DataKey([0; 32])).unwrap_err().to_string();
    assert!(err.contains("wrong data key"), "{err}");
    fs::write(&path, b"#!/bin/sh\necho not a log\n").unwrap();
    let err = AuditLog::open(&path, &key()).unwrap_err().to_string();
    assert!(err.contains("SVAUDLG1"), "{err}");
}

#[test]
fn checkpoints_are_signed_stored_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), 12);
    let note = log.checkpoint(&node()).unwrap();
    let verifier = NoteVerifier::new(ORIGIN, node().verifying_key());
    verifier.verify_signature(&note).unwrap();
    log.verify_integrity(&key(), Some(&verifier)).unwrap();
    // A checkpoint signed by another key is reported.
    let stranger = NoteVerifier::new(ORIGIN, SigningKey::from_bytes(&[2; 32]).verifying_key());
    let problems = log.verify_integrity(&key(), Some(&stranger)).unwrap_err();
    assert!(problems.iter().any(|p| p.starts_with("checkpoint.signature")), "{problems:?}");
    // Truncating acknowledged entries behind the checkpoint's back is reported.
    drop(log);
    let bytes = fs::read(&path).unwrap();
    let offs = record_offsets(&bytes);
    let report = verify_log_bytes(&bytes[..offs[11]], &key(), Some(&verifier), Some(&note));
    assert_eq!(report.check("checkpoint.root").map(|c| c.passed()), Some(false), "{}", report.render("log"));
}

/// The files kept beside a log (checkpoint, witnessed note, witness state) are replaced by
/// different threads at once on an appliance; each must only ever hold what was written to it.
/// (Regression: all three were once written through one shared `audit.log.tmp`, and a witnessed
/// note was found holding the witness state's JSON.)
#[test]
fn files_beside_a_log_written_at_once_never_hold_each_others_bytes() {
    use sovereign_audit::store::{checkpoint_path, replace_durably, temporary_path, witness_seen_path, witnessed_path};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let paths = [checkpoint_path(&log), witnessed_path(&log), witness_seen_path(&log)];
    let temporaries: std::collections::BTreeSet<_> = paths.iter().map(|p| temporary_path(p)).collect();
    assert_eq!(temporaries.len(), paths.len(), "each file has its own temporary name: {temporaries:?}");
    assert!(temporaries.iter().all(|t| t.parent() == Some(dir.path())), "temporaries stay in the log's directory");

    std::thread::scope(|scope| {
        for (writer, path) in paths.iter().enumerate() {
            scope.spawn(move || {
                for round in 0..200 {
                    let bytes = format!("writer {writer} round {round}\n").repeat(64);
                    replace_durably(path, bytes.as_bytes()).unwrap();
                    let read = fs::read_to_string(path).unwrap();
                    assert!(
                        read.starts_with(&format!("writer {writer} round ")),
                        "{} holds another file's bytes: {:?}",
                        path.display(),
                        read.lines().next()
                    );
                }
            });
        }
    });
    for (writer, path) in paths.iter().enumerate() {
        assert_eq!(fs::read_to_string(path).unwrap(), format!("writer {writer} round 199\n").repeat(64));
        assert!(!temporary_path(path).exists(), "no temporary left behind");
    }
}
