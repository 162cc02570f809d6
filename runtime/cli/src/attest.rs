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

use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sovereign_measured_boot::credential::make_credential;
use sovereign_measured_boot::ekcert::verify_ek_certificate;
use sovereign_measured_boot::measurement_log::{Measurement, PROJECT_PCR};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest, extend};
use sovereign_measured_boot::structures::{EccPublic, RsaStoragePublic};
use sovereign_measured_boot::verify::{self, Check, Expectations, PcrMismatch, QuoteEvidence};
use sovereign_protocol::akcert::{AkCertificate, AkFacts};
use sovereign_protocol::{ATTESTED_PCRS, Evidence, Request, Response, attest_qualifying_data};
use x509_cert::Certificate;

/// What the operator trusts, all of it held on the operator's side.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The release public key (signs manifests and reference values).
    pub release_key: VerifyingKey,
    /// `reference-values.json` of the release the node should run.
    pub reference_values: Vec<u8>,
    /// Its detached Ed25519 signature (`reference-values.sig`).
    pub reference_signature: Vec<u8>,
    /// The firmware platform profile (`firmware/qemu-ovmf.json` shape).
    pub platform_profile: Vec<u8>,
    /// The EK trust store (the TPM manufacturer's CA certificates).
    pub ek_roots: Vec<Certificate>,
    /// The node identity, if the operator pins it.
    pub node_identity: Option<VerifyingKey>,
}

/// One attestation exchange as the operator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The nonce the operator sent.
    pub nonce: [u8; 32],
    /// The identity that signed the responses (the responses' signatures were verified).
    pub identity: [u8; 32],
    /// The evidence.
    pub evidence: Evidence,
    /// The credential-activation challenge the operator made.
    pub challenge: [u8; 32],
    /// What the appliance released for it (or why it did not).
    pub released: Result<Vec<u8>, String>,
}

/// The outcome: every check, and every PCR that differed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestReport {
    /// Every check in order.
    pub checks: Vec<Check>,
    /// PCRs whose quoted value differs from the reference value.
    pub reference_mismatches: Vec<PcrMismatch>,
    /// PCRs whose quoted value differs from the event-log replay.
    pub replay_mismatches: Vec<PcrMismatch>,
}

impl AttestReport {
    /// True only when at least one check ran and all passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// Whether the named check passed.
    pub fn check_passed(&self, name: &str) -> Option<bool> {
        self.checks.iter().find(|c| c.name == name).map(|c| c.passed)
    }

    fn record(&mut self, name: &str, result: Result<String, String>) -> bool {
        let passed = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.checks.push(Check { name: name.into(), passed, detail });
        passed
    }

    /// Human-readable rendering: verdict, every check, every mismatching PCR.
    pub fn render(&self) -> String {
        let mut out = format!("attestation: {}\n", if self.passed() { "PASS" } else { "FAIL" });
        for c in &self.checks {
            out.push_str(&format!("  [{}] {:<36} {}\n", if c.passed { "ok" } else { "FAIL" }, c.name, c.detail));
        }
        let show = |d: &Option<Sha256Digest>| d.map_or_else(|| "none".to_string(), |d| d.to_hex());
        for m in &self.reference_mismatches {
            out.push_str(&format!(
                "  PCR {} differs from the reference: expected {}, quoted {}\n",
                m.pcr,
                show(&m.expected),
                show(&m.quoted)
            ));
        }
        for m in &self.replay_mismatches {
            out.push_str(&format!(
                "  PCR {} differs from the event-log replay: replayed {}, quoted {}\n",
                m.pcr,
                show(&m.expected),
                show(&m.quoted)
            ));
        }
        out
    }
}

#[derive(Deserialize)]
struct ReferenceFile {
    version: u64,
    manifest_sha256: String,
    pcrs: PcrValues,
}

#[derive(Deserialize)]
struct PlatformProfile {
    pcrs: PcrValues,
}

/// The reference value of every attested PCR: firmware PCRs from the platform profile, the rest
/// from the signed release reference values; PCR 15 as it stands after PID 1's separator.
fn reference_pcrs(reference: &ReferenceFile, profile: &PlatformProfile) -> PcrValues {
    let mut out = PcrValues::new();
    for (&pcr, value) in profile.pcrs.0.iter().chain(reference.pcrs.0.iter()) {
        if ATTESTED_PCRS.contains(&pcr) {
            out.set(pcr, *value);
        }
    }
    if let Some(before) = reference.pcrs.get(PROJECT_PCR) {
        out.set(PROJECT_PCR, extend(before, &Measurement::separator().digest));
    }
    out
}

