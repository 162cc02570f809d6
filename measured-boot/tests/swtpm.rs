//! `sovereign-measured-boot` against a real TPM 2.0 (a private swtpm per test, never a mock).
//!
//! Each test states the behaviour it guards; each would fail if that behaviour broke.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;

use sovereign_measured_boot::EventLog;
use sovereign_measured_boot::eventlog::{EV_EFI_ACTION, EV_SEPARATOR, EventLogBuilder};
use sovereign_measured_boot::measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest};
use sovereign_measured_boot::policy::{PolicyKey, SignedPcrPolicy};
use sovereign_measured_boot::sealed::SealedBlob;
use sovereign_measured_boot::tpm::{TEST_COUNTER_INDEX, Tpm, TpmError};
use sovereign_measured_boot::verify::{self, Expectations, QuoteEvidence, Report, verify_quote};
use sovereign_qemu::Swtpm;

fn start() -> (Swtpm, Tpm) {
    let swtpm = Swtpm::start().expect("start a private swtpm (is swtpm installed?)");
    let tpm = Tpm::open(&swtpm.tcti()).expect("open the swtpm");
    (swtpm, tpm)
}

fn reopen(swtpm: &mut Swtpm) -> Tpm {
    swtpm.power_cycle().expect("power cycle");
    Tpm::open(&swtpm.tcti()).expect("reopen after power cycle")
}

fn manifest(version: &str) -> Measurement {
    Measurement {
        pcr: PROJECT_PCR,
        kind: MeasurementKind::Manifest,
        digest: Sha256Digest::of(format!("signed manifest {version}").as_bytes()),
        description: format!("manifest {version}"),
    }
}

fn config() -> Measurement {
    Measurement {
        pcr: PROJECT_PCR,
        kind: MeasurementKind::RuntimeConfig,
        digest: Sha256Digest::of(b"runtime config"),
        description: "runtime config".into(),
    }
}

/// The PCR 15 value a release predicts after PID 1 measured its manifest and config.
fn predict(version: &str) -> PcrValues {
    let mut log = MeasurementLog::new();
    log.push(manifest(version));
    log.push(config());
    let mut start = PcrValues::new();
    start.set(PROJECT_PCR, Sha256Digest::default());
    log.replay_onto(&start)
}

fn boot(tpm: &mut Tpm, version: &str) -> MeasurementLog {
    let mut log = MeasurementLog::new();
    tpm.measure(manifest(version), &mut log).expect("measure manifest");
    tpm.measure(config(), &mut log).expect("measure config");
    log
}

fn policy_key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("valid scalar")
}

fn is_refused(r: Result<Vec<u8>, TpmError>) -> bool {
    matches!(r, Err(TpmError::UnsealRefused { .. }))
}

#[test]
fn extensions_are_logged_and_the_log_replays_to_the_tpm() {
    let (_swtpm, mut tpm) = start();
    let sel = PcrSelection::new([PROJECT_PCR]).unwrap();
    assert_eq!(tpm.pcr_read(&sel).unwrap().get(PROJECT_PCR), Some(&Sha256Digest::default()));
    let mut log = boot(&mut tpm, "v1");
    tpm.measure(Measurement::separator(), &mut log).unwrap();
    let parsed = MeasurementLog::parse(&log.to_bytes()).unwrap();
    let replayed = parsed.replay_onto(&tpm.pcr_read(&PcrSelection::new([]).unwrap()).unwrap());
    assert_eq!(replayed.get(PROJECT_PCR), tpm.pcr_read(&sel).unwrap().get(PROJECT_PCR));
    assert_ne!(replayed.get(PROJECT_PCR), predict("v1").get(PROJECT_PCR), "the separator moved PCR 15");
}

