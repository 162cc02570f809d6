//! The offline check of what a compliance bundle says about the machine that wrote it: the TPM
//! evidence (`attestation/evidence.json`) and the release's signed reference values it is
//! judged against (`reference-values/`). The quote's nonce must bind the checkpoint whose root
//! the bundle's own entries recompute to; the quote must come from an AK that the pinned
//! attestation CA certified — after credential activation proved it resident beside this EK —
//! for this node, valid when the log's last entry was written (credential activation itself is
//! interactive; the certificate is its offline proof); and the evidence must verify against the
//! release's reference values the bundle carries, signed by the release key the auditor pins
//! (and equal to the ones the auditor pins, if any).
//!
//! Must never: pass evidence or reference values it did not check, judge a quote against
//! reference values the release key did not sign, or take the AK from the evidence on trust.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::merkle::root_from_leaves;
use sovereign_audit::note::{Checkpoint, SignedNote};
use sovereign_audit::verify::{Report, fail};
use sovereign_protocol::Evidence;
use sovereign_protocol::akcert::AkCertificate;
use sovereign_protocol::pipeline::bundle_attestation_nonce;
use x509_cert::Certificate;

/// The bundle's reference values, as its `reference-values/` section names them.
pub const REFERENCE_FILE: &str = "reference-values/reference-values.json";
/// Their detached signature by the release key.
pub const REFERENCE_SIGNATURE_FILE: &str = "reference-values/reference-values.sig";

/// What the auditor trusts about the machine: the release key (signs the reference values),
/// optionally the reference values themselves, the firmware platform profile and the TPM
/// manufacturers' EK roots.
#[derive(Clone)]
pub struct BundleTrust {
    /// The release public key.
    pub release_key: VerifyingKey,
    /// `reference-values.json` the auditor pins: the bundle's must be byte-for-byte these.
    /// `None`: the bundle's own, if the release key signed them.
    pub pinned_reference: Option<Vec<u8>>,
    /// The firmware platform profile (`firmware/qemu-ovmf.json` shape).
    pub platform_profile: Vec<u8>,
    /// The EK trust store.
    pub ek_roots: Vec<Certificate>,
}

impl BundleTrust {
    /// The trust of a live attestation, pinning its reference values.
    pub fn pinning(trust: &crate::attest::Trust) -> Self {
        BundleTrust {
            release_key: trust.release_key,
            pinned_reference: Some(trust.reference_values.clone()),
            platform_profile: trust.platform_profile.clone(),
            ek_roots: trust.ek_roots.clone(),
        }
    }
}

/// The checker of a bundle's `attestation/` and `reference-values/` sections.
pub struct AttestationChecker {
    /// The attestation trust roots; `None` fails any bundle that carries attestation or
    /// reference values (nothing here can check them).
    pub trust: Option<BundleTrust>,
    /// The bundle's node identity (the quote's qualifying data binds it).
    pub identity: Option<VerifyingKey>,
    /// The attestation CA whose AK certificates are trusted.
    pub ak_ca: Option<VerifyingKey>,
    /// Whether the auditor asked for attestation (gave any attestation root): a bundle with
    /// none then fails.
    pub required: bool,
}

/// What `attestation/evidence.json` holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BundledEvidence {
    /// The checkpoint note the nonce binds.
    pub checkpoint: String,
    /// The evidence.
    pub evidence: Evidence,
    /// The certificate of the AK that made the quote (absent: the AK is uncertified).
    #[serde(default)]
    pub ak_certificate: Option<AkCertificate>,
}

/// The reference values a bundle carries, checked: (values, signature, one-line detail).
type CheckedReference = (Vec<u8>, Vec<u8>, String);

