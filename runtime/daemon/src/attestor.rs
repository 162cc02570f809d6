//! The TPM side of the control API: one attestation key for the life of the node (kept on the
//! data partition, wrapped by the TPM's endorsement key, so the certificate an attestation CA
//! issued for it stays true across boots), quotes over [`ATTESTED_PCRS`] bound to the
//! operator's nonce and the node identity, with the logs and the signed manifest, credential
//! activation for the AK, and the AK certificate: checked against this AK, EK and identity,
//! then stored durably.

use std::fs;
use std::path::PathBuf;

use sovereign_measured_boot::PcrSelection;
use sovereign_measured_boot::tpm::{AttestationKey, SharedTpm};
use sovereign_protocol::akcert::AkCertificate;
use sovereign_protocol::{ATTESTED_PCRS, Evidence, attest_qualifying_data};

/// The kernel's TPM resource manager, the only TPM device the runtime may open.
pub const TCTI: &str = "device:/dev/tpmrm0";
/// The firmware's TCG event log: PID 1's copy of securityfs's root-only
/// `binary_bios_measurements` (the quote proves it: the log must replay to the quoted PCRs).
const FIRMWARE_LOG: &str = "/run/sovereign/firmware-eventlog.bin";
/// PID 1's measurement log.
const MEASUREMENT_LOG: &str = "/run/sovereign/measurement.log";

/// The AK as the TPM wrapped it, on the data partition.
const KEPT_AK: &str = "attestation-key.tpm";
/// The AK certificate, on the data partition.
const AK_CERTIFICATE: &str = "attestation-key.cert.json";

/// Holds the TPM open with one attestation key for the life of the runtime: the AK is
/// loaded once (tens of milliseconds) and every quote and credential activation reuses it.
/// The TPM session is shared with the engine's state anchor.
pub struct Attestor {
    tpm: SharedTpm,
    firmware_log: PathBuf,
    measurement_log: PathBuf,
    /// Where the AK and its certificate are kept (`None`: a new AK each start, no certificate).
    keep: Option<PathBuf>,
    state: Option<(AttestationKey, Option<Vec<u8>>)>,
}

impl Attestor {
    /// The appliance's attestor: its TPM through the kernel's resource manager, the firmware
    /// log from securityfs, PID 1's measurement log from /run.
    pub fn appliance(tpm: SharedTpm) -> Self {
        Self::new(tpm, FIRMWARE_LOG.as_ref(), MEASUREMENT_LOG.as_ref())
            .keeping_in(std::path::Path::new(sovereign_boot_contract::DATA_MOUNT))
    }

    /// Keeps the AK and its certificate in `dir` (the data partition on the appliance).
    pub fn keeping_in(mut self, dir: &std::path::Path) -> Self {
        self.keep = Some(dir.to_path_buf());
        self
    }

    /// An attestor for another TPM and log location (benchmarks and tests on swtpm).
    pub fn new(tpm: SharedTpm, firmware_log: &std::path::Path, measurement_log: &std::path::Path) -> Self {
        Attestor {
            tpm,
            firmware_log: firmware_log.into(),
            measurement_log: measurement_log.into(),
            keep: None,
            state: None,
        }
    }

    fn ready(&mut self) -> Result<&mut (AttestationKey, Option<Vec<u8>>), String> {
        if self.state.is_none() {
            let kept_path = self.keep.as_ref().map(|d| d.join(KEPT_AK));
            let kept = kept_path.as_ref().and_then(|p| fs::read(p).ok());
            let ((ak, keep), ek_certificate) = self
                .tpm
                .with(|tpm| Ok((tpm.attestation_key(kept.as_deref())?, tpm.ek_certificate()?)))
                .map_err(|e| e.to_string())?;
            if let Some(path) = &kept_path
                && kept.as_deref() != Some(keep.as_slice())
            {
                if kept.is_some() {
                    println!(
                        "sovereign-runtime: control: the kept attestation key does not load in this TPM; a new one was made (its certificate no longer applies)"
                    );
                }
                write_durably(path, &keep)?;
            }
            self.state = Some((ak, ek_certificate));
        }
        self.state.as_mut().ok_or_else(|| "TPM not open".to_string())
    }

    /// Opens the TPM and creates the AK now, so the first request does not pay for it.
    pub fn warm_up(&mut self) -> Result<(), String> {
        self.ready().map(|_| ())
    }