#[test]
fn firmware_event_log_replays_to_tpm_pcrs_and_matches_tpm2_eventlog() {
    let (_swtpm, mut tpm) = start();
    let log = EventLogBuilder::new()
        .measure(0, 0x8, b"OVMF firmware version")
        .measure(7, EV_EFI_ACTION, b"Calling EFI Application from Boot Option")
        .measure(4, EV_EFI_ACTION, b"bootx64.efi")
        .measure(7, EV_SEPARATOR, &[0; 4])
        .build();
    let parsed = EventLog::parse(&log).unwrap();
    for e in &parsed.events {
        tpm.pcr_extend(u8::try_from(e.pcr).unwrap(), &e.sha256().unwrap()).unwrap();
    }
    let replayed = parsed.replay().unwrap();
    let sel = PcrSelection::new([0, 4, 7]).unwrap();
    assert_eq!(tpm.pcr_read(&sel).unwrap(), replayed);

    // An independent parser (tpm2-tools) computes the same PCR values from the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary_bios_measurements");
    std::fs::write(&path, &log).unwrap();
    let out = Command::new("tpm2_eventlog").arg(&path).output().expect("tpm2_eventlog (tpm2-tools) installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    let sha256_section = yaml.split("sha256:").last().unwrap();
    for (pcr, value) in &replayed.0 {
        let line = format!("{pcr:<3}: 0x{}", value.to_hex());
        assert!(sha256_section.to_lowercase().contains(&line), "tpm2_eventlog disagrees on PCR {pcr}: {yaml}");
    }
}

#[test]
fn seal_to_predicted_pcrs_unseals_only_in_the_predicted_state() {
    let (_swtpm, mut tpm) = start();
    let predicted = predict("v1");
    // Sealed *before* the PCRs hold those values: the policy comes from the prediction.
    let blob = tpm.seal_to_pcrs(b"node identity key", &predicted).unwrap();
    let blob = SealedBlob::from_bytes(&blob.to_bytes()).unwrap();
    let sel = predicted.selection();
    assert!(is_refused(tpm.unseal_with_pcrs(&blob, &sel)), "unsealed before the boot was measured");
    boot(&mut tpm, "v1");
    assert_eq!(tpm.unseal_with_pcrs(&blob, &sel).unwrap(), b"node identity key");
    tpm.pcr_extend(PROJECT_PCR, &Sha256Digest::of(b"one extension too many")).unwrap();
    assert!(is_refused(tpm.unseal_with_pcrs(&blob, &sel)), "unsealed after an extra extension");
}

#[test]
fn signed_pcr_policy_lets_a_new_signed_release_unseal_and_nothing_else() {
    let (mut swtpm, mut tpm) = start();
    let release_key = policy_key(1);
    let pk = PolicyKey::new(*release_key.verifying_key());
    let blob = tpm.seal_to_policy_key(b"node data key", &pk, 0).unwrap();
    assert_eq!(tpm.floor_provision().unwrap(), 0);
    assert_eq!(tpm.key_generation_provision().unwrap(), 0);

    // Release v1 boots and unseals with its signed policy.
    boot(&mut tpm, "v1");
    let v1 = SignedPcrPolicy::sign(predict("v1"), 1, &release_key).unwrap();
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &v1, 0).unwrap(), b"node data key");

    // Reboot into v2: v1's policy no longer matches, v2's newly signed policy unseals the
    // *same* sealed object.
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    boot(&mut tpm, "v2");
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &v1, 0)), "old policy unsealed new PCRs");
    let v2 = SignedPcrPolicy::sign(predict("v2"), 2, &release_key).unwrap();
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &v2, 0).unwrap(), b"node data key");

    // A policy for these PCRs signed by another key fails, whether presented with that key
    // (the object is bound to the release key's name) or with the release key (bad signature).
    let attacker = policy_key(2);
    let attacker_pk = PolicyKey::new(*attacker.verifying_key());
    let forged = SignedPcrPolicy::sign(predict("v2"), 2, &attacker).unwrap();
    assert!(forged.verify(&pk).is_err());
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &forged, 0)), "wrongly signed policy accepted");
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &attacker_pk, &forged, 0)), "attacker key accepted");

    // An unsigned policy (signature of zeros) fails.
    let mut unsigned = v2.clone();
    unsigned.signature =
        sovereign_measured_boot::structures::EcdsaSignature { hash: 0x000b, r: vec![0; 32], s: vec![0; 32] }.marshal();
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &unsigned, 0)), "unsigned policy accepted");

    // A tampered image: PCRs that no signed policy covers.
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    boot(&mut tpm, "tampered");
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &v2, 0)));
}

