//! The mesh crate against real sockets on 127.0.0.1 and real TPMs (one private swtpm per node):
//! three nodes with the swarm key connect (TCP → pnet → Noise → Yamux), challenge each other,
//! verify each other's quotes — bound to the challenge, the libp2p identity and the node
//! identity, checked by the same verifier as `sovereign attest` against the reference PCR — and
//! admit each other; one node's checkpoint is cosigned by the two others, and a second
//! checkpoint for the same size with another root (a split view) is refused by both. A node with
//! another swarm key never completes a handshake; a node with the key but another platform (PCR
//! 15 differs) connects, is refused admission by name, and is refused witnessing.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use common::{Platform, admitted, checkpoint, listening, node, platform, until};
use ed25519_dalek::SigningKey;
use sovereign_audit::note::{NoteVerifier, SignedNote};
use sovereign_measured_boot::pcr::Sha256Digest;
use sovereign_mesh::node::{MeshCommand, MeshEvent};
use sovereign_mesh::swarm_key::SwarmKey;

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

#[test]
fn a_flood_of_stalled_connections_is_bounded_and_admitted_peers_are_still_served() {
    use std::io::Read as _;
    let key = SwarmKey::from_bytes([0x6b; 32]);
    let good: Vec<Platform> = (0..2).map(|_| platform("release v1")).collect();
    let trusted: Vec<Vec<u8>> = good.iter().map(|p| p.ak_public.clone()).collect();
    let (a, _) = node("flood-a", &good[0], &key, vec![], trusted.clone(), vec![]);
    let a_addr = listening(&a);
    let (b, _) = node("flood-b", &good[1], &key, vec![a_addr.clone()], trusted, vec![]);
    let mut at_b = Vec::new();
    until(&b, &mut at_b, "b admitting a", |s| admitted(s, &a.peer_id));

    // 300 connections that open TCP and then say nothing (peers stalled mid-handshake, or a
    // flood): a keeps at most MAX_PENDING_INCOMING of them waiting and closes the rest at once.
    let port = a_addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port.unwrap()));
    let stalled: Vec<std::net::TcpStream> =
        (0..300).filter_map(|_| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()).collect();
    assert!(stalled.len() > 200, "only {} connections could be opened", stalled.len());
    std::thread::sleep(Duration::from_secs(1));
    let still_open = |streams: &[std::net::TcpStream]| {
        streams
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut byte = [0u8; 64];
                let mut s: &std::net::TcpStream = s;
                // a's side of pnet: its 24-byte nonce may be waiting; drain it.
                loop {
                    match s.read(&mut byte) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                        Err(_) => return false,
                    }
                }
            })
            .count()
    };
    let waiting = still_open(&stalled);
    assert!(
        waiting <= sovereign_mesh::node::MAX_PENDING_INCOMING as usize + 8,
        "{waiting} stalled connections kept waiting (limit {})",
        sovereign_mesh::node::MAX_PENDING_INCOMING
    );

    // While they stall, the admitted peer is still served: b challenges a again and a's TPM
    // quote verifies.
    let started = std::time::Instant::now();
    assert!(b.send(MeshCommand::Challenge { peer: a.peer_id }));
    let before = at_b.len();
    until(&b, &mut at_b, "b re-admitting a during the flood", |s| {
        s[before..].iter().any(|e| matches!(e, MeshEvent::Admitted { peer, .. } if *peer == a.peer_id))
    });
    assert!(started.elapsed() < Duration::from_secs(5), "serving an admitted peer took {:?}", started.elapsed());

    // And the ones kept waiting are closed after the transport timeout (5 s in these tests).
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(still_open(&stalled), 0, "stalled connections kept past the transport timeout");
}

