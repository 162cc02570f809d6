//! The mesh crate against real sockets on 127.0.0.1 and real TPMs (one private swtpm per node):
//! three nodes with the swarm key connect (TCP → pnet → Noise → Yamux), challenge each other,
//! verify each other's quotes — bound to the challenge, the libp2p identity and the node
//! identity, checked by the same verifier as `sovereign attest` against the reference PCR — and
//! admit each other; one node's checkpoint is cosigned by the two others, and a second
//! checkpoint for the same size with another root (a split view) is refused by both. A node with
//! another swarm key never completes a handshake; a node with the key but another platform (PCR
//! 15 differs) connects, is refused admission by name, and is refused witnessing.

#![allow(clippy::unwrap_used)] // test code

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use sovereign_audit::note::{Checkpoint, NoteVerifier, SignedNote, sign_note};
use sovereign_audit::witness::{Seen, Witness};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest};
use sovereign_measured_boot::structures::EccPublic;
use sovereign_measured_boot::tpm::Tpm;
use sovereign_measured_boot::verify::{Expectations, QuoteEvidence, verify_quote};
use sovereign_mesh::admission::Policy;
use sovereign_mesh::node::{MeshCommand, MeshConfig, MeshEvent, MeshHandle, spawn};
use sovereign_mesh::swarm_key::SwarmKey;
use sovereign_qemu::Swtpm;

const WAIT: Duration = Duration::from_secs(30);

/// The quote evidence on the wire (the test's encoding).
#[derive(Serialize, Deserialize)]
struct Evidence {
    attest: Vec<u8>,
    signature: Vec<u8>,
    ak_public: Vec<u8>,
    ek_public: Vec<u8>,
    pcr15: [u8; 32],
}

/// A node's platform: its TPM (PCR 15 extended with `release`) and its attestation key.
struct Platform {
    swtpm: Swtpm,
    ak_stored: Vec<u8>,
    ak_public: Vec<u8>,
}

fn platform(release: &str) -> Platform {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    tpm.pcr_extend(15, &Sha256Digest::of(release.as_bytes())).unwrap();
    let (ak, stored) = tpm.attestation_key(None).unwrap();
    let ak_public = ak.public.clone();
    tpm.release_attestation_key(ak);
    Platform { swtpm, ak_stored: stored, ak_public }
}

/// PCR 15 after a boot of `release`.
fn reference(release: &str) -> [u8; 32] {
    Sha256Digest::of_parts(&[&[0u8; 32], &Sha256Digest::of(release.as_bytes()).0]).0
}

fn node(
    name: &str,
    platform: &Platform,
    key: &SwarmKey,
    dial: Vec<Multiaddr>,
    trusted_aks: Vec<Vec<u8>>,
    logs: Vec<(String, NoteVerifier)>,
) -> (MeshHandle, SigningKey) {
    let identity = SigningKey::from_bytes(&sovereign_measured_boot::pcr::Sha256Digest::of(name.as_bytes()).0);
    let tcti = platform.swtpm.tcti();
    let stored = platform.ak_stored.clone();
    let attest = Box::new(move |binding: &[u8; 32]| -> Result<Vec<u8>, String> {
        let mut tpm = Tpm::open(&tcti).map_err(|e| e.to_string())?;
        let (ak, _) = tpm.attestation_key(Some(&stored)).map_err(|e| e.to_string())?;
        let quoted = tpm.quote(&ak, binding, &PcrSelection::new([15]).map_err(|e| e.to_string())?);
        tpm.release_attestation_key(ak);
        let q = quoted.map_err(|e| e.to_string())?;
        let pcr15 = q.pcr_values.get(15).ok_or("no PCR 15")?.0;
        let e = Evidence {
            attest: q.attest,
            signature: q.signature,
            ak_public: q.ak_public,
            ek_public: q.ek_public,
            pcr15,
        };
        serde_json::to_vec(&e).map_err(|e| e.to_string())
    });
    let expected = reference("release v1");
    let verify = Box::new(move |binding: &[u8; 32], _identity: &[u8; 32], bytes: &[u8]| -> Result<[u8; 32], String> {
        let e: Evidence = serde_json::from_slice(bytes).map_err(|e| format!("evidence: {e}"))?;
        if !trusted_aks.contains(&e.ak_public) {
            return Err("its attestation key is not one this mesh trusts".into());
        }
        let ak = EccPublic::parse(&e.ak_public).map_err(|e| e.to_string()).and_then(|p| p.verifying_key())?;
        let mut claimed = PcrValues::new();
        claimed.set(15, Sha256Digest(e.pcr15));
        let mut reference = PcrValues::new();
        reference.set(15, Sha256Digest(expected));
        let evidence = QuoteEvidence {
            attest: e.attest,
            signature: e.signature,
            ak_public: e.ak_public,
            ek_public: e.ek_public,
            pcr_values: claimed,
        };
        let selection = PcrSelection::new([15]).map_err(|e| e.to_string())?;
        let report = verify_quote(
            &evidence,
            &Expectations {
                ak: &ak,
                qualifying_data: binding,
                selection: &selection,
                reference: &reference,
                firmware_log: None,
                measurement_log: None,
            },
        );
        if report.passed() {
            Ok(e.pcr15)
        } else {
            Err(report.failures().map(|c| c.detail.clone()).collect::<Vec<_>>().join("; "))
        }
    });
    let witness = Witness::new(format!("witness-{name}"), identity.clone(), logs, Seen::default());
    let config = MeshConfig {
        keypair: libp2p::identity::Keypair::generate_ed25519(),
        node_identity: identity.verifying_key().to_bytes(),
        swarm_key: SwarmKey::from_bytes(*key.bytes()),
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        dial,
        handshake_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        admission: Policy { ttl_ms: 600_000, challenge_ms: 10_000 },
    };
    (spawn(config, attest, verify, witness).unwrap(), identity)
}

