//! A 1,000,000-entry audit log exported from the appliance in QEMU (OVMF + swtpm) through the
//! real `sovereign audit export`, as chunks, and verified offline by `sovereign verify` (TPM
//! attestation included).
//!
//! Nothing in the runtime makes a million entries on command, and nothing should. So the
//! appliance is provisioned on the host first, the way a factory station would: node keys
//! chosen here are sealed by the appliance's own TPM to the release's PCR-policy key
//! (PolicyAuthorize, exactly what PID 1 seals on a first boot) and written to the key area, and
//! the data partition is made holding a log of a million entries written under those keys.
//! PID 1 then unseals the keys like any it made itself (the console's node identity proves it),
//! and the runtime opens, serves and exports that log.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::logfile::DataKey;
use sovereign_audit::store::AuditLog;
use sovereign_audit::{Entry, EntryKind, Severity};
use sovereign_boot_contract::{DATA_PARTITION_OFFSET, DATA_PARTITION_SIZE, STATE_PARTITION_OFFSET};
use sovereign_e2e::{boot_slot, certify_ak, dev_keys, export_from, image, verify_offline};
use sovereign_init::state;
use sovereign_measured_boot::PolicyKey;
use sovereign_measured_boot::tpm::{STATE_ANCHOR_INDEX, SharedTpm};
use sovereign_pipeline::anchor::{StateAnchor, TpmCounter};
use sovereign_qemu::Appliance;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const READY: &str = "sovereign-runtime: control: attestation key ready";
const ENTRIES: u64 = 1_000_000;

/// The audit log of a million entries under `data_key`, in `dir/audit.log`.
fn million_entry_log(dir: &Path, identity: &SigningKey, data_key: &DataKey) {
    let origin = format!("sovereign-appliance/{}", &hex::encode(identity.verifying_key().as_bytes())[..16]);
    let log = AuditLog::create(&dir.join("audit.log"), &origin, data_key).unwrap();
    // Written over the last ENTRIES milliseconds: the AK certificate issued below must be
    // valid when the log was last written to.
    let first_ms = sovereign_e2e::now_unix() * 1000 - ENTRIES;
    let batch = 50_000;
    let mut written = 0;
    while written < ENTRIES {
        let n = batch.min(ENTRIES - written);
        let rows = (written..written + n)
            .map(|i| {
                let payload = format!("{{\"event\":\"sensor reading\",\"seq\":{i}}}").into_bytes();
                Entry::new(EntryKind::Artifact, first_ms + i, Severity::Info, vec![], payload)
            })
            .collect();
        log.append_batch(rows).unwrap();
        written += n;
    }
    assert_eq!(log.size(), ENTRIES);
}

/// Writes `from` into `disk` at `offset`, leaving all-zero blocks unwritten (both are sparse).
fn write_partition(disk: &Path, offset: u64, from: &Path) {
    let image = std::fs::read(from).unwrap();
    assert!(image.len() as u64 <= DATA_PARTITION_SIZE, "{} bytes do not fit the partition", image.len());
    let mut out = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    for (i, block) in image.chunks(1 << 20).enumerate() {
        if block.iter().any(|b| *b != 0) {
            out.seek(SeekFrom::Start(offset + (i as u64) * (1 << 20))).unwrap();
            out.write_all(block).unwrap();
        }
    }
    out.sync_all().unwrap();
}

