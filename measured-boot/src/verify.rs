//! The pure-Rust quote verifier: checks TPM evidence completely, offline, with no TPM and no C
//! library, and reports every check — never only the first failure.
//!
//! Fail closed: a check that cannot be evaluated (because the evidence did not decode, or a
//! value is missing) is reported as failed with the reason, and [`Report::passed`] is true only
//! when every check ran and passed.

use std::collections::BTreeSet;

use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _, LineEnding};
use serde::{Deserialize, Serialize};

use crate::eventlog::EventLog;
use crate::measurement_log::MeasurementLog;
use crate::pcr::{PcrSelection, PcrValues, Sha256Digest, TPM_ALG_SHA256, reset_value};
use crate::structures::{EccPublic, EcdsaSignature, Quote, object_attributes as attr, object_name};

/// The evidence a TPM produces for one quote, in standard TPM encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteEvidence {
    /// Marshalled `TPMS_ATTEST`, exactly the bytes the TPM signed.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the attestation key.
    pub ak_public: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the AK's parent, the endorsement key (whose certificate
    /// the operator checks separately).
    pub ek_public: Vec<u8>,
    /// The claimed values of the quoted PCRs (proved by the quote's PCR digest).
    pub pcr_values: PcrValues,
}

/// What the verifier expects; everything here comes from the verifier's own trust roots.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The attestation key the verifier pins (from its PEM/DER).
    pub ak: &'a p256::ecdsa::VerifyingKey,
    /// The qualifying data the verifier asked for (nonce and bindings).
    pub qualifying_data: &'a [u8],
    /// The PCR selection the verifier asked for.
    pub selection: &'a PcrSelection,
    /// Reference values: one for every selected PCR.
    pub reference: &'a PcrValues,
    /// The firmware's TCG event log, if the verifier wants it replayed.
    pub firmware_log: Option<&'a [u8]>,
    /// PID 1's measurement log, replayed on top of the firmware log.
    pub measurement_log: Option<&'a [u8]>,
}

/// One PCR whose quoted value differs from what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrMismatch {
    /// PCR index.
    pub pcr: u8,
    /// Expected value (reference or replayed); `None` if there is none.
    pub expected: Option<Sha256Digest>,
    /// Quoted value; `None` if the evidence lacks it.
    pub quoted: Option<Sha256Digest>,
}

/// One named check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier, e.g. `quote.signature`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked or why it failed.
    pub detail: String,
}

/// The outcome of verifying one quote.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Every PCR that did not match its reference value.
    pub reference_mismatches: Vec<PcrMismatch>,
    /// Every PCR whose event-log replay did not match the quoted value.
    pub replay_mismatches: Vec<PcrMismatch>,
}

impl Report {
    /// True only when at least one check ran and every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Whether the named check passed.
    pub fn check_passed(&self, name: &str) -> Option<bool> {
        self.checks.iter().find(|c| c.name == name).map(|c| c.passed)
    }

    fn record(&mut self, name: &str, result: Result<String, String>) -> bool {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check { name: name.into(), passed, detail });
        passed
    }
}

/// Names of every check, in the order they are reported.
pub const CHECKS: [&str; 11] = [
    "evidence.attest",
    "evidence.signature",
    "evidence.ak_public",
    "ak.pinned",
    "ak.restricted_signing_key",
    "quote.signature",
    "quote.signer_name",
    "quote.qualifying_data",
    "quote.pcr_selection",
    "quote.pcr_digest",
    "pcrs.reference_values",
];
/// Name of the event-log check (present when a log was given).
pub const CHECK_EVENT_LOG: &str = "pcrs.event_log_replay";

