//! The verifier on a real appliance's evidence (`cargo bench -p sovereign-verifier --bench
//! verify`; one iteration per row under `cargo test --benches`): what a mesh node spends judging
//! a peer's answer to its challenge (`verify_certified`: the AK certificate, the release's signed
//! reference values and manifest, the platform profile, the EK certificate chain, the quote and
//! the replay of both event logs), with the trust roots parsed once as the runtime holds them,
//! beside the naive baseline that parses them again for every peer.
//!
//! The fixture (`benches/fixtures/`) is one appliance's evidence as `tests/tests/mesh.rs` records
//! it with `SOVEREIGN_RECORD_EVIDENCE=DIR`: QEMU + OVMF with Secure Boot, swtpm, the mesh image.
//! Its AK certificate is issued here by the development attestation CA.

#![allow(clippy::unwrap_used)] // benchmark code

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use sovereign_bench::{TABLE_HEADER, time};
use sovereign_protocol::Evidence;
use sovereign_protocol::akcert::{AkCertificate, AkFacts};
use sovereign_verifier::{Trust, verify_certified};

fn key(hex_key: &str) -> VerifyingKey {
    VerifyingKey::from_bytes(&<[u8; 32]>::try_from(hex::decode(hex_key).unwrap()).unwrap()).unwrap()
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let record: serde_json::Value = serde_json::from_slice(&read("evidence.json")).unwrap();
    let evidence: Evidence = serde_json::from_value(record["evidence"].clone()).unwrap();
    let nonce: [u8; 32] = hex::decode(record["nonce"].as_str().unwrap()).unwrap().try_into().unwrap();
    let identity = key(record["identity"].as_str().unwrap());
    let release = key(record["release_key"].as_str().unwrap());
    let ca = SigningKey::from_bytes(&Sha256::digest(b"sovereign development attestation CA").into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let facts = AkFacts {
        ak_public: &evidence.ak_public,
        ek_public: &evidence.ek_public,
        ek_certificate: evidence.ek_certificate.as_deref().unwrap(),
        node_identity: identity.as_bytes(),
    };
    let certificate = AkCertificate::issue(&ca, &facts, [1; 16], now - 60, now + 3600);
    let trust_from_files = || Trust {
        release_key: release,
        reference_values: read("reference-values.json"),
        reference_signature: read("reference-values.sig"),
        platform_profile: read("platform.json"),
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(&read("ek-ca.pem")).unwrap(),
        node_identity: Some(identity),
    };
    let trust = trust_from_files();
    let checks = verify_certified(&nonce, &evidence, Some(&certificate), &ca.verifying_key(), &trust, now, now)
        .unwrap_or_else(|e| panic!("the recorded evidence does not verify: {e}"));
    // The verifier fails it for another nonce (a replayed answer) — the benchmark measures a
    // check that can fail.
    let replayed = verify_certified(&[0; 32], &evidence, Some(&certificate), &ca.verifying_key(), &trust, now, now);
    assert!(replayed.unwrap_err().contains("qualifying"));

    let rows = [
        time(&format!("verify_certified on a real appliance's evidence ({checks} checks)"), 200, || {
            verify_certified(&nonce, &evidence, Some(&certificate), &ca.verifying_key(), &trust, now, now).unwrap()
        }),
        time("baseline: parse the trust roots again, then verify_certified", 200, || {
            let trust = trust_from_files();
            verify_certified(&nonce, &evidence, Some(&certificate), &ca.verifying_key(), &trust, now, now).unwrap()
        }),
    ];
    println!("{TABLE_HEADER}");
    for r in &rows {
        println!("{}", r.row());
    }
}
