//! Mesh benchmarks on 127.0.0.1 with a private swtpm per node (`cargo bench -p sovereign-mesh
//! --bench mesh`; one iteration per row under `cargo test --benches`): admission of a new peer
//! (TCP + pnet + Noise + Yamux, challenge, TPM quote, verification), re-attestation of a
//! connected peer, a cosigning round trip with one witness, witnessing a checkpoint with three
//! peers, and the naive baseline that re-attests every peer before each witnessing.

#![allow(clippy::unwrap_used)] // benchmark code

#[path = "../tests/common/mod.rs"]
mod common;

use common::{admitted, checkpoint, listening, node, platform, until};
use ed25519_dalek::SigningKey;
use libp2p::PeerId;
use sovereign_audit::merkle::{MerkleTree, leaf_hash};
use sovereign_audit::note::NoteVerifier;
use sovereign_bench::{TABLE_HEADER, time};
use sovereign_measured_boot::pcr::Sha256Digest;
use sovereign_mesh::node::{MeshCommand, MeshEvent, MeshHandle};
use sovereign_mesh::swarm_key::SwarmKey;

/// A log that grows by one entry per checkpoint.
struct Log {
    origin: String,
    key: SigningKey,
    tree: MerkleTree,
}

impl Log {
    /// The next checkpoint command (one more entry; the proof from the last size).
    fn next(&mut self) -> MeshCommand {
        let old = self.tree.len();
        self.tree.push(leaf_hash(&old.to_be_bytes()));
        let new = self.tree.len();
        let proof = if old == 0 { vec![] } else { self.tree.consistency_proof(old, new).unwrap() };
        MeshCommand::Witness {
            checkpoint: checkpoint(&self.origin, &self.key, new, self.tree.root()),
            old_size: old,
            proof,
        }
    }
}

/// Waits on `handle` until `count` events match `wanted`.
fn events(handle: &MeshHandle, count: usize, wanted: impl Fn(&MeshEvent) -> bool) {
    let mut seen = Vec::new();
    until(handle, &mut seen, "benchmark events", |s| s.iter().filter(|e| wanted(e)).count() >= count);
}

fn main() {
    let key = SwarmKey::from_bytes([0x42; 32]);
    let names = ["a", "b", "c", "d", "e"];
    let platforms: Vec<_> = names.iter().map(|_| platform("release v1")).collect();
    let trusted: Vec<Vec<u8>> = platforms.iter().map(|p| p.ak_public.clone()).collect();
    let identity = |n: &str| SigningKey::from_bytes(&Sha256Digest::of(n.as_bytes()).0);
    let logs = || -> Vec<(String, NoteVerifier)> {
        names
            .iter()
            .map(|n| {
                (format!("mesh-test/{n}"), NoteVerifier::new(format!("mesh-test/{n}"), identity(n).verifying_key()))
            })
            .collect()
    };
    let (a, _) = node("a", &platforms[0], &key, vec![], trusted.clone(), logs());
    let a_addr = listening(&a);
    let (b, _) = node("b", &platforms[1], &key, vec![a_addr.clone()], trusted.clone(), logs());
    let b_addr = listening(&b);
    let mut seen = Vec::new();
    until(&a, &mut seen, "b admitted", |s| admitted(s, &b.peer_id));
    let mut rows = Vec::new();

    let is_admitted =
        |peer: PeerId| move |e: &MeshEvent| matches!(e, MeshEvent::Admitted { peer: p, .. } if *p == peer);
    rows.push(time("re-attestation of a connected peer (challenge + TPM quote + verify)", 50, || {
        assert!(a.send(MeshCommand::Challenge { peer: b.peer_id }));
        events(&a, 1, is_admitted(b.peer_id));
    }));
    let mut a_log = Log { origin: "mesh-test/a".into(), key: identity("a"), tree: MerkleTree::new() };
    let cosigned = |e: &MeshEvent| matches!(e, MeshEvent::Cosigned { .. });
    rows.push(time("cosigning round trip, 1 witness (consistency proof checked)", 100, || {
        assert!(a.send(a_log.next()));
        events(&a, 1, cosigned);
    }));

    // c's log, witnessed by a, b and d (c admits all three).
    let (c, _) = node("c", &platforms[2], &key, vec![a_addr.clone(), b_addr], trusted.clone(), logs());
    let c_addr = listening(&c);
    let (d, _) = node("d", &platforms[3], &key, vec![c_addr.clone()], trusted.clone(), logs());
    let mut seen = Vec::new();
    until(&c, &mut seen, "a, b and d admitted by c", |s| {
        admitted(s, &a.peer_id) && admitted(s, &b.peer_id) && admitted(s, &d.peer_id)
    });
    let witnesses = [a.peer_id, b.peer_id, d.peer_id];
    let mut c_log = Log { origin: "mesh-test/c".into(), key: identity("c"), tree: MerkleTree::new() };
    rows.push(time("witnessing a checkpoint with 3 peers (all cosigned)", 50, || {
        assert!(c.send(c_log.next()));
        events(&c, 3, cosigned);
    }));
    rows.push(time("baseline: re-attest every peer, then witness with 3 peers", 20, || {
        for peer in witnesses {
            assert!(c.send(MeshCommand::Challenge { peer }));
        }
        events(&c, 3, |e| matches!(e, MeshEvent::Admitted { .. }));
        assert!(c.send(c_log.next()));
        events(&c, 3, cosigned);
    }));

    // A running peer (its AK loaded) connects to c afresh: the handshake, c's challenge, its
    // quote and c's verification — what admission costs. Then the same with the peer's node
    // started for it (thread, runtime, listener, its first AK load) and stopped again.
    let (e, _) = node("e", &platforms[4], &key, vec![c_addr.clone()], trusted.clone(), logs());
    events(&c, 1, is_admitted(e.peer_id));
    let gone = |peer: PeerId| move |ev: &MeshEvent| matches!(ev, MeshEvent::Disconnected(p) if *p == peer);
    let mut admissions = Vec::new();
    for _ in 0..sovereign_bench::iterations(50) {
        assert!(e.send(MeshCommand::Disconnect(c.peer_id)));
        events(&c, 1, gone(e.peer_id));
        let started = std::time::Instant::now();
        assert!(e.send(MeshCommand::Dial(c_addr.clone())));
        events(&c, 1, is_admitted(e.peer_id));
        admissions.push(started.elapsed());
    }
    rows.push(sovereign_bench::Stats {
        name: "admission (TCP + pnet + Noise + Yamux handshake, challenge, TPM quote, verify)".into(),
        samples: admissions,
    });
    drop(e);
    rows.push(time("admission of a new peer, its node started for it (first AK load) and stopped", 20, || {
        let (e, _) = node("e", &platforms[4], &key, vec![c_addr.clone()], trusted.clone(), logs());
        events(&c, 1, is_admitted(e.peer_id));
    }));

    println!("{TABLE_HEADER}");
    for r in &rows {
        println!("{}", r.row());
    }
}
