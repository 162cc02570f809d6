//! Update bundles as an attacker would send them: each forgery refused with its reason before
//! anything could be written, and the genuine bundle accepted with exactly its files.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sovereign_update::{
    BundleInput, KeySet, PLATFORM_QEMU_X86_64, Refusal, SignedRotation, build, rotate_root, sign_keyset, verify,
};

use sovereign_update::fuzzing::{key, keyset, root, trust};

/// A release's payload: version `v`, every signature genuine.
fn payload(v: u64) -> BTreeMap<String, Vec<u8>> {
    sovereign_update::fuzzing::payload(v, format!("the UKI of release {v}").into_bytes())
}

fn bundle_with(
    v: u64,
    platform: &str,
    keyset: &KeySet,
    keyset_signer: &SigningKey,
    rotation: Option<&SignedRotation>,
    signers: &[SigningKey],
) -> Vec<u8> {
    let payload = payload(v);
    let (ks, ks_sig) = sign_keyset(keyset, keyset_signer);
    build(&BundleInput { release_version: v, platform, payload: &payload, keyset: (&ks, &ks_sig), rotation }, signers)
        .unwrap()
}

fn bundle(v: u64, signers: &[SigningKey]) -> Vec<u8> {
    bundle_with(v, PLATFORM_QEMU_X86_64, &keyset(1), &root(), None, signers)
}

fn refusal(bytes: &[u8]) -> Refusal {
    verify(bytes, &trust()).unwrap_err()
}

#[test]
fn a_genuine_bundle_verifies_with_exactly_its_files() {
    let verified = verify(&bundle(2, &[key(1), key(3)]), &trust()).unwrap();
    assert_eq!(verified.release_version, 2);
    assert_eq!(verified.files, payload(2));
    assert_eq!(verified.signers.len(), 2);
    assert_eq!(verified.root, root().verifying_key());
    // All three release keys: still accepted.
    assert!(verify(&bundle(2, &[key(1), key(2), key(3)]), &trust()).is_ok());
}

#[test]
fn too_few_unknown_revoked_or_duplicated_signatures_are_refused() {
    assert_eq!(refusal(&bundle(2, &[key(1)])), Refusal::Threshold { valid: 1, needed: 2, serial: 1 });
    // The same key twice is one signer.
    assert_eq!(refusal(&bundle(2, &[key(2), key(2)])), Refusal::Threshold { valid: 1, needed: 2, serial: 1 });
    let unknown = hex::encode(key(9).verifying_key().as_bytes());
    assert_eq!(refusal(&bundle(2, &[key(1), key(2), key(9)])), Refusal::UnknownSigner(unknown, 1));
    let revoked = hex::encode(key(4).verifying_key().as_bytes());
    assert_eq!(refusal(&bundle(2, &[key(1), key(2), key(4)])), Refusal::RevokedSigner(revoked));
    assert_eq!(refusal(&bundle(2, &[])), Refusal::Threshold { valid: 0, needed: 2, serial: 1 });
}

#[test]
fn old_releases_other_platforms_and_foreign_key_sets_are_refused() {
    assert_eq!(refusal(&bundle(1, &[key(1), key(2)])), Refusal::NotNewer { version: 1, floor: 1 });
    let arm = bundle_with(2, "aarch64-rpi", &keyset(1), &root(), None, &[key(1), key(2)]);
    assert_eq!(refusal(&arm), Refusal::Platform { bundle: "aarch64-rpi".into(), node: PLATFORM_QEMU_X86_64.into() });
    // A key set signed by someone else's root, whatever its keys.
    let foreign = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &key(0x66), None, &[key(1), key(2)]);
    assert_eq!(refusal(&foreign), Refusal::KeySet("not signed by the update root".into()));
    // An older key set (one that still lists a since-revoked key, say) is refused.
    let mut t = trust();
    t.keyset_serial = 2;
    let err = verify(&bundle(2, &[key(1), key(2)]), &t).unwrap_err();
    assert_eq!(err, Refusal::KeySet("serial 1 is older than the node's key set 2".into()));
    // A threshold that a key set cannot meet is refused, not treated as "no signatures needed".
    let mut zero = keyset(1);
    zero.threshold = 0;
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &zero, &root(), None, &[]);
    assert!(matches!(refusal(&b), Refusal::KeySet(why) if why.contains("threshold 0")));
}