/// Verifies `evidence` against `expect`. Never panics; reports every check.
pub fn verify_quote(evidence: &QuoteEvidence, expect: &Expectations<'_>) -> Report {
    let mut report = Report::default();
    let quote = Quote::parse(&evidence.attest).map_err(|e| e.to_string());
    report.record(
        CHECKS[0],
        quote
            .as_ref()
            .map(|q| format!("TPM-generated quote, {} PCRs", q.pcr_selection.indices().len()))
            .map_err(Clone::clone),
    );
    let signature = EcdsaSignature::parse(&evidence.signature)
        .map_err(|e| e.to_string())
        .and_then(|s| s.to_p256().map_err(|e| format!("TPMT_SIGNATURE: {e}")));
    report.record(CHECKS[1], signature.as_ref().map(|_| "ECDSA P-256 / SHA-256".to_string()).map_err(Clone::clone));
    let ak = EccPublic::parse(&evidence.ak_public)
        .map_err(|e| e.to_string())
        .and_then(|p| p.verifying_key().map(|k| (p, k)).map_err(|e| format!("TPMT_PUBLIC: {e}")));
    report.record(CHECKS[2], ak.as_ref().map(|_| "ECC P-256 public area".to_string()).map_err(Clone::clone));

    let not_evaluated = |why: &str| Err(format!("not evaluated: {why}"));

    // The AK.
    match &ak {
        Ok((_, key)) if key == expect.ak => {
            report.record(CHECKS[3], Ok("attestation key equals the pinned key".into()))
        }
        Ok(_) => report.record(CHECKS[3], Err("attestation key in the evidence is not the pinned key".into())),
        Err(_) => report.record(CHECKS[3], not_evaluated("AK public area did not decode")),
    };
    match &ak {
        Ok((public, _)) => {
            let required = attr::FIXED_TPM
                | attr::FIXED_PARENT
                | attr::SENSITIVE_DATA_ORIGIN
                | attr::RESTRICTED
                | attr::SIGN_ENCRYPT;
            let ok = public.attributes & required == required && public.attributes & attr::DECRYPT == 0;
            report.record(
                CHECKS[4],
                if ok {
                    Ok("fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign".into())
                } else {
                    Err(format!("objectAttributes 0x{:08x} lack restricted/fixedTPM/sign or allow decrypt: this key could sign forged attestations", public.attributes))
                },
            )
        }
        Err(_) => report.record(CHECKS[4], not_evaluated("AK public area did not decode")),
    };

    // The signature binds everything else; it is checked with the *pinned* key.
    match &signature {
        Ok(sig) => report.record(
            CHECKS[5],
            expect
                .ak
                .verify(&evidence.attest, sig)
                .map(|()| "ECDSA signature over TPMS_ATTEST verifies with the pinned AK".into())
                .map_err(|_| "ECDSA signature over TPMS_ATTEST does not verify with the pinned AK".into()),
        ),
        Err(_) => report.record(CHECKS[5], not_evaluated("signature did not decode")),
    };
    match (&quote, &ak) {
        (Ok(q), Ok((public, _))) => {
            let expected = ak_qualified_name(&evidence.ek_public, &public.name());
            report.record(
                CHECKS[6],
                if q.qualified_signer == expected {
                    Ok("qualifiedSigner is the AK as a child of the evidence's endorsement key".into())
                } else {
                    Err(format!(
                        "qualifiedSigner {} is not the AK under the given EK ({})",
                        hex::encode(&q.qualified_signer),
                        hex::encode(&expected)
                    ))
                },
            )
        }
        _ => report.record(CHECKS[6], not_evaluated("quote or AK did not decode")),
    };

    let Ok(q) = quote else {
        for name in &CHECKS[7..] {
            report.record(name, not_evaluated("quote did not decode"));
        }
        if expect.firmware_log.is_some() || expect.measurement_log.is_some() {
            report.record(CHECK_EVENT_LOG, not_evaluated("quote did not decode"));
        }
        return report;
    };

    report.record(
        CHECKS[7],
        if q.extra_data == expect.qualifying_data {
            Ok(format!("qualifying data matches ({} bytes)", q.extra_data.len()))
        } else {
            Err(format!(
                "qualifying data {} is not the expected {} (stale or replayed quote)",
                hex::encode(&q.extra_data),
                hex::encode(expect.qualifying_data)
            ))
        },
    );
    report.record(
        CHECKS[8],
        if &q.pcr_selection == expect.selection {
            Ok(format!("{}", q.pcr_selection))
        } else {
            Err(format!("quote covers {}, expected {}", q.pcr_selection, expect.selection))
        },
    );

    // The claimed PCR values must be exactly the quoted selection and hash to the quote's digest.
    let claimed: BTreeSet<u8> = evidence.pcr_values.0.keys().copied().collect();
    let quoted: BTreeSet<u8> = q.pcr_selection.indices().iter().copied().collect();
    let digest_ok = if claimed != quoted {
        Err(format!("evidence carries values for PCRs {claimed:?} but the quote covers {quoted:?}"))
    } else {
        match evidence.pcr_values.composite_digest(&q.pcr_selection) {
            Some(d) if d.0.as_slice() == q.pcr_digest.as_slice() => {
                Ok("claimed PCR values hash to the quoted pcrDigest".into())
            }
            Some(d) => Err(format!("claimed PCR values hash to {d}, the quote says {}", hex::encode(&q.pcr_digest))),
            None => Err("claimed PCR values incomplete".into()),
        }
    };
    let values_proven = report.record(CHECKS[9], digest_ok);

    // Reference values: every selected PCR, every mismatch named.
    if values_proven {
        let mut mismatches = Vec::new();
        for &pcr in expect.selection.indices() {
            let expected = expect.reference.get(pcr).copied();
            let got = evidence.pcr_values.get(pcr).copied();
            if expected.is_none() || expected != got {
                mismatches.push(PcrMismatch { pcr, expected, quoted: got });
            }
        }
        let extra: Vec<u8> =
            expect.reference.0.keys().copied().filter(|p| !expect.selection.indices().contains(p)).collect();
        let result = if !extra.is_empty() {
            Err(format!("reference values given for PCRs {extra:?} that the selection does not quote"))
        } else if mismatches.is_empty() {
            Ok(format!("all {} quoted PCRs equal their reference values", expect.selection.indices().len()))
        } else {
            Err(format!("PCRs not matching reference values: {}", describe(&mismatches)))
        };
        report.reference_mismatches = mismatches;
        report.record(CHECKS[10], result);
    } else {
        report.record(CHECKS[10], not_evaluated("PCR values not proven by the quote"));
    }

    if expect.firmware_log.is_some() || expect.measurement_log.is_some() {
        let result = if values_proven {
            replay_logs(expect, &evidence.pcr_values, &q.pcr_selection).map(|mismatches| {
                report.replay_mismatches = mismatches;
            })
        } else {
            Err("not evaluated: PCR values not proven by the quote".into())
        };
        let result = match result {
            Ok(()) if report.replay_mismatches.is_empty() => {
                Ok("event logs replay to the quoted PCR values".to_string())
            }
            Ok(()) => {
                Err(format!("event log replay differs from quoted PCRs: {}", describe(&report.replay_mismatches)))
            }
            Err(e) => Err(e),
        };
        report.record(CHECK_EVENT_LOG, result);
    }
    report
}

