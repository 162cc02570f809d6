//! Attestation round trip on a private swtpm (SPEC §9: ≤ 20 ms excluding the network), through
//! the real code on both sides: the operator signs an `attest` request; the runtime's control
//! server ([`sovereign_runtime::control::answer`]) admits it through the gate, quotes with the
//! TPM, reads the logs and signs the response; the frames are encoded and decoded; the operator
//! verifies the response signature and runs the complete verification (`verify_exchange`:
//! release signatures, EK certificate chain, quote, event-log replay, every PCR). Compared in
//! the same run with the naive baseline that creates the EK and AK for every request.
//!
//! Run: `cargo bench -p sovereign-runtime --bench attest` (prints a Markdown table).

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sovereign_bench::iterations;
use sovereign_boot_contract::manifest::{FORMAT, FileEntry, Manifest, ModuleEntry};
use sovereign_cli::attest::{Exchange, Trust, verify_exchange};
use sovereign_measured_boot::eventlog::{EV_EFI_ACTION, EventLogBuilder};
use sovereign_measured_boot::measurement_log::{Measurement, MeasurementKind, MeasurementLog, PROJECT_PCR};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest};
use sovereign_measured_boot::tpm::Tpm;
use sovereign_protocol::{Frame, Gate, Request, Response, SignedRequest, decode, frame};
use sovereign_qemu::Swtpm;
use sovereign_runtime::control::{Attestor, Node, answer};

type Error = Box<dyn std::error::Error>;

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v[(((v.len() as f64) - 1.0) * p).round() as usize]
}

fn row(name: &str, samples: &[Duration]) -> String {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    format!(
        "| {name} | {} | {} | {} | {} |",
        samples.len(),
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(percentile(samples, 1.0))
    )
}

fn manifest(release: &SigningKey) -> (Vec<u8>, Vec<u8>) {
    let file = |path: &str| FileEntry::regular(path, 0o755, b"x");
    Manifest {
        format: FORMAT.into(),
        version: 1,
        kernel_release: "6.1.0-56-amd64".into(),
        cmdline: "console=ttyS0".into(),
        runtime: "/usr/bin/sovereign-runtime".into(),
        runtime_config: "/etc/sovereign/runtime.json".into(),
        runtime_config_sha256: "00".repeat(32),
        modules: vec![ModuleEntry { name: "virtio_blk".into(), path: "/lib/modules/virtio_blk.ko".into() }],
        files: vec![
            file("/etc/sovereign/runtime.json"),
            file("/init"),
            file("/lib/modules/virtio_blk.ko"),
            file("/usr/bin/sovereign-runtime"),
        ],
    }
    .sign(release)
}

/// One attestation exchange as `sovereign attest` performs it, minus the transport.
fn round_trip(node: &Node, gate: &mut Gate, operator: &SigningKey, trust: &Trust, counter: &mut u64) {
    *counter += 1;
    let nonce = Sha256Digest::of(&counter.to_be_bytes()).0;
    let now_ms = 1_800_000_000_000 + *counter;
    let identity = node.identity.verifying_key();
    let request = SignedRequest::sign(
        Request::Attest { nonce },
        identity.to_bytes(),
        vec![],
        operator,
        nonce[..16].try_into().expect("16"),
        now_ms,
    );
    let wire = frame(&Frame::Request(Box::new(request.clone())));
    let Ok(Frame::Request(received)) = decode(&wire[4..]) else { panic!("the request does not decode") };
    let reply = frame(&Frame::Response(Box::new(answer(node, gate, &received, now_ms))));
    let Ok(Frame::Response(response)) = decode(&reply[4..]) else { panic!("the response does not decode") };
    let Response::Evidence(evidence) = response.verify(&request, &identity).expect("signed") else {
        panic!("attestation refused: {response:?}")
    };
    let exchange = Exchange {
        nonce,
        identity: identity.to_bytes(),
        evidence: (**evidence).clone(),
        challenge: [7; 32],
        released: Ok(vec![7; 32]),
    };
    let report = verify_exchange(&exchange, trust, 1_800_000_000);
    assert!(report.passed(), "{}", report.render());
}