    /// A quote binding `nonce` and `identity`, with the logs and the signed manifest the node
    /// booted.
    pub fn evidence(
        &mut self,
        nonce: &[u8; 32],
        identity: &[u8; 32],
        node: &NodeFiles<'_>,
    ) -> Result<Evidence, String> {
        let selection = PcrSelection::new(ATTESTED_PCRS).map_err(|e| e.to_string())?;
        let read = |p: &PathBuf| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let (firmware_log, measurement_log) = (read(&self.firmware_log)?, read(&self.measurement_log)?);
        let tpm = self.tpm.clone();
        let (ak, ek_certificate) = self.ready()?;
        let quote = tpm
            .with(|tpm| tpm.quote(ak, &attest_qualifying_data(nonce, identity), &selection))
            .map_err(|e| e.to_string())?;
        Ok(Evidence {
            attest: quote.attest,
            signature: quote.signature,
            ak_public: quote.ak_public,
            ek_public: quote.ek_public,
            ek_certificate: ek_certificate.clone(),
            pcrs: quote.pcr_values.0.iter().map(|(i, v)| (*i, v.0)).collect(),
            firmware_log,
            measurement_log,
            manifest: node.manifest.to_vec(),
            manifest_signature: node.manifest_signature.to_vec(),
        })
    }

    /// The stored AK certificate, if one was issued for the AK in use (a certificate for an
    /// earlier AK is not returned).
    pub fn certificate(&mut self) -> Option<AkCertificate> {
        let path = self.keep.as_ref()?.join(AK_CERTIFICATE);
        let cert: AkCertificate = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let (ak, _) = self.ready().ok()?;
        (cert.ak_public == hex::encode(&ak.public)).then_some(cert)
    }

    /// Checks `cert` against this node's AK, EK, EK certificate and `identity` (its signature
    /// is the auditor's to check, with the CA key the auditor pins) and stores it durably.
    pub fn install_certificate(
        &mut self,
        cert: &AkCertificate,
        identity: &[u8; 32],
        now_unix: u64,
    ) -> Result<(), String> {
        let dir = self.keep.clone().ok_or("this runtime keeps no attestation key (no data partition)")?;
        let (ak, ek_certificate) = self.ready()?;
        let ek_certificate = ek_certificate.as_deref().ok_or("this TPM has no EK certificate to certify against")?;
        let facts = sovereign_protocol::akcert::AkFacts {
            ak_public: &ak.public,
            ek_public: &ak.ek_public,
            ek_certificate,
            node_identity: identity,
        };
        let issuer = hex::decode(&cert.issuer)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
            .ok_or("the certificate's issuer is not an Ed25519 key")?;
        cert.verify(&issuer, &facts, now_unix).map_err(|e| format!("AK certificate refused: {e}"))?;
        let bytes = serde_json::to_vec_pretty(cert).map_err(|e| e.to_string())?;
        write_durably(&dir.join(AK_CERTIFICATE), &bytes)
    }

    /// Releases the credential made for this AK under this TPM's EK.
    pub fn activate(&mut self, credential_blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, String> {
        let tpm = self.tpm.clone();
        let (ak, _) = self.ready()?;
        tpm.with(|tpm| tpm.activate_credential(ak, credential_blob, encrypted_secret)).map_err(|e| e.to_string())
    }
}

impl Drop for Attestor {
    /// Flushes the AK and EK: without a resource manager (swtpm over TCP) they would stay
    /// loaded in the TPM after the connection closes.
    fn drop(&mut self) {
        if let Some((ak, _)) = self.state.take() {
            let _ = self.tpm.with(|tpm| {
                tpm.release_attestation_key(ak);
                Ok(())
            });
        }
    }
}

/// Writes `bytes` to `path` so that a power cut leaves the old file or the new one: a
/// temporary file, fsynced, renamed over, and the directory fsynced.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    sovereign_audit::store::replace_durably(path, bytes).map_err(|e| e.to_string())
}

/// The signed manifest the node booted, as evidence carries it.
pub struct NodeFiles<'a> {
    /// Canonical manifest bytes.
    pub manifest: &'a [u8],
    /// Its detached release signature.
    pub manifest_signature: &'a [u8],
}