/// Collects `handle`'s events until `done` says so (or fails after [`WAIT`]).
fn until(handle: &MeshHandle, seen: &mut Vec<MeshEvent>, what: &str, done: impl Fn(&[MeshEvent]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}; events: {seen:#?}");
        if let Some(e) = handle.next_event(left.min(Duration::from_millis(200))) {
            seen.push(e);
        }
    }
}

fn listening(handle: &MeshHandle) -> Multiaddr {
    let mut seen = Vec::new();
    until(handle, &mut seen, "a listen address", |s| s.iter().any(|e| matches!(e, MeshEvent::Listening(_))));
    seen.into_iter()
        .find_map(|e| match e {
            MeshEvent::Listening(a) => Some(a),
            _ => None,
        })
        .unwrap()
}

fn admitted(seen: &[MeshEvent], peer: &PeerId) -> bool {
    seen.iter().any(|e| matches!(e, MeshEvent::Admitted { peer: p, .. } if p == peer))
}

fn checkpoint(origin: &str, key: &SigningKey, size: u64, root: [u8; 32]) -> String {
    let body = Checkpoint { origin: origin.into(), size, root, extensions: vec![] }.body();
    let mut note = SignedNote::new(body);
    sign_note(&mut note, origin, key);
    note.to_text()
}

