//! A compliance bundle's attestation as a hostile auditor reads it, each forgery failing by
//! name: no attestation when the auditor asked for it; a quote with no AK certificate; a quote
//! made by a software key under a certificate stolen from a real node; a certificate from a CA
//! the auditor does not pin; and no CA pinned at all. These are the AK-certificate checks, which
//! run before any TPM structure is parsed, so the evidence here is synthetic bytes standing for
//! the AK and EK public areas; the path with a real TPM's quote under a certificate issued after
//! credential activation is `tests/tests/pipeline.rs` (swtpm, in QEMU), and the certificate's
//! fields are unit-tested in `runtime/protocol/src/akcert.rs`.

#![allow(clippy::unwrap_used)] // test code

use ed25519_dalek::{Signer as _, SigningKey};
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};
use sovereign_cli::bundle_attestation::{AttestationChecker, BundleTrust, BundledEvidence};
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

/// A bundle of a small log, signed by the node, carrying `section_files` and, if given,
/// `attestation` (evidence and certificate) bound to its checkpoint.
fn bundle(
    attestation: Option<(Evidence, Option<AkCertificate>)>,
    mut section_files: Vec<(String, String, Vec<u8>)>,
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::create(&dir.path().join("audit.log"), "test/attested", &DATA).unwrap();
    log.append_entry(Entry::new(EntryKind::Artifact, 1_800_000_000_000, Severity::Info, vec![], b"x".to_vec()))
        .unwrap();
    let note = log.checkpoint(&node()).unwrap();
    log.store_checkpoint(&note).unwrap();
    if let Some((evidence, ak_certificate)) = attestation {
        let bundled = BundledEvidence { checkpoint: note.to_text(), evidence, ak_certificate };
        section_files.push(("attestation".into(), "evidence.json".into(), serde_json::to_vec(&bundled).unwrap()));
    }
    export_bundle(&log, &DATA, &node(), &ExportOptions { section_files, ..Default::default() }).unwrap()
}

fn release() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

/// Trust roots that pass nothing by themselves: every case below must fail before the quote.
fn trust(pinned_reference: Option<Vec<u8>>) -> BundleTrust {
    BundleTrust {
        release_key: release().verifying_key(),
        pinned_reference,
        platform_profile: b"{}".to_vec(),
        ek_roots: vec![],
    }
}

/// `bundle` checked with `trust` and `ak_ca` pinned and attestation asked for: the failures of
/// the check `name`, one line.
fn failures(bundle: &[u8], trust: Option<BundleTrust>, ak_ca: Option<&SigningKey>, name: &str) -> String {
    let checker = AttestationChecker {
        trust,
        identity: Some(node().verifying_key()),
        ak_ca: ak_ca.map(SigningKey::verifying_key),
        required: true,
    };
    let report = verify_bundle_with(
        bundle,
        &TrustedKeys { node: Some(node().verifying_key()), witnesses: vec![] },
        Some(&checker),
    );
    let check = report.check(name).unwrap_or_else(|| panic!("no {name} check: {}", report.render("bundle")));
    check.failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect::<Vec<_>>().join("; ")
}

/// The `attestation` check's failures for a bundle with `attestation` (and the release's signed
/// reference values), `ak_ca` pinned; never a pass.
fn attestation_failures(attestation: Option<(Evidence, Option<AkCertificate>)>, ak_ca: Option<&SigningKey>) -> String {
    let why = failures(&bundle(attestation, signed_reference(VALUES)), Some(trust(None)), ak_ca, "attestation");
    assert!(!why.is_empty());
    why
}

const VALUES: &[u8] = br#"{"version":4,"manifest_sha256":"ab","pcrs":{}}"#;

/// The `reference-values/` section with `values` signed by the release key.
fn signed_reference(values: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    vec![
        ("reference-values".into(), "reference-values.json".into(), values.to_vec()),
        ("reference-values".into(), "reference-values.sig".into(), release().sign(values).to_bytes().to_vec()),
    ]
}

#[test]
fn reference_values_missing_unsigned_foreign_unpinnable_or_padded_fail_by_name() {
    let evidence = || Some((real_evidence(), Some(real_certificate(&ca()))));
    let reference = |b: &[u8], pinned: Option<&[u8]>| {
        failures(b, Some(trust(pinned.map(<[u8]>::to_vec))), Some(&ca()), "reference-values")
    };
    // Signed by the release key: passes, pinned or not; the quote is then judged by them.
    let good = bundle(evidence(), signed_reference(VALUES));
    assert_eq!(reference(&good, None), "");
    assert_eq!(reference(&good, Some(VALUES)), "");
    // Missing: the evidence cannot be tied to a release, and the quote is not judged.
    let missing = bundle(evidence(), vec![]);
    assert!(
        reference(&missing, None)
            .starts_with("reference-values/: the bundle carries no signed release reference values")
    );
    assert!(
        failures(&missing, Some(trust(None)), Some(&ca()), "attestation")
            .contains("not judged: no checked reference values")
    );
    // Signed by another key (the node's own, say).
    let mut forged = signed_reference(VALUES);
    forged[1].2 = node().sign(VALUES).to_bytes().to_vec();
    assert_eq!(
        reference(&bundle(evidence(), forged), None),
        "reference-values/reference-values.sig: the reference values are not signed by the pinned release key"
    );
    // Another release's (signed) values where the auditor pinned these.
    let other = br#"{"version":5,"manifest_sha256":"cd","pcrs":{}}"#;
    assert!(
        reference(&bundle(evidence(), signed_reference(other)), Some(VALUES))
            .contains("release v5's reference values, not the ones the auditor pinned")
    );
    // No release key given: nothing here can check them, so they FAIL rather than pass unread.
    assert!(failures(&good, None, Some(&ca()), "reference-values").contains("no release key given (--release-key)"));
    // A file that is not part of the section.
    let mut padded = signed_reference(VALUES);
    padded.push(("reference-values".into(), "extra.json".into(), b"{}".to_vec()));
    assert_eq!(
        reference(&bundle(evidence(), padded), None),
        "reference-values/extra.json: not a file of this section (reference-values.json and .sig only)"
    );
    // Signed, but not reference values.
    assert_eq!(
        reference(&bundle(evidence(), signed_reference(b"[]")), None),
        "reference-values/reference-values.json: signed, but not reference values (no version)"
    );
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
