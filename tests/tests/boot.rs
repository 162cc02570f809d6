//! The real image, booted in QEMU under OVMF with a private swtpm.
//!
//! Two guests run at once (`boot_slot`, one per core), and boots are grouped so that one
//! provisioned appliance serves several checks: each OVMF boot costs ~20 s under TCG. The
//! refusals are split over two tests so that both cores stay busy.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use sovereign_e2e::{base_input, boot_slot, build_dir, dev_keys, image, variant};
use sovereign_image::build::{STATE_PARTITION_OFFSET, Tamper};
use sovereign_image::cpio::Node;
use sovereign_qemu::{Appliance, Firmware, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const IDENTITY: &str = "sovereign-runtime: node identity ";
/// Both copies of the key area (`init::state`).
const KEY_AREA: std::ops::Range<u64> =
    STATE_PARTITION_OFFSET..STATE_PARTITION_OFFSET + 2 * sovereign_init::state::AREA as u64;
/// What an update keeps: the sealed keys and the data partition (whose state is anchored in
/// the TPM: a fresh data partition under the same TPM is refused as wiped).
const KEPT: [std::ops::Range<u64>; 2] = [
    KEY_AREA,
    sovereign_boot_contract::DATA_PARTITION_OFFSET
        ..sovereign_boot_contract::DATA_PARTITION_OFFSET + sovereign_boot_contract::DATA_PARTITION_SIZE,
];

/// Boots, waits for readiness, presses the power button, waits for power-off; returns the
/// identity and the console.
fn boot_ready(appliance: &mut Appliance) -> (String, String) {
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    let line = guest.wait_for(IDENTITY).unwrap_or_else(|e| panic!("{e}"));
    guest.wait_for("sovereign-runtime: ready").unwrap();
    guest.powerdown().unwrap();
    guest.wait_for("sovereign-init: powering off").unwrap_or_else(|e| panic!("no clean shutdown: {e}"));
    guest.wait_exit().unwrap();
    let identity = line.split(IDENTITY).nth(1).unwrap().trim().to_string();
    (identity, guest.console())
}

/// Like [`boot_ready`], and while the appliance runs, exercises the signed control API: an
/// admin's status request is answered and signed by the node identity; a non-admin key and a
/// replayed request are refused with their reasons.
fn boot_with_control_checks(appliance: &mut Appliance) -> (String, String) {
    use sovereign_protocol::{Request, Response};
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    let line = guest.wait_for(IDENTITY).unwrap_or_else(|e| panic!("{e}"));
    let identity = line.split(IDENTITY).nth(1).unwrap().trim().to_string();
    guest.wait_for("sovereign-runtime: control API on").unwrap_or_else(|e| panic!("{e}"));
    let socket = appliance.control_socket();
    let admin = ed25519_dalek::SigningKey::from_bytes(&sovereign_e2e::dev_keys().admin.to_bytes());
    let timeout = Duration::from_secs(60);

    let node = ed25519_dalek::VerifyingKey::from_bytes(
        &<[u8; 32]>::try_from(hex::decode(&identity).unwrap().as_slice()).unwrap(),
    )
    .unwrap();
    // The identity a client without a pinned key learns is the one the console printed.
    assert_eq!(sovereign_cli::discover(&sovereign_cli::Endpoint::from(&socket), &admin, timeout).unwrap(), node);
    let request = sovereign_cli::sign(Request::Status, &node, &[], &admin);
    let response = sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &request, timeout).unwrap();
    match response.verify(&request, &node).unwrap() {
        Response::Status(st) => {
            assert_eq!(hex::encode(st.identity), identity);
            assert_eq!(st.version, 1);
            // The runtime that answered is confined, as the kernel reports it.
            let c = &st.confinement;
            assert_eq!(c.uids, [sovereign_confine::RUNTIME_UID; 4], "{c:?}");
            assert_eq!(c.gids, [sovereign_confine::RUNTIME_GID; 4], "{c:?}");
            assert_eq!((c.cap_eff, c.cap_prm, c.cap_bnd, c.cap_amb, c.cap_inh), (0, 0, 0, 0, 0), "{c:?}");
            assert!(c.no_new_privs, "{c:?}");
            assert_eq!((c.seccomp_mode, c.seccomp_filters), (2, 2), "{c:?}");
            assert_eq!(c.lockdown, "integrity", "{c:?}");
            assert!(c.shortfalls().is_empty(), "{:?}", c.shortfalls());
        }
        other => panic!("status refused: {other:?}"),
    }
    let replay = sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &request, timeout).unwrap();
    assert_eq!(
        replay.verify(&request, &node).unwrap(),
        &Response::Refused("request nonce already used (replay)".into())
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]);
    let foreign = sovereign_cli::sign(Request::Status, &node, &[], &stranger);
    match sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &foreign, timeout)
        .unwrap()
        .verify(&foreign, &node)
        .unwrap()
    {
        Response::Refused(reason) => assert!(reason.contains("is not authorized"), "{reason}"),
        other => panic!("a non-admin request was answered: {other:?}"),
    }

    // Ctrl-Alt-Del does not reset the appliance: PID 1 logs it and the runtime keeps serving.
    guest.ctrl_alt_del().unwrap();
    guest.wait_for("sovereign-init: Ctrl-Alt-Del ignored").unwrap_or_else(|e| panic!("{e}"));
    // A request an admin signed for another appliance is refused by this one, by name.
    let elsewhere = sovereign_cli::sign(Request::Status, &stranger.verifying_key(), &[], &admin);
    match sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &elsewhere, timeout)
        .unwrap()
        .verify(&elsewhere, &node)
        .unwrap()
    {
        Response::Refused(reason) => assert!(reason.starts_with("request is addressed to node "), "{reason}"),
        other => panic!("a request for another node was answered: {other:?}"),
    }

    let after = sovereign_cli::sign(Request::Status, &node, &[], &admin);
    match sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &after, timeout)
        .unwrap()
        .verify(&after, &node)
        .unwrap()
    {
        Response::Status(_) => {}
        other => panic!("status after Ctrl-Alt-Del: {other:?}"),
    }

    guest.powerdown().unwrap();
    guest.wait_for("sovereign-init: powering off").unwrap_or_else(|e| panic!("no clean shutdown: {e}"));
    guest.wait_exit().unwrap();
    let console = guest.console();
    assert_clean_shutdown(&console);
    (identity, console)
}

