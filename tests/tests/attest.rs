//! Remote attestation of the real image booted in QEMU under OVMF with a private swtpm: the
//! operator's verifier (the `sovereign attest` library) against the appliance's TPM.
//!
//! Two boots of one appliance: a good boot (PASS; replayed evidence, a foreign EK CA, a wrong
//! pinned identity and a failed credential challenge each FAIL by name; a non-admin request is
//! refused; tpm2-tools' `tpm2_checkquote` accepts the saved evidence), then the same image on a
//! changed platform (a second disk: firmware adds a boot option for it and measures the boot
//! variables into PCR 1; OVMF does not measure SMBIOS): the appliance boots — its keys are sealed
//! to PCRs 9, 11, 12, 13 and 15, none of them the firmware's — but attestation FAILS naming PCR 1.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sovereign_cli::attest::{attest, verify_exchange};
use sovereign_e2e::{boot_slot, dev_keys, image, now_unix, operator_trust};
use sovereign_qemu::Appliance;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const READY: &str = "sovereign-runtime: control: attestation key ready";
const TIMEOUT: Duration = Duration::from_secs(60);

fn failed(report: &sovereign_cli::attest::AttestReport) -> Vec<String> {
    report.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect()
}

#[test]
fn attestation_passes_on_a_good_boot_and_names_every_failure() {
    use sovereign_protocol::{Request, Response};
    let _slot = boot_slot();
    let mut appliance = Appliance::new(image()).unwrap();
    let trust = operator_trust(&appliance);
    let admin = dev_keys().admin;

    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let socket = appliance.control_socket();
    let (exchange, report) =
        attest(&sovereign_cli::Endpoint::from(&socket), &admin, &trust, now_unix(), TIMEOUT).unwrap();
    let exchange = exchange.expect("the appliance answered");
    assert!(report.passed(), "{}", report.render());
    for check in [
        "release.reference_values_signature",
        "release.manifest_signature",
        "release.manifest_is_reference",
        "ek.certificate_chain",
        "ak.credential_activation",
        "quote.signature",
        "quote.qualifying_data",
        "quote.pcr_digest",
        "pcrs.reference_values",
        "pcrs.event_log_replay",
    ] {
        assert_eq!(report.check_passed(check), Some(true), "{check}: {}", report.render());
    }
    // Every attested PCR was compared, the firmware ones included.
    let quoted: Vec<u8> = exchange.evidence.pcrs.iter().map(|(i, _)| *i).collect();
    assert_eq!(quoted, sovereign_protocol::ATTESTED_PCRS.to_vec());

    // A second attestation uses a fresh nonce and passes too.
    let (second, report2) =
        attest(&sovereign_cli::Endpoint::from(&socket), &admin, &trust, now_unix(), TIMEOUT).unwrap();
    assert!(report2.passed(), "{}", report2.render());
    assert_ne!(second.unwrap().nonce, exchange.nonce);

    // Replayed evidence: the old answer presented for a new nonce fails the qualifying data.
    let mut replayed = exchange.clone();
    replayed.nonce = [0x5a; 32];
    let r = verify_exchange(&replayed, &trust, now_unix());
    assert_eq!(failed(&r), vec!["quote.qualifying_data".to_string()], "{}", r.render());

    // Evidence that claims another identity is not bound by the quote.
    let mut other_identity = exchange.clone();
    other_identity.identity = ed25519_dalek::SigningKey::from_bytes(&[0x44; 32]).verifying_key().to_bytes();
    assert_eq!(report_failures(&other_identity, &trust), vec!["quote.qualifying_data".to_string()]);

    // A pinned identity that is not the node's fails by name.
    let mut pinned = trust.clone();
    pinned.node_identity = Some(ed25519_dalek::SigningKey::from_bytes(&[0x45; 32]).verifying_key());
    assert_eq!(report_failures(&exchange, &pinned), vec!["node.identity".to_string()]);

    // The credential challenge failed (another TPM answered, or none): the AK is unproven.
    let mut unproven = exchange.clone();
    unproven.released = Ok(vec![0; 32]);
    assert_eq!(report_failures(&unproven, &trust), vec!["ak.credential_activation".to_string()]);

    // Another TPM manufacturer's CA does not vouch for this EK.
    let other_tpm = sovereign_qemu::Swtpm::start().unwrap();
    let mut foreign_ca = trust.clone();
    foreign_ca.ek_roots =
        sovereign_measured_boot::ekcert::trust_store_from_pem(other_tpm.ca_certificates_pem().unwrap().as_bytes())
            .unwrap();
    assert_eq!(report_failures(&exchange, &foreign_ca), vec!["ek.certificate_chain".to_string()]);

    // Reference values signed by another key are not trusted.
    let mut unsigned = trust.clone();
    unsigned.release_key = ed25519_dalek::SigningKey::from_bytes(&[0x46; 32]).verifying_key();
    let names = report_failures(&exchange, &unsigned);
    assert!(names.contains(&"release.reference_values_signature".to_string()), "{names:?}");
    assert!(names.contains(&"release.manifest_signature".to_string()), "{names:?}");

    // An independent verifier (tpm2-tools) accepts the saved evidence, and only with its nonce.
    let dir = tempfile::tempdir().unwrap();
    sovereign_cli::attest::save(dir.path(), &exchange, &report).unwrap();
    // `SOVEREIGN_FUZZ_SEEDS=fuzz/seeds cargo test` refreshes the fuzz seed from real evidence.
    if let Some(seeds) = std::env::var_os("SOVEREIGN_FUZZ_SEEDS") {
        let target = std::path::PathBuf::from(seeds).join("attest_evidence");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("real-evidence"), postcard::to_allocvec(&exchange.evidence).unwrap()).unwrap();
    }
    let qualifying = std::fs::read_to_string(dir.path().join("qualifying-data.hex")).unwrap();
    let checkquote = |q: &str| {
        std::process::Command::new("tpm2_checkquote")
            .current_dir(dir.path())
            .args(["-u", "ak.pem", "-m", "quote.attest", "-s", "quote.sig", "-g", "sha256", "-q", q])
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap()
    };
    let out = checkquote(qualifying.trim());
    assert!(out.status.success(), "tpm2_checkquote: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!checkquote(&"00".repeat(32)).status.success());
    for name in ["ek.crt", "ek.pub", "ak.pub", "binary_bios_measurements", "measurement.log", "manifest.json"] {
        assert!(dir.path().join(name).exists(), "{name} not saved");
    }

    // A request signed by a key that is not an admin is refused, attestation included.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]);
    let node = ed25519_dalek::VerifyingKey::from_bytes(&exchange.identity).unwrap();
    let request = sovereign_cli::sign(Request::Attest { nonce: [1; 32] }, &node, &[], &stranger);
    match sovereign_cli::send(&sovereign_cli::Endpoint::from(&socket), &request, TIMEOUT)
        .unwrap()
        .verify(&request, &node)
        .unwrap()
    {
        Response::Refused(reason) => assert!(reason.contains("is not authorized"), "{reason}"),
        other => panic!("a non-admin attestation request was answered: {other:?}"),
    }
    let (none, refused) =
        attest(&sovereign_cli::Endpoint::from(&socket), &stranger, &trust, now_unix(), TIMEOUT).unwrap();
    assert!(none.is_none() && !refused.passed(), "{}", refused.render());

    guest.powerdown().unwrap();
    guest.wait_for("sovereign-init: powering off").unwrap_or_else(|e| panic!("no clean shutdown: {e}"));
    guest.wait_exit().unwrap();

    // The same image and TPM on a changed platform (a second disk the firmware may boot from):
    // boots, but attestation fails on PCR 1.
    let extra_disk = tempfile::NamedTempFile::new().unwrap();
    extra_disk.as_file().set_len(4 << 20).unwrap();
    let drive = format!("file={},format=raw,if=none,id=extra", extra_disk.path().display());
    appliance.set_extra_qemu_args(&["-drive", &drive, "-device", "virtio-blk-pci,drive=extra,addr=0x10,bootindex=2"]);
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("the changed platform did not boot: {e}"));
    let (changed, report) =
        attest(&sovereign_cli::Endpoint::from(&socket), &admin, &trust, now_unix(), TIMEOUT).unwrap();
    assert!(!report.passed(), "a changed platform attested PASS:\n{}", report.render());
    assert_eq!(failed(&report), vec!["pcrs.reference_values".to_string()], "{}", report.render());
    let pcrs: Vec<u8> = report.reference_mismatches.iter().map(|m| m.pcr).collect();
    assert_eq!(pcrs, vec![1], "{}", report.render());
    assert!(report.render().contains("PCR 1 differs from the reference"), "{}", report.render());
    // Same identity: the keys were unsealed — the platform change is for the verifier to judge.
    assert_eq!(changed.unwrap().identity, exchange.identity);
    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}

fn report_failures(exchange: &sovereign_cli::attest::Exchange, trust: &sovereign_cli::attest::Trust) -> Vec<String> {
    failed(&verify_exchange(exchange, trust, now_unix()))
}