#[test]
fn an_operator_with_the_swarm_key_opens_a_control_stream_and_is_never_admitted() {
    use sovereign_mesh::control::{blocking, dial_control};
    use std::io::{Read as _, Write as _};
    let key = SwarmKey::from_bytes([0x3c; 32]);
    let good = platform("release v1");
    let (a, _) = node("control-a", &good, &key, vec![], vec![good.ak_public.clone()], vec![]);
    let a_addr = listening(&a);
    // The node's side: each stream answers what it reads, upper-cased, until it ends.
    let mut listener = a.accept_control().unwrap();
    assert!(a.accept_control().is_err(), "the control protocol was accepted twice");
    let server = std::thread::spawn(move || {
        let mut sessions = 0;
        while let Some((_peer, stream)) = listener.accept() {
            sessions += 1;
            let (mut reader, mut writer) = blocking(stream, listener.runtime(), Some(Duration::from_secs(10)));
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).unwrap();
            writer.write_all(&bytes.to_ascii_uppercase()).unwrap();
            if sessions == 2 {
                return sessions;
            }
        }
        sessions
    });
    let session = |payload: &[u8]| {
        let mut connection = dial_control(&key, &a_addr, Duration::from_secs(10)).unwrap();
        assert_eq!(connection.peer, a.peer_id, "the stream reached another peer");
        connection.writer.write_all(payload).unwrap();
        connection.writer.close_write().unwrap();
        let mut answer = Vec::new();
        connection.reader.read_to_end(&mut answer).unwrap();
        answer
    };
    // A payload larger than any one Yamux frame, through the blocking halves.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(session(b"status"), b"STATUS");
    assert_eq!(session(&big), big.to_ascii_uppercase());
    assert_eq!(server.join().unwrap(), 2);

    // The node challenged the client, which speaks no mesh protocol: a client, not a refusal
    // to audit, and never admitted.
    let mut at_a = Vec::new();
    until(&a, &mut at_a, "a seeing the operator as a client", |s| s.iter().any(|e| matches!(e, MeshEvent::Client(_))));
    assert!(!at_a.iter().any(|e| matches!(e, MeshEvent::Admitted { .. } | MeshEvent::Refused { .. })), "{at_a:#?}");

    // Another swarm key: no handshake, no stream, said by name.
    let wrong = dial_control(&SwarmKey::from_bytes([0x3d; 32]), &a_addr, Duration::from_secs(3));
    let why = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("cannot reach"), "a client with another swarm key: {why:?}");
}

/// Update distribution's streams between two attested nodes: b pulls a bundle of several
/// megabytes from a by its digest, over the mesh's transport, and gets exactly it; asked for a
/// digest a does not hold, a answers with a refusal that b reads as such.
#[test]
fn a_node_pulls_a_bundle_from_an_admitted_peer_by_digest() {
    use sha2::{Digest as _, Sha256};
    use sovereign_mesh::control::blocking;
    use sovereign_mesh::transfer::{
        TransferError, UPDATE_PROTOCOL, read_bundle, read_request, write_bundle, write_refusal,
    };
    let key = SwarmKey::from_bytes([0x4e; 32]);
    let good: Vec<Platform> = (0..2).map(|_| platform("release v1")).collect();
    let trusted: Vec<Vec<u8>> = good.iter().map(|p| p.ak_public.clone()).collect();
    let (a, _) = node("update-a", &good[0], &key, vec![], trusted.clone(), vec![]);
    let a_addr = listening(&a);
    let (b, _) = node("update-b", &good[1], &key, vec![a_addr], trusted, vec![]);
    let mut at_b = Vec::new();
    until(&b, &mut at_b, "b admitting a", |s| admitted(s, &a.peer_id));

    let bundle: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let sha256: [u8; 32] = Sha256::digest(&bundle).into();
    let mut listener = a.accept_updates().unwrap();
    assert!(a.accept_updates().is_err(), "the update protocol was accepted twice");
    let held = bundle.clone();
    let server = std::thread::spawn(move || {
        let mut served = Vec::new();
        for _ in 0..2 {
            let Some((peer, stream)) = listener.accept() else { break };
            let (mut reader, mut writer) = blocking(stream, listener.runtime(), Some(Duration::from_secs(10)));
            let asked = read_request(&mut reader).unwrap();
            if asked == sha256 {
                write_bundle(&mut writer, &held).unwrap();
            } else {
                write_refusal(&mut writer, "no update with that digest is staged here").unwrap();
            }
            served.push(peer);
        }
        served
    });
    let pull = |digest: &[u8; 32]| {
        let (mut reader, mut writer) = b.opener().open(a.peer_id, UPDATE_PROTOCOL, Duration::from_secs(10)).unwrap();
        sovereign_mesh::transfer::write_request(&mut writer, digest).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut chunks = 0;
        let got = read_bundle(&mut reader, digest, 64 << 20, deadline, &mut |_, _| chunks += 1);
        (got, chunks)
    };
    let (got, chunks) = pull(&sha256);
    assert!(got.as_ref().is_ok_and(|g| *g == bundle), "the bundle did not arrive whole");
    assert!(chunks > 10, "progress was reported {chunks} times");
    let (refused, _) = pull(&[0x99; 32]);
    assert_eq!(refused, Err(TransferError::Refused("no update with that digest is staged here".into())));
    assert_eq!(server.join().unwrap(), vec![b.peer_id, b.peer_id]);
}

