//! Entry points for the fuzz targets in `fuzz/` (one per parser of untrusted bytes). Each feeds
//! arbitrary bytes to a parser and, when it accepts them, through everything downstream of it.
//! The only property asserted is the crate-wide one: no input panics.

use crate::eventlog::EventLog;
use crate::measurement_log::MeasurementLog;
use crate::pcr::{PcrSelection, PcrValues, Sha256Digest};
use crate::policy::{PolicyKey, SignedPcrPolicy};
use crate::sealed::SealedBlob;
use crate::structures::{EccPublic, EcdsaSignature, Quote};
use crate::verify::{Expectations, QuoteEvidence, verify_quote};

/// Firmware event log: parse, then replay.
pub fn event_log(data: &[u8]) {
    if let Ok(log) = EventLog::parse(data) {
        let _ = log.replay();
    }
}

/// `TPMS_ATTEST`.
pub fn quote(data: &[u8]) {
    let _ = Quote::parse(data);
}

/// `TPMT_SIGNATURE`.
pub fn signature(data: &[u8]) {
    if let Ok(sig) = EcdsaSignature::parse(data) {
        let _ = sig.to_p256();
    }
}

/// `TPMT_PUBLIC` (ECC).
pub fn ecc_public(data: &[u8]) {
    if let Ok(public) = EccPublic::parse(data) {
        let _ = public.verifying_key();
        let _ = public.name();
    }
}

/// PID 1's measurement log: parse, then replay.
pub fn measurement_log(data: &[u8]) {
    if let Ok(log) = MeasurementLog::parse(data) {
        let _ = log.replay_onto(&PcrValues::new());
    }
}

/// A signed PCR policy document: parse, then verify against a fixed key.
pub fn signed_policy(data: &[u8]) {
    if let Ok(policy) = SignedPcrPolicy::from_json(data)
        && let Ok(key) = p256::ecdsa::SigningKey::from_slice(&[1u8; 32])
    {
        let _ = policy.verify(&PolicyKey::new(*key.verifying_key()));
    }
}

/// A sealed blob read from the state partition.
pub fn sealed_blob(data: &[u8]) {
    let _ = SealedBlob::from_bytes(data);
}

/// The whole verifier on arbitrary evidence: the input is split into attest, signature, AK
/// public, EK public, firmware log and measurement log at length prefixes taken from it.
pub fn verify_quote_bytes(data: &[u8]) {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    for _ in 0..5 {
        let (len, tail) = match rest {
            [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
            _ => (0, &[][..]),
        };
        let len = len.min(tail.len());
        parts.push(&tail[..len]);
        rest = &tail[len..];
    }
    parts.push(rest);
    let Ok(key) = p256::ecdsa::SigningKey::from_slice(&[1u8; 32]) else { return };
    let mut values = PcrValues::new();
    values.set(0, Sha256Digest::default());
    values.set(15, Sha256Digest::of(b"x"));
    let selection = PcrSelection::new([0, 15]).unwrap_or_default();
    let evidence = QuoteEvidence {
        attest: parts[0].to_vec(),
        signature: parts[1].to_vec(),
        ak_public: parts[2].to_vec(),
        ek_public: parts[3].to_vec(),
        pcr_values: values.clone(),
    };
    let report = verify_quote(
        &evidence,
        &Expectations {
            ak: key.verifying_key(),
            qualifying_data: b"nonce",
            selection: &selection,
            reference: &values,
            firmware_log: Some(parts[4]),
            measurement_log: Some(parts[5]),
        },
    );
    // Arbitrary bytes can never carry a valid signature by this key.
    assert!(!report.passed(), "random evidence passed verification");
}

#[cfg(test)]
mod tests {
    /// The fuzz entry points run on the test's own corpus-like inputs without panicking.
    #[test]
    fn entry_points_accept_anything() {
        let inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0; 7],
            vec![0xff; 300],
            crate::eventlog::EventLogBuilder::new().measure(4, 0xd, b"k").build(),
            crate::measurement_log::MeasurementLog::new().to_bytes(),
        ];
        for input in &inputs {
            super::event_log(input);
            super::quote(input);
            super::signature(input);
            super::ecc_public(input);
            super::measurement_log(input);
            super::signed_policy(input);
            super::sealed_blob(input);
            super::verify_quote_bytes(input);
        }
    }
}