impl AttestationChecker {
    /// The `reference-values` check: both files present and nothing else in the section,
    /// signed by the release key, equal to the pinned values if the auditor pinned some.
    fn reference(&self, files: &BTreeMap<String, Vec<u8>>) -> Result<CheckedReference, (String, String)> {
        let on = |place: &str, why: String| (place.to_string(), why);
        if let Some(stray) = files
            .keys()
            .find(|n| n.starts_with("reference-values/") && *n != REFERENCE_FILE && *n != REFERENCE_SIGNATURE_FILE)
        {
            return Err(on(stray, "not a file of this section (reference-values.json and .sig only)".into()));
        }
        let (Some(values), Some(signature)) = (files.get(REFERENCE_FILE), files.get(REFERENCE_SIGNATURE_FILE)) else {
            return Err(on(
                "reference-values/",
                "the bundle carries no signed release reference values (reference-values.json and .sig): its \
                 evidence cannot be tied to a release"
                    .into(),
            ));
        };
        let trust = self.trust.as_ref().ok_or_else(|| {
            on(REFERENCE_FILE, "no release key given (--release-key): the reference values cannot be checked".into())
        })?;
        let signature_ok = ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|s| trust.release_key.verify_strict(values, &s).is_ok());
        if !signature_ok {
            return Err(on(
                REFERENCE_SIGNATURE_FILE,
                "the reference values are not signed by the pinned release key".into(),
            ));
        }
        let version = serde_json::from_slice::<serde_json::Value>(values)
            .ok()
            .and_then(|v| v["version"].as_u64())
            .ok_or_else(|| on(REFERENCE_FILE, "signed, but not reference values (no version)".into()))?;
        let detail = match &trust.pinned_reference {
            Some(pinned) if pinned != values => {
                return Err(on(
                    REFERENCE_FILE,
                    format!(
                        "release v{version}'s reference values, not the ones the auditor pinned (--reference): \
                         another release"
                    ),
                ));
            }
            Some(_) => {
                format!("release v{version}'s reference values, signed by the release key, equal to the pinned ones")
            }
            None => format!("release v{version}'s reference values, signed by the pinned release key"),
        };
        Ok((values.clone(), signature.clone(), detail))
    }

    /// One `attestation/evidence.json`, judged against the checked reference values.
    fn evidence(
        &self,
        report: &Report,
        bytes: &[u8],
        reference: &Result<CheckedReference, (String, String)>,
        written_at: u64,
    ) -> Result<String, String> {
        let bundled: BundledEvidence =
            serde_json::from_slice(bytes).map_err(|e| format!("not attestation evidence: {e}"))?;
        let note = SignedNote::parse(&bundled.checkpoint).map_err(|e| format!("checkpoint: {e}"))?;
        let cp = Checkpoint::parse_body(&note.body).map_err(|e| format!("checkpoint: {e}"))?;
        if cp.size != report.leaf_hashes.len() as u64 || root_from_leaves(&report.leaf_hashes) != cp.root {
            return Err(format!(
                "the attested checkpoint (size {}) is not the bundle's log ({} entries)",
                cp.size,
                report.leaf_hashes.len()
            ));
        }
        let trust =
            self.trust.as_ref().ok_or("no attestation trust roots given (--release-key, --platform, --ek-ca)")?;
        let identity = self.identity.ok_or("no node identity pinned (--node-key)")?;
        let ak_ca = self.ak_ca.ok_or("no attestation CA pinned (--ak-ca): the AK cannot be trusted")?;
        let (reference_values, reference_signature, _) =
            reference.as_ref().map_err(|(_, why)| format!("not judged: no checked reference values ({why})"))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let live_trust = crate::attest::Trust {
            release_key: trust.release_key,
            reference_values: reference_values.clone(),
            reference_signature: reference_signature.clone(),
            platform_profile: trust.platform_profile.clone(),
            ek_roots: trust.ek_roots.clone(),
            node_identity: Some(identity),
        };
        let passed = sovereign_verifier::verify_certified(
            &bundle_attestation_nonce(&bundled.checkpoint),
            &bundled.evidence,
            bundled.ak_certificate.as_ref(),
            &ak_ca,
            &live_trust,
            written_at,
            now,
        )?;
        let serial = bundled.ak_certificate.as_ref().map(|c| c.serial.clone()).unwrap_or_default();
        Ok(format!(
            "TPM quote binds checkpoint {} (root recomputed from the bundle's entries) and node {}; {passed} checks \
             passed (quote, EK chain, event-log replay, the bundle's reference values); the AK is certified by the \
             pinned attestation CA for this node and EK (serial {})",
            cp.size,
            &hex::encode(identity.as_bytes())[..16],
            serial
        ))
    }
}

impl SectionChecker for AttestationChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec!["attestation", "reference-values"]
    }

    fn check(
        &self,
        report: &mut Report,
        entries: &[(String, sovereign_audit::Entry)],
        files: &BTreeMap<String, Vec<u8>>,
    ) {
        let evidence: Vec<(&String, &Vec<u8>)> = files.iter().filter(|(n, _)| n.starts_with("attestation/")).collect();
        let has_reference = files.keys().any(|n| n.starts_with("reference-values/"));
        let reference = self.reference(files);
        // Reference values are checked whenever there is something to check them for (or
        // with): evidence, reference values, or an auditor who asked for attestation.
        if !evidence.is_empty() || has_reference || self.required {
            match &reference {
                Ok((_, _, detail)) => report.add("reference-values", 1, vec![], detail.clone()),
                Err((place, why)) => report.add(
                    "reference-values",
                    1,
                    vec![fail(place.as_str(), why.clone())],
                    "release reference values",
                ),
            }
        }
        // The certificate must be valid when the log was last written to.
        let written_at = entries.iter().map(|(_, e)| e.timestamp_ms / 1000).max().unwrap_or(0);
        for (name, bytes) in &evidence {
            match self.evidence(report, bytes, &reference, written_at) {
                Ok(detail) => report.add("attestation", 1, vec![], detail),
                Err(why) => report.add("attestation", 1, vec![fail(name.as_str(), why)], "attestation evidence"),
            }
        }
        if evidence.is_empty() {
            let failures = if self.required {
                vec![fail(
                    "attestation/",
                    "attestation was asked for (an attestation root was pinned) but the bundle carries none",
                )]
            } else {
                vec![]
            };
            report.add("attestation", 0, failures, "the bundle carries no attestation evidence");
        }
    }
}
