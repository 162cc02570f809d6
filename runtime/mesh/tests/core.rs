//! The swarm key file (the format go-libp2p and rust-libp2p's pnet read) and the admission
//! table: a peer gets governance traffic only after a verified, timely answer to its own
//! challenge, loses it at expiry, on a failed renewal, on reboot and on disconnect.

#![allow(clippy::unwrap_used)] // test code

use sovereign_mesh::admission::{Admissions, Attested, Policy, Standing, quote_binding};
use sovereign_mesh::swarm_key::{SwarmKey, SwarmKeyError};

const KEY_HEX: &str = "d9a8f0b7e6c5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b";

#[test]
fn swarm_keys_parse_in_the_ipfs_format_only_and_never_print() {
    let text = format!("/key/swarm/psk/1.0.0/\n/base16/\n{KEY_HEX}\n");
    let key = SwarmKey::parse(text.as_bytes()).unwrap();
    assert_eq!(hex::encode(key.bytes()), KEY_HEX);
    assert_eq!(key.to_file().as_str(), text);
    assert!(SwarmKey::parse(format!("/key/swarm/psk/1.0.0/\r\n/base16/\r\n{KEY_HEX}").as_bytes()).is_ok());
    // Debug shows the fingerprint, never the key.
    let shown = format!("{key:?}");
    assert!(!shown.contains(KEY_HEX) && shown.contains(&key.fingerprint()), "{shown}");
    assert_eq!(key.fingerprint().len(), 16);
    assert_ne!(key.fingerprint(), SwarmKey::from_bytes([0; 32]).fingerprint());

    let refused = |t: &str| SwarmKey::parse(t.as_bytes()).unwrap_err();
    assert_eq!(refused(&format!("/key/swarm/psk/2.0.0/\n/base16/\n{KEY_HEX}")), SwarmKeyError::Header);
    assert_eq!(
        refused(&format!("/key/swarm/psk/1.0.0/\n/base64/\n{KEY_HEX}")),
        SwarmKeyError::Encoding("/base64/".into())
    );
    assert_eq!(refused("/key/swarm/psk/1.0.0/\n/base16/\nabcd"), SwarmKeyError::Key);
    assert_eq!(refused(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{}zz", &KEY_HEX[..62])), SwarmKeyError::Key);
    assert_eq!(refused(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{KEY_HEX}\nmore")), SwarmKeyError::Trailing);
    assert_eq!(refused(""), SwarmKeyError::Header);
    assert_eq!(SwarmKey::parse(&[0xff, 0xfe]).unwrap_err(), SwarmKeyError::Header);
}

#[test]
fn the_quote_binding_covers_nonce_peer_and_node() {
    let base = quote_binding(&[1; 32], b"peer-a", &[2; 32]);
    assert_ne!(base, quote_binding(&[9; 32], b"peer-a", &[2; 32]));
    assert_ne!(base, quote_binding(&[1; 32], b"peer-b", &[2; 32]));
    assert_ne!(base, quote_binding(&[1; 32], b"peer-a", &[3; 32]));
    // Long peer IDs that share a 64 KiB prefix still bind apart (nothing is cut off).
    let (mut long_a, mut long_b) = (vec![7u8; 70_000], vec![7u8; 70_000]);
    long_a.push(1);
    long_b.push(2);
    assert_ne!(quote_binding(&[1; 32], &long_a, &[2; 32]), quote_binding(&[1; 32], &long_b, &[2; 32]));
    // Length-prefixed: the peer ID cannot absorb bytes of the identity.
    assert_ne!(quote_binding(&[1; 32], b"ab", &[2; 32]), quote_binding(&[1; 32], b"a", &[2; 32]));
}

#[test]
fn admission_needs_a_timely_answer_to_its_own_challenge_and_ends_as_it_should() {
    let policy = Policy { ttl_ms: 60_000, challenge_ms: 5_000 };
    let attested = |nonce| Attested { nonce, node_identity: [7; 32], boot_id: [1; 32] };
    let mut table = Admissions::default();
    let peer = b"12D3KooW-peer".as_slice();

    // Connected is not admitted; an answer to nothing is refused.
    assert!(!table.admitted(peer, 0));
    assert!(matches!(table.answer(peer, Ok(attested([5; 32])), &policy, 0), Standing::Refused { .. }));
    table.challenge(peer, [5; 32], 1_000);
    assert!(!table.admitted(peer, 1_000));
    // The verifier's refusal is kept with its reason.
    let refused = table.answer(peer, Err("PCR 1 differs from the platform profile".into()), &policy, 1_500);
    assert!(matches!(refused, Standing::Refused { reason, .. } if reason == "PCR 1 differs from the platform profile"));
    // Another challenge's quote, or a late one.
    table.challenge(peer, [6; 32], 2_000);
    assert!(
        matches!(table.answer(peer, Ok(attested([5; 32])), &policy, 2_100), Standing::Refused { reason, .. } if reason.contains("another challenge"))
    );
    table.challenge(peer, [7; 32], 3_000);
    assert!(
        matches!(table.answer(peer, Ok(attested([7; 32])), &policy, 9_000), Standing::Refused { reason, .. } if reason.contains("too late"))
    );

    // A timely, verified answer admits until the TTL.
    table.challenge(peer, [8; 32], 10_000);
    assert!(matches!(
        table.answer(peer, Ok(attested([8; 32])), &policy, 11_000),
        Standing::Admitted { until_ms: 71_000, .. }
    ));
    assert!(table.admitted(peer, 70_999) && !table.admitted(peer, 71_000));
    // Renewal: due near expiry; the challenge does not drop the admission; a failed renewal does.
    assert_eq!(table.due_for_renewal(65_000, 10_000), vec![peer.to_vec()]);
    table.challenge(peer, [9; 32], 65_000);
    assert!(table.due_for_renewal(65_000, 10_000).is_empty());
    assert!(table.admitted(peer, 65_500));
    table.answer(peer, Err("quote signature invalid".into()), &policy, 66_000);
    assert!(!table.admitted(peer, 66_000));

    // Admitted again; a reboot (another boot ID) ends it; so does a disconnect.
    table.challenge(peer, [10; 32], 70_000);
    table.answer(peer, Ok(attested([10; 32])), &policy, 70_500);
    table.rebooted(peer, [1; 32], 71_000);
    assert!(table.admitted(peer, 71_000), "the same boot is no reboot");
    table.rebooted(peer, [2; 32], 72_000);
    assert!(!table.admitted(peer, 72_000));
    table.challenge(peer, [11; 32], 73_000);
    table.answer(peer, Ok(attested([11; 32])), &policy, 73_100);
    table.disconnected(peer);
    assert!(!table.admitted(peer, 73_200) && table.standing(peer).is_none());
}