/// Verifies one exchange against the operator's trust roots at `now_unix`. Pure; never panics.
pub fn verify_exchange(exchange: &Exchange, trust: &Trust, now_unix: u64) -> AttestReport {
    let mut report = AttestReport::default();
    let ev = &exchange.evidence;
    report.record(
        "node.identity",
        match &trust.node_identity {
            Some(k) if k.as_bytes() == &exchange.identity => Ok("responses signed by the pinned node identity".into()),
            Some(k) => Err(format!(
                "responses signed by {}, not the pinned identity {}",
                hex::encode(exchange.identity),
                hex::encode(k.as_bytes())
            )),
            None => Ok(format!("{} (not pinned; bound to this TPM quote below)", hex::encode(exchange.identity))),
        },
    );

    // The release: reference values and manifest, both signed by the release key.
    let sig = |bytes: &[u8]| Signature::from_slice(bytes).map_err(|e| e.to_string());
    let reference_ok = report.record(
        "release.reference_values_signature",
        sig(&trust.reference_signature)
            .and_then(|s| {
                trust.release_key.verify_strict(&trust.reference_values, &s).map_err(|_| "bad signature".to_string())
            })
            .map(|()| "reference values signed by the release key".into())
            .map_err(|e| format!("reference values not signed by the release key: {e}")),
    );
    let reference: Result<ReferenceFile, String> =
        serde_json::from_slice(&trust.reference_values).map_err(|e| format!("reference values: {e}"));
    report.record(
        "release.manifest_signature",
        sovereign_boot_contract::manifest::Manifest::verify(&ev.manifest, &ev.manifest_signature, &trust.release_key)
            .map(|m| {
                format!("the booted manifest (v{}, {} files) is signed by the release key", m.version, m.files.len())
            })
            .map_err(|e| format!("the booted manifest: {e}")),
    );
    let manifest_sha = Sha256Digest::of(&ev.manifest).to_hex();
    report.record(
        "release.manifest_is_reference",
        match &reference {
            Ok(r) if reference_ok && r.manifest_sha256 == manifest_sha => {
                Ok(format!("manifest {manifest_sha} is release v{}'s", r.version))
            }
            Ok(r) if reference_ok => Err(format!("manifest {manifest_sha} is not the release's {}", r.manifest_sha256)),
            Ok(_) => Err("not evaluated: reference values not signed by the release key".into()),
            Err(e) => Err(e.clone()),
        },
    );
    let profile: Result<PlatformProfile, String> =
        serde_json::from_slice(&trust.platform_profile).map_err(|e| format!("platform profile: {e}"));
    report.record(
        "platform.profile",
        profile
            .as_ref()
            .map(|p| format!("firmware PCRs {:?} from the platform profile", p.pcrs.0.keys().collect::<Vec<_>>()))
            .map_err(Clone::clone),
    );

    // The TPM: EK certificate chain, then the AK proven to live beside that EK.
    let ek = RsaStoragePublic::parse(&ev.ek_public).map_err(|e| format!("EK public area: {e}"));
    report.record(
        "ek.certificate_chain",
        match (&ev.ek_certificate, &ek) {
            (None, _) => Err("the TPM has no EK certificate".into()),
            (_, Err(e)) => Err(e.clone()),
            (Some(cert), Ok(ek)) => verify_ek_certificate(cert, &trust.ek_roots, ek, now_unix)
                .map(|chain| format!("EK certificate chains to a trusted root: {chain}")),
        },
    );
    let ak = EccPublic::parse(&ev.ak_public).map_err(|e| format!("AK public area: {e}"));
    report.record(
        "ak.credential_activation",
        match &exchange.released {
            Ok(secret) if secret.as_slice() == exchange.challenge => {
                Ok("the TPM holding the certified EK released the credential made for this AK's name".into())
            }
            Ok(_) => Err("the appliance released a different credential".into()),
            Err(e) => Err(format!("credential not released: {e}")),
        },
    );

    // The quote itself, with the AK that activation vouched for.
    let selection = PcrSelection::new(ATTESTED_PCRS).map_err(|e| e.to_string());
    let ak_key = ak.and_then(|a| a.verifying_key());
    match (&ak_key, &selection, &reference, &profile) {
        (Ok(ak_key), Ok(selection), Ok(reference), Ok(profile)) => {
            let mut claimed = PcrValues::new();
            for (pcr, value) in &ev.pcrs {
                claimed.set(*pcr, Sha256Digest(*value));
            }
            let quote = QuoteEvidence {
                attest: ev.attest.clone(),
                signature: ev.signature.clone(),
                ak_public: ev.ak_public.clone(),
                ek_public: ev.ek_public.clone(),
                pcr_values: claimed,
            };
            let qualifying = attest_qualifying_data(&exchange.nonce, &exchange.identity);
            let reference_values = reference_pcrs(reference, profile);
            let quote_report = verify::verify_quote(
                &quote,
                &Expectations {
                    ak: ak_key,
                    qualifying_data: &qualifying,
                    selection,
                    reference: &reference_values,
                    firmware_log: Some(&ev.firmware_log),
                    measurement_log: Some(&ev.measurement_log),
                },
            );
            report.checks.extend(quote_report.checks);
            report.reference_mismatches = quote_report.reference_mismatches;
            report.replay_mismatches = quote_report.replay_mismatches;
        }
        _ => {
            let why = [ak_key.err(), selection.err(), reference.err(), profile.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            for name in verify::CHECKS.iter().chain([&verify::CHECK_EVENT_LOG]) {
                report.record(name, Err(format!("not evaluated: {why}")));
            }
        }
    }
    report
}

/// Asks the appliance on `socket` for evidence (fresh nonce), runs the credential challenge,
/// and verifies. Transport errors are `Err`; anything the appliance answered is judged in the
/// report (a wrongly signed or refused answer is a failed check, never PASS).
pub fn attest(
    socket: &Path,
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
    let identity_key = match crate::node_identity(socket, operator, trust.node_identity.as_ref(), timeout) {
        Ok(k) => k,
        Err(e) => return Ok(fail("response.signature", format!("learning the node identity: {e:#}"))),
    };
    let identity = identity_key.to_bytes();
    let request = crate::sign(Request::Attest { nonce }, &identity_key, &[], operator);
    let response = crate::send(socket, &request, timeout)?;
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
            let response = crate::send(socket, &signed, timeout)?;
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
    socket: &Path,
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
    let response = crate::send(socket, &request, timeout)?;
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
