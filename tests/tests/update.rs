//! The update bundle of the real, built image (`build/image`, what `cargo xtask image` writes),
//! made the way `sovereign-image bundle` makes it, checked as a node would check it: taken by a
//! node below its version; refused by a node at its version (the floor), with one signature
//! fewer than the key set's threshold, with another image's UKI in it, and by a node that trusts
//! another update root; and the update path in QEMU (v1 → v2 on trial, blessed, floored; a v3
//! whose trial fails falls back to v2).

#![allow(clippy::unwrap_used)] // test code

use std::path::{Path, PathBuf};
use std::time::Duration;

use sovereign_cli::pipeline::command;
use sovereign_e2e::{base_input, build_dir, dev_keys, variant};
use sovereign_image::build::{BuildInput, Tamper};
use sovereign_protocol::pipeline::{Command, Reply, UpdateState};
use sovereign_update::{Refusal, Trust, verify};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const READY: &str = "sovereign-runtime: control: attestation key ready";
/// Apply, with no approvals: the shared image's configuration requires none.
const UNAPPROVED_APPLY: Command =
    Command::UpdateApply { approvals: Vec::new(), certificates: Vec::new(), revocations: None };

/// Builds release `version` of the shared image's inputs (changed by `edit`) into `dir` and
/// returns its bundle, signed by 2 of the 3 development release signers.
fn release_bundle(dir: &Path, version: u64, edit: &dyn Fn(&mut BuildInput)) -> (Vec<u8>, PathBuf) {
    release_bundle_signed(&dev_keys(), dir, version, edit)
}

/// [`release_bundle`] with another key set (a rotated PCR-policy key).
fn release_bundle_signed(
    keys: &sovereign_image::keys::KeySet,
    dir: &Path,
    version: u64,
    edit: &dyn Fn(&mut BuildInput),
) -> (Vec<u8>, PathBuf) {
    let mut input = base_input();
    input.version = version;
    edit(&mut input);
    let out = dir.join(format!("v{version}"));
    variant(&input, keys, &out, &Tamper::default());
    let (bundle, written) =
        sovereign_image::update::bundle(&out, keys, 2, sovereign_update::PLATFORM_QEMU_X86_64).unwrap();
    assert_eq!(written.refused, None);
    (bundle, out)
}

/// One signed request to the appliance on `socket`, as its admin.
fn send(socket: &Path, cmd: &Command, payloads: &[Vec<u8>]) -> Reply {
    command(&sovereign_cli::Endpoint::from(socket), &dev_keys().admin, None, cmd, payloads).unwrap().0
}

fn state(reply: Reply) -> UpdateState {
    match reply {
        Reply::Update(state) => state,
        other => panic!("expected the update state, got {other:?}"),
    }
}

fn push(socket: &Path, bundle: &[u8]) -> UpdateState {
    let cmd = Command::UpdatePush { bundle: sovereign_protocol::Blob::of(bundle) };
    state(send(socket, &cmd, &[bundle.to_vec()]))
}

fn apply(socket: &Path) -> UpdateState {
    let applying = state(send(socket, &UNAPPROVED_APPLY, &[]));
    assert!(applying.applying, "{applying:?}");
    applying
}

/// The node identity the runtime printed.
fn identity(console: &str) -> String {
    console.lines().find_map(|l| l.split("sovereign-runtime: node identity ").nth(1)).map(str::to_string).unwrap()
}