/// The power button's shutdown: the runtime stopped, every process reaped, then the data
/// partition synced and unmounted, then power-off, in that order.
fn assert_clean_shutdown(console: &str) {
    let at = |needle: &str| console.find(needle).unwrap_or_else(|| panic!("no {needle:?} on the console:\n{console}"));
    let order = [
        "sovereign-init: power button: shutting down",
        "sovereign-init: runtime stopped",
        "sovereign-init: every process reaped",
        "sovereign-init: data partition synced and unmounted",
        "sovereign-init: powering off",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{:?} came after {:?}:\n{console}", pair[0], pair[1]);
    }
}

/// Boots an image that must be refused: returns the FATAL line; the guest must power off by
/// itself and never release the keys.
fn boot_refused(appliance: &mut Appliance) -> String {
    let mut guest: Guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    let fatal =
        guest.wait_for("sovereign-init: FATAL").unwrap_or_else(|e| panic!("tampered image was not refused: {e}"));
    guest.wait_exit().unwrap_or_else(|e| panic!("refusing guest did not power off: {e}"));
    let console = guest.console();
    assert!(!console.contains(IDENTITY), "keys were released by a refused boot:\n{console}");
    assert!(!console.contains("runtime started"), "runtime started on a refused boot:\n{console}");
    fatal
}

fn with_variant(appliance: &Appliance, tamper: &Tamper<'_>, input: &sovereign_image::build::BuildInput) {
    let out = tempfile::tempdir().unwrap();
    let built = variant(input, &dev_keys(), out.path(), tamper);
    appliance.replace_disk_keeping(&built.disk, &KEPT).unwrap();
}

