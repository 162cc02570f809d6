//! A witness following a node's log: it cosigns a growing log, refuses what is not the log's,
//! what is smaller than or inconsistent with what it cosigned, and names a split view.

#![allow(clippy::unwrap_used)] // test code

use ed25519_dalek::SigningKey;
use sovereign_audit::merkle::{MerkleTree, leaf_hash};
use sovereign_audit::note::{Checkpoint, NoteVerifier, SignedNote, sign_note};
use sovereign_audit::witness::{Seen, Witness, WitnessError};

const ORIGIN: &str = "sovereign-appliance/0123456789abcdef";

fn node() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

fn tree(n: u64, salt: &str) -> MerkleTree {
    let mut t = MerkleTree::new();
    for i in 0..n {
        t.push(leaf_hash(format!("{salt} entry {i}").as_bytes()));
    }
    t
}

/// The checkpoint of `tree` at `size`, signed by `key` as the log.
fn checkpoint(tree: &MerkleTree, size: u64, key: &SigningKey) -> String {
    let body = Checkpoint { origin: ORIGIN.into(), size, root: tree.root_at(size).unwrap(), extensions: vec![] }.body();
    let mut note = SignedNote::new(body);
    sign_note(&mut note, ORIGIN, key);
    note.to_text()
}

fn witness(seen: Seen) -> Witness {
    Witness::new(
        "witness-b",
        SigningKey::from_bytes(&[0x22; 32]),
        vec![(ORIGIN.to_string(), NoteVerifier::new(ORIGIN, node().verifying_key()))],
        seen,
    )
}

#[test]
fn a_growing_log_is_cosigned_and_the_cosignature_verifies() {
    let log = tree(40, "a");
    let mut w = witness(Seen::default());
    let first = w.add_checkpoint(&checkpoint(&log, 10, &node()), 0, &[], 1_800_000_000).unwrap();
    let check = NoteVerifier::new("witness-b", SigningKey::from_bytes(&[0x22; 32]).verifying_key());
    assert_eq!(check.verify_cosignature(&first), Ok(1_800_000_000));
    assert!(NoteVerifier::new(ORIGIN, node().verifying_key()).verify_signature(&first).is_ok());
    let proof = log.consistency_proof(10, 40).unwrap();
    let second = w.add_checkpoint(&checkpoint(&log, 40, &node()), 10, &proof, 1_800_000_060).unwrap();
    assert_eq!(check.verify_cosignature(&second), Ok(1_800_000_060));
    assert_eq!(w.seen().0[ORIGIN], (40, log.root_at(40).unwrap()));
    // The same checkpoint again: cosigned again (idempotent), nothing moves.
    assert!(w.add_checkpoint(&checkpoint(&log, 40, &node()), 40, &[], 1_800_000_090).is_ok());
    // What the witness stored resumes it: a restarted witness refuses to go back.
    let restored: Seen = serde_json::from_str(&serde_json::to_string(w.seen()).unwrap()).unwrap();
    let mut again = witness(restored);
    assert_eq!(
        again.add_checkpoint(&checkpoint(&log, 10, &node()), 0, &[], 1),
        Err(WitnessError::Rollback { seen: 40, got: 10 })
    );
}

#[test]
fn forged_inconsistent_and_split_view_checkpoints_are_refused_by_name() {
    let log = tree(30, "a");
    let mut w = witness(Seen::default());
    w.add_checkpoint(&checkpoint(&log, 10, &node()), 0, &[], 1).unwrap();

    // Signed by someone else, or for a log the witness does not follow.
    let stranger = SigningKey::from_bytes(&[0x33; 32]);
    assert!(matches!(w.add_checkpoint(&checkpoint(&log, 20, &stranger), 10, &[], 2), Err(WitnessError::NotSigned(_))));
    let mut other =
        SignedNote::new(Checkpoint { origin: "elsewhere".into(), size: 1, root: [0; 32], extensions: vec![] }.body());
    sign_note(&mut other, "elsewhere", &node());
    assert_eq!(w.add_checkpoint(&other.to_text(), 0, &[], 2), Err(WitnessError::UnknownLog("elsewhere".into())));
    assert!(matches!(w.add_checkpoint("not a note", 0, &[], 2), Err(WitnessError::Malformed(_))));

    // A proof from a size the witness did not cosign last (C2SP's conflict).
    let proof = log.consistency_proof(5, 20).unwrap();
    assert_eq!(
        w.add_checkpoint(&checkpoint(&log, 20, &node()), 5, &proof, 2),
        Err(WitnessError::Conflict { claimed: 5, seen: 10 })
    );
    // A log rewritten after size 10 (another history of 20 entries): its proof cannot hold.
    let rewritten = {
        let mut t = tree(10, "a");
        for i in 10..20 {
            t.push(leaf_hash(format!("rewritten {i}").as_bytes()));
        }
        t
    };
    let forged_proof = log.consistency_proof(10, 20).unwrap();
    assert!(matches!(
        w.add_checkpoint(&checkpoint(&rewritten, 20, &node()), 10, &forged_proof, 2),
        Err(WitnessError::Inconsistent { seen: 10, .. })
    ));
    // The genuine 20 is cosigned; then the node shows another root for size 20: split view.
    let proof = log.consistency_proof(10, 20).unwrap();
    w.add_checkpoint(&checkpoint(&log, 20, &node()), 10, &proof, 3).unwrap();
    let split = w.add_checkpoint(&checkpoint(&rewritten, 20, &node()), 20, &[], 4);
    assert!(matches!(split, Err(WitnessError::SplitView { size: 20, .. })), "{split:?}");
    assert_eq!(w.seen().0[ORIGIN], (20, log.root_at(20).unwrap()), "a refusal moved what the witness saw");
}