/// The files in the ESP's slot directory of `disk`, read with mtools (the ESP starts at 1 MiB).
fn slot_files(disk: &Path) -> Vec<String> {
    let out = std::process::Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-b", "-i", &format!("{}@@1M", disk.display()), "::EFI/Linux"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mdir: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next().map(str::to_string))
        .filter(|f| !f.is_empty())
        .collect();
    files.sort();
    files
}

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
/// the boot loader falls back to v2, which reports the failed update; the floor stays at 2. A v4
/// whose trial hangs is reset by the hardware watchdog and falls back the same way.
#[test]
fn an_update_boots_on_trial_is_blessed_then_floored_and_a_failed_trial_falls_back() {
    use sovereign_e2e::{boot_slot, image, now_unix, operator_trust};

    let _slot = boot_slot();
    let keys = dev_keys();
    let mut appliance = sovereign_qemu::Appliance::new(image()).unwrap();
    let socket = appliance.control_socket();
    let send = |cmd: &Command, payloads: &[Vec<u8>]| send(&socket, cmd, payloads);
    let releases = tempfile::tempdir().unwrap();
    let push_and_apply = |bundle: Vec<u8>| {
        assert!(push(&socket, &bundle).staged.is_some());
        apply(&socket)
    };

    // v1, the factory image: one good slot, nothing staged; applying is refused.
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    guest.wait_for("release v1 good: anti-rollback floor at v1").unwrap_or_else(|e| panic!("{e}"));
    let v1_identity = identity(&guest.console());
    let before = state(send(&Command::UpdateStatus, &[]));
    let boot = before.boot.clone().expect("PID 1 reports the boot slots");
    assert_eq!((before.running_version, before.floor, boot.trial, boot.slots.len()), (1, 1, false, 1), "{before:?}");
    let Reply::Refused(why) = send(&UNAPPROVED_APPLY, &[]) else { panic!("applied with nothing staged") };
    assert_eq!(why, "update not applied: no update is staged (push a bundle first)");

    // v2: pushed, applied; the runtime stops, PID 1 installs it on trial and reboots.
    let (v2, v2_dir) = release_bundle(releases.path(), 2, &|_| {});
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
    let (_, report) = sovereign_cli::attest::attest(
        &sovereign_cli::Endpoint::from(&socket),
        &keys.admin,
        &v2_trust,
        now_unix(),
        timeout,
    )
    .unwrap();
    assert!(report.passed(), "{}", report.render());
    let (_, report) = sovereign_cli::attest::attest(
        &sovereign_cli::Endpoint::from(&socket),
        &keys.admin,
        &operator_trust(&appliance),
        now_unix(),
        timeout,
    )
    .unwrap();
    assert_eq!(report.check_passed("pcrs.reference_values"), Some(false), "{}", report.render());
    // The update is in the node's compliance bundle: the apply, the update policy's decision
    // (re-evaluated offline from the bundled policy), the trial; verified against the node's
    // identity.
    let (reply, payloads) =
        command(&sovereign_cli::Endpoint::from(&socket), &keys.admin, None, &Command::ExportBundle, &[]).unwrap();
    let bundle = sovereign_cli::pipeline::blob_payload(&reply, payloads).unwrap();
    let node =
        ed25519_dalek::VerifyingKey::from_bytes(&hex::decode(&v1_identity).unwrap().try_into().unwrap()).unwrap();
    let decisions = sovereign_cli::decisions::DecisionChecker { policy_signers: vec![keys.release.verifying_key()] };
    let roles = sovereign_cli::roles::RoleChecker { admin: Some(keys.admin.verifying_key()) };
    let checkers = sovereign_cli::pipeline::Checkers(vec![&decisions, &roles]);
    let trusted = sovereign_audit::bundle::TrustedKeys { node: Some(node), witnesses: vec![] };
    let verified = sovereign_audit::bundle::verify_bundle_with(&bundle, &trusted, Some(&checkers));
    let decided = verified.check("decisions.reevaluated").expect("no decisions check");
    assert!(decided.passed() && decided.detail.starts_with("1 decisions recomputed"), "{}", verified.render("bundle"));
    for line in ["update v2 applying", "\"action\":\"update.apply\"", "update v2 on its trial boot"] {
        assert!(bundle.windows(line.len()).any(|w| w == line.as_bytes()), "the bundle lacks {line:?}");
    }

    // v3 cannot become healthy: its trial fails and the loader falls back to v2.
    let (v3, _) = release_bundle(releases.path(), 3, &|input| {
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
    let fell_back = state(send(&Command::UpdateStatus, &[]));
    let boot = fell_back.boot.clone().unwrap();
    assert_eq!((fell_back.running_version, fell_back.floor, boot.trial, boot.failed_update), (2, 2, false, Some(3)));

    // v4 hangs in its trial: its signed configuration names the console as its state
    // partition, so PID 1 waits forever for a key area. No FATAL, no reboot of its own: the
    // hardware watchdog it armed for the trial resets the machine, and the loader falls back.
    let (v4, _) = release_bundle(releases.path(), 4, &|input| input.config.state_device = "/dev/console".into());
    push_and_apply(v4);
    guest
        .wait_for("sovereign-init: rebooting: release v4 installed on trial beside v2")
        .unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let mut hung = appliance.boot(BOOT_TIMEOUT).unwrap();
    hung.wait_for("hardware watchdog armed for the trial").unwrap_or_else(|e| panic!("{e}"));
    let armed = std::time::Instant::now();
    hung.wait_exit().unwrap();
    let console = hung.console();
    assert!(console.contains("boot slot: release v4 on trial"), "{console}");
    assert!(!console.contains("FATAL") && !console.contains("rebooting"), "the trial did not hang:\n{console}");
    eprintln!("the watchdog reset the hung trial {:.0?} after it was armed", armed.elapsed());
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let console = guest.console();
    assert!(
        console.contains("update to release v4 FAILED its trial boot: the boot loader fell back to v2"),
        "{console}"
    );
    let fell_back = state(send(&Command::UpdateStatus, &[]));
    assert_eq!(
        (fell_back.running_version, fell_back.floor, fell_back.boot.and_then(|b| b.failed_update)),
        (2, 2, Some(4))
    );
    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}

/// Power cuts (QEMU killed, the disk and the TPM kept) at eight or more points of an update, on
/// one appliance (10 boots, 2 more for each install cut that lands after the rename): a push acknowledged; a push cut halfway through its transfer; an
/// install cut after each of its four durable steps (other slots removed, the release's signed
/// files written, the UKI written under a name the loader ignores, the slot renamed into place);
/// the trial boot cut before its runtime is healthy; the trial cut just after the blessing,
/// before or as the floor moves. Every time the next boot comes up on a good slot (or the
/// installed trial) with the node's keys and identity, its state anchor accepts the data
/// partition (nothing acknowledged lost: an older log would be refused), an acknowledged staged
/// bundle is still staged, and the floor is at a release the node can still boot.
#[test]
fn power_cuts_at_eight_points_of_an_update_always_come_back_on_a_good_slot_with_the_keys() {
    use sovereign_e2e::{boot_slot, image};

    let _slot = boot_slot();
    let releases = tempfile::tempdir().unwrap();
    let (v2, _) = release_bundle(releases.path(), 2, &|_| {});
    let v2_sha = sovereign_protocol::Blob::of(&v2).sha256;
    let mut appliance = sovereign_qemu::Appliance::new(image()).unwrap();
    let socket = appliance.control_socket();
    let mut landed = Vec::new();
    // Boots, waits for the runtime, checks it came up whole on release `expect`; returns the guest.
    let up = |appliance: &mut sovereign_qemu::Appliance, expect: u64, identity_then: Option<&str>| {
        let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
        guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
        guest
            .wait_for(&format!("release v{expect} good: anti-rollback floor at v{expect}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let console = guest.console();
        assert!(!console.contains("FATAL") && !console.contains("REFUSING"), "{console}");
        assert!(console.contains(&format!("manifest version {expect} verified")), "{console}");
        if let Some(id) = identity_then {
            assert_eq!(identity(&console), id, "the node identity changed");
        }
        (guest, identity(&console))
    };

    let (guest, id) = up(&mut appliance, 1, None);
    // 1. A push acknowledged, then the power cut: the staged bundle is still there.
    let started = std::time::Instant::now();
    assert_eq!(push(&socket, &v2).staged.map(|s| s.sha256), Some(v2_sha));
    let push_time = started.elapsed();
    drop(guest);
    landed.push(("push acknowledged".to_string(), slot_files(appliance.disk())));
    let (guest, _) = up(&mut appliance, 1, Some(&id));
    let after = state(send(&socket, &Command::UpdateStatus, &[]));
    assert_eq!(after.staged.map(|s| s.sha256), Some(v2_sha), "an acknowledged push was lost");

    // 2. The same bundle pushed again, cut halfway through the transfer: the staged one stays.
    std::thread::scope(|scope| {
        let socket = &socket;
        let v2 = &v2;
        scope.spawn(move || {
            let cmd = Command::UpdatePush { bundle: sovereign_protocol::Blob::of(v2) };
            let _ = command(
                &sovereign_cli::Endpoint::from(socket),
                &dev_keys().admin,
                None,
                &cmd,
                std::slice::from_ref(v2),
            );
        });
        std::thread::sleep(push_time / 2);
        drop(guest);
    });
    landed.push(("mid-push".to_string(), slot_files(appliance.disk())));
    let (mut guest, _) = up(&mut appliance, 1, Some(&id));
    let after = state(send(&socket, &Command::UpdateStatus, &[]));
    assert_eq!(after.staged.map(|s| s.sha256), Some(v2_sha), "a cut push damaged the staged bundle");

    // 3–6. Applied, cut after each durable step of PID 1's install.
    for step in
        ["other slot(s) removed", "signed release files written", "UKI written", "slot sovereign-v2+1-0.efi in place"]
    {
        if state(send(&socket, &Command::UpdateStatus, &[])).staged.is_none() {
            push(&socket, &v2);
        }
        apply(&socket);
        guest.wait_for(step).unwrap_or_else(|e| panic!("{e}"));
        drop(guest);
        let files = slot_files(appliance.disk());
        landed.push((format!("install: {step}"), files.clone()));
        // The cut lands just after the console line, somewhere in the next step: wherever it
        // landed, the node must come back.
        let trial_slot = files
            .iter()
            .filter_map(|f| sovereign_boot_contract::slots::parse_slot_file(f))
            .any(|s| s.version == 2 && matches!(s.state, sovereign_boot_contract::slots::SlotState::Trial { .. }));
        if trial_slot {
            // The slot made it: the loader should pick v2's trial — cut it before it is healthy
            // (7). Should the loader keep v1 instead (a slot it cannot read), v1 must come up
            // whole; that is recorded with the boot's console.
            let mut next = appliance.boot(BOOT_TIMEOUT).unwrap();
            let line = next.wait_for("sovereign-init: boot slot:").unwrap_or_else(|e| panic!("{e}"));
            if line.contains("release v2 on trial") {
                drop(next);
                let files = slot_files(appliance.disk());
                assert!(files.contains(&"sovereign-v2+0-1.efi".to_string()), "{files:?}");
                landed.push(("trial boot, before healthy".to_string(), files));
                let (back, _) = up(&mut appliance, 1, Some(&id));
                guest = back;
                let after = state(send(&socket, &Command::UpdateStatus, &[]));
                assert_eq!(after.boot.and_then(|b| b.failed_update), Some(2), "the failed trial was not reported");
            } else {
                assert!(line.contains("release v1 good"), "{line}");
                next.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
                next.wait_for("release v1 good: anti-rollback floor at v1").unwrap_or_else(|e| panic!("{e}"));
                let console = next.console();
                assert!(!console.contains("FATAL") && !console.contains("REFUSING"), "{console}");
                assert_eq!(identity(&console), id, "the node identity changed");
                let firmware: Vec<&str> = console.lines().take_while(|l| !l.contains("sovereign-init")).collect();
                eprintln!(
                    "the loader kept v1 with {files:?} on the ESP; firmware and loader said:\n{}",
                    firmware.join("\n")
                );
                landed.push(("install cut; the loader kept v1".to_string(), slot_files(appliance.disk())));
                guest = next;
            }
        } else {
            let (back, _) = up(&mut appliance, 1, Some(&id));
            guest = back;
            let after = state(send(&socket, &Command::UpdateStatus, &[]));
            assert_eq!((after.running_version, after.floor), (1, 1));
        }
    }

    // 8. Applied again, the trial comes up healthy: cut right after the blessing. The next boot
    //    is v2, good, and raises the floor if the cut came before it moved.
    if state(send(&socket, &Command::UpdateStatus, &[])).staged.is_none() {
        push(&socket, &v2);
    }
    apply(&socket);
    guest.wait_for("rebooting: release v2 installed on trial").unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let mut trial = appliance.boot(BOOT_TIMEOUT).unwrap();
    trial.wait_for("release v2 blessed").unwrap_or_else(|e| panic!("{e}"));
    drop(trial);
    landed.push(("just after the blessing".to_string(), slot_files(appliance.disk())));
    let (guest, _) = up(&mut appliance, 2, Some(&id));
    let after = state(send(&socket, &Command::UpdateStatus, &[]));
    assert_eq!((after.running_version, after.floor, after.boot.map(|b| b.trial)), (2, 2, Some(false)));
    drop(guest);

    // Where each cut left the ESP's slots (printed for the record: the cuts land just after the
    // console line, somewhere in the next step).
    for (point, files) in &landed {
        eprintln!("power cut {point}: EFI/Linux = {files:?}");
    }
    assert!(landed.len() >= 8, "{landed:?}");
    // Among them install cuts that left no new slot (v1 came back) and at least one that left
    // it in place (its trial was cut, v1 came back reporting it). A cut inside the UKI's write
    // leaves at most a `.tmp` the loader ignores (its directory entry is synced only with the
    // file): the next install removes it (`init::esp` tests).
    let install_cuts: Vec<&Vec<String>> =
        landed.iter().filter(|(p, _)| p.starts_with("install:")).map(|(_, files)| files).collect();
    assert!(install_cuts.iter().any(|files| files.iter().all(|f| !f.starts_with("sovereign-v2"))), "{landed:?}");
    assert!(landed.iter().any(|(p, _)| p == "trial boot, before healthy"), "{landed:?}");
}

/// `sovereign update approve` (the CLI, offline): verifies the bundle completely, then signs its
/// version and SHA-256 as what an update approver approves; the approval counts on a node that
/// requires it (the engine's own check), and a bundle with one byte changed is not approved.
#[test]
fn an_update_approver_approves_only_a_bundle_that_verifies() {
    use sovereign_governance::approvals::{Approval, Guarded, check_approvals};
    use sovereign_governance::signed::{RevocationList, RoleCertificate};
    use sovereign_protocol::pipeline::{UPDATE_APPROVER_ROLE, update_apply_digest};
    let keys = dev_keys();
    let image = build_dir().join("image");
    let (bundle, written) =
        sovereign_image::update::bundle(&image, &keys, 2, sovereign_update::PLATFORM_QEMU_X86_64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("update.bundle");
    std::fs::write(&path, &bundle).unwrap();
    let approver = ed25519_dalek::SigningKey::from_bytes(&[0x41; 32]);
    let key_file = dir.path().join("approver.key");
    std::fs::write(&key_file, hex::encode(approver.to_bytes())).unwrap();
    let os = std::ffi::OsStr::new;
    let approve = |bundle: &Path, out: &Path| {
        sovereign_e2e::sovereign(&[
            os("update"),
            os("approve"),
            bundle.as_os_str(),
            os("--update-root"),
            os(&hex::encode(keys.update.root.verifying_key().as_bytes())),
            os("--release-key"),
            os(&hex::encode(keys.release.verifying_key().as_bytes())),
            os("--approver-key"),
            key_file.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ])
    };
    let out = dir.path().join("approval.json");
    let (code, stdout, stderr) = approve(&path, &out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let approval: Approval = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let sha = sovereign_protocol::Blob::of(&bundle).sha256;
    assert_eq!(approval.request_digest, update_apply_digest(written.release_version, &sha));
    let now = sovereign_e2e::now_unix() * 1000;
    let certificate =
        RoleCertificate::issue(&approver.verifying_key(), &[UPDATE_APPROVER_ROLE], 30, now + 3_600_000, &keys.admin);
    let guarded = Guarded {
        request_digest: update_apply_digest(written.release_version, &sha),
        role: UPDATE_APPROVER_ROLE.into(),
        threshold: 1,
    };
    let revocations = RevocationList::issue(1, vec![], vec![], &keys.admin);
    let admin = keys.admin.verifying_key();
    check_approvals(&guarded, &[approval], &[certificate], &admin, &revocations, now).unwrap();

    let mut flipped = bundle.clone();
    let middle = flipped.len() / 2; // inside the UKI
    flipped[middle] ^= 1;
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &flipped).unwrap();
    let refused = dir.path().join("refused.json");
    let (code, _, stderr) = approve(&tampered, &refused);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not approved: the bundle does not verify"), "{stderr}");
    assert!(!refused.exists(), "an approval was written for a bundle that does not verify");
}

/// The key area's newest copy on `disk`: its sealed objects.
fn key_copies(disk: &Path) -> Vec<sovereign_measured_boot::sealed::SealedBlob> {
    use std::io::{Read as _, Seek as _};
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(std::io::SeekFrom::Start(sovereign_boot_contract::STATE_PARTITION_OFFSET)).unwrap();
    let mut area = vec![0u8; 2 * sovereign_init::state::AREA];
    f.read_exact(&mut area).unwrap();
    match sovereign_init::state::decode(&area).unwrap() {
        sovereign_init::state::KeyArea::Sealed(copy) => copy.blobs,
        sovereign_init::state::KeyArea::Fresh => panic!("the key area is still fresh"),
    }
}

/// A PCR-policy key rotation (issue 15, item 4), end to end: v2 is built from a key set whose
/// PCR-policy key was rotated (signed by the old key and the update root). Its trial boot opens
/// the node keys through the bridge signature and reseals them to the new key — and the power is
/// cut right there: the trial is spent, the loader falls back to v1, which still opens its copy
/// (a cut mid-rotation boots one of the two ways). Pushed again, v2's trial opens the new copy,
/// is blessed, floored, and the TPM's key generation is raised (a cut just before that raise is
/// made up by the next good boot). Then: the node identity never changed, the key area holds the
/// new key's copy alone, and on the appliance's own TPM a policy signed by the old key — for the
/// PCRs the TPM holds and a release above the floor — no longer opens the old copy, while the
/// new key's policy opens the new one.
#[test]
fn a_pcr_policy_key_rotation_reseals_survives_a_cut_and_then_the_old_key_opens_nothing() {
    use sovereign_e2e::{boot_slot, image};
    use sovereign_measured_boot::policy::{PolicyKey, SignedPcrPolicy};

    let _slot = boot_slot();
    let releases = tempfile::tempdir().unwrap();
    let old_keys = dev_keys();
    let new_key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let rotated = old_keys.rotated(new_key.clone(), 1);
    let (v2, v2_dir) = release_bundle_signed(&rotated, releases.path(), 2, &|_| {});
    let v2_policy = SignedPcrPolicy::from_json(&std::fs::read(v2_dir.join("pcr-policy.json")).unwrap()).unwrap();
    assert!(v2_policy.bridge_signature.is_some(), "the rotating release's policy carries no bridge signature");
    let mut appliance = sovereign_qemu::Appliance::new(image()).unwrap();
    let socket = appliance.control_socket();

    // v1: first boot, keys sealed to the old key at generation 0.
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    guest.wait_for("release v1 good: anti-rollback floor at v1").unwrap_or_else(|e| panic!("{e}"));
    let id = identity(&guest.console());
    assert!(guest.console().contains("sealed to the release's PCR-policy key (key generation 0)"));
    let old_copy = key_copies(appliance.disk());
    assert_eq!(old_copy.len(), 1);

    // v2 installed on trial; its trial reseals — and the power is cut just after.
    push(&socket, &v2);
    apply(&socket);
    guest.wait_for("rebooting: release v2 installed on trial").unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let mut trial = appliance.boot(BOOT_TIMEOUT).unwrap();
    trial.wait_for("node keys resealed to the new key at key generation 1").unwrap_or_else(|e| panic!("{e}"));
    drop(trial);
    assert_eq!(key_copies(appliance.disk()).len(), 2, "the rotation's key area holds the new and the old copy");

    // The spent trial falls back to v1, which opens the old copy: same identity.
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let console = guest.console();
    assert!(console.contains("manifest version 1 verified"), "{console}");
    assert!(console.contains("(this release's PCR-policy key, key generation 0)"), "{console}");
    assert_eq!(identity(&console), id, "the node identity changed after a cut rotation");
    let after = state(send(&socket, &Command::UpdateStatus, &[]));
    assert_eq!(after.boot.and_then(|b| b.failed_update), Some(2), "{console}");

    // v2 again: its trial opens the new copy (made before the cut); blessed, floored; cut just
    // as the floor moved, before or as the key generation is raised.
    push(&socket, &v2);
    apply(&socket);
    guest.wait_for("rebooting: release v2 installed on trial").unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap();
    let mut trial = appliance.boot(BOOT_TIMEOUT).unwrap();
    trial.wait_for("release v2 good: anti-rollback floor at v2").unwrap_or_else(|e| panic!("{e}"));
    drop(trial);

    // The next boots are v2, good, on the new key alone.
    for boot in 0..2 {
        let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
        guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
        guest.wait_for("release v2 good: anti-rollback floor at v2").unwrap_or_else(|e| panic!("{e}"));
        if boot == 1 {
            let console = guest.console();
            assert!(console.contains("(this release's PCR-policy key, key generation 1)"), "{console}");
            assert!(!console.contains("FATAL"), "{console}");
            assert_eq!(identity(&console), id, "the node identity changed across the rotation");
        }
        guest.powerdown().unwrap();
        guest.wait_exit().unwrap();
    }
    let copies = key_copies(appliance.disk());
    assert_eq!(copies.len(), 1, "the retired key's copy is still in the key area");
    let new_pk = PolicyKey::new(*new_key.verifying_key());
    let old_pk = PolicyKey::new(*old_keys.pcr_policy.verifying_key());
    let sealed_to = sovereign_init::state::auth_policy(&copies[0].public).unwrap();
    assert_eq!(sealed_to, new_pk.sealing_policy(1).unwrap().0);

    // On the appliance's TPM: policies for the PCRs it holds now, release 2 (at the floor).
    let (old_opens, new_opens, generation) = appliance
        .tpm_on_host(|tcti| {
            let mut tpm = sovereign_measured_boot::tpm::Tpm::open(tcti).unwrap();
            let selection = sovereign_measured_boot::PcrSelection::new([15]).unwrap();
            let pcrs = tpm.pcr_read(&selection).unwrap();
            let by_old = SignedPcrPolicy::sign(pcrs.clone(), 2, &old_keys.pcr_policy).unwrap();
            let by_new = SignedPcrPolicy::sign(pcrs, 2, &new_key).unwrap();
            (
                tpm.unseal_with_signed_policy(&old_copy[0], &old_pk, &by_old, 0).map_err(|e| e.to_string()),
                tpm.unseal_with_signed_policy(&copies[0], &new_pk, &by_new, 1).map(|k| k.len()),
                tpm.key_generation().unwrap(),
            )
        })
        .unwrap();
    assert_eq!(generation, Some(1));
    assert_eq!(new_opens.unwrap(), 64, "the new key's policy does not open the new copy");
    let why = old_opens.expect_err("the retired key's policy opened the old copy");
    assert!(why.contains("key generation"), "{why}");
}
