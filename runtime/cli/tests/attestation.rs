//! A compliance bundle's attestation as a hostile auditor reads it, each forgery failing by
//! name: no attestation when the auditor asked for it; a quote with no AK certificate; a quote
//! made by a software key under a certificate stolen from a real node; a certificate from a CA
//! the auditor does not pin; and no CA pinned at all. These are the AK-certificate checks, which
//! run before any TPM structure is parsed, so the evidence here is synthetic bytes standing for
//! the AK and EK public areas; the path with a real TPM's quote under a certificate issued after
//! credential activation is `tests/tests/pipeline.rs` (swtpm, in QEMU), and the certificate's
//! fields are unit-tested in `runtime/protocol/src/akcert.rs`.

#![allow(clippy::unwrap_used)] // test code

use ed25519_dalek::SigningKey;
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};
use sovereign_cli::pipeline::{AttestationChecker, BundledEvidence};
use sovereign_protocol::Evidence;
use sovereign_protocol::akcert::{AkCertificate, AkFacts};

const DATA: DataKey = DataKey([3; 32]);

fn node() -> SigningKey {
    SigningKey::from_bytes(&[0x50; 32])
}

fn ca() -> SigningKey {
    SigningKey::from_bytes(&[0xca; 32])
}

/// What the real node's TPM showed its operator: its AK and EK, and the EK certificate.
fn real_evidence() -> Evidence {
    Evidence {
        attest: vec![1; 64],
        signature: vec![2; 72],
        ak_public: b"the real TPM-resident AK public area".to_vec(),
        ek_public: b"the real EK public area".to_vec(),
        ek_certificate: Some(b"the real EK certificate".to_vec()),
        pcrs: vec![],
        firmware_log: vec![],
        measurement_log: vec![],
        manifest: vec![],
        manifest_signature: vec![],
    }
}

/// The certificate the attestation CA issued for the real node's AK.
fn real_certificate(issuer: &SigningKey) -> AkCertificate {
    let ev = real_evidence();
    let identity = node().verifying_key();
    let facts = AkFacts {
        ak_public: &ev.ak_public,
        ek_public: &ev.ek_public,
        ek_certificate: ev.ek_certificate.as_deref().unwrap(),
        node_identity: identity.as_bytes(),
    };
    AkCertificate::issue(issuer, &facts, [7; 16], 1_700_000_000, 1_900_000_000)
}

/// A bundle of a small log, with `attestation` (evidence and certificate) if given, checked
/// with `ak_ca` pinned and attestation asked for; the `attestation` check's failures.
fn attestation_failures(attestation: Option<(Evidence, Option<AkCertificate>)>, ak_ca: Option<&SigningKey>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("audit.log"), "test/attested", &DATA).unwrap();
    log.append_entry(Entry::new(EntryKind::Artifact, 1_800_000_000_000, Severity::Info, vec![], b"x".to_vec()))
        .unwrap();
    let note = log.checkpoint(&node()).unwrap();
    log.store_checkpoint(&note).unwrap();
    let section_files = attestation
        .map(|(evidence, ak_certificate)| {
            let bundled = BundledEvidence { checkpoint: note.to_text(), evidence, ak_certificate };
            vec![("attestation".into(), "evidence.json".into(), serde_json::to_vec(&bundled).unwrap())]
        })
        .unwrap_or_default();
    let bundle = export_bundle(&log, &DATA, &node(), &ExportOptions { section_files, ..Default::default() }).unwrap();
    // Trust roots that pass nothing by themselves: every case below must fail before the quote.
    let trust = sovereign_cli::attest::Trust {
        release_key: SigningKey::from_bytes(&[1; 32]).verifying_key(),
        reference_values: b"{}".to_vec(),
        reference_signature: vec![],
        platform_profile: b"{}".to_vec(),
        ek_roots: vec![],
        node_identity: Some(node().verifying_key()),
    };
    let checker = AttestationChecker {
        trust: Some(trust),
        identity: Some(node().verifying_key()),
        ak_ca: ak_ca.map(SigningKey::verifying_key),
        required: true,
    };
    let report = verify_bundle_with(
        &bundle,
        &TrustedKeys { node: Some(node().verifying_key()), witnesses: vec![] },
        Some(&checker),
    );
    assert!(!report.passed());
    let check = report.check("attestation").unwrap();
    check.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect::<Vec<_>>().join("; ")
}

#[test]
fn a_bundle_without_attestation_fails_when_the_auditor_asked_for_it() {
    let why = attestation_failures(None, Some(&ca()));
    assert_eq!(
        why,
        "attestation/: attestation was asked for (an attestation root was pinned) but the bundle carries none"
    );
}

#[test]
fn a_quote_without_an_ak_certificate_fails() {
    let why = attestation_failures(Some((real_evidence(), None)), Some(&ca()));
    assert!(why.contains("ak.certified: the quote's AK is not certified"), "{why}");
}

#[test]
fn a_software_key_quote_under_a_stolen_certificate_fails() {
    // The node key holder quotes with a key of its own and bundles the real node's certificate.
    let mut forged = real_evidence();
    forged.ak_public = b"a software P-256 key the node key holder made".to_vec();
    let why = attestation_failures(Some((forged, Some(real_certificate(&ca())))), Some(&ca()));
    assert!(why.contains("ak.certified: the quote was made by an AK this certificate does not certify"), "{why}");
}

#[test]
fn a_certificate_from_an_unpinned_ca_or_no_pinned_ca_fails() {
    let self_made = SigningKey::from_bytes(&[0x66; 32]);
    let why = attestation_failures(Some((real_evidence(), Some(real_certificate(&self_made)))), Some(&ca()));
    assert!(why.contains("not the pinned attestation CA"), "{why}");
    let why = attestation_failures(Some((real_evidence(), Some(real_certificate(&ca())))), None);
    assert!(why.contains("no attestation CA pinned (--ak-ca)"), "{why}");
}

#[test]
fn the_real_certificate_gets_past_the_ak_check_to_the_quote() {
    // With the genuine certificate the AK check passes and the synthetic quote is what fails:
    // the certificate check is not a blanket refusal.
    let why = attestation_failures(Some((real_evidence(), Some(real_certificate(&ca())))), Some(&ca()));
    assert!(!why.contains("ak.certified") && !why.is_empty(), "{why}");
}