#[test]
fn the_tpm_refuses_a_release_older_than_the_floor_and_the_floor_never_moves_down() {
    let (mut swtpm, mut tpm) = start();
    let release_key = policy_key(4);
    let pk = PolicyKey::new(*release_key.verifying_key());
    let blob = tpm.seal_to_policy_key(b"node keys", &pk, 0).unwrap();
    boot(&mut tpm, "v1");
    // Old and new releases signed the same PCRs (the worst case: only the version differs).
    let release = |v| SignedPcrPolicy::sign(predict("v1"), v, &release_key).unwrap();

    // Not provisioned yet: PolicyNV has no index to read, and the TPM refuses.
    assert_eq!(tpm.floor().unwrap(), None);
    let why = tpm.unseal_with_signed_policy(&blob, &pk, &release(1), 0).unwrap_err().to_string();
    assert!(why.contains("anti-rollback floor (NV index 0x01805356) is not defined"), "{why}");
    assert_eq!(tpm.floor_provision().unwrap(), 0);
    assert_eq!(tpm.floor_provision().unwrap(), 0, "provisioning again must change nothing");
    assert_eq!(tpm.key_generation_provision().unwrap(), 0);

    // The TPM computes the index's name as the policy digest assumes (or nothing would unseal).
    assert_eq!(tpm.floor_index_name().unwrap(), sovereign_measured_boot::floor::index_name());
    for v in [1, 2, 3] {
        assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &release(v), 0).unwrap(), b"node keys");
    }

    // Release 2 marked good: the floor moves to 2 and the TPM itself refuses release 1's policy
    // (signed, PCRs matching) while 2 and 3 still unseal.
    assert_eq!(tpm.floor_raise(2).unwrap(), 2);
    let refused = tpm.unseal_with_signed_policy(&blob, &pk, &release(1), 0);
    assert!(is_refused(refused), "a release older than the floor unsealed");
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &release(2), 0).unwrap(), b"node keys");
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &release(3), 0).unwrap(), b"node keys");

    // The floor survives a power cycle and never moves down.
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    boot(&mut tpm, "v1");
    assert_eq!(tpm.floor().unwrap(), Some(2));
    assert_eq!(tpm.floor_raise(1).unwrap(), 2, "raising to an older release lowered the floor");
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &release(1), 0)));
    assert_eq!(tpm.floor_raise(3).unwrap(), 3);
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &release(2), 0)));
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &release(3), 0).unwrap(), b"node keys");
    assert!(tpm.floor_raise(65).is_err(), "a floor beyond 64 releases cannot be expressed");
    assert_eq!(tpm.floor().unwrap(), Some(3));

    // Overwriting the bit field with a lower value is refused by the TPM (bits only accumulate).
    assert!(tpm.danger_counter_write(sovereign_measured_boot::floor::FLOOR_INDEX, 0).is_err());
    assert_eq!(tpm.floor().unwrap(), Some(3));
}

