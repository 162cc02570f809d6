//! Benchmarks of the TPM paths on a private swtpm (SPEC §9: attestation round trip ≤ 20 ms),
//! each against its naive baseline measured in the same run:
//!
//! - attestation round trip: quote (persistent AK) + read PCRs + full pure-Rust verification,
//!   versus the naive path that creates the EK and AK for every quote;
//! - verification alone (pure Rust, no TPM);
//! - seal, unseal to PCRs, unseal with a signed PCR policy.
//!
//! Run: `cargo bench -p sovereign-measured-boot --bench tpm` (prints a Markdown table).

use sovereign_bench::{TABLE_HEADER, time};
use sovereign_measured_boot::eventlog::{EV_EFI_ACTION, EventLogBuilder};
use sovereign_measured_boot::measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest};
use sovereign_measured_boot::policy::{PolicyKey, SignedPcrPolicy};
use sovereign_measured_boot::tpm::Tpm;
use sovereign_measured_boot::verify::{self, Expectations, verify_quote};
use sovereign_qemu::Swtpm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench` (a measurement); without it each row runs once (CI).
    let swtpm = Swtpm::start()?;
    let mut tpm = Tpm::open(&swtpm.tcti())?;

    let firmware = EventLogBuilder::new().measure(0, 0x8, b"firmware").measure(7, EV_EFI_ACTION, b"sb").build();
    for e in &sovereign_measured_boot::EventLog::parse(&firmware)?.events {
        tpm.pcr_extend(e.pcr as u8, &e.sha256().ok_or("no sha256")?)?;
    }
    let mut log = MeasurementLog::new();
    tpm.measure(
        Measurement {
            pcr: PROJECT_PCR,
            kind: MeasurementKind::Manifest,
            digest: Sha256Digest::of(b"manifest"),
            description: "manifest".into(),
        },
        &mut log,
    )?;
    let log_bytes = log.to_bytes();
    let selection = PcrSelection::new([0, 7, PROJECT_PCR])?;
    let reference = tpm.pcr_read(&selection)?;
    let ak = tpm.create_attestation_key()?;
    let (der, _) = verify::ak_der_pem(&ak.public)?;
    let pinned = verify::ak_from_der(&der)?;
    let mut counter = 0u64;

    let mut round_trip =
        |tpm: &mut Tpm, ak: &sovereign_measured_boot::AttestationKey, pinned: &p256::ecdsa::VerifyingKey| {
            counter += 1;
            let nonce = Sha256Digest::of(&counter.to_be_bytes()).0;
            let evidence = tpm.quote(ak, &nonce, &selection).expect("quote");
            let report = verify_quote(
                &evidence,
                &Expectations {
                    ak: pinned,
                    qualifying_data: &nonce,
                    selection: &selection,
                    reference: &reference,
                    firmware_log: Some(&firmware),
                    measurement_log: Some(&log_bytes),
                },
            );
            assert!(report.passed(), "{report:#?}");
        };

    let mut rows = Vec::new();
    rows.push(time("attestation round trip (quote + PCR read + full verify), persistent AK", 200, || {
        round_trip(&mut tpm, &ak, &pinned)
    }));
    // swtpm holds three transient objects: the baseline's own EK + AK need the persistent pair's
    // slots (and so do the seal and unseal rows below, with the storage root and the object).
    tpm.release_attestation_key(ak);
    rows.push(time("baseline: same, creating EK + AK for every quote", 20, || {
        let fresh = tpm.create_attestation_key().expect("ak");
        // The naive verifier also re-derives the key it checks against.
        let (der, _) = verify::ak_der_pem(&fresh.public).expect("der");
        let key = verify::ak_from_der(&der).expect("key");
        round_trip(&mut tpm, &fresh, &key);
        tpm.release_attestation_key(fresh);
    }));

    let ak = tpm.create_attestation_key()?;
    let (der, _) = verify::ak_der_pem(&ak.public)?;
    let pinned = verify::ak_from_der(&der)?;
    let nonce = [7u8; 32];
    let evidence = tpm.quote(&ak, &nonce, &selection)?;
    tpm.release_attestation_key(ak);
    rows.push(time("verification only (pure Rust, with event-log replay)", 2000, || {
        verify_quote(
            &evidence,
            &Expectations {
                ak: &pinned,
                qualifying_data: &nonce,
                selection: &selection,
                reference: &reference,
                firmware_log: Some(&firmware),
                measurement_log: Some(&log_bytes),
            },
        )
        .passed()
    }));

    let predicted: PcrValues = tpm.pcr_read(&PcrSelection::new([PROJECT_PCR])?)?;
    let blob = tpm.seal_to_pcrs(&[1u8; 64], &predicted)?;
    rows.push(time("seal 64 bytes to predicted PCRs (incl. SRK CreatePrimary)", 50, || {
        tpm.seal_to_pcrs(&[1u8; 64], &predicted).expect("seal")
    }));
    rows.push(time("unseal with PolicyPCR (incl. SRK CreatePrimary + Load)", 50, || {
        tpm.unseal_with_pcrs(&blob, &predicted.selection()).expect("unseal")
    }));
    let policy_key = p256::ecdsa::SigningKey::from_slice(&[5u8; 32])?;
    let pk = PolicyKey::new(*policy_key.verifying_key());
    let signed_blob = tpm.seal_to_policy_key(&[2u8; 64], &pk, 0)?;
    tpm.floor_provision()?;
    tpm.key_generation_provision()?;
    let policy = SignedPcrPolicy::sign(predicted.clone(), 1, &policy_key)?;
    rows.push(time(
        "unseal with signed PCR policy (PolicyPCR + floor PolicyNV + PolicyAuthorize + key-generation PolicyNV)",
        50,
        || tpm.unseal_with_signed_policy(&signed_blob, &pk, &policy, 0).expect("unseal"),
    ));

    println!("{TABLE_HEADER}");
    for r in &rows {
        println!("{}", r.row());
    }
    Ok(())
}