/// Where `cargo xtask setup` installs js-libp2p (npm, pinned versions) for the interop test.
const JS_LIBP2P: &str = "/var/cache/sovereign/js-libp2p";

/// Another implementation that speaks pnet: a js-libp2p node (TCP → pnet → Noise → Yamux) with
/// the swarm key dials a mesh node and completes the handshake (it reaches this node's peer ID;
/// the node sees a client — it speaks no mesh protocol — and admits nothing); with another key
/// it fails, and the node never learns of it.
#[test]
fn a_js_libp2p_node_with_the_swarm_key_completes_the_handshake_and_one_without_does_not() {
    let dir = std::path::Path::new(JS_LIBP2P);
    assert!(
        dir.join("node_modules/libp2p/package.json").exists(),
        "js-libp2p is not installed in {JS_LIBP2P}: run `cargo xtask setup`"
    );
    let script = dir.join("dial.mjs");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dial.mjs"), &script).unwrap();
    let key = SwarmKey::from_bytes([0x6b; 32]);
    let good = platform("release v1");
    let (a, _) = node("interop-a", &good, &key, vec![], vec![good.ak_public.clone()], vec![]);
    let a_addr = listening(&a);
    let keys = tempfile::tempdir().unwrap();
    let dial = |swarm_key: &SwarmKey| {
        let file = keys.path().join("swarm.key");
        std::fs::write(&file, swarm_key.to_file().as_bytes()).unwrap();
        let out = std::process::Command::new("node").arg(&script).arg(a_addr.to_string()).arg(&file).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default().to_string();
        (out.status.code(), line, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, line, stderr) = dial(&key);
    assert_eq!(code, Some(0), "js-libp2p with the swarm key: {line}\n{stderr}");
    assert_eq!(line, format!("{{\"connected\":\"{}\"}}", a.peer_id), "{stderr}");
    let mut at_a = Vec::new();
    until(&a, &mut at_a, "a seeing the js-libp2p node as a client", |s| {
        s.iter().any(|e| matches!(e, MeshEvent::Client(_)))
    });
    assert!(!at_a.iter().any(|e| matches!(e, MeshEvent::Admitted { .. })), "{at_a:#?}");
    let clients = at_a.iter().filter(|e| matches!(e, MeshEvent::Connected(_))).count();

    let (code, line, _) = dial(&SwarmKey::from_bytes([0x6c; 32]));
    assert_eq!(code, Some(1), "js-libp2p with another swarm key: {line}");
    assert!(line.starts_with("{\"failed\":"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    while let Some(e) = a.next_event(Duration::from_millis(100)) {
        at_a.push(e);
    }
    assert_eq!(
        at_a.iter().filter(|e| matches!(e, MeshEvent::Connected(_))).count(),
        clients,
        "the node learnt of a peer with another key: {at_a:#?}"
    );
}