/// A PCR-policy key rotation, as PID 1 performs it: the node keys sealed to the old key at
/// generation 0 unseal once through the release's bridge signature, are resealed to the new key
/// at generation 1, and — the release being good — the generation is raised: from then on no
/// policy the old key signs opens anything, not even a copy of the old sealed object kept from
/// before (the TPM refuses it), while the new key's policies open the new one. A TPM whose
/// generation index is missing refuses outright.
#[test]
fn a_rotated_pcr_policy_key_reseals_and_then_the_old_key_opens_nothing() {
    let (mut swtpm, mut tpm) = start();
    let (old_key, new_key) = (policy_key(6), policy_key(7));
    let (old, new) = (PolicyKey::new(*old_key.verifying_key()), PolicyKey::new(*new_key.verifying_key()));
    let old_copy = tpm.seal_to_policy_key(b"node keys", &old, 0).unwrap();
    boot(&mut tpm, "v1");
    tpm.floor_provision().unwrap();
    let v1 = SignedPcrPolicy::sign(predict("v1"), 1, &old_key).unwrap();
    let why = tpm.unseal_with_signed_policy(&old_copy, &old, &v1, 0).unwrap_err().to_string();
    assert!(why.contains("is not defined"), "unsealed without the key-generation index: {why}");
    assert_eq!(tpm.key_generation_provision().unwrap(), 0);
    assert_eq!(tpm.key_generation_index_name().unwrap(), sovereign_measured_boot::floor::key_generation_index_name());
    assert_eq!(tpm.unseal_with_signed_policy(&old_copy, &old, &v1, 0).unwrap(), b"node keys");

    // The rotating release: signed by the new key, bridged by the old one.
    let mut v2 = SignedPcrPolicy::sign(predict("v1"), 2, &new_key).unwrap();
    v2.add_bridge(&old_key).unwrap();
    let bridged = v2.bridged().unwrap();
    bridged.verify(&old).unwrap();
    assert!(bridged.verify(&new).is_err());
    let secret = tpm.unseal_with_signed_policy(&old_copy, &old, &bridged, 0).unwrap();
    // The new key's own signature does not open the old copy (it names the old key).
    assert!(is_refused(tpm.unseal_with_signed_policy(&old_copy, &new, &v2, 0)));
    let new_copy = tpm.seal_to_policy_key(&secret, &new, 1).unwrap();
    // Presented at the wrong generation, the TPM's policy digest differs: refused.
    assert!(is_refused(tpm.unseal_with_signed_policy(&new_copy, &new, &v2, 0)));
    assert_eq!(tpm.unseal_with_signed_policy(&new_copy, &new, &v2, 1).unwrap(), b"node keys");
    // Before the raise (a trial that may still fail), the old copy still opens: fallback works.
    assert_eq!(tpm.unseal_with_signed_policy(&old_copy, &old, &v1, 0).unwrap(), b"node keys");

    // The release is good: generation 1. The old copy is dead under every old-key policy,
    // whatever release it names; the new copy opens; a power cycle changes nothing.
    assert_eq!(tpm.key_generation_raise(1).unwrap(), 1);
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    boot(&mut tpm, "v1");
    assert_eq!(tpm.key_generation().unwrap(), Some(1));
    for policy in [&v1, &bridged, &SignedPcrPolicy::sign(predict("v1"), 64, &old_key).unwrap()] {
        let refused = tpm.unseal_with_signed_policy(&old_copy, &old, policy, 0);
        assert!(is_refused(refused), "the retired key's copy unsealed");
    }
    // The generation never moves down.
    assert_eq!(tpm.key_generation_raise(0).unwrap(), 1);
    assert_eq!(tpm.unseal_with_signed_policy(&new_copy, &new, &v2, 1).unwrap(), b"node keys");
}

#[test]
fn separator_closes_the_unseal_window_for_this_boot() {
    let (mut swtpm, mut tpm) = start();
    let release_key = policy_key(3);
    let pk = PolicyKey::new(*release_key.verifying_key());
    let blob = tpm.seal_to_policy_key(b"secret", &pk, 0).unwrap();
    tpm.floor_provision().unwrap();
    tpm.key_generation_provision().unwrap();
    let policy = SignedPcrPolicy::sign(predict("v1"), 1, &release_key).unwrap();
    let mut log = boot(&mut tpm, "v1");
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &policy, 0).unwrap(), b"secret");
    tpm.measure(Measurement::separator(), &mut log).unwrap();
    assert!(is_refused(tpm.unseal_with_signed_policy(&blob, &pk, &policy, 0)), "unsealed after the separator");
    // The next boot opens it again.
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    boot(&mut tpm, "v1");
    assert_eq!(tpm.unseal_with_signed_policy(&blob, &pk, &policy, 0).unwrap(), b"secret");
}

struct Quoted {
    evidence: QuoteEvidence,
    ak: p256::ecdsa::VerifyingKey,
    nonce: Vec<u8>,
    selection: PcrSelection,
    firmware_log: Vec<u8>,
    measurement_log: Vec<u8>,
}