#[test]
fn attested_peers_admit_and_witness_each_other_and_the_rest_are_kept_out_by_name() {
    let key = SwarmKey::from_bytes([0x5a; 32]);
    let good: Vec<Platform> = (0..3).map(|_| platform("release v1")).collect();
    let odd = platform("release v1 on another platform");
    let mut trusted: Vec<Vec<u8>> = good.iter().map(|p| p.ak_public.clone()).collect();
    trusted.push(odd.ak_public.clone());
    let names = ["a", "b", "c"];
    let identities: Vec<SigningKey> =
        names.iter().map(|n| SigningKey::from_bytes(&Sha256Digest::of(n.as_bytes()).0)).collect();
    let logs = |me: usize| -> Vec<(String, NoteVerifier)> {
        (0..3)
            .filter(|i| *i != me)
            .map(|i| {
                let origin = format!("mesh-test/{}", names[i]);
                (origin.clone(), NoteVerifier::new(origin, identities[i].verifying_key()))
            })
            .collect()
    };

    let (a, a_key) = node("a", &good[0], &key, vec![], trusted.clone(), logs(0));
    let a_addr = listening(&a);
    let (b, _) = node("b", &good[1], &key, vec![a_addr.clone()], trusted.clone(), logs(1));
    let b_addr = listening(&b);
    let (c, _) = node("c", &good[2], &key, vec![a_addr.clone(), b_addr], trusted.clone(), logs(2));
    let (mut at_a, mut at_b, mut at_c) = (Vec::new(), Vec::new(), Vec::new());
    until(&a, &mut at_a, "a admitting b and c", |s| admitted(s, &b.peer_id) && admitted(s, &c.peer_id));
    until(&b, &mut at_b, "b admitting a and c", |s| admitted(s, &a.peer_id) && admitted(s, &c.peer_id));
    until(&c, &mut at_c, "c admitting a and b", |s| admitted(s, &a.peer_id) && admitted(s, &b.peer_id));
    let identity_of_b = at_a.iter().find_map(|e| match e {
        MeshEvent::Admitted { peer, node_identity } if *peer == b.peer_id => Some(*node_identity),
        _ => None,
    });
    assert_eq!(identity_of_b, Some(identities[1].verifying_key().to_bytes()));

    // a's checkpoint, cosigned by b and c.
    let origin = "mesh-test/a";
    let first = checkpoint(origin, &a_key, 10, [1; 32]);
    assert!(a.send(MeshCommand::Witness { checkpoint: first, old_size: 0, proof: vec![] }));
    let cosigned = |s: &[MeshEvent]| s.iter().filter(|e| matches!(e, MeshEvent::Cosigned { .. })).count();
    until(&a, &mut at_a, "two cosignatures", |s| cosigned(s) == 2);
    for e in &at_a {
        if let MeshEvent::Cosigned { peer, note } = e {
            let i = if *peer == b.peer_id { 1 } else { 2 };
            let note = SignedNote::parse(note).unwrap();
            NoteVerifier::new(format!("witness-{}", names[i]), identities[i].verifying_key())
                .verify_cosignature(&note)
                .unwrap();
            NoteVerifier::new(origin, a_key.verifying_key()).verify_signature(&note).unwrap();
        }
    }
    // A split view: the same size, another root. Both witnesses refuse and say why.
    let split = checkpoint(origin, &a_key, 10, [2; 32]);
    assert!(a.send(MeshCommand::Witness { checkpoint: split, old_size: 10, proof: vec![] }));
    let refused = |s: &[MeshEvent]| {
        s.iter()
            .filter(|e| matches!(e, MeshEvent::WitnessRefused { reason, .. } if reason.contains("split view")))
            .count()
    };
    until(&a, &mut at_a, "two split-view refusals", |s| refused(s) == 2);

    // Another swarm key: the handshake never completes; a never sees the peer.
    let (stranger, _) =
        node("d", &good[0], &SwarmKey::from_bytes([0x77; 32]), vec![a_addr.clone()], trusted.clone(), vec![]);
    let mut at_stranger = Vec::new();
    until(&stranger, &mut at_stranger, "the stranger's failed handshake", |s| {
        s.iter().any(|e| matches!(e, MeshEvent::HandshakeFailed { .. }))
    });
    assert!(!at_stranger.iter().any(|e| matches!(e, MeshEvent::Connected(_))), "{at_stranger:#?}");
    std::thread::sleep(Duration::from_secs(1));
    while let Some(e) = a.next_event(Duration::from_millis(100)) {
        at_a.push(e);
    }
    assert!(
        !at_a.iter().any(
            |e| matches!(e, MeshEvent::Connected(p) | MeshEvent::Refused { peer: p, .. } if *p == stranger.peer_id)
        ),
        "a learnt of the stranger: {at_a:#?}"
    );

    // The key, another platform: connected, refused admission naming PCR 15, refused witnessing.
    let (odd_node, odd_key) = node("e", &odd, &key, vec![a_addr], trusted, vec![]);
    until(&a, &mut at_a, "a refusing the odd platform", |s| {
        s.iter().any(|e| matches!(e, MeshEvent::Refused { peer, .. } if *peer == odd_node.peer_id))
    });
    let reason = at_a
        .iter()
        .find_map(|e| match e {
            MeshEvent::Refused { peer, reason } if *peer == odd_node.peer_id => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("PCR 15"), "{reason}");
    let mut at_odd = Vec::new();
    until(&odd_node, &mut at_odd, "the odd node admitting a", |s| admitted(s, &a.peer_id));
    let odd_checkpoint = checkpoint("mesh-test/e", &odd_key, 1, [3; 32]);
    assert!(odd_node.send(MeshCommand::Witness { checkpoint: odd_checkpoint, old_size: 0, proof: vec![] }));
    until(&odd_node, &mut at_odd, "a refusing to witness for it", |s| {
        s.iter().any(|e| matches!(e, MeshEvent::WitnessRefused { reason, .. } if reason.contains("not admitted")))
    });
}
