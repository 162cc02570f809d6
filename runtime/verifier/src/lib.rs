//! `sovereign-verifier`: the pure-Rust verifier of a node's TPM evidence, shared by the operator
//! CLI (`sovereign attest`, compliance bundles) and the mesh (a peer's admission): the release's
//! signed reference values and manifest, the firmware platform profile, the EK certificate chain
//! to the trusted roots, the AK (proven resident beside that EK by credential activation, or by
//! an AK certificate from a pinned attestation CA), the quote over [`ATTESTED_PCRS`] bound to the
//! nonce and node identity, and the event logs replayed to the quoted PCRs. Every check is
//! reported; PASS only when all ran and passed.
//!
//! Pure: no IO and no clock (the caller passes the time). Must never: pass evidence it did not
//! check, judge a quote against reference values the release key did not sign, or take an AK
//! from the evidence on trust.

#![forbid(unsafe_code)]

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sovereign_measured_boot::ekcert::verify_ek_certificate;
use sovereign_measured_boot::measurement_log::{Measurement, PROJECT_PCR};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest, extend};
use sovereign_measured_boot::structures::{EccPublic, RsaStoragePublic};
use sovereign_measured_boot::verify::{self, Check, Expectations, PcrMismatch, QuoteEvidence};
use sovereign_protocol::akcert::{AkCertificate, AkFacts};
use sovereign_protocol::{ATTESTED_PCRS, Evidence, attest_qualifying_data};
use x509_cert::Certificate;

/// The check a live credential activation passes (an AK certificate stands in for it offline).
pub const CHECK_CREDENTIAL_ACTIVATION: &str = "ak.credential_activation";

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

    /// Adds a check's outcome (`Err`: failed, with why); returns whether it passed.
    pub fn record(&mut self, name: &str, result: Result<String, String>) -> bool {
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
        CHECK_CREDENTIAL_ACTIVATION,
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

/// Verifies evidence whose AK is vouched for by an AK certificate instead of a live credential
/// activation (an offline bundle, a mesh peer): the certificate must be signed by `ak_ca` for
/// this AK, EK, EK certificate and `identity`, valid at `certified_at`; then every check of
/// [`verify_exchange`] but the activation must pass for `nonce`. The number of checks passed, or
/// every failure as `name: why` joined by "; " (a PCR that differs is named by number).
pub fn verify_certified(
    nonce: &[u8; 32],
    evidence: &Evidence,
    ak_certificate: Option<&AkCertificate>,
    ak_ca: &VerifyingKey,
    trust: &Trust,
    certified_at: u64,
    now_unix: u64,
) -> Result<usize, String> {
    let identity = trust.node_identity.ok_or("no node identity to bind the quote to")?;
    let cert = ak_certificate.ok_or("ak.certified: the quote's AK is not certified (no AK certificate)")?;
    let ek_certificate =
        evidence.ek_certificate.as_deref().ok_or("ak.certified: the evidence has no EK certificate")?;
    let facts = AkFacts {
        ak_public: &evidence.ak_public,
        ek_public: &evidence.ek_public,
        ek_certificate,
        node_identity: identity.as_bytes(),
    };
    cert.verify(ak_ca, &facts, certified_at).map_err(|e| format!("ak.certified: {e}"))?;
    let exchange = Exchange {
        nonce: *nonce,
        identity: identity.to_bytes(),
        evidence: evidence.clone(),
        challenge: [0; 32],
        released: Err(String::new()),
    };
    let report = verify_exchange(&exchange, trust, now_unix);
    let mut failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed && c.name != CHECK_CREDENTIAL_ACTIVATION)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    failed.extend(report.reference_mismatches.iter().map(|m| format!("PCR {} differs from the reference", m.pcr)));
    if failed.is_empty() { Ok(report.checks.iter().filter(|c| c.passed).count()) } else { Err(failed.join("; ")) }
}
