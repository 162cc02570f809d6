//! Payloads larger than any frame, through the real `sovereign` binary against the appliance in
//! QEMU (OVMF + swtpm): `sovereign run` sends a 100 MiB dataset as chunks, each checked by the
//! runtime against the signed request; the appliance stores it, verifies its hash against the
//! pipeline (the policy allows preparation only then) and hands it to the stage, whose sandbox
//! refuses to hold it (64 MiB of memory), named in the run's report. `sovereign audit export`
//! then fetches the log as chunks, and `sovereign verify` checks it offline (TPM attestation
//! included).
//!
//! The million-entry export through the real CLI against the appliance is `tests/export.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use sovereign_e2e::{boot_slot, build_dir, certify_ak, dev_keys, export_from, image, sovereign, verify_offline};
use sovereign_governance::signed::{RevocationList, RoleCertificate};
use sovereign_qemu::Appliance;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const READY: &str = "sovereign-runtime: control: attestation key ready";
const DATASET_BYTES: usize = 100 * 1024 * 1024;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `x,y` rows, deterministic, exactly `DATASET_BYTES` long.
fn dataset() -> Vec<u8> {
    let mut out = b"x,y\n".to_vec();
    let mut i = 0u64;
    while out.len() < DATASET_BYTES {
        out.extend_from_slice(
            format!("{}.{:03},{}.{:03}\n", i % 997, i % 1000, (i * 7) % 991, (i * 3) % 1000).as_bytes(),
        );
        i += 1;
    }
    out.truncate(DATASET_BYTES);
    out
}

fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

#[test]
fn a_100_mib_dataset_goes_up_and_the_audit_log_comes_down_through_the_real_cli() {
    let _slot = boot_slot();
    let keys = dev_keys();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset();
    let digest = hex::encode(Sha256::digest(&data));
    std::fs::write(dir.path().join("big.csv"), &data).unwrap();
    drop(data);
    let yaml = std::fs::read_to_string(sovereign_e2e::root().join("examples/iron-path.yaml"))
        .unwrap()
        .replace("dataset: sensors.csv", "dataset: big.csv")
        .replace("daadde99ac8146e39474f9d91ab9cc456de6ddbd60aa8e325256788c3e842f98", &digest);
    let pipeline = dir.path().join("big.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let (certificate, revocations) = (dir.path().join("operator.cert.json"), dir.path().join("revocations.json"));
    let operator = keys.admin.verifying_key();
    write_json(
        &certificate,
        &RoleCertificate::issue(&operator, &["pipeline-operator"], 1, now_ms() + 3_600_000, &keys.admin),
    );
    write_json(&revocations, &RevocationList::issue(1, vec![], vec![], &keys.admin));

    let mut appliance = Appliance::new(image()).unwrap();
    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let socket = appliance.control_socket();
    let admin_key = build_dir().join("keys/admin.key");
    let os = |s: &str| std::ffi::OsString::from(s);
    let started = Instant::now();
    let (code, stdout, stderr) = sovereign(&[
        &os("run"),
        pipeline.as_os_str(),
        &os("--socket"),
        socket.as_os_str(),
        &os("--key"),
        admin_key.as_os_str(),
        &os("--modules"),
        build_dir().join("modules").as_os_str(),
        &os("--policy"),
        build_dir().join("iron-path.policy.json").as_os_str(),
        &os("--certificate"),
        certificate.as_os_str(),
        &os("--revocations"),
        revocations.as_os_str(),
        &os("--json"),
    ]);
    let took = started.elapsed();
    let run: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: exit {code}\n{stdout}\n{stderr}"));
    let report = &run["report"];
    // The appliance received the whole dataset intact: the policy allowed preparation (it
    // requires the hash the pipeline pins), and the stage failed only in the sandbox.
    let status = &report["status"]["Failed"];
    assert_eq!(status["stage"], "prepare", "{report:#}");
    let reason = status["reason"].as_str().unwrap();
    assert!(reason.contains("module normalize terminated"), "{reason}");
    assert!(!reason.contains("does not hash") && !reason.contains("denied"), "{reason}");
    assert_ne!(code, 0);
    eprintln!("100 MiB dataset uploaded and run in {took:?}: {reason}");

    // The log comes down as chunks and verifies offline, with the run's refusal in it.
    let export = dir.path().join("export.tar");
    certify_ak(&appliance, &socket);
    export_from(&socket, &export);
    let identity = appliance_identity(&guest.console());
    let ek_ca = dir.path().join("ek-ca.pem");
    std::fs::write(&ek_ca, appliance.ek_ca_pem().unwrap()).unwrap();
    let (code, verdict) = verify_offline(&export, &identity, &ek_ca);
    assert_eq!(verdict["verdict"], "PASS", "{verdict:#}");
    assert_eq!(code, 0);

    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}

fn appliance_identity(console: &str) -> String {
    const IDENTITY: &str = "sovereign-runtime: node identity ";
    let line = console.lines().find(|l| l.contains(IDENTITY)).unwrap_or_else(|| panic!("{console}"));
    line.split(IDENTITY).nth(1).unwrap().trim().to_string()
}