#[test]
fn a_million_entry_log_comes_down_through_the_real_cli_and_verifies_offline() {
    let _slot = boot_slot();
    let dir = tempfile::tempdir().unwrap();
    let mut appliance = Appliance::new(image()).unwrap();

    // Factory provisioning: the node keys (identity seed ‖ data key), chosen here.
    let mut secret = [0u8; 64];
    OsRng.fill_bytes(&mut secret);
    let identity = SigningKey::from_bytes(&secret[..32].try_into().unwrap());
    let data_key = DataKey(secret[32..].try_into().unwrap());

    // The data partition: an ext4 file system made from a tree holding the log.
    let tree = dir.path().join("data");
    std::fs::create_dir(&tree).unwrap();
    let started = Instant::now();
    million_entry_log(&tree, &identity, &data_key);
    let log_bytes = std::fs::metadata(tree.join("audit.log")).unwrap().len();
    eprintln!("{ENTRIES} entries written on the host ({log_bytes} bytes) in {:?}", started.elapsed());
    // The station anchors that state to the appliance's TPM (state with no anchor is refused
    // at start) and seals the keys, by this appliance's TPM, to the release's PCR-policy key.
    let policy_key = PolicyKey::new(*dev_keys().pcr_policy.verifying_key());
    let sealed = appliance
        .tpm_on_host(|tcti| {
            let tpm = SharedTpm::new(tcti);
            let counter = Box::new(TpmCounter::new(tpm.clone(), STATE_ANCHOR_INDEX));
            let anchored = StateAnchor::adopt(&tree, &data_key, counter).unwrap();
            assert_eq!(anchored.head.log_size, ENTRIES);
            tpm.with(|tpm| tpm.seal_to_policy_key(&secret, &policy_key, 0))
        })
        .unwrap()
        .unwrap();
    let partition = dir.path().join("data.img");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "sovereign-data", "-m", "0", "-b", "4096", "-d"])
        .arg(&tree)
        .arg(&partition)
        .arg(format!("{}k", DATA_PARTITION_SIZE / 1024))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.ext4 -d failed: {status}");
    write_partition(appliance.disk(), DATA_PARTITION_OFFSET, &partition);

    // The sealed keys (at key generation 0, a TPM never rotated), in the key area's first copy.
    let mut disk = std::fs::OpenOptions::new().write(true).open(appliance.disk()).unwrap();
    disk.seek(SeekFrom::Start(STATE_PARTITION_OFFSET)).unwrap();
    disk.write_all(&state::encode(1, &[sealed]).unwrap()).unwrap();
    disk.sync_all().unwrap();
    drop(disk);

    let mut guest = appliance.boot(BOOT_TIMEOUT).unwrap();
    guest.wait_for("unsealing the node keys with the signed PCR policy").unwrap_or_else(|e| panic!("{e}"));
    let ready = Instant::now();
    guest.wait_for(READY).unwrap_or_else(|e| panic!("{e}"));
    let identity_hex = hex::encode(identity.verifying_key().as_bytes());
    let console = guest.console();
    assert!(
        console.contains(&format!("sovereign-runtime: node identity {identity_hex}")),
        "PID 1 did not unseal the provisioned keys:\n{console}"
    );
    assert!(console.contains(&format!("audit log of {ENTRIES} entries")), "{console}");
    eprintln!("runtime opened the {ENTRIES}-entry log and was ready in {:?}", ready.elapsed());

    // The operator attests the node and certifies its AK (what the auditor's --ak-ca pins).
    certify_ak(&appliance, &appliance.control_socket());
    let export = dir.path().join("export.tar");
    let started = Instant::now();
    export_from(&appliance.control_socket(), &export);
    let bundle_bytes = std::fs::metadata(&export).unwrap().len();
    eprintln!("export of {bundle_bytes} bytes through the CLI in {:?}", started.elapsed());
    assert!(bundle_bytes > log_bytes / 2, "a {bundle_bytes}-byte bundle cannot hold {ENTRIES} entries");

    let ek_ca = dir.path().join("ek-ca.pem");
    std::fs::write(&ek_ca, appliance.ek_ca_pem().unwrap()).unwrap();
    let (code, verdict) = verify_offline(&export, &identity_hex, &ek_ca);
    assert_eq!(verdict["verdict"], "PASS", "{verdict:#}");
    assert_eq!(code, 0);
    let entries = verdict["report"]["entries"].as_u64().unwrap();
    assert!(entries >= ENTRIES, "the bundle verified {entries} entries, not the {ENTRIES} written");
    // The attestation section was checked, not skipped.
    let checks = verdict["report"]["checks"].to_string();
    assert!(checks.contains("attestation"), "{verdict:#}");

    guest.powerdown().unwrap();
    guest.wait_exit().unwrap();
}