fn quoted_boot(tpm: &mut Tpm) -> Quoted {
    let firmware =
        EventLogBuilder::new().measure(0, 0x8, b"firmware").measure(7, EV_EFI_ACTION, b"secure boot state").build();
    for e in &EventLog::parse(&firmware).unwrap().events {
        tpm.pcr_extend(u8::try_from(e.pcr).unwrap(), &e.sha256().unwrap()).unwrap();
    }
    let log = boot(tpm, "v1");
    let ak = tpm.create_attestation_key().unwrap();
    let selection = PcrSelection::new([0, 7, PROJECT_PCR]).unwrap();
    let nonce = Sha256Digest::of(b"verifier nonce 1").0.to_vec();
    let evidence = tpm.quote(&ak, &nonce, &selection).unwrap();
    let (der, pem) = verify::ak_der_pem(&ak.public).unwrap();
    let pinned = verify::ak_from_der(&der).unwrap();
    assert_eq!(verify::ak_from_pem(&pem).unwrap(), pinned);
    tpm.release_attestation_key(ak);
    Quoted { evidence, ak: pinned, nonce, selection, firmware_log: firmware, measurement_log: log.to_bytes() }
}

fn run(q: &Quoted, reference: &PcrValues) -> Report {
    verify_quote(
        &q.evidence,
        &Expectations {
            ak: &q.ak,
            qualifying_data: &q.nonce,
            selection: &q.selection,
            reference,
            firmware_log: Some(&q.firmware_log),
            measurement_log: Some(&q.measurement_log),
        },
    )
}

#[test]
fn quote_verifies_completely_and_every_tampering_is_named() {
    let (swtpm, mut tpm) = start();
    // The EK certificate in the TPM is the one the test's own CA issued.
    assert_eq!(tpm.ek_certificate().unwrap().as_deref(), Some(swtpm.ek_certificate_rsa().unwrap().as_slice()));

    let q = quoted_boot(&mut tpm);
    let reference = q.evidence.pcr_values.clone();
    let good = run(&q, &reference);
    assert!(good.passed(), "{good:#?}");
    assert_eq!(good.checks.len(), verify::CHECKS.len() + 1);

    // One flipped bit in the signed attestation.
    let mut t = clone_quoted(&q);
    t.evidence.attest[20] ^= 1;
    let r = run(&t, &reference);
    assert!(!r.passed() && r.check_passed("quote.signature") == Some(false), "{r:#?}");

    // A nonce the verifier did not ask for (a replayed quote).
    let mut t = clone_quoted(&q);
    t.nonce = Sha256Digest::of(b"verifier nonce 2").0.to_vec();
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("quote.qualifying_data"), Some(false), "{r:#?}");
    assert!(!r.passed());

    // A swapped PCR selection: the verifier asked for 0,4,15.
    let mut t = clone_quoted(&q);
    t.selection = PcrSelection::new([0, 4, PROJECT_PCR]).unwrap();
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("quote.pcr_selection"), Some(false), "{r:#?}");

    // Claimed PCR values that the quote does not prove.
    let mut t = clone_quoted(&q);
    t.evidence.pcr_values.set(7, Sha256Digest::of(b"forged"));
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("quote.pcr_digest"), Some(false), "{r:#?}");

    // Reference values: every mismatching PCR is reported, not only the first.
    let mut wrong = reference.clone();
    wrong.set(0, Sha256Digest::of(b"other firmware"));
    wrong.set(PROJECT_PCR, Sha256Digest::of(b"other manifest"));
    let r = run(&q, &wrong);
    assert_eq!(r.check_passed("pcrs.reference_values"), Some(false));
    let pcrs: Vec<u8> = r.reference_mismatches.iter().map(|m| m.pcr).collect();
    assert_eq!(pcrs, vec![0, PROJECT_PCR], "{r:#?}");

    // A quote signed by another AK (not the pinned one).
    let (_other_swtpm, mut other_tpm) = start();
    let other = quoted_boot(&mut other_tpm);
    // The quote names the AK's parent: another TPM's endorsement key does not fit.
    let mut t = clone_quoted(&q);
    t.evidence.ek_public = other.evidence.ek_public.clone();
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("quote.signer_name"), Some(false), "{r:#?}");
    assert_eq!(r.check_passed("quote.signature"), Some(true));

    let mut t = clone_quoted(&q);
    t.ak = other.ak;
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("ak.pinned"), Some(false));
    assert_eq!(r.check_passed("quote.signature"), Some(false));
}

