//! Remote attestation, operator side: asks the appliance for evidence bound to a fresh nonce,
//! proves its attestation key lives in the TPM named by the EK certificate (credential
//! activation), and verifies everything offline with the pure-Rust verifier against trust
//! roots the operator holds: the release public key, the signed reference values of the
//! release, the firmware platform profile and the TPM manufacturer's CA.
//!
//! [`verify_exchange`] is pure (no IO, the caller passes the time); [`attest`] is the thin
//! edge that talks to the appliance. Every check is reported; PASS only when all ran and passed.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_measured_boot::credential::make_credential;
use sovereign_measured_boot::structures::{EccPublic, RsaStoragePublic};
use sovereign_measured_boot::verify;
use sovereign_protocol::akcert::{AkCertificate, AkFacts};
use sovereign_protocol::{Evidence, Request, Response, attest_qualifying_data};
pub use sovereign_verifier::{AttestReport, Exchange, Trust, verify_exchange};

/// Asks the appliance at `endpoint` for evidence (fresh nonce), runs the credential challenge,
/// and verifies. Transport errors are `Err`; anything the appliance answered is judged in the
/// report (a wrongly signed or refused answer is a failed check, never PASS).
pub fn attest(
    endpoint: &crate::Endpoint,
    operator: &ed25519_dalek::SigningKey,
    trust: &Trust,
    now_unix: u64,
    timeout: Duration,
) -> anyhow::Result<(Option<Exchange>, AttestReport)> {
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let fail = |name: &str, why: String| {
        let mut r = AttestReport::default();
        r.record(name, Err(why));
        (None, r)
    };
    // The request names the node: the pinned identity, or the one the node states (the
    // evidence must then bind it, and the report says whether it was pinned).
    let identity_key = match crate::node_identity(endpoint, operator, trust.node_identity.as_ref(), timeout) {
        Ok(k) => k,
        Err(e) => return Ok(fail("response.signature", format!("learning the node identity: {e:#}"))),
    };
    let identity = identity_key.to_bytes();
    let request = crate::sign(Request::Attest { nonce }, &identity_key, &[], operator);
    let response = crate::send(endpoint, &request, timeout)?;
    let evidence = match response.verify(&request, &identity_key) {
        Err(e) => return Ok(fail("response.signature", format!("attestation response: {e}"))),
        Ok(Response::Evidence(e)) => (**e).clone(),
        Ok(Response::Refused(why)) => return Ok(fail("response.evidence", format!("the appliance refused: {why}"))),
        Ok(other) => return Ok(fail("response.evidence", format!("unexpected answer {other:?}"))),
    };
    let mut challenge = [0u8; 32];
    OsRng.fill_bytes(&mut challenge);
    let released = match credential_request(&evidence, &challenge) {
        Err(e) => Err(e),
        Ok(request) => {
            let signed = crate::sign(request, &identity_key, &[], operator);
            let response = crate::send(endpoint, &signed, timeout)?;
            match response.verify(&signed, &identity_key) {
                Err(e) => Err(format!("activation response: {e}")),
                Ok(Response::Credential(secret)) => Ok(secret.clone()),
                Ok(Response::Refused(why)) => Err(format!("the appliance refused: {why}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
            }
        }
    };
    let exchange = Exchange { nonce, identity, evidence, challenge, released };
    let report = verify_exchange(&exchange, trust, now_unix);
    Ok((Some(exchange), report))
}

/// How far an appliance's clock may lag the operator's when it checks a new AK certificate.
const CLOCK_SKEW_SECS: u64 = 300;

/// Issues an AK certificate for the attestation `exchange` verified (call only after a
/// complete PASS: the credential activation is what proves the AK resident beside the EK),
/// valid from five minutes before `now_unix` (clock skew) until `validity_secs` after it, and
/// has the appliance store it.
pub fn certify(
    endpoint: &crate::Endpoint,
    operator: &ed25519_dalek::SigningKey,
    exchange: &Exchange,
    ca: &ed25519_dalek::SigningKey,
    now_unix: u64,
    validity_secs: u64,
    timeout: Duration,
) -> anyhow::Result<AkCertificate> {
    let ev = &exchange.evidence;
    let ek_certificate =
        ev.ek_certificate.as_deref().ok_or_else(|| anyhow::anyhow!("the TPM has no EK certificate"))?;
    let facts = AkFacts {
        ak_public: &ev.ak_public,
        ek_public: &ev.ek_public,
        ek_certificate,
        node_identity: &exchange.identity,
    };
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    // Valid from five minutes ago: the appliance checks the validity on its own clock.
    let not_before = now_unix.saturating_sub(CLOCK_SKEW_SECS);
    let cert = AkCertificate::issue(ca, &facts, serial, not_before, now_unix.saturating_add(validity_secs));
    let identity = VerifyingKey::from_bytes(&exchange.identity)?;
    let request = crate::sign(Request::CertifyAk(Box::new(cert.clone())), &identity, &[], operator);
    let response = crate::send(endpoint, &request, timeout)?;
    match response.verify(&request, &identity).map_err(|e| anyhow::anyhow!("certification response: {e}"))? {
        Response::AkCertified { serial } if *serial == cert.serial => Ok(cert),
        Response::Refused(why) => anyhow::bail!("the appliance refused the certificate: {why}"),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

fn credential_request(evidence: &Evidence, challenge: &[u8; 32]) -> Result<Request, String> {
    let ek = RsaStoragePublic::parse(&evidence.ek_public).map_err(|e| format!("EK public area: {e}"))?;
    let ak = EccPublic::parse(&evidence.ak_public).map_err(|e| format!("AK public area: {e}"))?;
    let cred = make_credential(&ek, &ak.name(), challenge, &mut OsRng).map_err(|e| e.to_string())?;
    Ok(Request::ActivateCredential { credential_blob: cred.credential_blob, encrypted_secret: cred.encrypted_secret })
}

/// Writes the evidence in standard encodings to `dir`: `quote.attest` (TPMS_ATTEST),
/// `quote.sig` (TPMT_SIGNATURE), `ak.pub` / `ek.pub` (TPMT_PUBLIC), `ak.pem`, `ek.crt` (DER),
/// `qualifying-data.hex`, `pcrs.json`, `binary_bios_measurements` (TCG PC Client log),
/// `measurement.log`, `manifest.json`, `manifest.sig`, `report.json`.
pub fn save(dir: &Path, exchange: &Exchange, report: &AttestReport) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ev = &exchange.evidence;
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("quote.attest", ev.attest.clone()),
        ("quote.sig", ev.signature.clone()),
        ("ak.pub", ev.ak_public.clone()),
        ("ek.pub", ev.ek_public.clone()),
        ("binary_bios_measurements", ev.firmware_log.clone()),
        ("measurement.log", ev.measurement_log.clone()),
        ("manifest.json", ev.manifest.clone()),
        ("manifest.sig", ev.manifest_signature.clone()),
        (
            "qualifying-data.hex",
            format!("{}\n", hex::encode(attest_qualifying_data(&exchange.nonce, &exchange.identity))).into_bytes(),
        ),
        ("nonce.hex", format!("{}\n", hex::encode(exchange.nonce)).into_bytes()),
        ("identity.pub", format!("{}\n", hex::encode(exchange.identity)).into_bytes()),
        ("report.json", serde_json::to_vec_pretty(report)?),
    ];
    let pcrs: std::collections::BTreeMap<String, String> =
        ev.pcrs.iter().map(|(i, v)| (i.to_string(), hex::encode(v))).collect();
    files.push(("pcrs.json", serde_json::to_vec_pretty(&pcrs)?));
    if let Some(cert) = &ev.ek_certificate {
        files.push(("ek.crt", cert.clone()));
    }
    if let Ok((_, pem)) = verify::ak_der_pem(&ev.ak_public) {
        files.push(("ak.pem", pem.into_bytes()));
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Fuzz entry point: arbitrary bytes as an attestation answer (postcard `Evidence`), and as
/// each untrusted field of one (EK certificate, EK and AK public areas, quote, event logs),
/// through the whole verification. Must never panic.
pub fn fuzz_evidence(data: &[u8]) {
    let trust = Trust {
        release_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
        reference_values: data.to_vec(),
        reference_signature: data.get(..64).unwrap_or_default().to_vec(),
        platform_profile: data.to_vec(),
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(data).unwrap_or_default(),
        node_identity: None,
    };
    let blank = Evidence {
        attest: vec![],
        signature: vec![],
        ak_public: vec![],
        ek_public: vec![],
        ek_certificate: None,
        pcrs: vec![],
        firmware_log: vec![],
        measurement_log: vec![],
        manifest: vec![],
        manifest_signature: vec![],
    };
    let mut candidates: Vec<Evidence> = Vec::new();
    if let Ok(e) = postcard::from_bytes::<Evidence>(data) {
        candidates.push(e);
    }
    let d = data.to_vec();
    candidates.push(Evidence { ek_certificate: Some(d.clone()), ek_public: d.clone(), ..blank.clone() });
    candidates.push(Evidence { attest: d.clone(), signature: d.clone(), ak_public: d.clone(), ..blank.clone() });
    candidates.push(Evidence { firmware_log: d.clone(), measurement_log: d.clone(), manifest: d, ..blank });
    for evidence in candidates {
        let exchange =
            Exchange { nonce: [0; 32], identity: [0; 32], evidence, challenge: [0; 32], released: Ok(vec![]) };
        let _ = verify_exchange(&exchange, &trust, 1_800_000_000);
        let _ = credential_request(&exchange.evidence, &[0; 32]);
    }
}