fn main() -> Result<(), Error> {
    let swtpm = Swtpm::start()?;
    let mut tpm = Tpm::open(&swtpm.tcti())?;
    let dir = tempfile::tempdir()?;

    // A boot: firmware events into every attested PCR but 15, PID 1's measurements into 15.
    let mut builder = EventLogBuilder::new();
    for pcr in [0u32, 1, 2, 3, 4, 5, 6, 7, 9, 11] {
        builder = builder.measure(pcr, EV_EFI_ACTION, format!("firmware event for PCR {pcr}").as_bytes());
    }
    let firmware = builder.build();
    for e in &sovereign_measured_boot::EventLog::parse(&firmware)?.events {
        tpm.pcr_extend(e.pcr as u8, &e.sha256().ok_or("no sha256")?)?;
    }
    let release = SigningKey::from_bytes(&[0x11; 32]);
    let (manifest_bytes, manifest_signature) = manifest(&release);
    let mut log = MeasurementLog::new();
    tpm.measure(
        Measurement {
            pcr: PROJECT_PCR,
            kind: MeasurementKind::Manifest,
            digest: Sha256Digest::of(&manifest_bytes),
            description: "manifest".into(),
        },
        &mut log,
    )?;
    let booted = tpm.pcr_read(&PcrSelection::new(sovereign_protocol::ATTESTED_PCRS)?)?;
    tpm.measure(Measurement::separator(), &mut log)?;
    let (firmware_path, log_path) = (dir.path().join("firmware.log"), dir.path().join("measurement.log"));
    std::fs::write(&firmware_path, &firmware)?;
    std::fs::write(&log_path, log.to_bytes())?;

    // The operator's trust roots for this boot.
    let (mut release_pcrs, mut platform_pcrs) = (PcrValues::new(), PcrValues::new());
    for (&pcr, value) in &booted.0 {
        if [4, 9, 11, PROJECT_PCR].contains(&pcr) { &mut release_pcrs } else { &mut platform_pcrs }.set(pcr, *value);
    }
    let reference = serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "uki_sha256": "00".repeat(32),
        "manifest_sha256": Sha256Digest::of(&manifest_bytes).to_hex(),
        "pcrs": release_pcrs,
    }))?;
    let trust = Trust {
        release_key: release.verifying_key(),
        reference_signature: ed25519_dalek::Signer::sign(&release, &reference).to_bytes().to_vec(),
        reference_values: reference,
        platform_profile: serde_json::to_vec(&serde_json::json!({ "pcrs": platform_pcrs }))?,
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(swtpm.ca_certificates_pem()?.as_bytes())?,
        node_identity: None,
    };
    drop(tpm);

    let operator = SigningKey::from_bytes(&[0x22; 32]);
    let new_node = || Node {
        identity: SigningKey::from_bytes(&[0x33; 32]),
        version: 1,
        manifest: manifest_bytes.clone(),
        manifest_signature: manifest_signature.clone(),
        attestor: std::sync::Mutex::new(Attestor::new(
            sovereign_measured_boot::tpm::SharedTpm::new(&swtpm.tcti()),
            &firmware_path,
            &log_path,
        )),
        refused: None,
        observed: Default::default(),
    };
    let node = new_node();
    let node_id = node.identity.verifying_key().to_bytes();
    let mut gate = Gate::new(node_id, vec![operator.verifying_key()], u64::MAX / 4);
    let mut counter = 0u64;
    node.attestor.lock().map_err(|_| "poisoned")?.warm_up()?;
    for _ in 0..iterations(20) {
        round_trip(&node, &mut gate, &operator, &trust, &mut counter);
    }
    let time = |n: usize, f: &mut dyn FnMut()| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect()
    };
    let fast = time(iterations(200), &mut || round_trip(&node, &mut gate, &operator, &trust, &mut counter));

    // The credential activation `sovereign attest` adds once per exchange (second round trip).
    let evidence_ek = {
        let r = SignedRequest::sign(
            Request::Attest { nonce: [9; 32] },
            node_id,
            vec![],
            &operator,
            [9; 16],
            1_800_000_000_000,
        );
        match answer(&node, &mut gate, &r, 1_800_000_000_000).response {
            Response::Evidence(e) => e,
            other => return Err(format!("attest refused: {other:?}").into()),
        }
    };
    let ek = sovereign_measured_boot::structures::RsaStoragePublic::parse(&evidence_ek.ek_public)?;
    let ak_name = sovereign_measured_boot::structures::EccPublic::parse(&evidence_ek.ak_public)?.name();
    let activation = time(iterations(50), &mut || {
        counter += 1;
        let cred = sovereign_measured_boot::credential::make_credential(&ek, &ak_name, &[5; 32], &mut rand_core::OsRng)
            .expect("credential");
        let request = SignedRequest::sign(
            Request::ActivateCredential {
                credential_blob: cred.credential_blob,
                encrypted_secret: cred.encrypted_secret,
            },
            node_id,
            vec![],
            &operator,
            Sha256Digest::of(&counter.to_be_bytes()).0[..16].try_into().expect("16"),
            1_800_000_000_000,
        );
        match answer(&node, &mut gate, &request, 1_800_000_000_000).response {
            Response::Credential(secret) => assert_eq!(secret, vec![5; 32]),
            other => panic!("activation refused: {other:?}"),
        }
    });

    // Naive baseline: no persistent AK — open the TPM and create EK + AK for every request.
    // (The persistent node goes first: swtpm without a resource manager has 3 object slots.)
    drop(node);
    let naive = time(iterations(20), &mut || {
        let fresh = new_node();
        round_trip(&fresh, &mut gate, &operator, &trust, &mut counter);
    });

    println!("| path | n | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "{}",
        row(
            "attest round trip: signed request → gate → TPM quote (11 PCRs) → signed evidence → full verification",
            &fast
        )
    );
    println!(
        "{}",
        row(
            "credential activation (MakeCredential + TPM ActivateCredential), once per `sovereign attest`",
            &activation
        )
    );
    println!("{}", row("baseline: same round trip creating EK + AK per request", &naive));
    Ok(())
}