#[test]
fn first_boot_provisions_later_boots_and_newer_signed_releases_unseal_the_same_identity() {
    let _slot = boot_slot();
    let mut appliance = Appliance::new(image()).unwrap();
    let (first, console) = boot_with_control_checks(&mut appliance);
    assert!(console.contains("first boot: generating the node identity"), "{console}");
    assert!(console.contains("unseal window closed"), "{console}");
    assert!(console.contains("locked down"), "{console}");
    // The firmware PCRs are the recorded platform profile's.
    let (firmware_sha, profile) = sovereign_e2e::firmware_profile();
    assert_eq!(
        sovereign_e2e::installed_firmware_sha256(),
        firmware_sha,
        "OVMF differs from the one firmware/qemu-ovmf-secureboot.json was recorded with: re-record it with `cargo xtask firmware-profile`"
    );
    let booted = sovereign_e2e::console_pcrs(&console);
    for (pcr, value) in &profile {
        assert_eq!(booted.get(pcr), Some(value), "PCR {pcr} differs from the platform profile");
    }

    let (second, console) = boot_ready(&mut appliance);
    assert_eq!(first, second, "the second boot unsealed a different identity");
    assert!(console.contains("unsealing the node keys with the signed PCR policy"), "{console}");
    assert!(!console.contains("first boot"), "{console}");

    // A newer signed release with a different runtime binary unseals the keys sealed by v1.
    let dir = tempfile::tempdir().unwrap();
    let runtime_v2 = dir.path().join("sovereign-runtime");
    let mut bytes = std::fs::read(base_input().runtime).unwrap();
    bytes.extend_from_slice(b"release 2: different bytes, same program");
    std::fs::write(&runtime_v2, bytes).unwrap();
    std::fs::set_permissions(&runtime_v2, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut v2 = base_input();
    v2.version = 2;
    v2.runtime = runtime_v2;
    with_variant(&appliance, &Tamper::default(), &v2);
    let (third, console) = boot_ready(&mut appliance);
    assert!(console.contains("manifest version 2 verified"), "{console}");
    assert_eq!(first, third, "a newer signed release did not unseal the same identity");
    assert!(console.contains("anti-rollback floor v1; this release is v2"), "{console}");
    assert!(console.contains("release v2 good: anti-rollback floor at v2"), "{console}");

    // v2 was good: the TPM now refuses release 1's signed policy (the genuine v1 image, its
    // PCRs matching), though PID 1 verified the image: the refusal is the TPM's PolicyNV.
    appliance.replace_disk_keeping(image(), &KEPT).unwrap();
    let fatal = boot_refused(&mut appliance);
    assert!(
        fatal.contains("unsealing the node keys") && fatal.contains("anti-rollback floor is above this release"),
        "{fatal}"
    );

    // An image whose manifest is signed by another release key is refused; keys stay sealed.
    let other_keys = tempfile::tempdir().unwrap();
    let foreign = sovereign_image::keys::generate(&other_keys.path().join("keys")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = sovereign_image::build::build(&base_input(), &foreign, out.path()).unwrap();
    appliance.replace_disk_keeping(&built.disk, &KEPT).unwrap();
    let fatal = boot_refused(&mut appliance);
    assert!(fatal.contains("manifest: manifest signature does not verify with the release key"), "{fatal}");
}

#[test]
fn every_tampered_component_is_refused_by_name() {
    let _slot = boot_slot();
    let mut appliance = Appliance::new(image()).unwrap();
    let (_, console) = boot_ready(&mut appliance);
    assert_clean_shutdown(&console);
    let input = base_input();

    let edit = |path: &'static str, f: fn(&mut Vec<u8>)| {
        move |nodes: &mut Vec<Node>| {
            let node =
                nodes.iter_mut().find(|n| n.path == path).unwrap_or_else(|| panic!("no {path} in the initramfs"));
            f(&mut node.data);
        }
    };
    let runtime = edit("usr/bin/sovereign-runtime", |d| d.push(0));
    let config = edit("etc/sovereign/runtime.json", |d| {
        *d = br#"{"esp_device":"/dev/vda1","state_device":"/dev/vda2","max_restarts":99}"#.to_vec()
    });
    let order = sovereign_image::build::module_order(&input.kernel).unwrap();
    let module_path: String = order
        .iter()
        .find(|(n, _)| n == "virtio_blk")
        .map(|(_, p)| p.strip_prefix(&input.kernel.root).unwrap().to_string_lossy().into_owned())
        .unwrap();
    let module = |nodes: &mut Vec<Node>| {
        let node = nodes.iter_mut().find(|n| n.path == module_path).unwrap();
        let half = node.data.len() / 2;
        node.data.truncate(half);
    };
    let manifest_bytes = |m: &mut Vec<u8>, _: &mut Vec<u8>| {
        let i = m.windows(12).position(|w| w == b"\"version\":1,").unwrap();
        m[i + 10] = b'9';
    };
    let manifest_sig = |_: &mut Vec<u8>, s: &mut Vec<u8>| s[10] ^= 0x01;

    let cases: Vec<(&str, Tamper<'_>, &str)> = vec![
        ("runtime binary", Tamper { nodes: Some(&runtime), ..Default::default() }, "/usr/bin/sovereign-runtime"),
        ("runtime config", Tamper { nodes: Some(&config), ..Default::default() }, "/etc/sovereign/runtime.json"),
        ("kernel module", Tamper { nodes: Some(&module), ..Default::default() }, "virtio_blk"),
        (
            "manifest bytes",
            Tamper { manifest: Some(&manifest_bytes), ..Default::default() },
            "manifest signature does not verify",
        ),
        (
            "manifest signature",
            Tamper { manifest: Some(&manifest_sig), ..Default::default() },
            "manifest signature does not verify",
        ),
    ];
    for (what, tamper, expected) in &cases {
        with_variant(&appliance, tamper, &input);
        let fatal = boot_refused(&mut appliance);
        assert!(fatal.contains(expected), "{what}: expected the refusal to name {expected:?}, got {fatal:?}");
    }
}

#[test]
fn a_foreign_command_line_or_an_erased_key_area_is_refused_by_name() {
    let _slot = boot_slot();
    let mut appliance = Appliance::new(image()).unwrap();
    let (identity, _) = boot_ready(&mut appliance);

    // A different kernel command line, with the genuine release's signed PCR policy: PCR 11
    // differs, so the keys stay sealed.
    let genuine_policy = build_dir().join("image").join("pcr-policy.json");
    let mut cmdline = base_input();
    cmdline.cmdline.push_str(" init=/init systemd.debug_shell");
    with_variant(&appliance, &Tamper { policy: Some(&genuine_policy), ..Default::default() }, &cmdline);
    let fatal = boot_refused(&mut appliance);
    assert!(fatal.contains("PCR 11") && fatal.contains("differ from the signed PCR policy"), "{fatal}");

    // The genuine UKI with a command line supplied by the boot path (here the firmware: QEMU's
    // `-kernel`/`-append`, which OVMF hands to the UKI as load options), by someone who first
    // cleared the firmware's variables (Secure Boot off): the stub then uses it instead of
    // `.cmdline` and measures it into PCR 12. Refused by name, no key released.
    appliance.replace_disk_keeping(image(), &KEPT).unwrap();
    appliance.set_firmware(Firmware::SecureBootOff).unwrap();
    let uki = build_dir().join("image").join("sovereign.efi");
    let attacker = "console=ttyS0,115200 panic=-1 loglevel=4 lockdown=none module.sig_enforce=0";
    appliance.set_extra_qemu_args(&["-kernel", &uki.to_string_lossy(), "-append", attacker]);
    let fatal = boot_refused(&mut appliance);
    appliance.set_extra_qemu_args(&[]);
    appliance.set_firmware(Firmware::SecureBoot).unwrap();
    assert!(fatal.contains("the kernel command line is not the signed one"), "{fatal}");
    assert!(fatal.contains(&format!("booted with {attacker:?}")), "{fatal}");
    assert!(fatal.contains("PCR 12"), "the refusal does not name PCR 12: {fatal}");

    // An erased key area is a refusal, not a silent re-provisioning with new keys.
    appliance.replace_disk_keeping(image(), &KEPT).unwrap();
    let disk = std::fs::read(appliance.disk()).unwrap();
    let saved = disk[KEY_AREA.start as usize..KEY_AREA.end as usize].to_vec();
    let mut erased = disk.clone();
    erased[KEY_AREA.start as usize..KEY_AREA.end as usize].fill(0);
    std::fs::write(appliance.disk(), &erased).unwrap();
    let fatal = boot_refused(&mut appliance);
    assert!(fatal.contains("state partition: state partition holds no sealed keys"), "{fatal}");
    let mut restored = erased;
    restored[KEY_AREA.start as usize..KEY_AREA.end as usize].copy_from_slice(&saved);
    std::fs::write(appliance.disk(), &restored).unwrap();

    // The genuine image still boots with the same identity: nothing above damaged the state.
    let (again, _) = boot_ready(&mut appliance);
    assert_eq!(identity, again);

    // A signed release whose runtime cannot start (its control port does not exist): the
    // runtime refuses in one line and never says ready; PID 1 applies its restart rule (here
    // none allowed) and powers off naming the exit status.
    let mut portless = base_input();
    portless.config.control_port = "sovereign.nowhere".into();
    portless.config.max_restarts = 0;
    with_variant(&appliance, &Tamper::default(), &portless);
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    let refusal = guest.wait_for("sovereign-runtime: FATAL").unwrap_or_else(|e| panic!("{e}"));
    let fatal = guest.wait_for("sovereign-init: FATAL").unwrap_or_else(|e| panic!("{e}"));
    guest.wait_exit().unwrap_or_else(|e| panic!("the guest did not power off: {e}"));
    let console = guest.console();
    assert!(refusal.contains("not starting: no virtio-serial port named sovereign.nowhere"), "{refusal}");
    assert!(fatal.contains("runtime: exited with status 2 after 0 restarts"), "{fatal}");
    assert!(!console.contains("sovereign-runtime: ready"), "the runtime said ready without its port:\n{console}");
}

/// Secure Boot with the project's keys: the firmware itself refuses a UKI that is unsigned or
/// signed by a key its db does not hold (nothing of it runs, so no PID 1 line appears), and runs
/// the UKI signed by the db key (the other tests' boots). `sbverify` agrees, independently. The
/// unsigned image, on a platform without Secure Boot, boots and unseals with the PCRs predicted
/// for that platform.
#[test]
fn secure_boot_refuses_unsigned_and_foreign_signed_ukis() {
    let _slot = boot_slot();
    let out = tempfile::tempdir().unwrap();
    let mut unsigned_input = base_input();
    unsigned_input.secure_boot = None;
    let unsigned = variant(&unsigned_input, &dev_keys(), &out.path().join("unsigned"), &Tamper::default());
    // A key pair of the same shape that the firmware never enrolled.
    let foreign_dir = out.path().join("foreign-key");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    let foreign_key =
        sovereign_image::build::SecureBootKey { key: foreign_dir.join("db.key"), cert: foreign_dir.join("db.crt") };
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30", "-subj", "/CN=not enrolled/"])
        .arg("-keyout")
        .arg(&foreign_key.key)
        .arg("-out")
        .arg(&foreign_key.cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let mut foreign_input = base_input();
    foreign_input.secure_boot = Some(foreign_key);
    let foreign = variant(&foreign_input, &dev_keys(), &out.path().join("foreign"), &Tamper::default());
    let enrolled = sovereign_e2e::secure_boot_key().cert;
    for (what, built) in [("an unsigned UKI", &unsigned), ("a UKI signed by a key the db does not hold", &foreign)] {
        let checked =
            std::process::Command::new("sbverify").arg("--cert").arg(&enrolled).arg(&built.uki).output().unwrap();
        assert!(!checked.status.success(), "sbverify accepted {what}");
        let mut appliance = Appliance::new(&built.disk).unwrap();
        let mut guest = appliance.boot(Duration::from_secs(120)).unwrap();
        let refusal =
            guest.wait_for("Access Denied").unwrap_or_else(|e| panic!("{what} was not refused by the firmware: {e}"));
        // The firmware's own fallback (its built-in shell) is refused too: nothing boots.
        guest.wait_for("No bootable option or device was found").unwrap_or_else(|e| panic!("{what}: {e}"));
        let console = guest.console();
        assert!(!console.contains("sovereign-init"), "{what} ran:\n{console}");
        assert!(!console.contains("EFI stub"), "{what} ran:\n{console}");
        assert!(refusal.contains("Boot0001"), "{what}: {refusal}");
        drop(guest);
    }
    // The signed image of the other tests, for contrast: sbverify accepts it.
    let signed = build_dir().join("image").join("sovereign.efi");
    let checked = std::process::Command::new("sbverify").arg("--cert").arg(&enrolled).arg(&signed).output().unwrap();
    assert!(
        checked.status.success(),
        "sbverify refused the release's UKI: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // The unsigned image is for a platform without Secure Boot: there it boots through
    // systemd-boot and unseals — its PCR 4 (the kernel measured too) and PCR 12 (the load
    // options measured by systemd-boot and again by the stub) predicted for that platform.
    let mut appliance = Appliance::with_firmware(&unsigned.disk, Firmware::SecureBootOff).unwrap();
    let (_, console) = boot_ready(&mut appliance);
    assert!(console.contains("first boot: generating the node identity"), "{console}");
    let booted = sovereign_e2e::console_pcrs(&console);
    assert_eq!(booted.get("12"), Some(&unsigned.reference.pcrs.get(12).unwrap().to_hex()), "{console}");
    assert_eq!(booted.get("4"), Some(&unsigned.reference.pcrs.get(4).unwrap().to_hex()), "{console}");
}

#[test]
fn initramfs_holds_exactly_the_manifest_and_no_other_executable() {
    let image_dir = build_dir().join("image");
    let _ = image();
    let nodes = sovereign_image::cpio::read(&std::fs::read(image_dir.join("initrd.cpio")).unwrap()).unwrap();
    let manifest: sovereign_image::manifest::Manifest = serde_json_from(&image_dir.join("manifest.json"));
    for n in &nodes {
        let path = format!("/{}", n.path);
        if path == "/etc/sovereign/manifest.json" || path == "/etc/sovereign/manifest.sig" {
            continue;
        }
        assert!(manifest.file(&path).is_some(), "{path} is in the initramfs but not in the manifest");
        let is_elf = n.data.starts_with(b"\x7fELF");
        let executable = n.mode & 0o111 != 0 && n.mode & 0o170000 == 0o100000;
        if is_elf || executable {
            let allowed = path == "/init"
                || path == "/usr/bin/sovereign-runtime"
                || path.contains(".so")
                || path.ends_with(".ko");
            assert!(allowed, "unexpected executable {path}");
        }
        for banned in ["/sh", "busybox", "bash", "python", "perl", "/bin/"] {
            assert!(
                !path.contains(banned) || path == "/usr/bin/sovereign-runtime",
                "{path} looks like a shell or interpreter"
            );
        }
    }
    assert_eq!(nodes.len(), manifest.files.len() + 2, "nodes and manifest entries differ in number");
}

#[test]
fn two_builds_produce_bit_identical_ukis() {
    let _ = image();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keys = dev_keys();
    let first = variant(&base_input(), &keys, a.path(), &Tamper::default());
    let second = variant(&base_input(), &keys, b.path(), &Tamper::default());
    let (x, y) = (std::fs::read(&first.uki).unwrap(), std::fs::read(&second.uki).unwrap());
    assert!(x == y, "two builds from the same inputs differ");
    let shared = std::fs::read(build_dir().join("image").join("sovereign.efi")).unwrap();
    assert!(x == shared, "rebuilding the shared image's inputs gave a different UKI");
    assert_eq!(first.reference.pcrs, second.reference.pcrs);
    assert!(x.len() < 64 * 1024 * 1024, "UKI is {} bytes, over the 64 MiB budget", x.len());
}

fn serde_json_from<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