#[test]
fn every_changed_byte_truncation_and_stray_member_is_refused() {
    let good = bundle(2, &[key(1), key(2)]);
    // Flip one bit in every 97th byte (headers, metadata, signatures, payload): all refused.
    for i in (0..good.len()).step_by(97) {
        let mut b = good.clone();
        b[i] ^= 0x01;
        assert!(verify(&b, &trust()).is_err(), "a flip at byte {i} was accepted");
    }
    for cut in [0, 511, good.len() / 2, good.len() - 1024] {
        assert!(matches!(refusal(&good[..cut]), Refusal::Container(_)), "cut at {cut}");
    }
    // A member the metadata does not name, in an otherwise canonical container.
    let mut members = sovereign_audit::bundle::read_tar(&good).unwrap();
    members.push(("payload.sh".into(), b"#!/bin/sh".to_vec()));
    let stray = sovereign_audit::bundle::write_tar(&members);
    assert_eq!(refusal(&stray), Refusal::Unexpected("payload.sh".into()));
    // A payload file replaced by the same file of another release (re-signed by nobody).
    let mut members = sovereign_audit::bundle::read_tar(&good).unwrap();
    let other = payload(3);
    for (name, data) in &mut members {
        if name == "uki.efi" {
            *data = other["uki.efi"].clone();
        }
    }
    let swapped = sovereign_audit::bundle::write_tar(&members);
    assert!(matches!(refusal(&swapped), Refusal::File(path, _) if path == "uki.efi"));
    // Reordered members: the container is canonical (one order), so refused; a missing member
    // is refused by name.
    let mut members = sovereign_audit::bundle::read_tar(&good).unwrap();
    members.reverse();
    assert!(matches!(refusal(&sovereign_audit::bundle::write_tar(&members)), Refusal::Container(_)));
    members.reverse();
    members.retain(|(n, _)| n != "manifest.sig");
    assert_eq!(refusal(&sovereign_audit::bundle::write_tar(&members)), Refusal::Missing("manifest.sig"));
}

#[test]
fn a_payload_that_contradicts_itself_is_refused_even_when_threshold_signed() {
    // The release keys sign metadata over a payload whose manifest is another version.
    let mut p = payload(2);
    p.insert("manifest.json".into(), payload(3)["manifest.json"].clone());
    p.insert("manifest.sig".into(), payload(3)["manifest.sig"].clone());
    let (ks, sig) = sign_keyset(&keyset(1), &root());
    let threshold_signed = |payload: &BTreeMap<String, Vec<u8>>| {
        let input = BundleInput {
            release_version: 2,
            platform: PLATFORM_QEMU_X86_64,
            payload,
            keyset: (&ks, &sig),
            rotation: None,
        };
        build(&input, &[key(1), key(2)]).unwrap()
    };
    let b = threshold_signed(&p);
    assert_eq!(refusal(&b), Refusal::Payload("the manifest is v3, the bundle v2".into()));
    // A manifest the release key did not sign.
    let mut p = payload(2);
    p.get_mut("manifest.sig").unwrap()[0] ^= 1;
    let b = threshold_signed(&p);
    assert!(matches!(refusal(&b), Refusal::Payload(why) if why.starts_with("manifest: ")));
}

#[test]
fn the_root_rotates_only_under_the_old_root_and_the_new_one() {
    let new_root = key(0x72);
    let rotation = rotate_root(1, &root(), &new_root);
    // The key set is now signed by the new root; the rotation authorizes it.
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &new_root, Some(&rotation), &[key(1), key(2)]);
    let verified = verify(&b, &trust()).unwrap();
    assert_eq!((verified.root, verified.root_serial), (new_root.verifying_key(), 1));
    // Without the rotation, a key set signed by the new root is foreign.
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &new_root, None, &[key(1), key(2)]);
    assert_eq!(refusal(&b), Refusal::KeySet("not signed by the update root".into()));
    // A rotation the old root did not sign (an attacker's own root, self-signed).
    let attacker = key(0x66);
    let forged = rotate_root(1, &attacker, &attacker);
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &attacker, Some(&forged), &[key(1), key(2)]);
    assert_eq!(refusal(&b), Refusal::Root("not signed by the root this node trusts".into()));
    // A rotation to a key that did not sign it (the old root alone cannot hand over).
    let mut half = rotate_root(1, &root(), &new_root);
    half.new_signature = rotate_root(1, &root(), &attacker).new_signature;
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &new_root, Some(&half), &[key(1), key(2)]);
    assert_eq!(refusal(&b), Refusal::Root("not signed by the new root itself".into()));
    // A replayed rotation (serial not newer than the node's).
    let mut t = trust();
    t.root_serial = 1;
    let b = bundle_with(2, PLATFORM_QEMU_X86_64, &keyset(1), &new_root, Some(&rotation), &[key(1), key(2)]);
    assert!(matches!(verify(&b, &t).unwrap_err(), Refusal::Root(why) if why.contains("not newer")));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
        proptest::prop_assert!(verify(&bytes, &trust()).is_err());
    }
}

/// The committed fuzz seed `fuzz/seeds/update_bundle/genuine-v2.bundle` is a bundle these
/// keys signed, so the fuzzer's mutations start past the signature checks.
/// `SOVEREIGN_FUZZ_SEEDS=fuzz/seeds cargo test` rewrites it first (as the other seeds are
/// refreshed), then it is checked like the committed one.
#[test]
fn the_committed_fuzz_seed_is_a_genuine_bundle() {
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/update_bundle/genuine-v2.bundle");
    if let Some(seeds) = std::env::var_os("SOVEREIGN_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(seeds).join("update_bundle");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("genuine-v2.bundle"), bundle(2, &[key(1), key(2)])).unwrap();
    }
    let bytes = std::fs::read(&seed).unwrap();
    assert_eq!(verify(&bytes, &trust()).unwrap().release_version, 2);
}
