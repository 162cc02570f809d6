//! Fixed keys and a genuine release for the fuzz target (`fuzz/fuzz_targets/update_bundle.rs`),
//! the tests and the benchmark: any bytes are verified against a fixed trust whose genuine
//! bundle seeds the fuzzer, so mutations reach every check. The property: no input panics, and
//! nothing but a bundle those keys signed verifies. Nothing here is a production key.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

use crate::{BundleInput, KeySet, PLATFORM_QEMU_X86_64, Trust, build, sign_keyset, verify};

/// A fixed test key.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The fixed update root.
pub fn root() -> SigningKey {
    key(0x70)
}

/// The fixed release key (manifests, reference values).
pub fn release_key() -> SigningKey {
    key(0x71)
}

/// Key set `serial`: release signers `key(1..=3)`, threshold 2, `key(4)` revoked.
pub fn keyset(serial: u64) -> KeySet {
    KeySet {
        serial,
        threshold: 2,
        keys: (1..=3).map(|n| hex::encode(key(n).verifying_key().as_bytes())).collect(),
        revoked: vec![hex::encode(key(4).verifying_key().as_bytes())],
    }
}

/// The fixed trust: root, release key, floor 1, key set 1.
pub fn trust() -> Trust {
    Trust {
        root: root().verifying_key(),
        root_serial: 0,
        keyset_serial: 1,
        floor: 1,
        platform: PLATFORM_QEMU_X86_64.into(),
        release_key: release_key().verifying_key(),
    }
}

/// A release's payload with every signature genuine: version `v`, this UKI.
pub fn payload(v: u64, uki: Vec<u8>) -> BTreeMap<String, Vec<u8>> {
    use sovereign_boot_contract::manifest::{FORMAT, FileEntry, Manifest};
    let manifest = Manifest {
        format: FORMAT.into(),
        version: v,
        kernel_release: "6.1.0".into(),
        cmdline: "console=ttyS0".into(),
        runtime: "/usr/bin/sovereign-runtime".into(),
        runtime_config: "/etc/sovereign/runtime.json".into(),
        runtime_config_sha256: "00".repeat(32),
        modules: vec![],
        files: vec![
            FileEntry::regular("/etc/sovereign/runtime.json", 0o644, b"{}"),
            FileEntry::regular("/init", 0o755, b"pid1"),
            FileEntry::regular("/usr/bin/sovereign-runtime", 0o755, b"runtime"),
        ],
    };
    let (manifest, manifest_sig) = manifest.sign(&release_key());
    let reference = serde_json::json!({
        "version": v,
        "uki_sha256": hex::encode(Sha256::digest(&uki)),
        "manifest_sha256": hex::encode(Sha256::digest(&manifest)),
        "pcrs": {},
    })
    .to_string()
    .into_bytes();
    let reference_sig = release_key().sign(&reference).to_bytes().to_vec();
    let mut pcrs = sovereign_measured_boot::PcrValues::new();
    pcrs.set(15, sovereign_measured_boot::Sha256Digest::of(&manifest));
    let policy = p256::ecdsa::SigningKey::from_slice(&[5; 32])
        .ok()
        .and_then(|k| sovereign_measured_boot::SignedPcrPolicy::sign(pcrs, v, &k).ok())
        .map(|p| p.to_json().into_bytes())
        .unwrap_or_default();
    BTreeMap::from([
        ("uki.efi".to_string(), uki),
        ("manifest.json".to_string(), manifest),
        ("manifest.sig".to_string(), manifest_sig),
        ("reference-values.json".to_string(), reference),
        ("reference-values.sig".to_string(), reference_sig),
        ("pcr-policy.json".to_string(), policy),
    ])
}

/// A bundle of release `v` (this UKI) under key set 1, signed by `signers`.
pub fn genuine_bundle(v: u64, uki: Vec<u8>, signers: &[SigningKey]) -> Vec<u8> {
    let payload = payload(v, uki);
    let (ks, ks_sig) = sign_keyset(&keyset(1), &root());
    let input = BundleInput {
        release_version: v,
        platform: PLATFORM_QEMU_X86_64,
        payload: &payload,
        keyset: (&ks, &ks_sig),
        rotation: None,
    };
    build(&input, signers).unwrap_or_default()
}

/// Verifies `data` as an update bundle.
pub fn bundle(data: &[u8]) {
    if let Ok(verified) = verify(data, &trust()) {
        // Only a bundle signed by two of the fixed release keys can get here.
        assert!(verified.signers.len() >= 2, "a bundle verified with fewer signers than the threshold");
    }
}