/// `TPM_RH_ENDORSEMENT`: the qualified name of the endorsement hierarchy is its handle.
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;

/// The qualified name of a key whose parent is the primary key `ek_public` in the endorsement
/// hierarchy: `QN(child) = nameAlg || H(QN(parent) || Name(child))`, with
/// `QN(primary) = nameAlg || H(handle(hierarchy) || Name(primary))`.
pub fn ak_qualified_name(ek_public: &[u8], ak_name: &[u8]) -> Vec<u8> {
    let ek_name = object_name(ek_public);
    let mut ek_qn = TPM_ALG_SHA256.to_be_bytes().to_vec();
    ek_qn.extend_from_slice(&Sha256Digest::of_parts(&[&TPM_RH_ENDORSEMENT.to_be_bytes(), &ek_name]).0);
    let mut ak_qn = TPM_ALG_SHA256.to_be_bytes().to_vec();
    ak_qn.extend_from_slice(&Sha256Digest::of_parts(&[&ek_qn, ak_name]).0);
    ak_qn
}

/// Replays the firmware log and then the measurement log; compares every quoted PCR.
fn replay_logs(
    expect: &Expectations<'_>,
    quoted: &PcrValues,
    selection: &PcrSelection,
) -> Result<Vec<PcrMismatch>, String> {
    let mut replayed = match expect.firmware_log {
        Some(bytes) => EventLog::parse(bytes)
            .map_err(|e| format!("firmware event log: {e}"))?
            .replay()
            .map_err(|e| format!("firmware event log: {e}"))?,
        None => PcrValues::new(),
    };
    if let Some(bytes) = expect.measurement_log {
        let log = MeasurementLog::parse(bytes).map_err(|e| e.to_string())?;
        replayed = log.replay_onto(&replayed);
    }
    let mut mismatches = Vec::new();
    for &pcr in selection.indices() {
        let expected = replayed.get(pcr).copied().unwrap_or_else(|| reset_value(pcr));
        let got = quoted.get(pcr).copied();
        if Some(expected) != got {
            mismatches.push(PcrMismatch { pcr, expected: Some(expected), quoted: got });
        }
    }
    Ok(mismatches)
}

fn describe(mismatches: &[PcrMismatch]) -> String {
    let show = |d: &Option<Sha256Digest>| d.map_or_else(|| "none".to_string(), |d| d.to_hex());
    mismatches
        .iter()
        .map(|m| format!("PCR {} (expected {}, quoted {})", m.pcr, show(&m.expected), show(&m.quoted)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an AK public key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attestation key: {0}")]
pub struct AkKeyError(String);

/// Reads a pinned AK from SubjectPublicKeyInfo DER.
pub fn ak_from_der(der: &[u8]) -> Result<p256::ecdsa::VerifyingKey, AkKeyError> {
    p256::ecdsa::VerifyingKey::from_public_key_der(der)
        .map_err(|e| AkKeyError(format!("not a P-256 SubjectPublicKeyInfo: {e}")))
}

/// Reads a pinned AK from PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn ak_from_pem(pem: &str) -> Result<p256::ecdsa::VerifyingKey, AkKeyError> {
    p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| AkKeyError(format!("not a P-256 public key PEM: {e}")))
}

/// The SubjectPublicKeyInfo DER and PEM of a TPM ECC public area (for export to other tools).
pub fn ak_der_pem(tpmt_public: &[u8]) -> Result<(Vec<u8>, String), AkKeyError> {
    let key =
        EccPublic::parse(tpmt_public).map_err(|e| AkKeyError(e.to_string()))?.verifying_key().map_err(AkKeyError)?;
    let der = key.to_public_key_der().map_err(|e| AkKeyError(e.to_string()))?.into_vec();
    let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| AkKeyError(e.to_string()))?;
    Ok((der, pem))
}
