//! The update bundle of the real, built image (`build/image`, what `cargo xtask image` writes),
//! made the way `sovereign-image bundle` makes it, checked as a node would check it: taken by a
//! node below its version; refused by a node at its version (the floor), with one signature
//! fewer than the key set's threshold, with another image's UKI in it, and by a node that trusts
//! another update root; and the update path in QEMU (v1 → v2 on trial, blessed, floored; a v3
//! whose trial fails falls back to v2).

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

/// The whole update path in QEMU, on one appliance (4 boots): v1 boots; a v2 bundle is pushed
/// and applied; PID 1 verifies it again, installs it in the second slot on trial and reboots;
/// v2 comes up on trial, its runtime reports healthy, PID 1 blesses it and only then raises the
/// floor to 2; the node keeps its identity and attests PASS against v2's reference values (and
/// FAIL against v1's). Then a v3 whose runtime never becomes healthy (its control port does not
/// exist) is pushed and applied: its trial boot fails, PID 1 reboots instead of powering off,
/// the boot loader falls back to v2, which reports the failed update; the floor stays at 2.
#[test]
fn an_update_boots_on_trial_is_blessed_then_floored_and_a_failed_trial_falls_back() {
    use sovereign_cli::pipeline::command;
    use sovereign_e2e::{base_input, boot_slot, image, now_unix, operator_trust, variant};
    use sovereign_image::build::Tamper;
    use sovereign_protocol::pipeline::{Command, Reply, UpdateState};
    use std::time::Duration;

    const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
    const READY: &str = "sovereign-runtime: control: attestation key ready";
    let _slot = boot_slot();
    let keys = dev_keys();
    let platform = sovereign_update::PLATFORM_QEMU_X86_64;
    let mut appliance = sovereign_qemu::Appliance::new(image()).unwrap();
    let socket = appliance.control_socket();
    let send = |cmd: &Command, payloads: &[Vec<u8>]| command(&socket, &keys.admin, None, cmd, payloads).unwrap().0;
    let state = |reply: Reply| match reply {
        Reply::Update(state) => state,
        other => panic!("expected the update state, got {other:?}"),
    };
    let identity = |console: &str| {
        console.lines().find_map(|l| l.split("sovereign-runtime: node identity ").nth(1)).map(str::to_string).unwrap()
    };
    let releases = tempfile::tempdir().unwrap();
    let bundle_of = |version: u64, edit: &dyn Fn(&mut sovereign_image::build::BuildInput)| {
        let mut input = base_input();
        input.version = version;
        edit(&mut input);
        let dir = releases.path().join(format!("v{version}"));
        variant(&input, &keys, &dir, &Tamper::default());
        let (bundle, written) = sovereign_image::update::bundle(&dir, &keys, 2, platform).unwrap();
        assert_eq!(written.refused, None);
        (bundle, dir)
    };
    let push_and_apply = |bundle: Vec<u8>| {
        let pushed = state(send(&Command::UpdatePush { bundle: sovereign_protocol::Blob::of(&bundle) }, &[bundle]));
        assert!(pushed.staged.is_some(), "{pushed:?}");
        let applying = state(send(&Command::UpdateApply, &[]));
        assert!(applying.applying, "{applying:?}");
        applying
    };

    // v1, the factory image: one good slot, nothing staged; applying is refused.
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    guest.wait_for("release v1 good: anti-rollback floor at v1").unwrap_or_else(|e| panic!("{e}"));
    let v1_identity = identity(&guest.console());
    let before = state(send(&Command::UpdateStatus, &[]));
    let boot = before.boot.clone().expect("PID 1 reports the boot slots");
    assert_eq!((before.running_version, before.floor, boot.trial, boot.slots.len()), (1, 1, false, 1), "{before:?}");
    let Reply::Refused(why) = send(&Command::UpdateApply, &[]) else { panic!("applied with nothing staged") };
    assert_eq!(why, "update not applied: no update is staged (push a bundle first)");

    // v2: pushed, applied; the runtime stops, PID 1 installs it on trial and reboots.
    let (v2, v2_dir) = bundle_of(2, &|_| {});
    let applying = push_and_apply(v2);
    assert_eq!(applying.staged.map(|s| s.release_version), Some(2));
    guest
        .wait_for("sovereign-init: rebooting: release v2 installed on trial beside v1")
        .unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();

    // Its trial: blessed once healthy, and only then the floor.
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    guest.wait_for("anti-rollback floor at v2").unwrap_or_else(|e| panic!("{e}"));
    let console = guest.console();
    assert!(console.contains("boot slot: release v2 on trial"), "{console}");
    let blessed = console.find("release v2 blessed: its runtime is healthy; slot sovereign-v2.efi").expect(&console);
    let floored = console.find("release v2 good: anti-rollback floor at v2").expect(&console);
    assert!(blessed < floored, "the floor moved before the blessing:\n{console}");
    assert_eq!(identity(&console), v1_identity, "the node identity changed across the update");
    let after = state(send(&Command::UpdateStatus, &[]));
    let boot = after.boot.clone().unwrap();
    let slots: Vec<(u64, String)> = boot.slots.iter().map(|s| (s.version, s.file.clone())).collect();
    assert_eq!(
        (after.running_version, after.floor, after.staged.clone(), boot.trial),
        (2, 2, None, false),
        "{after:?}"
    );
    assert_eq!(slots, [(2, "sovereign-v2.efi".to_string()), (1, "sovereign-v1.efi".to_string())]);
    // Attested against v2's signed reference values: PASS; against v1's: FAIL, by PCR.
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let mut v2_trust = operator_trust(&appliance);
    v2_trust.reference_values = read(v2_dir.join("reference-values.json"));
    v2_trust.reference_signature = read(v2_dir.join("reference-values.sig"));
    let timeout = Duration::from_secs(60);
    let (_, report) = sovereign_cli::attest::attest(&socket, &keys.admin, &v2_trust, now_unix(), timeout).unwrap();
    assert!(report.passed(), "{}", report.render());
    let (_, report) =
        sovereign_cli::attest::attest(&socket, &keys.admin, &operator_trust(&appliance), now_unix(), timeout).unwrap();
    assert_eq!(report.check_passed("pcrs.reference_values"), Some(false), "{}", report.render());

    // v3 cannot become healthy: its trial fails and the loader falls back to v2.
    let (v3, _) = bundle_of(3, &|input| {
        input.config.control_port = "sovereign.nowhere".into();
        input.config.max_restarts = 0;
    });
    push_and_apply(v3);
    guest
        .wait_for("sovereign-init: rebooting: release v3 installed on trial beside v2")
        .unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for("sovereign-init: this boot was a release's trial: rebooting").unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let console = guest.console();
    assert!(console.contains("boot slot: release v3 on trial"), "{console}");
    assert!(!console.contains("release v3 blessed") && !console.contains("floor at v3"), "{console}");
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let console = guest.console();
    assert!(
        console.contains("update to release v3 FAILED its trial boot: the boot loader fell back to v2"),
        "{console}"
    );
    let fell_back: UpdateState = state(send(&Command::UpdateStatus, &[]));
    let boot = fell_back.boot.clone().unwrap();
    assert_eq!((fell_back.running_version, fell_back.floor, boot.trial, boot.failed_update), (2, 2, false, Some(3)));
    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}