#[test]
fn event_logs_that_do_not_match_the_quoted_pcrs_fail() {
    let (_swtpm, mut tpm) = start();
    let q = quoted_boot(&mut tpm);
    let reference = q.evidence.pcr_values.clone();

    let mut t = clone_quoted(&q);
    t.firmware_log =
        EventLogBuilder::new().measure(0, 0x8, b"firmware").measure(7, EV_EFI_ACTION, b"secure boot DISABLED").build();
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("pcrs.event_log_replay"), Some(false), "{r:#?}");
    assert_eq!(r.replay_mismatches.iter().map(|m| m.pcr).collect::<Vec<_>>(), vec![7]);

    let mut t = clone_quoted(&q);
    let mut log = MeasurementLog::parse(&q.measurement_log).unwrap();
    log.records.pop();
    t.measurement_log = log.to_bytes();
    let r = run(&t, &reference);
    assert_eq!(r.replay_mismatches.iter().map(|m| m.pcr).collect::<Vec<_>>(), vec![PROJECT_PCR], "{r:#?}");

    let mut t = clone_quoted(&q);
    t.firmware_log.truncate(t.firmware_log.len() - 3);
    let r = run(&t, &reference);
    assert_eq!(r.check_passed("pcrs.event_log_replay"), Some(false));
}

