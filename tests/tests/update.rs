//! The update bundle of the real, built image (`build/image`, what `cargo xtask image` writes),
//! made the way `sovereign-image bundle` makes it, checked as a node would check it: taken by a
//! node below its version; refused by a node at its version (the floor), with one signature
//! fewer than the key set's threshold, with another image's UKI in it, and by a node that trusts
//! another update root. No boot: the QEMU update path is not built yet.

#![allow(clippy::unwrap_used)] // test code

use sovereign_e2e::{build_dir, dev_keys};
use sovereign_update::{Refusal, Trust, verify};

fn node_at(floor: u64) -> Trust {
    let keys = dev_keys();
    Trust {
        root: keys.update.root.verifying_key(),
        root_serial: 0,
        keyset_serial: 1,
        floor,
        platform: sovereign_update::PLATFORM_QEMU_X86_64.into(),
        release_key: keys.release.verifying_key(),
    }
}

#[test]
fn the_built_images_bundle_is_taken_above_the_floor_and_refused_otherwise() {
    let keys = dev_keys();
    let image = build_dir().join("image");
    let (bundle, written) =
        sovereign_image::update::bundle(&image, &keys, 2, sovereign_update::PLATFORM_QEMU_X86_64).unwrap();
    assert_eq!(written.refused, None, "{written:?}");
    let v = written.release_version;
    let verified = verify(&bundle, &node_at(v - 1)).unwrap();
    assert_eq!(verified.files["uki.efi"], std::fs::read(image.join("sovereign.efi")).unwrap());
    assert_eq!(verified.signers.len(), 2);

    // The node already runs this release: not above the floor.
    assert_eq!(verify(&bundle, &node_at(v)).unwrap_err(), Refusal::NotNewer { version: v, floor: v });
    // One release signature: below the threshold, refused before anything is written.
    let (one, written) =
        sovereign_image::update::bundle(&image, &keys, 1, sovereign_update::PLATFORM_QEMU_X86_64).unwrap();
    assert_eq!(written.refused.as_deref(), Some("1 valid release signatures; key set 1 requires 2"));
    assert!(matches!(verify(&one, &node_at(v - 1)).unwrap_err(), Refusal::Threshold { valid: 1, needed: 2, .. }));
    // A node that trusts another update root.
    let mut stranger = node_at(v - 1);
    stranger.root = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]).verifying_key();
    assert_eq!(verify(&bundle, &stranger).unwrap_err(), Refusal::KeySet("not signed by the update root".into()));
    // A bundle for another platform.
    let (arm, _) = sovereign_image::update::bundle(&image, &keys, 2, "aarch64-rpi").unwrap();
    assert!(matches!(verify(&arm, &node_at(v - 1)).unwrap_err(), Refusal::Platform { .. }));
}