#[test]
fn quote_is_readable_by_tpm2_checkquote() {
    let (_swtpm, mut tpm) = start();
    let q = quoted_boot(&mut tpm);
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = verify::ak_der_pem(&q.evidence.ak_public).unwrap();
    std::fs::write(dir.path().join("ak.pem"), pem).unwrap();
    std::fs::write(dir.path().join("attest.bin"), &q.evidence.attest).unwrap();
    std::fs::write(dir.path().join("sig.bin"), &q.evidence.signature).unwrap();
    let check = |nonce: &[u8]| {
        Command::new("tpm2_checkquote")
            .current_dir(dir.path())
            .args(["-u", "ak.pem", "-m", "attest.bin", "-s", "sig.bin", "-g", "sha256", "-q"])
            .arg(hex::encode(nonce))
            .env("TSS2_LOG", "all+none")
            .output()
            .expect("tpm2_checkquote (tpm2-tools) installed")
    };
    // `SOVEREIGN_FUZZ_SEEDS=fuzz/seeds cargo test` refreshes the fuzz seed corpus from real evidence.
    if let Some(seeds) = std::env::var_os("SOVEREIGN_FUZZ_SEEDS") {
        let seeds = std::path::PathBuf::from(seeds);
        for (target, bytes) in [
            ("quote", &q.evidence.attest),
            ("signature", &q.evidence.signature),
            ("ecc_public", &q.evidence.ak_public),
            ("event_log", &q.firmware_log),
            ("measurement_log", &q.measurement_log),
        ] {
            std::fs::create_dir_all(seeds.join(target)).unwrap();
            std::fs::write(seeds.join(target).join("real"), bytes).unwrap();
        }
    }
    let out = check(&q.nonce);
    assert!(out.status.success(), "tpm2_checkquote rejected our evidence: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!check(b"another nonce").status.success(), "tpm2_checkquote accepted a wrong nonce");
}

#[test]
fn nv_counter_never_goes_backwards() {
    let (mut swtpm, mut tpm) = start();
    tpm.counter_define(TEST_COUNTER_INDEX).unwrap();
    tpm.counter_define(TEST_COUNTER_INDEX).unwrap(); // idempotent
    // A fresh TPM counter starts at the highest value any counter ever had (0 on a new TPM)
    // only after its first increment; read-before-increment is refused by the TPM.
    let first = tpm.counter_increment(TEST_COUNTER_INDEX).unwrap();
    let second = tpm.counter_increment(TEST_COUNTER_INDEX).unwrap();
    assert_eq!(second, first + 1);
    assert!(tpm.danger_counter_write(TEST_COUNTER_INDEX, 0).is_err(), "a counter accepted an arbitrary write");
    drop(tpm);
    let mut tpm = reopen(&mut swtpm);
    assert_eq!(tpm.counter_read(TEST_COUNTER_INDEX).unwrap(), second, "counter lost across a power cycle");
    let third = tpm.counter_increment(TEST_COUNTER_INDEX).unwrap();
    assert!(third > second);
}

#[test]
fn random_bytes_come_from_the_tpm() {
    let (_swtpm, mut tpm) = start();
    let a = tpm.random(64).unwrap();
    let b = tpm.random(64).unwrap();
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
}

#[test]
fn bad_tcti_is_a_clear_error() {
    let err = Tpm::open("carrier-pigeon:").unwrap_err().to_string();
    assert!(err.contains("TCTI \"carrier-pigeon:\" is not valid"), "{err}");
}

fn clone_quoted(q: &Quoted) -> Quoted {
    Quoted {
        evidence: q.evidence.clone(),
        ak: q.ak,
        nonce: q.nonce.clone(),
        selection: q.selection.clone(),
        firmware_log: q.firmware_log.clone(),
        measurement_log: q.measurement_log.clone(),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn credential_made_in_pure_rust_is_released_only_for_the_ak_in_this_tpm() {
    use sovereign_measured_boot::credential::make_credential;
    use sovereign_measured_boot::structures::{EccPublic, RsaStoragePublic};
    let (_swtpm, mut tpm) = start();
    let ak = tpm.create_attestation_key().unwrap();
    let ek = RsaStoragePublic::parse(&ak.ek_public).unwrap();
    assert_eq!((ek.key_bits, ek.symmetric_bits, ek.modulus.len()), (2048, 128, 256));
    let ak_name = EccPublic::parse(&ak.public).unwrap().name();
    let mut rng = rand_core::OsRng;
    // The TPM (an independent implementation of the same spec) releases what we encrypted.
    let challenge = Sha256Digest::of(b"challenge").0;
    let cred = make_credential(&ek, &ak_name, &challenge, &mut rng).unwrap();
    assert_eq!(tpm.activate_credential(&ak, &cred.credential_blob, &cred.encrypted_secret).unwrap(), challenge);
    // A credential made for another object name is refused by the TPM's integrity check.
    let mut other_name = ak_name.clone();
    other_name[5] ^= 1;
    let wrong = make_credential(&ek, &other_name, &challenge, &mut rng).unwrap();
    assert!(tpm.activate_credential(&ak, &wrong.credential_blob, &wrong.encrypted_secret).is_err());
    // A credential encrypted to another TPM's EK cannot be opened here.
    let (_other_swtpm, mut other_tpm) = start();
    let other_ak = other_tpm.create_attestation_key().unwrap();
    let other_ek = RsaStoragePublic::parse(&other_ak.ek_public).unwrap();
    let foreign = make_credential(&other_ek, &ak_name, &challenge, &mut rng).unwrap();
    assert!(tpm.activate_credential(&ak, &foreign.credential_blob, &foreign.encrypted_secret).is_err());
    // A flipped bit in the blob fails the integrity HMAC.
    let mut flipped = cred.credential_blob.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(tpm.activate_credential(&ak, &flipped, &cred.encrypted_secret).is_err());
    tpm.release_attestation_key(ak);
    other_tpm.release_attestation_key(other_ak);
}

#[test]
fn the_attestation_key_survives_a_power_cycle_and_loads_only_in_its_own_tpm() {
    use sovereign_measured_boot::credential::make_credential;
    use sovereign_measured_boot::structures::{EccPublic, RsaStoragePublic};
    let (mut swtpm, mut tpm) = start();
    let (ak, kept) = tpm.attestation_key(None).unwrap();
    let first = ak.public.clone();
    tpm.release_attestation_key(ak);
    drop(tpm);
    // After a power cycle the kept bytes load the same AK, and the TPM still activates a
    // credential for it (the certificate issued for this AK stays true).
    let mut tpm = reopen(&mut swtpm);
    let (ak, again) = tpm.attestation_key(Some(&kept)).unwrap();
    assert_eq!((ak.public.clone(), again), (first.clone(), kept.clone()));
    let ek = RsaStoragePublic::parse(&ak.ek_public).unwrap();
    let cred =
        make_credential(&ek, &EccPublic::parse(&ak.public).unwrap().name(), &[7; 32], &mut rand_core::OsRng).unwrap();
    assert_eq!(tpm.activate_credential(&ak, &cred.credential_blob, &cred.encrypted_secret).unwrap(), [7; 32]);
    tpm.release_attestation_key(ak);
    // Damaged bytes, or another TPM's AK: not loaded; a new AK is made instead.
    let mut damaged = kept.clone();
    let last = damaged.len() - 40;
    damaged[last] ^= 1;
    for stored in [damaged, vec![0, 0, 0, 9, 1], vec![]] {
        let (ak, fresh) = tpm.attestation_key(Some(&stored)).unwrap();
        assert_ne!(ak.public, first);
        assert_ne!(fresh, stored);
        tpm.release_attestation_key(ak);
    }
    let (_other_swtpm, mut other) = start();
    let (ak, _) = other.attestation_key(Some(&kept)).unwrap();
    assert_ne!(ak.public, first, "another TPM's endorsement key cannot unwrap this AK");
    other.release_attestation_key(ak);
}

#[test]
fn ek_certificate_chains_to_the_swtpm_ca_and_certifies_this_ek() {
    use sovereign_measured_boot::ekcert::{trust_store_from_pem, verify_ek_certificate};
    use sovereign_measured_boot::structures::RsaStoragePublic;
    let (swtpm, mut tpm) = start();
    let cert = tpm.ek_certificate().unwrap().expect("swtpm provisions an EK certificate");
    assert_eq!(cert, swtpm.ek_certificate_rsa().unwrap(), "the TPM's NV copy is the CA-issued certificate");
    let ak = tpm.create_attestation_key().unwrap();
    let ek = RsaStoragePublic::parse(&ak.ek_public).unwrap();
    tpm.release_attestation_key(ak);
    let store = trust_store_from_pem(swtpm.ca_certificates_pem().unwrap().as_bytes()).unwrap();
    let chain = verify_ek_certificate(&cert, &store, &ek, now_unix()).unwrap();
    assert!(chain.contains("swtpm-localca-rootca"), "{chain}");
    // Only the root pinned: the issuing CA is missing, so there is no chain.
    let root_only: Vec<_> =
        store.iter().filter(|c| c.tbs_certificate.subject == c.tbs_certificate.issuer).cloned().collect();
    let err = verify_ek_certificate(&cert, &root_only, &ek, now_unix()).unwrap_err();
    assert!(err.contains("no certificate in the trust store"), "{err}");
    // Another TPM's CA does not vouch for this EK.
    let (other, mut other_tpm) = start();
    let other_store = trust_store_from_pem(other.ca_certificates_pem().unwrap().as_bytes()).unwrap();
    assert!(verify_ek_certificate(&cert, &other_store, &ek, now_unix()).is_err());
    // This TPM's certificate does not certify another EK.
    let other_ak = other_tpm.create_attestation_key().unwrap();
    let other_ek = RsaStoragePublic::parse(&other_ak.ek_public).unwrap();
    other_tpm.release_attestation_key(other_ak);
    let err = verify_ek_certificate(&cert, &store, &other_ek, now_unix()).unwrap_err();
    assert!(err.contains("different key"), "{err}");
    // A flipped bit in the signature breaks the chain; so does a time outside the validity.
    let mut forged = cert.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(verify_ek_certificate(&forged, &store, &ek, now_unix()).is_err());
    assert!(verify_ek_certificate(&cert, &store, &ek, 0).unwrap_err().contains("not valid now"));
}
